r"""A mixture of multivariate Bernoullis fitted by EM: the reference likelihood for binary images.

:math:`p(x) = \sum_k \pi_k \prod_d \rho_{kd}^{x_d} (1 - \rho_{kd})^{1 - x_d}`, fitted by
expectation-maximization with a symmetric Beta(1 + a, 1 + a) prior on every
:math:`\rho_{kd}` (the M-step adds ``a`` pseudo-counts) so no probability reaches 0 or 1.

References:
    Pattern Recognition and Machine Learning (Bishop, 2006), section 9.3.3.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["BernoulliMixture", "fit_bernoulli_mixture"]


class BernoulliMixture:
    """A fitted mixture: ``log_weights`` (K,) and ``probs`` (K, D)."""

    def __init__(self, log_weights: Tensor, probs: Tensor) -> None:
        self.log_weights, self.probs = log_weights, probs

    def component_log_prob(self, x: Tensor) -> Tensor:
        """log p(x | k) for every row and component, shape (N, K)."""
        x = x.to(self.probs.dtype)
        return x @ self.probs.log().T + (1 - x) @ torch.log1p(-self.probs).T

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) per row."""
        return torch.logsumexp(self.log_weights + self.component_log_prob(x), -1)


def fit_bernoulli_mixture(
    x: Tensor, components: int = 100, iterations: int = 200, pseudo_count: float = 0.5, seed: int = 0
) -> BernoulliMixture:
    """EM for a mixture of ``components`` Bernoullis on binary rows ``x`` (N, D).

    Example:
        >>> x = torch.cat([torch.zeros(50, 4), torch.ones(50, 4)])
        >>> mix = fit_bernoulli_mixture(x, components=2, iterations=20)
        >>> round(float(mix.log_prob(x).mean()), 1) > -1.0  # two near-deterministic modes
        True
    """
    x = x.double()
    g = torch.Generator().manual_seed(seed)
    probs = 0.25 + 0.5 * torch.rand(components, x.shape[1], generator=g, dtype=x.dtype)
    uniform = torch.full((components,), -math.log(components), dtype=x.dtype)
    mix = BernoulliMixture(uniform, probs)
    for _ in range(iterations):
        joint = mix.log_weights + mix.component_log_prob(x)
        resp = (joint - torch.logsumexp(joint, -1, keepdim=True)).exp()  # E-step, (N, K)
        counts = resp.sum(0)
        mix = BernoulliMixture(
            (counts / len(x)).clamp_min(1e-12).log(),
            (resp.T @ x + pseudo_count) / (counts.unsqueeze(-1) + 2 * pseudo_count),
        )
    return mix
