r"""The stratified ELBO of a mixture guide: every component in turn, weighted in closed form.

For a guide :math:`q(z) = \sum_k w_k q_k(z)` whose component is a site of its own,

.. math::
    \mathcal L = \sum_{k=1}^K w_k\, \mathbb E_{z \sim q_k}\big[\log p(x, z) - \log q(z)\big]
    \approx \sum_k w_k \frac1M \sum_{m=1}^M \big(\log p(x, z_{km}) - \log q(z_{km})\big),
    \qquad z_{km} \sim q_k,

is the ELBO itself (stratified sampling over the component). Its Monte Carlo gradient is
unbiased and has no score-function term: within each component the draws are
reparameterized, and the weights :math:`w_k` multiply the estimates in closed form.
Pyro's ``Trace_ELBO`` on the same guide samples the component and is unbiased through
the component's score term, with more variance; this one costs :math:`K` guide and model
passes of :math:`M` particles per step.

References:
    W. R. Morningstar, S. M. Vikram, C. Ham, A. Gallagher, J. V. Dillon. Automatic
    Differentiation Variational Inference with Mixtures. AISTATS 2021, arXiv:2003.01687.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import pyro
import torch
from pyro.infer import Trace_ELBO
from pyro.poutine.trace_struct import Trace
from torch import Tensor

__all__ = ["MixtureGuide", "StratifiedELBO"]


@runtime_checkable
class MixtureGuide(Protocol):
    """A guide whose latent is a mixture with the component as a site of its own.

    Attributes:
        num_components: :math:`K` (1: no mixture).
        component_site: The name of the component's sample site.
    """

    num_components: int
    component_site: str

    def stratum(self, component: int | Tensor) -> AbstractContextManager[None]:
        """Within the block, the guide's component site is observed at ``component`` (an
        index, or a tensor of them shaped as the site's batch)."""


class StratifiedELBO(Trace_ELBO):
    r"""``Trace_ELBO`` that, for a :class:`MixtureGuide` of :math:`K > 1` components, sums
    the ELBO over the components (see the module docstring); ``num_particles`` are the
    draws :math:`M` per component. For any other guide it is ``Trace_ELBO``, value and
    gradient. Takes ``Trace_ELBO``'s options.

    Example:
        >>> import math, pyro, pyro.distributions as dist, torch
        >>> from flowguide import AutoIAF
        >>> locs, wide = torch.tensor([-4.0, 4.0]), dist.Normal(0.0, 10.0)
        >>> def model():  # p(z) = N(z; -4, 1) + N(z; 4, 1), so log Z = log 2
        ...     z = pyro.sample("z", wide)
        ...     log_p = dist.Normal(locs, 1.0).log_prob(z.unsqueeze(-1)).logsumexp(-1)
        ...     pyro.factor("modes", log_p - wide.log_prob(z))
        >>> guide = AutoIAF(model).setup()
        >>> guide.num_components
        2
        >>> loss = StratifiedELBO(num_particles=64, vectorize_particles=True).loss(model, guide)
        >>> abs(loss + math.log(2)) < 0.05  # the Laplace mixture is the posterior: -ELBO = -log Z
        True
    """

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Tensor:
        components = guide.num_components if isinstance(guide, MixtureGuide) else 1
        if components == 1:
            return super().differentiable_loss(model, guide, *args, **kwargs)
        if self.vectorize_particles and self.num_particles > 1:
            return self._vectorized_loss(model, guide, components, args, kwargs)
        loss = 0.0
        for k in range(components):
            with guide.stratum(k):
                for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
                    _check_reparameterized(guide_trace, guide.component_site)
                    weight = guide_trace.nodes[guide.component_site]["log_prob"].exp()
                    elbo = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
                    loss = loss - weight * elbo / self.num_particles
        return loss

    def _vectorized_loss(self, model: Callable, guide: MixtureGuide, components: int, args, kwargs) -> Tensor:
        """All :math:`K M` draws in one vectorized pass, :math:`M` per component."""
        if self.max_plate_nesting == float("inf"):
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        # Pyro counts the particles' plate in max_plate_nesting, at its leftmost dim
        dim, size = self.max_plate_nesting, components * self.num_particles

        def plated(fn: Callable) -> Callable:
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                with pyro.plate("num_particles_vectorized", size, dim=-dim):
                    return fn(*args, **kwargs)

            return wrapped

        with guide.stratum(_strata(components, self.num_particles, dim)):
            model_trace, guide_trace = self._get_trace(plated(model), plated(guide), args, kwargs)
        _check_reparameterized(guide_trace, guide.component_site)
        log_w = _per_particle(model_trace, dim) - _per_particle(guide_trace, dim)
        return _stratified_loss(guide_trace, guide.component_site, log_w, self.num_particles)

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        components = guide.num_components if isinstance(guide, MixtureGuide) else 1
        if components == 1:
            return super().loss_and_grads(model, guide, *args, **kwargs)
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return float(loss.detach())


def _strata(components: int, num_particles: int, dim: int) -> Tensor:
    """Each vectorized particle's component, ``num_particles`` per component, shaped for a
    particle plate at ``-dim``."""
    strata = torch.arange(components).repeat_interleave(num_particles)
    return strata.reshape((components * num_particles,) + (1,) * (dim - 1))


def _stratified_loss(guide_trace: Trace, component_site: str, log_w: Tensor, num_particles: int) -> Tensor:
    """Minus the stratified ELBO: the per-particle ``log_w`` weighted by the component
    weights, averaged within each component."""
    weight = guide_trace.nodes[component_site]["log_prob"].reshape(-1).exp()
    return -(weight * log_w).sum() / num_particles


def _per_particle(trace: Trace, dim: int) -> Tensor:
    """Each particle's sum of the sample sites' log-densities, the particles at ``-dim``."""
    total = 0.0
    for site in trace.nodes.values():
        if site["type"] == "sample":
            log_prob = site["log_prob"]
            if log_prob.dim() < dim:  # not batched over the particles: every particle's term
                total = total + log_prob.sum()
            else:
                total = total + log_prob.movedim(-dim, 0).reshape(log_prob.shape[-dim], -1).sum(-1)
    return total


def _check_reparameterized(guide_trace, component_site: str) -> None:
    """The stratified gradient has no score terms: refuse other non-reparameterized sites."""
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"] and not site["fn"].has_rsample:
            raise ValueError(
                f"StratifiedELBO stratifies '{component_site}' only; guide site '{name}' is not "
                "reparameterized either. Use Trace_ELBO for such guides"
            )
