"""A guide's posterior as an ``arviz.InferenceData``, and a NUTS reference to score it against.

``to_inference_data`` gives ArviZ one chain of guide draws per latent site, with the
model's plates as named dimensions, the log importance weights in ``sample_stats`` and
the observed sites in ``observed_data``; ``az.summary``, ``az.plot_posterior`` and
``az.plot_pair`` work on it. ``reference_posterior`` runs Pyro's NUTS for a gold
standard and ``posterior_errors`` measures a guide's means and standard deviations
against it in units of the reference standard deviation.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from flowguide.diagnostics.importance import importance_sample

__all__ = ["to_inference_data", "site_dims", "reference_posterior", "posterior_errors"]


def site_dims(model: Callable, *args, **kwargs) -> dict[str, list[str]]:
    """ArviZ dimension names of every sample site of ``model``: the plate's name for each
    plate dimension, ``<site>_dim_<i>`` for the others.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     with pyro.plate("school", 8):
        ...         pyro.sample("theta", dist.Normal(0.0, 1.0).expand([8, 2]).to_event(1))
        >>> site_dims(model)["theta"]
        ['school', 'theta_dim_1']
    """
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    dims = {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        shape, batch = site["value"].shape, len(site["fn"].batch_shape)
        plates = {f.dim: f.name for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None}
        dims[name] = [
            plates.get(i - batch, f"{name}_dim_{i}") if i < batch else f"{name}_dim_{i}"
            for i in range(len(shape))
        ]
    return dims


def _observed(model: Callable, *args, **kwargs) -> dict[str, Tensor]:
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    return {n: s["value"] for n, s in trace.nodes.items() if s["type"] == "sample" and s["is_observed"]}


def to_inference_data(
    model: Callable, guide: Callable, *args, num_samples: int = 1000, batch_size: int = 1000, **kwargs
):
    """Draw ``num_samples`` from ``guide`` into an ``arviz.InferenceData``.

    Arguments:
        model: The Pyro model (for the log weights, plate names and observed data).
        guide: A trained guide of ``model``.
        *args: Arguments of the model and guide.
        num_samples: Guide draws (one chain).
        batch_size: Draws per vectorized pass.
        **kwargs: Keyword arguments of the model and guide.

    Returns:
        InferenceData with ``posterior`` (chain 1, draw ``num_samples``, then each site's
        dimensions), ``sample_stats.log_importance_weight`` and, when the model observes
        anything, ``observed_data``.
    """
    import arviz as az

    draws = importance_sample(model, guide, *args, num_samples=num_samples, batch_size=batch_size, **kwargs)
    posterior = {name: _numpy(v).reshape(1, *v.shape) for name, v in draws.samples.items()}
    stats = {"log_importance_weight": _numpy(draws.log_weights).reshape(1, -1)}
    observed = {name: _numpy(v) for name, v in _observed(model, *args, **kwargs).items()}
    dims = {n: d for n, d in site_dims(model, *args, **kwargs).items() if n in posterior or n in observed}
    groups = {"posterior": posterior, "sample_stats": stats}
    if observed:
        groups["observed_data"] = observed
    if int(az.__version__.split(".")[0]) < 1:
        return az.from_dict(**groups, dims=dims)
    return az.from_dict(groups, dims=dims)  # ArviZ 1.x: a dict of groups, returns a DataTree


def reference_posterior(
    model: Callable,
    *args,
    num_samples: int = 1000,
    warmup_steps: int | None = None,
    num_chains: int = 1,
    seed: int = 0,
    progress: bool = False,
    **kwargs,
) -> dict[str, Tensor]:
    """Posterior draws of ``model`` by Pyro's NUTS: chains run one after another with seeds
    ``seed, seed + 1, ...`` and are pooled, shape ``(num_chains * num_samples, *site_shape)``."""
    if num_samples < 1 or num_chains < 1:
        raise ValueError(f"num_samples and num_chains must be >= 1, got {num_samples} and {num_chains}")
    chains = []
    for chain in range(num_chains):
        pyro.set_rng_seed(seed + chain)
        mcmc = MCMC(
            NUTS(model),
            num_samples=num_samples,
            warmup_steps=warmup_steps or num_samples,
            disable_progbar=not progress,
        )
        mcmc.run(*args, **kwargs)
        chains.append(mcmc.get_samples())
    return {name: torch.cat([c[name] for c in chains]) for name in chains[0]}


def posterior_errors(
    reference: dict[str, Tensor], samples: dict[str, Tensor]
) -> dict[str, tuple[float, float]]:
    """Largest error over each site's entries of the mean and of the standard deviation of
    ``samples`` against ``reference``, in reference standard deviations.

    Example:
        >>> import torch
        >>> ref = {"x": torch.tensor([-1.0, 1.0] * 50)}  # mean 0, sd about 1
        >>> mean_err, std_err = posterior_errors(ref, {"x": ref["x"] + 0.5})["x"]
        >>> round(mean_err, 2), round(std_err, 2)
        (0.5, 0.0)
    """
    missing = sorted(set(reference) - set(samples))
    if missing:
        raise ValueError(f"samples lack the reference sites {missing}")
    out = {}
    for name, ref in reference.items():
        ref, q = ref.double(), samples[name].double().to(ref.device)
        scale = ref.std(0).clamp_min(1e-12)
        out[name] = (
            float(((q.mean(0) - ref.mean(0)).abs() / scale).max()),
            float(((q.std(0) - ref.std(0)).abs() / scale).max()),
        )
    return out


def _numpy(x: Tensor):
    return x.detach().cpu().double().numpy()
