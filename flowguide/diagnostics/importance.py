r"""Importance weights of a guide against its model, and the bounds built from them.

For draws :math:`z_s \sim q` the log importance weights are
:math:`\log w_s = \log p(x, z_s) - \log q(z_s)`. Their mean is the ELBO; the log of the
mean of :math:`K` of them is the importance-weighted bound

.. math::
    \mathcal{L}_K = \mathbb{E}\Big[\log \frac{1}{K} \sum_{s=1}^K w_s\Big],
    \qquad \mathrm{ELBO} = \mathcal{L}_1 \le \mathcal{L}_K \le \mathcal{L}_{K+1} \le \log p(x),

which tightens to :math:`\log p(x)` as :math:`K \to \infty` (Burda, Grosse & Salakhutdinov
2016). Everything here draws in batches, so memory stays bounded for any number of draws.

References:
    Importance Weighted Autoencoders (Burda, Grosse and Salakhutdinov, 2016), arXiv:1509.00519.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.infer.importance import vectorized_importance_weights
from pyro.poutine.util import site_is_subsample
from torch import Tensor

__all__ = [
    "Estimate",
    "ImportanceSamples",
    "importance_sample",
    "log_importance_weights",
    "elbo",
    "iwae_bound",
    "log_mean_exp_estimate",
    "max_plate_nesting",
    "mean_estimate",
]


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate and its standard error."""

    value: float
    stderr: float

    def __str__(self) -> str:
        return f"{self.value:.4f} ± {self.stderr:.4f}"


@dataclass
class ImportanceSamples:
    """Guide draws with their log importance weights.

    Attributes:
        log_weights: :math:`\\log p(x, z_s) - \\log q(z_s)`, shape ``(num_samples,)``.
        samples: Latent site name to its draws, shape ``(num_samples, *site_shape)``,
            in the constrained space of the model.
    """

    log_weights: Tensor
    samples: dict[str, Tensor]


def max_plate_nesting(model: Callable, *args, **kwargs) -> int:
    """Deepest plate nesting of any sample site of one trace of ``model``."""
    with poutine.block():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    return max((len(s["cond_indep_stack"]) for s in trace.nodes.values() if s["type"] == "sample"), default=0)


def importance_sample(
    model: Callable, guide: Callable, *args, num_samples: int = 1000, batch_size: int = 1000, **kwargs
) -> ImportanceSamples:
    """Draw ``num_samples`` latent values from ``guide`` with their log importance weights.

    Arguments:
        model: The Pyro model.
        guide: A guide for ``model`` (any Pyro guide that can be vectorized over draws).
        *args: Arguments of the model and guide.
        num_samples: Number of guide draws.
        batch_size: Draws per vectorized pass; bounds the memory.
        **kwargs: Keyword arguments of the model and guide.

    Returns:
        The draws and their log weights, on the model's device, without gradients.
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples} and {batch_size}")
    nesting = max_plate_nesting(model, *args, **kwargs)
    weights, draws = [], []
    with torch.no_grad():
        shapes = _latent_shapes(guide, *args, **kwargs)
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            log_w, _, guide_trace = vectorized_importance_weights(
                model, guide, *args, num_samples=n, max_plate_nesting=nesting, **kwargs
            )
            weights.append(log_w.reshape(n))  # a single draw comes back 0-dimensional
            draws.append(_latents(guide_trace, shapes, n))
    samples = {name: torch.cat([d[name] for d in draws]) for name in draws[0]}
    return ImportanceSamples(torch.cat(weights), samples)


def _latent_shapes(guide: Callable, *args, **kwargs) -> dict[str, tuple[int, ...]]:
    """Shape of one draw of each latent site, from one unvectorized trace of the guide."""
    with poutine.block():
        trace = poutine.trace(guide).get_trace(*args, **kwargs)
    return {
        name: tuple(site["value"].shape)
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not site["infer"].get("is_auxiliary")
        and not site_is_subsample(site)
    }


def _latents(guide_trace, shapes: dict[str, tuple[int, ...]], n: int) -> dict[str, Tensor]:
    """Latent draws of a vectorized guide trace as ``(n, *site_shape)``: the draws dimension
    sits left of the plates, with size-1 padding between them."""
    return {name: guide_trace.nodes[name]["value"].reshape(n, *shape) for name, shape in shapes.items()}


def log_importance_weights(
    model: Callable, guide: Callable, *args, num_samples: int = 1000, batch_size: int = 1000, **kwargs
) -> Tensor:
    r"""Log importance weights :math:`\log p(x, z_s) - \log q(z_s)` of ``num_samples`` draws."""
    return importance_sample(
        model, guide, *args, num_samples=num_samples, batch_size=batch_size, **kwargs
    ).log_weights


def elbo(
    model: Callable, guide: Callable, *args, num_samples: int = 1000, batch_size: int = 1000, **kwargs
) -> Estimate:
    r"""Monte Carlo ELBO :math:`\frac{1}{S}\sum_s \log w_s` with its standard error.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> def guide():  # q = p, so every log weight is 0
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> elbo(model, guide, num_samples=100).value
        0.0
    """
    log_w = log_importance_weights(
        model, guide, *args, num_samples=num_samples, batch_size=batch_size, **kwargs
    )
    return mean_estimate(log_w.double())


def iwae_bound(
    model: Callable, guide: Callable, *args, num_samples: int = 1000, batch_size: int = 1000, **kwargs
) -> Estimate:
    r"""Importance-weighted bound :math:`\log \frac{1}{K} \sum_{s=1}^K w_s` with ``K = num_samples``.

    The standard error is the delta-method one of the log of a mean,
    :math:`\sqrt{\widehat{\mathrm{Var}}(w / \bar w) / K}`.
    """
    log_w = log_importance_weights(
        model, guide, *args, num_samples=num_samples, batch_size=batch_size, **kwargs
    )
    return log_mean_exp_estimate(log_w)


def log_mean_exp_estimate(log_w: Tensor) -> Estimate:
    """Log of the mean of ``exp(log_w)``, stably, with its delta-method standard error.

    Example:
        >>> import math, torch
        >>> estimate = log_mean_exp_estimate(torch.tensor([0.0, math.log(3.0)]))
        >>> round(estimate.value, 6) == round(math.log(2.0), 6)  # log((1 + 3) / 2)
        True
    """
    log_w = log_w.double()
    k = log_w.numel()
    value = torch.logsumexp(log_w, 0) - math.log(k)
    ratio = (log_w - value).exp()
    stderr = float(ratio.std() / math.sqrt(k)) if k > 1 else math.nan
    return Estimate(float(value), stderr)


def mean_estimate(x: Tensor) -> Estimate:
    """The mean of ``x`` with its standard error :math:`s / \\sqrt{n}`.

    Example:
        >>> import torch
        >>> print(mean_estimate(torch.tensor([1.0, 2.0, 3.0])))
        2.0000 ± 0.5774
    """
    k = x.numel()
    return Estimate(float(x.mean()), float(x.std() / math.sqrt(k)) if k > 1 else math.nan)
