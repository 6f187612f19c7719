r"""Pareto-smoothed importance sampling: "Yes, but did it work?" for a guide.

Fitting a generalized Pareto distribution to the largest importance weights
:math:`w_s = p(x, z_s) / q(z_s)` estimates the shape :math:`\hat k` of their tail: the
weights have :math:`1/\hat k` finite moments. Yao et al. (2018) read it as a verdict on
the guide: :math:`\hat k < 0.5` good (importance sampling and the guide's posterior
expectations are reliable), :math:`0.5 \le \hat k \le 0.7` usable with care, and
:math:`\hat k > 0.7` unreliable (the guide misses mass the posterior has). The smoothed
weights also give PSIS-corrected posterior expectations and an effective sample size
:math:`1 / \sum_s \tilde w_s^2` of the normalized smoothed weights.

The Pareto fit is ArviZ's: ``arviz.psislw`` in ArviZ 0.x, ``arviz_stats`` in 1.x.

References:
    Yes, but Did It Work?: Evaluating Variational Inference (Yao, Vehtari, Simpson and
    Gelman, 2018), arXiv:1802.02538.
    Pareto Smoothed Importance Sampling (Vehtari, Simpson, Gelman, Yao and Gabry, 2024),
    arXiv:1507.02646.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["K_GOOD", "K_OK", "PSISResult", "psis_diagnostic", "psis_mean"]

#: :math:`\hat k` below this: good.
K_GOOD = 0.5
#: :math:`\hat k` up to this: usable; above it: unreliable.
K_OK = 0.7


@dataclass(frozen=True)
class PSISResult:
    """Outcome of Pareto smoothing a set of log importance weights.

    Attributes:
        khat: Estimated Pareto shape of the weights' tail.
        ess: Effective sample size of the smoothed, normalized weights.
        log_weights: Smoothed log weights, normalized to log-sum-exp 0.
    """

    khat: float
    ess: float
    log_weights: Tensor

    @property
    def verdict(self) -> str:
        """``"good"`` (k < 0.5), ``"ok"`` (0.5 to 0.7) or ``"unreliable"`` (k > 0.7)."""
        if self.khat < K_GOOD:
            return "good"
        return "ok" if self.khat <= K_OK else "unreliable"


def psis_diagnostic(log_weights: Tensor) -> PSISResult:
    r"""Pareto-smooth ``log_weights`` (shape ``(S,)``) and return :math:`\hat k` and the ESS.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> result = psis_diagnostic(0.1 * torch.randn(2000))  # nearly equal weights
        >>> result.verdict, result.ess > 1900
        ('good', True)
    """
    if log_weights.dim() != 1 or log_weights.numel() < 10:
        raise ValueError(
            f"log_weights must be a vector of at least 10 draws, got shape {tuple(log_weights.shape)}"
        )
    if not torch.isfinite(log_weights).any():
        raise ValueError("log_weights has no finite entry: the guide's draws all have zero model density")
    smoothed, khat = _psislw(log_weights.detach().double().cpu().numpy())
    log_w = torch.as_tensor(smoothed, dtype=torch.float64)
    log_w = log_w - torch.logsumexp(log_w, 0)
    ess = float(1.0 / (2 * log_w).exp().sum())
    return PSISResult(float(khat), ess, log_w.to(log_weights.device))


def psis_mean(samples: dict[str, Tensor], result: PSISResult) -> dict[str, Tensor]:
    """PSIS-corrected posterior means: each site's draws weighted by the smoothed weights.

    Example:
        >>> import torch
        >>> draws = {"x": torch.tensor([0.0, 1.0, 2.0, 3.0] * 5)}
        >>> result = PSISResult(0.0, 20.0, torch.log(torch.full((20,), 1 / 20)))
        >>> float(psis_mean(draws, result)["x"])  # equal weights: the plain mean
        1.5
    """
    out = {}
    for name, value in samples.items():
        w = result.log_weights.exp().to(value.dtype).reshape(-1, *([1] * (value.dim() - 1)))
        out[name] = (w * value).sum(0)
    return out


def _psislw(log_w: np.ndarray) -> tuple[np.ndarray, float]:
    """ArviZ's Pareto smoothing under either major version's API."""
    import arviz as az

    if int(az.__version__.split(".")[0]) < 1:
        smoothed, khat = az.psislw(log_w, reff=1.0)
    else:  # ArviZ 1.x: arviz_stats takes log-likelihood-like input and negates it
        from arviz_stats.base import array_stats

        smoothed, khat = array_stats.psislw(-log_w, r_eff=1.0)
    return np.asarray(smoothed), float(np.asarray(khat))
