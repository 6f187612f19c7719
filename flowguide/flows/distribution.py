"""The distribution of a flow: base noise pushed through a fused transform."""

from __future__ import annotations

from collections.abc import Callable

import pyro.distributions as dist
import torch
from torch import Tensor

from flowguide.transforms import FlowTransform

__all__ = ["FlowDistribution"]


class FlowDistribution(dist.TransformedDistribution):
    r"""Density of :math:`z = f(u)`, :math:`u \sim p_u`, by the change of variables.

    .. math::
        \log q(z) = \log p_u(u) - \log|\det \partial f / \partial u|, \quad u = f^{-1}(z).

    Sampling uses the fast forward direction; :meth:`rsample_and_log_prob` returns the
    sample and its exact log-density from that single pass. :meth:`log_prob` inverts
    the transform, so any point can be scored, not only the distribution's own samples.

    Scoring the very tensor this distribution object last sampled (as Pyro's ELBOs do
    with ``pyro.sample(name, q)``) reuses the log-density of the sampling pass instead
    of inverting: same value, same gradients, no inverse pass. Any other tensor, or a
    sample drawn without gradients scored with them, goes through the inverse.

    With ``path_log_prob`` given (sticking the landing, see
    :meth:`~flowguide.flows.Flow.forward`), scoring the own sample keeps the exact value
    of the sampling pass but takes its gradient from ``path_log_prob``: the density
    with the flow's parameters held fixed, differentiated only along the sample path.

    Arguments:
        base: Base distribution with event shape ``(D,)``.
        transform: Flow transform mapping base noise to the latent.
        path_log_prob: Optional ``(z, u) -> log q(z)`` with the parameters detached, given
            the sample ``z`` and the base noise ``u`` it was pushed from.

    Example:
        >>> from flowguide.flows import iaf
        >>> q = iaf(3, num_flows=2, hidden_dims=[16])()
        >>> z, log_q = q.rsample_and_log_prob((5,))
        >>> torch.allclose(log_q, q.log_prob(z), atol=1e-4)
        True
    """

    def __init__(
        self,
        base: dist.TorchDistribution,
        transform: FlowTransform,
        validate_args: bool | None = None,
        *,
        path_log_prob: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__(base, [transform], validate_args=validate_args)
        self.path_log_prob = path_log_prob

    def expand(
        self, batch_shape: tuple[int, ...], _instance: FlowDistribution | None = None
    ) -> FlowDistribution:
        """Expand the batch shape of the base; the transform broadcasts over it."""
        shape = torch.Size(batch_shape)
        return FlowDistribution(
            self.base_dist.expand(shape), self.flow_transform, path_log_prob=self.path_log_prob
        )

    @property
    def flow_transform(self) -> FlowTransform:
        """The fused transform (also ``self.transforms[0]``, which ``expand`` carries over)."""
        return self.transforms[0]

    _last: tuple[Tensor, Tensor, bool, Tensor] | None = None

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def rsample_and_log_prob(self, sample_shape: tuple[int, ...] = ()) -> tuple[Tensor, Tensor]:
        """Draw reparameterized samples and their log-density in one forward pass."""
        u = self.base_dist.rsample(torch.Size(sample_shape))
        z, ladj = self.flow_transform.call_and_ladj(u)
        log_q = self.base_dist.log_prob(u) - ladj
        self._last = (z, log_q, torch.is_grad_enabled(), u)
        return z, log_q

    def log_prob(self, value: Tensor) -> Tensor:
        if self._last is not None:
            z, log_q, with_grad, u = self._last
            if value is z and (with_grad or not torch.is_grad_enabled()):
                if self.path_log_prob is None or not torch.is_grad_enabled():
                    return log_q
                path = self.path_log_prob(z, u)  # same value up to rounding, path gradient only
                return log_q.detach() + (path - path.detach())
        u, ladj_inverse = self.flow_transform.inv_and_ladj(value)
        return self.base_dist.log_prob(u) + ladj_inverse
