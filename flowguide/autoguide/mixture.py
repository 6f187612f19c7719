r"""A mixture of headed flows over one unconstrained vector, for posteriors with several modes.

.. math::
    q(z) = \sum_{k=1}^K w_k\, q_k(z), \qquad w = \operatorname{softmax}(\ell),
    \qquad \log q(z) = \operatorname{logsumexp}_k \big(\log w_k + \log q_k(z)\big),

each :math:`q_k` a :class:`~flowguide.autoguide.head.HeadedFlow` started at one mode of
the mode search (:mod:`~flowguide.autoguide.modes`). A draw picks its component
:math:`k \sim \text{Categorical}(w)` and is reparameterized within it. In a guide trace
the component is its own auxiliary, non-reparameterized site of log-density
:math:`\log w_k`, and the latent's site scores :math:`\log q(z) - \log w_k`, so that the
two sum to the exact :math:`\log q(z)`. Under ``Trace_ELBO`` the component's
score-function term gives the weights their gradient: Pyro weights it by the model's
log-density less the model sites' guide densities, which leaves out the auxiliary
latent's :math:`-\log q(z)`, so the latent's site adds the missing
:math:`-\log q(z)\, \nabla \log w_k` through a term of value zero, and the estimator
:math:`\nabla f + f\, \nabla \log w_k`, :math:`f = \log p(x,z) - \log q(z)`, is unbiased;
:class:`~flowguide.infer.StratifiedELBO` instead takes every component in turn,

.. math::
    \mathcal L = \sum_k w_k\, \mathbb E_{z \sim q_k}\big[\log p(x, z) - \log q(z)\big],

the same ELBO, whose gradient has no score term: each component's draws are
reparameterized and the weights enter in closed form. Scoring any point takes one
inverse pass per component.

References:
    W. R. Morningstar, S. M. Vikram, C. Ham, A. Gallagher, J. V. Dillon. Automatic
    Differentiation Variational Inference with Mixtures. AISTATS 2021, arXiv:2003.01687.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor, nn

from flowguide.autoguide.head import HeadedFlow

_EMPTY = torch.Size()

__all__ = ["ComponentDraw", "FlowMixture", "MixtureDistribution", "stratified_counts"]


def stratified_counts(weights: Tensor, total: int) -> list[int]:
    """Counts per component summing to ``total``, each the floor of ``total * w_k`` plus one
    for the largest remainders (a deterministic, proportional allocation).

    Example:
        >>> import torch
        >>> stratified_counts(torch.tensor([0.5, 0.3, 0.2]), 7)
        [4, 2, 1]
    """
    exact = weights.detach().double().cpu() * total
    counts = exact.floor().long()
    order = torch.argsort(exact - counts, descending=True)
    counts[order[: total - int(counts.sum())]] += 1
    return counts.tolist()


class FlowMixture(nn.Module):
    r"""The mixture :math:`\sum_k w_k q_k(z)` of headed flows (see the module docstring).

    Arguments:
        components: The flows :math:`q_k`, all of one dimension.
        weights: Initial weights :math:`w`, positive, shape ``(K,)`` (normalized here).

    Example:
        >>> import torch
        >>> from flowguide.autoguide.head import AffineHead, HeadedFlow
        >>> from flowguide.flows import iaf
        >>> def component(loc):
        ...     flow = HeadedFlow(iaf(1, num_flows=1, hidden_dims=[8]), AffineHead(1))
        ...     flow.head.set_start(torch.tensor([loc]), torch.eye(1))
        ...     return flow
        >>> q = FlowMixture([component(-3.0), component(3.0)], torch.tensor([0.25, 0.75]))
        >>> [round(w, 4) for w in q.weights.tolist()]
        [0.25, 0.75]
        >>> draws = q.draws(1000, seed=0)
        >>> round(float((draws > 0).double().mean()), 2)
        0.75
    """

    def __init__(self, components: Sequence[HeadedFlow], weights: Tensor) -> None:
        super().__init__()
        components = list(components)
        if not components or len({c.dim for c in components}) != 1:
            raise ValueError("FlowMixture needs one or more flows of one dimension")
        if weights.shape != (len(components),) or not (weights > 0).all():
            raise ValueError(
                f"weights must be positive, shape ({len(components)},); got {tuple(weights.shape)}"
            )
        self.components = nn.ModuleList(components)
        self.dim = components[0].dim
        self.logits = nn.Parameter((weights / weights.sum()).log().to(components[0].base_loc))

    @property
    def num_components(self) -> int:
        """:math:`K`."""
        return len(self.components)

    @property
    def weights(self) -> Tensor:
        """The mixture weights :math:`w`."""
        return self.logits.softmax(-1)

    def log_weights(self) -> Tensor:
        r""":math:`\log w`."""
        return self.logits.log_softmax(-1)

    def component_log_probs(self, z: Tensor) -> Tensor:
        r""":math:`\log q_k(z)` for every component, shape ``(*z.shape[:-1], K)``."""
        return torch.stack([component().log_prob(z) for component in self.components], -1)

    def log_prob(self, z: Tensor) -> Tensor:
        r"""Exact :math:`\log q(z)`, the logsumexp over the components."""
        return (self.log_weights() + self.component_log_probs(z)).logsumexp(-1)

    def draws(self, num_samples: int, seed: int | None = None, antithetic: bool = False) -> Tensor:
        """``(N, D)`` draws. With a ``seed`` the counts per component are proportional to the
        weights (:func:`stratified_counts`) and each component's base draws come from
        ``seed + k`` (antithetic where asked), so repeated calls agree; without, each draw
        picks its component at random."""
        if seed is None:
            picks = torch.multinomial(self.weights.detach(), num_samples, replacement=True)
            counts = torch.bincount(picks, minlength=self.num_components).tolist()
        else:
            counts = stratified_counts(self.weights, num_samples)
        parts = []
        for k, (count, component) in enumerate(zip(counts, self.components, strict=True)):
            if count:
                base = component.base_draws(count, None if seed is None else seed + k, antithetic)[:count]
                parts.append(component.transform()(base))
        return torch.cat(parts)

    def moments(self, num_samples: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation from ``num_samples`` stratified antithetic draws."""
        draws = self.draws(num_samples, seed=seed, antithetic=True)
        return draws.mean(0), draws.std(0)

    def forward(self, component: Tensor, score_term: bool = False) -> ComponentDraw:
        """The latent's distribution given each draw's component (see :class:`ComponentDraw`)."""
        return ComponentDraw(self, component, score_term)


