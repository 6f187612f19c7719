"""A normalizing flow: a standard normal base and a stack of flow layers."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from flowguide.flows.distribution import FlowDistribution
from flowguide.flows.layers import FlowLayer, check_context
from flowguide.transforms import ComposeFlowTransform

__all__ = ["Flow"]

#: Largest dimension at which sticking the landing replaces a sequential inverse by the
#: Jacobian of one batched forward pass (:meth:`Flow.path_log_prob`): its memory grows as
#: :math:`D^2` per draw and its solve as :math:`D^3`.
JACOBIAN_PATH_MAX_DIM = 64


class Flow(nn.Module):
    r"""Standard normal base noise pushed through ``layers`` in order.

    ``flow(context)`` returns a :class:`FlowDistribution` with batch shape
    ``context.shape[:-1]`` (``()`` when unconditional); ``flow.transform(context)``
    returns the composed transform. Conditional layers receive the context; the others
    (permutations, linear and elementwise layers) do not need it.

    Arguments:
        layers: Flow layers, all of the same ``dim``; the conditional ones must share
            one ``context_dim``.

    Example:
        >>> from flowguide.flows import Flow, Planar
        >>> flow = Flow([Planar(2), Planar(2)])
        >>> flow().sample((4,)).shape
        torch.Size([4, 2])
    """

    def __init__(self, layers: Sequence[FlowLayer]) -> None:
        super().__init__()
        layers = list(layers)
        if not layers or not all(isinstance(layer, FlowLayer) for layer in layers):
            raise TypeError("layers must be a non-empty sequence of FlowLayer modules")
        dims = {layer.dim for layer in layers}
        if len(dims) != 1:
            raise ValueError(f"all layers must have the same dim, got dims {sorted(dims)}")
        contexts = {layer.context_dim for layer in layers} - {None}
        if len(contexts) > 1:
            raise ValueError(f"conditional layers disagree on context_dim: {sorted(contexts)}")
        self.dim = dims.pop()
        self.context_dim = contexts.pop() if contexts else None
        self.layers = nn.ModuleList(layers)
        self.register_buffer("base_loc", torch.zeros(self.dim))
        self.register_buffer("base_scale", torch.ones(self.dim))

    def transform(self, context: Tensor | None = None) -> ComposeFlowTransform:
        """The composed transform from base noise to the latent, given ``context``."""
        context = check_context(context, self.context_dim, "Flow")
        parts = [layer(context if layer.context_dim else None) for layer in self.layers]
        return ComposeFlowTransform(parts)

    def base(self, batch_shape: tuple[int, ...] = ()) -> dist.TorchDistribution:
        """The standard normal base distribution with the given batch shape."""
        normal = dist.Normal(self.base_loc, self.base_scale)
        return normal.expand(torch.Size(batch_shape) + normal.batch_shape).to_event(1)

    #: Largest dimension for the Jacobian path of :meth:`path_log_prob` (0: always the inverse).
    jacobian_path_max_dim: int = JACOBIAN_PATH_MAX_DIM

    @property
    def sequential_inverse(self) -> bool:
        """Whether any layer's inverse takes more than one pass."""
        return any(layer.sequential_inverse for layer in self.layers)

    def forward(self, context: Tensor | None = None, *, stl: bool = False) -> FlowDistribution:
        r"""The flow's distribution given ``context``.

        Arguments:
            context: Context rows of shape ``(..., context_dim)``, or ``None``.
            stl: Sticking the landing (Roeder, Wu & Duvenaud, 2017). When scoring its
                own reparameterized sample, the distribution then differentiates
                :math:`\log q_{\bar\theta}(z_\theta)` with :math:`\bar\theta` the
                parameters held fixed: the score term
                :math:`\partial_\theta \log q_\theta(z)`, zero in expectation, is
                dropped, so the gradient's variance vanishes as :math:`q \to p`.
                Unbiased for the ELBO, biased for importance-weighted objectives. Its
                cost is :meth:`path_log_prob`'s.
        """
        transform = self.transform(context)
        batch_shape = torch.Size() if context is None else context.shape[:-1]
        path = None
        if stl:  # the context is a parameter of q too (an encoder's output): held fixed as well
            path = functools.partial(self.path_log_prob, None if context is None else context.detach())
        return FlowDistribution(self.base(batch_shape), transform, path_log_prob=path)

    def path_log_prob(self, context: Tensor | None, value: Tensor, noise: Tensor) -> Tensor:
        r"""A surrogate of :math:`\log q_{\bar\theta}(z)` for sticking the landing: its
        gradient reaches ``value`` only, and equals :math:`\nabla_z \log q_{\bar\theta}(z)`
        at the sample :math:`z = f(u)` drawn from ``noise`` :math:`u`.

        Where the inverse takes one pass, this is :math:`\log q_{\bar\theta}(z)` through the
        inverse. Where it is sequential (autoregressive, planar) and :math:`D \le`
        :attr:`jacobian_path_max_dim` (:data:`JACOBIAN_PATH_MAX_DIM`), the inverse is
        skipped: by the change of variables,

        .. math::
            \nabla_z \log q(z) = J_f(u)^{-\top}\, \nabla_u \big[\log p_u(u)
            - \log|\det J_f(u)|\big],

        and one forward pass over :math:`D + 1` copies of :math:`u` gives the rows of
        :math:`J_f(u)` and the bracket's gradient by a single backward pass; a
        :math:`D \times D` solve per draw does the rest. The surrogate is
        :math:`s^\top z` with :math:`s` that score held fixed: the same gradient as the
        inverse gives, exactly (``benchmarks/real_models.py --part stl`` measures the cost).
        Under ``torch.jit`` tracing (``JitTrace_ELBO``) the inverse is used.

        Example:
            >>> import torch
            >>> from flowguide.flows import iaf
            >>> flow = iaf(3).double()
            >>> u = torch.randn(5, 3, dtype=torch.float64)
            >>> z = flow.transform(None)(u).detach().requires_grad_(True)
            >>> jacobian_path = torch.autograd.grad(flow.path_log_prob(None, z, u).sum(), z)[0]
            >>> inverse_path = torch.autograd.grad(flow().log_prob(z).sum(), z)[0]
            >>> torch.allclose(jacobian_path, inverse_path)
            True
        """
        if (
            not self.sequential_inverse
            or self.dim > self.jacobian_path_max_dim
            or not torch.is_grad_enabled()
            or torch.jit.is_tracing()  # a traced graph cannot hold the inner autograd.grad
        ):
            return self._detached_log_prob(context, value)
        score = self._score(context, noise.detach())
        return (score * value).sum(-1)

    def _detached_log_prob(self, context: Tensor | None, value: Tensor) -> Tensor:
        r""":math:`\log q(z)` by the inverse, with gradients to ``value`` only."""

        with detached_parameters(self):
            u, ladj = self.transform(context).inv_and_ladj(value)
            return self.base().log_prob(u) + ladj

    def _score(self, context: Tensor | None, u: Tensor) -> Tensor:
        r""":math:`\nabla_z \log q(z)` at :math:`z = f(u)`, detached, shape of ``u``."""
        dim, batch = self.dim, u.shape[:-1]
        copies = u.reshape(1, -1, dim).expand(dim + 1, -1, dim).clone().requires_grad_(True)
        if context is not None:
            context = context.expand(*batch, context.shape[-1]).reshape(1, -1, context.shape[-1])
            context = context.expand(dim + 1, -1, -1)
        with detached_parameters(self), torch.enable_grad():
            z, ladj = self.transform(context).call_and_ladj(copies)
            rows = torch.diagonal(z[:dim], dim1=0, dim2=2).sum()  # copy k carries z_k
            bracket = (self.base().log_prob(copies[dim]) - ladj[dim]).sum()
            (grads,) = torch.autograd.grad(rows + bracket, copies)
        jacobian = grads[:dim].transpose(0, 1)  # (draws, k, j) = dz_k / du_j
        score = torch.linalg.solve(jacobian.transpose(-1, -2), grads[dim].unsqueeze(-1)).squeeze(-1)
        return score.reshape(*batch, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}"


@contextlib.contextmanager
def detached_parameters(module: nn.Module | None) -> Iterator[list[Tensor]]:
    """Within the block, every parameter of ``module`` reads as its detached value; yields
    the detached tensors.

    ``torch.func.functional_call`` does the same but refuses to run under
    ``torch.jit.trace`` (``JitTrace_ELBO``); this swap is traced as plain ``detach`` ops.
    """
    saved = (
        []
        if module is None
        else [(m, name, p) for m in module.modules() for name, p in m._parameters.items() if p is not None]
    )
    try:
        for m, name, p in saved:
            m._parameters[name] = p.detach()
        yield [m._parameters[name] for m, name, _ in saved]
    finally:
        for m, name, p in saved:
            m._parameters[name] = p
