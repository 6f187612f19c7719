r"""Vectorized particles for models written for one draw.

A model such as ``y ~ Normal(X @ w, s)`` with a latent ``w`` of shape ``(D,)`` does not
broadcast over a leading particle dimension (``X @ w`` of a ``(M, 1, D)`` batch fails), so
Pyro's vectorized ELBO cannot run it, and drawing the :math:`M` particles one after
another costs :math:`M` model and guide passes. :class:`VmapParticlesELBO` draws all
:math:`M` particles from the guide in one vectorized pass (flow guides vectorize) and
evaluates the model's log joint once per particle under :func:`torch.func.vmap`, which
hands the model one unbatched draw at a time while the work runs batched:

.. math::
    \widehat{\mathcal L} = \frac1M \sum_{m=1}^M \big[\log p(x, z_m) - \log q(z_m)\big],
    \qquad z_{1:M} \sim q \text{ in one pass},

the same estimator as ``Trace_ELBO(num_particles=M)``. For a mixture guide
(:class:`~flowguide.infer.MixtureGuide`) it is the stratified ELBO of
:class:`~flowguide.infer.StratifiedELBO`, :math:`M` draws per component.

``vmap`` needs a model without data-dependent Python control flow on its latents and
without in-place random draws (Pyro's argument validation is such control flow, so it is
off inside the mapped call; the guide's draws are validated as usual). Where the model
does not allow it, the call raises and the caller falls back (:class:`~flowguide.training.Trainer`).

References:
    R. Zou, H. He et al. functorch: JAX-like composable function transforms for PyTorch,
    2021 (``torch.func.vmap``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.subsample_messenger import _Subsample
from pyro.poutine.trace_struct import Trace
from torch import Tensor

from flowguide.infer.stratified import (
    MixtureGuide,
    StratifiedELBO,
    _check_reparameterized,
    _per_particle,
    _strata,
    _stratified_loss,
)

__all__ = ["VmapParticlesELBO"]

_PARTICLES = "num_particles_vectorized"


class VmapParticlesELBO(StratifiedELBO):
    r"""``Trace_ELBO`` (stratified for mixture guides) with ``num_particles`` drawn from the
    guide in one vectorized pass and the model's log joint mapped over them with
    :func:`torch.func.vmap`: for models that do not broadcast over a particle dimension.

    Takes ``Trace_ELBO``'s options; ``vectorize_particles`` is always on. Every guide site
    must be reparameterized (the estimator has no score-function term).

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> from flowguide import AutoIAF
        >>> X = torch.randn(20, 3)
        >>> def model():  # written for one draw of w
        ...     w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        ...     pyro.sample("y", dist.Normal(X @ w, 1.0).to_event(1), obs=torch.zeros(20))
        >>> loss = VmapParticlesELBO(num_particles=8).differentiable_loss(model, AutoIAF(model))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**{**options, "vectorize_particles": True})

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Tensor:
        if self.max_plate_nesting == float("inf"):
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        dim = self.max_plate_nesting  # counts the particles' plate, at its leftmost dim
        components = guide.num_components if isinstance(guide, MixtureGuide) else 1
        size = components * self.num_particles
        stratum = (
            guide.stratum(_strata(components, self.num_particles, dim)) if components > 1 else nullcontext()
        )
        with pyro.plate(_PARTICLES, size, dim=-dim), stratum:
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        guide_trace.compute_log_prob()
        component = guide.component_site if components > 1 else None
        _check_reparameterized(guide_trace, component or "the component")
        log_w = _mapped_log_joint(model, guide_trace, dim, size, args, kwargs) - _per_particle(
            guide_trace, dim
        )
        if component is None:
            return -log_w.mean()
        return _stratified_loss(guide_trace, component, log_w, self.num_particles)


def _mapped_log_joint(
    model: Callable, guide_trace: Trace, dim: int, size: int, args: tuple, kwargs: dict
) -> Tensor:
    """``log p(x, z_m)`` for each of the ``size`` particles of ``guide_trace``, the model
    run on one unbatched draw at a time under ``vmap``."""
    batched, fixed = {}, {}
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if isinstance(site["fn"], _Subsample):  # a plate's subsample indices: shared
            fixed[name] = site["value"]
            continue
        frames = [f for f in site["cond_indep_stack"] if f.name != _PARTICLES]
        value = site["value"]
        own = max((-f.dim for f in frames if f.dim is not None), default=0) + site["fn"].event_dim
        batch = value.shape[: value.dim() - own]
        if math.prod(batch) != size:
            raise ValueError(
                f"VmapParticlesELBO: guide site '{name}' has batch shape {tuple(batch)} around its "
                f"own {tuple(value.shape[value.dim() - own :])}, not {size} particles"
            )
        batched[name] = value.reshape(size, *value.shape[value.dim() - own :])

    def log_joint(values: dict[str, Tensor]) -> Tensor:
        conditioned = poutine.condition(model, data={**values, **fixed})
        with pyro.validation_enabled(False):
            return poutine.trace(conditioned).get_trace(*args, **kwargs).log_prob_sum()

    return torch.func.vmap(log_joint, randomness="same")(batched)  # a model-drawn subsample: shared