class ComponentDraw(dist.TorchDistribution):
    r"""The latent of a :class:`FlowMixture` given its component :math:`k`: draws from
    :math:`q_k`, reparameterized, scored as :math:`\log q(z) - \log w_k` (so that, with the
    component's site :math:`\log w_k`, a trace scores the exact :math:`\log q(z)`).

    Arguments:
        mixture: The mixture.
        component: Component indices (long), whose shape is the batch shape.
        score_term: Add :math:`(\log w_k - \overline{\log w_k})\, \overline{\log q(z)}`
            to the score (value zero; bars are stop-gradients), so that ``Trace_ELBO``'s
            score-function estimator of the weights' gradient is unbiased (module docstring).
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, mixture: FlowMixture, component: Tensor, score_term: bool = False) -> None:
        self.mixture, self.component, self.score_term = mixture, component, score_term
        super().__init__(component.shape, torch.Size([mixture.dim]), validate_args=False)

    def expand(self, batch_shape: torch.Size, _instance=None) -> ComponentDraw:
        return ComponentDraw(self.mixture, self.component.expand(batch_shape), self.score_term)

    def rsample(self, sample_shape: torch.Size = _EMPTY) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        picks = self.component.expand(shape).reshape(-1)
        loc = self.mixture.components[0].base_loc
        out = loc.new_zeros(picks.numel(), self.mixture.dim)
        for k, flow in enumerate(self.mixture.components):
            rows = (picks == k).nonzero().squeeze(-1)
            if rows.numel():
                out = out.index_copy(0, rows, flow.transform()(flow.base_draws(rows.numel())))
        return out.reshape(shape + self.event_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        log_q = self.mixture.log_prob(value)
        log_w = self.mixture.log_weights()[self.component]
        if not self.score_term:
            return log_q - log_w
        return log_q - log_w.detach() + (log_w - log_w.detach()) * log_q.detach()


class MixtureDistribution(dist.TorchDistribution):
    r"""The mixture's marginal distribution of the latent: draws (not reparameterized:
    the component is discrete) and the exact :math:`\log q(z)`.

    Arguments:
        mixture: The mixture.
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, mixture: FlowMixture) -> None:
        self.mixture = mixture
        super().__init__(torch.Size(), torch.Size([mixture.dim]), validate_args=False)

    def sample(self, sample_shape: torch.Size = _EMPTY) -> Tensor:
        shape = torch.Size(sample_shape)
        with torch.no_grad():
            return self.mixture.draws(max(shape.numel(), 1)).reshape(shape + self.event_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.mixture.log_prob(value)
