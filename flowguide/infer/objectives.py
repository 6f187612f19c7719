r"""ELBO objectives whose gradients drop the score term of :math:`\log q`.

With :math:`z = f_\phi(\epsilon)` a reparameterized draw, the gradient of
:math:`\log q_\phi(z)` has a *path* part (through :math:`z`) and a *score* part
(:math:`\partial_\phi \log q_\phi(z)` at fixed :math:`z`) whose expectation is zero. Both
objectives here evaluate :math:`\log q_{\bar\phi}(z)` with the guide's parameters held
fixed (:math:`\bar\phi` = stop-gradient) while :math:`z` keeps its path, by replaying the
guide on its own draws with detached parameters:

- :class:`TraceSTL_ELBO`, sticking the landing (Roeder, Wu & Duvenaud, 2017): the ELBO
  gradient without the score part; unbiased, and its variance vanishes when
  :math:`q = p`.
- :class:`DReG_ELBO`, doubly reparameterized gradients (Tucker, Lawson, Gu & Maddison,
  2019) of the importance-weighted bound
  :math:`\mathcal L_K = \log \frac1K \sum_k w_k`: the guide's gradient
  :math:`\sum_k \tilde w_k^2\, \nabla_z \log w_k\, \partial z_k / \partial\phi` with
  :math:`\tilde w` the normalized weights, the model's the usual
  :math:`\sum_k \tilde w_k \nabla_\theta \log p_\theta(x, z_k)`.

Both work for any guide whose latent draws are reparameterized and whose parameters the
objective can hold fixed: an ``nn.Module`` guide or a method of one (flowguide's
autoguides, Pyro's ``AutoNormal`` and ``AutoMultivariateNormal``, ``FlowVAE.guide``) and
functions whose parameters are ``pyro.param`` statements. Functions that register
modules with ``pyro.module`` are refused with a ``TypeError``. Non-reparameterized
guide sites keep the ordinary estimator.

References:
    G. Roeder, Y. Wu, D. Duvenaud. Sticking the Landing: Simple, Lower-Variance Gradient
    Estimators for Variational Inference. NeurIPS 2017, arXiv:1703.09194.

    G. Tucker, D. Lawson, S. Gu, C. Maddison. Doubly Reparameterized Gradient Estimators
    for Monte Carlo Objectives. ICLR 2019, arXiv:1810.04152.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.distributions.score_parts import ScoreParts
from pyro.infer import ELBO, Trace_ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from torch import Tensor, nn

from flowguide.flows.flow import detached_parameters

__all__ = ["TraceSTL_ELBO", "DReG_ELBO", "detached_guide_log_probs"]


class _DetachParams(Messenger):
    """Every ``pyro.param`` statement inside returns its value detached.

    ``pyro.module`` writes the values it gets back into the module. That is harmless for
    modules whose parameters :func:`_detached_parameters` swapped (it restores them);
    any other module's parameters are refused rather than overwritten.
    """

    def __init__(self, swapped: set[int]) -> None:
        super().__init__()
        self.swapped = swapped

    def _pyro_post_param(self, msg: dict) -> None:
        if "$$$" in msg["name"] and id(msg["args"][1] if len(msg["args"]) > 1 else None) not in self.swapped:
            module = msg["name"].split("$$$")[0]
            raise TypeError(
                f"the guide registers nn.Module '{module}' with pyro.module, whose parameters cannot be "
                "held fixed from outside; pass the guide as an nn.Module (or a method of one) instead"
            )
        msg["value"] = msg["value"].detach()


@contextmanager
def _detached_parameters(module: nn.Module | None) -> Iterator[None]:
    """Within the block, every parameter of ``module`` (and every ``pyro.param``) reads detached."""
    with (
        detached_parameters(module) as detached,
        warnings.catch_warnings(),
        _DetachParams(set(map(id, detached))),
    ):
        # pyro.module skips (with a warning each) the parameters that read detached here:
        # they are registered already, and the swap is undone on the way out.
        warnings.filterwarnings("ignore", message=".*not registered in the param store because requires_grad")
        yield


def _is_reparameterized(site: dict) -> bool:
    return site["type"] == "sample" and not site["is_observed"] and site["fn"].has_rsample


def detached_guide_log_probs(
    guide: Callable, guide_trace: Trace, args: tuple, kwargs: dict, module: nn.Module | None = None
) -> dict[str, Tensor]:
    r"""Log-densities of the guide's own draws with its parameters held fixed.

    The guide is replayed on ``guide_trace`` (so each value keeps its gradient path)
    with every ``pyro.param`` and every parameter of ``module`` (the guide itself, when
    it is an ``nn.Module``) detached, and each reparameterized sample site is scored
    again, with its scale and mask.

    Arguments:
        guide: The guide callable (possibly wrapped, e.g. in a vectorizing plate).
        guide_trace: A trace of ``guide``.
        args: The guide's positional arguments.
        kwargs: The guide's keyword arguments.
        module: The ``nn.Module`` whose parameters ``guide`` reads, if any.

    Returns:
        Site name to the elementwise :math:`\log q_{\bar\phi}(z)` (the shape of the
        trace's ``log_prob``).

    Example:
        >>> import pyro, pyro.distributions as dist, pyro.poutine as poutine, torch
        >>> def guide():
        ...     loc = pyro.param("loc", torch.tensor(0.5))
        ...     pyro.sample("z", dist.Normal(loc, 1.0))
        >>> trace = poutine.trace(guide).get_trace()
        >>> trace.compute_log_prob()
        >>> log_q = detached_guide_log_probs(guide, trace, (), {})["z"]
        >>> bool(torch.isclose(log_q, trace.nodes["z"]["log_prob"]))  # the same value
        True
        >>> z, loc = trace.nodes["z"]["value"], pyro.param("loc")
        >>> (grad,) = torch.autograd.grad(log_q, loc)  # the path part only: -(z - loc)
        >>> bool(torch.isclose(grad, -(z - loc)))
        True
    """
    with _detached_parameters(module):
        replayed = poutine.trace(poutine.replay(guide, trace=guide_trace)).get_trace(*args, **kwargs)
    replayed.compute_log_prob(site_filter=lambda name, site: _is_reparameterized(site))
    return {
        name: replayed.nodes[name]["log_prob"]
        for name, site in guide_trace.nodes.items()
        if _is_reparameterized(site)
    }


class _PathGradient:
    """Mixin: remembers the guide module of the current call (for parameter detaching).
    Declares that the objective differentiates log q along the sample path itself (see
    :class:`~flowguide.autoguide.recipe.PathGradientObjective`)."""

    _guide_module: nn.Module | None = None
    computes_path_gradients = True

    def _remember(self, guide: Callable) -> None:
        owner = getattr(guide, "__self__", None)  # a bound method, e.g. FlowVAE.guide
        self._guide_module = (
            guide if isinstance(guide, nn.Module) else owner if isinstance(owner, nn.Module) else None
        )


class TraceSTL_ELBO(_PathGradient, Trace_ELBO):
    r"""``Trace_ELBO`` with sticking-the-landing gradients (Roeder, Wu & Duvenaud, 2017).

    Loss values are those of :class:`~pyro.infer.Trace_ELBO`; gradients drop the score
    part of :math:`\nabla_\phi \log q_\phi(z)` for every reparameterized guide site, so
    they stay unbiased and their variance vanishes as :math:`q \to p`. It costs one more
    guide pass per step that scores the draws (for a flow, its inverse). Takes the same
    options as ``Trace_ELBO`` (``num_particles``, ``vectorize_particles``,
    ``max_plate_nesting``, ...).

    For flowguide's autoguides this is what ``stl=True`` does inside the guide; the ELBO
    form also serves other guides, e.g. Pyro's ``AutoNormal`` or the VAE's amortized
    posterior.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> from pyro.infer import SVI
        >>> from pyro.infer.autoguide import AutoNormal
        >>> from pyro.optim import Adam
        >>> def model():
        ...     pyro.sample("z", dist.Normal(1.0, 2.0))
        >>> guide = AutoNormal(model, init_scale=1.0)
        >>> svi = SVI(model, guide, Adam({"lr": 0.05}), TraceSTL_ELBO(num_particles=4))
        >>> losses = [svi.step() for _ in range(500)]
        >>> round(float(guide.median()["z"]), 1), round(float(guide.quantiles([0.8413])["z"][0]), 1)
        (1.0, 3.0)
    """

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        self._remember(guide)
        return super().loss_and_grads(model, guide, *args, **kwargs)

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Tensor:
        self._remember(guide)
        return super().differentiable_loss(model, guide, *args, **kwargs)

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[Trace, Trace]:
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        detached = detached_guide_log_probs(guide, guide_trace, args, kwargs, self._guide_module)
        for name, log_q in detached.items():
            site = guide_trace.nodes[name]
            # the value is unchanged (same point, same parameters); only the gradient path differs
            site["score_parts"] = ScoreParts(log_q, site["score_parts"].score_function, log_q)
        return model_trace, guide_trace


class DReG_ELBO(_PathGradient, ELBO):
    r"""The importance-weighted bound with doubly reparameterized gradients.

    The loss is :math:`-\mathcal L_K = -\log \frac1K \sum_{k=1}^K w_k`,
    :math:`w_k = p(x, z_k) / q(z_k)`, over ``num_particles`` :math:`= K` vectorized draws
    (what ``RenyiELBO(alpha=0)`` estimates). Its gradient for the guide's parameters is
    Tucker et al.'s doubly reparameterized estimator
    :math:`\sum_k \tilde w_k^2\, \nabla_{z_k} \log w_k\, \partial z_k / \partial \phi` (no score
    terms, and it does not degrade as :math:`K` grows the way the plain IWAE guide
    gradient does), for the model's parameters the usual
    :math:`\sum_k \tilde w_k \nabla_\theta \log p_\theta(x, z_k)`. Every latent site of the
    guide must be reparameterized. Plates of local latents that no other site depends on
    get their own bound, as in ``RenyiELBO``.

    Arguments:
        num_particles: :math:`K`, the draws per bound.
        max_plate_nesting: As for every Pyro ELBO.
        **kwargs: Other :class:`~pyro.infer.ELBO` options (``vectorize_particles`` is
            always on).

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> from pyro.infer import SVI
        >>> from pyro.infer.autoguide import AutoNormal
        >>> from pyro.optim import Adam
        >>> def model():
        ...     pyro.sample("z", dist.Normal(1.0, 2.0))
        >>> guide = AutoNormal(model, init_scale=1.0)
        >>> svi = SVI(model, guide, Adam({"lr": 0.05}), DReG_ELBO(num_particles=8, max_plate_nesting=0))
        >>> losses = [svi.step() for _ in range(500)]
        >>> round(float(guide.median()["z"]), 1), round(float(guide.quantiles([0.8413])["z"][0]), 1)
        (1.0, 3.0)
    """

    def __init__(self, num_particles: int = 8, max_plate_nesting: float = math.inf, **kwargs: Any) -> None:
        if not (isinstance(num_particles, int) and num_particles >= 1):
            raise ValueError(f"num_particles must be an integer >= 1, got {num_particles!r}")
        kwargs["vectorize_particles"] = True
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, **kwargs)

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[Trace, Trace]:
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)

    def _traces(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[Trace, Trace]:
        self._remember(guide)
        (traces,) = self._get_traces(model, guide, args, kwargs)  # vectorized: one pair
        return traces

    def _wrapped(self, fn: Callable) -> Callable:
        return self._vectorized_num_particles(fn) if self.num_particles > 1 else fn

    def _per_particle(self, trace: Trace, sum_dims: set, log_probs: dict | None = None) -> Tensor:
        """Sum of the sample sites' log-densities, one row per particle."""
        total = 0.0
        for name, site in trace.nodes.items():
            if site["type"] == "sample":
                log_prob = site["log_prob"] if log_probs is None else log_probs[name]
                total = total + torch_sum(log_prob, sum_dims)
        return torch.as_tensor(total).reshape(self.num_particles, -1)

    def _model_log_p_at_fixed_z(self, model, guide_trace, args, kwargs, sum_dims) -> Tensor | None:
        """log p(x, z) with the draws detached (``None`` when the model has no parameters)."""
        frozen = Trace()
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample":
                frozen.add_node(name, **{**site, "value": site["value"].detach()})
        trace = poutine.trace(poutine.replay(self._wrapped(model), trace=frozen)).get_trace(*args, **kwargs)
        if not any(site["type"] == "param" for site in trace.nodes.values()):
            return None
        trace.compute_log_prob()
        return self._per_particle(trace, sum_dims)

    def _bound(self, log_w: Tensor) -> Tensor:
        return (log_w.logsumexp(0) - math.log(self.num_particles)).sum()

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        with torch.no_grad():
            model_trace, guide_trace = self._traces(model, guide, args, kwargs)
            sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
            log_w = self._per_particle(model_trace, sum_dims) - self._per_particle(guide_trace, sum_dims)
        return -float(self._bound(log_w))

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Tensor:
        """A loss whose value is :math:`-\\mathcal L_K` and whose gradient is the DReG estimator."""
        model_trace, guide_trace = self._traces(model, guide, args, kwargs)
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample" and not _is_reparameterized(site):
                raise ValueError(f"DReG_ELBO needs reparameterized guide sites; site '{name}' is not")
        sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
        path_log_q = detached_guide_log_probs(
            self._wrapped(guide), guide_trace, args, kwargs, self._guide_module
        )
        log_p = self._per_particle(model_trace, sum_dims)
        log_w = log_p - self._per_particle(guide_trace, sum_dims)
        weights = (log_w - log_w.logsumexp(0)).exp().detach()
        # guide: sum_k w_k^2 d(log p - log q_path)/dphi along z; model: sum_k w_k dlog p/dtheta,
        # whose (w_k - w_k^2) part is taken at fixed z so that it reaches the model only.
        surrogate = (weights.square() * (log_p - self._per_particle(guide_trace, sum_dims, path_log_q))).sum()
        fixed = self._model_log_p_at_fixed_z(model, guide_trace, args, kwargs, sum_dims)
        if fixed is not None:
            surrogate = surrogate + ((weights - weights.square()) * fixed).sum()
        value = -self._bound(log_w.detach())
        return value - (surrogate - surrogate.detach())

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return float(loss.detach())
