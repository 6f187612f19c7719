r"""Flow autoguides: drop-in replacements for ``AutoNormal`` with an exact log q(z).

All latent sites of the model are mapped to one unconstrained vector (through
``biject_to`` of each site's support, as Pyro's :class:`~pyro.infer.autoguide.AutoContinuous`
does) and the joint posterior over that vector is a normalizing flow

.. math::
    z = \mu + \sigma \odot L\, g(u), \qquad u \sim N(0, I),

where :math:`g` is the identity at initialization, :math:`L` a unit
lower-triangular matrix (``affine="full"``; the identity with ``affine="diagonal"``) and
:math:`(\mu, \sigma)` start at the ``init_loc_fn`` values and ``init_scale``, or at a
Laplace approximation (``warm_start="laplace"``). The ELBO sees
:math:`\log q(z) = \log N(u) - \log|\det J_g| - \sum \log \sigma` plus the log-Jacobian
of each constraint, computed in the sampling pass.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.transforms import biject_to
from pyro.distributions.util import sum_rightmost
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoContinuous, AutoGuide
from pyro.infer.autoguide.guides import prototype_hide_fn
from pyro.infer.autoguide.initialization import init_to_median
from pyro.infer.autoguide.utils import helpful_support_errors
from pyro.optim import Adam, ClippedAdam, PyroOptim
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from flowguide.autoguide.local import LocalNormal, full_shape, is_local, subsampled_plates
from flowguide.flows import (
    ElementwiseAffine,
    Flow,
    FlowDistribution,
    TriangularLinear,
    affine_coupling_flow,
    iaf,
    neural_spline_flow,
    planar_flow,
)
from flowguide.nn import UnitScaled
from flowguide.transforms import ComposeFlowTransform

__all__ = ["AutoFlow", "AutoPlanarFlow", "AutoIAF", "AutoNeuralSpline", "AutoAffineCoupling"]

InitLocFn = Callable[[dict], Tensor]
AFFINES = ("full", "diagonal")
UNBOUNDED = 2**62
WARM_STARTS = (None, "laplace", "auto")
SUBSAMPLED_SITES = ("normal", "error")


class _NoJointDensity(ValueError):
    """The model samples sites the guide does not cover (enumerated ones): no log joint."""


def _hide_enumerated(msg: dict) -> bool:
    return prototype_hide_fn(msg) or msg["infer"].get("enumerate") == "parallel"


def _signature(value: Any) -> Any:
    """A hashable summary of the model arguments that can change site shapes."""
    if isinstance(value, Tensor):
        return ("tensor", tuple(value.shape))
    if isinstance(value, (int, float, bool, str, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_signature(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _signature(v)) for k, v in value.items()))
    return type(value).__name__


class _SubsampleSources(Messenger):
    """Records, for each plate's subsample site, whether the model chose the rows
    (``subsample=``, the value is set before sampling) or the plate draws them."""

    def __init__(self) -> None:
        super().__init__()
        self.chosen: dict[str, bool] = {}

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and site_is_subsample(msg):
            self.chosen[msg["name"]] = msg["value"] is not None


def _shape_text(site: dict | None) -> str:
    """A site's shape for messages: its full shape, and whether a subsampled plate holds it."""
    if site is None:
        return "missing"
    shape = tuple(full_shape(site))
    return f"{shape} (a minibatch of a subsampled plate)" if is_local(site) else str(shape)


def _laplace_map(log_joint: Callable[[Tensor], Tensor], init: Tensor, max_iter: int = 1000) -> Tensor | None:
    """Maximize ``log_joint`` over a vector by L-BFGS from ``init``; ``None`` if it diverges
    or the model rejects a point on the way (as for an unbounded density).

    Only the vector is differentiated: parameters the model reads are left untouched.
    """
    x = init.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([x], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        loss = -log_joint(x)
        (x.grad,) = torch.autograd.grad(loss, [x])
        return loss.detach()

    try:
        loss = optimizer.step(closure)
        finite = torch.isfinite(x).all() and torch.isfinite(-log_joint(x.detach())).all()
    except (ValueError, RuntimeError):  # the model rejected a point, or the line search overflowed
        return None
    return x.detach() if finite and torch.isfinite(loss) else None


def _gaussian_elbo(
    log_joint: Callable[[Tensor], Tensor], loc: Tensor, scale_tril: Tensor, num_draws: int = 64
) -> float:
    r"""ELBO of :math:`N(\mu, CC^\top)` by Monte Carlo over antithetic draws of a fixed seed
    (so two candidates are compared on common random numbers) plus the exact entropy.
    ``-inf`` where the model rejects a draw or scores it non-finite."""
    generator = torch.Generator().manual_seed(0)
    eps = torch.randn(num_draws // 2, loc.numel(), generator=generator).to(loc)
    entropy = scale_tril.diagonal().log().sum() + 0.5 * loc.numel() * (1 + math.log(2 * math.pi))
    try:
        with torch.no_grad():
            energy = torch.stack([log_joint(loc + scale_tril @ e) for e in torch.cat([eps, -eps])])
    except ValueError:  # a distribution rejected a parameter: the draw is outside the support
        return -math.inf
    value = float(energy.mean() + entropy)
    return value if math.isfinite(value) else -math.inf


def _inverse_cholesky(precision: Tensor) -> Tensor | None:
    """Cholesky factor of ``precision``'s inverse, or ``None`` if it is not positive definite."""
    root, info = torch.linalg.cholesky_ex(precision)
    if info or not torch.isfinite(root).all() or not (root.diagonal() > 0).all():
        return None
    scale_tril, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(root))
    return None if info or not torch.isfinite(scale_tril).all() else scale_tril


def _conditional_scale(scale_tril: Tensor) -> Tensor:
    r"""Each coordinate's standard deviation given all the others, :math:`1 / \sqrt{(\Sigma^{-1})_{ii}}`,
    for :math:`\Sigma = S S^\top` with ``scale_tril`` :math:`S`."""
    eye = torch.eye(scale_tril.shape[-1], dtype=scale_tril.dtype, device=scale_tril.device)
    return torch.linalg.solve_triangular(scale_tril, eye, upper=False).square().sum(0).rsqrt()


def _recipe_optim(
    num_steps: int,
    lr: float,
    lr_decay: float | None,
    grad_clamp: float | None,
    undecayed: Callable[[str], bool] | None = None,
) -> PyroOptim:
    """Pyro optimizer of a training recipe (:meth:`AutoFlow.recommended_optim` with the
    class's values; ``flowguide compare --schedule decay`` with ``AutoFlow``'s for every
    guide): ``ClippedAdam`` decaying the rate to ``lr_decay`` of ``lr`` over ``num_steps``
    and clamping gradient entries to ``[-grad_clamp, grad_clamp]``, or ``Adam`` where
    both are ``None``. Parameters whose name ``undecayed`` accepts keep the full rate."""
    if not (isinstance(num_steps, int) and num_steps >= 1):
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if lr_decay is None and grad_clamp is None:
        return Adam({"lr": lr})
    lrd = 1.0 if lr_decay is None else lr_decay ** (1.0 / num_steps)
    args = {"lr": lr, "lrd": lrd, "clip_norm": math.inf if grad_clamp is None else grad_clamp}
    if undecayed is None:
        return ClippedAdam(args)
    return ClippedAdam(lambda name: {**args, "lrd": 1.0} if undecayed(name) else args)


class AutoFlow(AutoContinuous):
    r"""Autoguide whose joint posterior over all latent sites is a normalizing flow.

    Arguments:
        model: A Pyro model.
        flow: Callable ``dim -> Flow`` building the non-linear part :math:`g` for the
            latent dimension; it should start near the identity (all flowguide builders
            do). The affine head (see ``affine``) is appended after it.
        init_loc_fn: Per-site initialization (``init_to_median``, ``init_to_sample``,
            ``init_to_feasible``, ``init_to_value(values=...)``, ...); it sets
            :math:`\mu`.
        init_scale: Initial posterior scale :math:`\sigma` in unconstrained space.
        num_summary_samples: Draws used by :meth:`median` and :meth:`quantiles`.
        affine: ``"full"`` ends the flow in :math:`\mu + \sigma \odot L\,\cdot` with a
            learned unit lower-triangular :math:`L` (:math:`D(D-1)/2` parameters), so the
            guide contains every Gaussian; ``"diagonal"`` drops :math:`L`.
        warm_start: ``"laplace"`` sets :math:`(\mu, \sigma, L)` from a Laplace
            approximation before the first step: the MAP in unconstrained space (L-BFGS
            from the ``init_loc_fn`` point) and the Cholesky factor of the inverse
            Hessian there (its diagonal with ``affine="diagonal"``). A Gaussian posterior
            is then fit at step 0 and the flow only learns what is not Gaussian. Falls
            back to ``init_loc_fn``/``init_scale`` with a warning when L-BFGS finds no
            finite MAP or the Hessian is not positive definite. After a Laplace start
            :math:`\mu` is stored in units of each coordinate's Laplace standard
            deviation given the others, :math:`1/\sqrt{H_{ii}}` (see
            :class:`~flowguide.flows.ElementwiseAffine`), so that an optimizer's steps
            of about the learning rate move it by that fraction of the posterior's
            width. With sticking the landing the location's gradient is nearly
            noise-free near the fit, so Adam takes steps of the full rate: in absolute
            units, at a rate of 0.1 on a posterior 0.025 wide, that undid the fit. ``"auto"`` (default)
            does the same, silently, only where neither ``init_loc_fn`` nor
            ``init_scale`` was given (a chosen start is kept) and the latent dimension
            is at most :attr:`auto_laplace_max_dim`, and keeps the Laplace start only if
            its ELBO (64 antithetic draws, exact entropy) is at least the cold start's,
            so a sharp spurious mode cannot capture the guide. ``None`` skips it.
            :attr:`warm_started` and :attr:`warm_start_fallback` tell what happened.
        stl: Sticking-the-landing gradients (Roeder, Wu & Duvenaud, 2017): the ELBO's
            :math:`\log q(z)` is differentiated along the sample path only, with the
            flow's parameters held fixed, so the gradient noise vanishes as
            :math:`q \to p`. Values are unchanged. It costs one inverse pass per step
            and is unbiased for ``Trace_ELBO``-type objectives but biased for
            importance-weighted ones (``RenyiELBO``), where it should be off. ``None``
            (default) turns it on when the latent dimension is at most the class's
            ``stl_max_dim``, or after a successful warm start where the class's
            ``stl_when_warm`` says so (both chosen by measurement, see
            ``benchmarks/README.md``); :attr:`uses_stl` tells. The per-datum factors
            of local sites (``subsampled_sites``) stick the landing unless ``stl`` is
            ``False``.
        subsampled_sites: What to do with latent sites inside a plate that is
            subsampled at set-up (local latents of a minibatch). A joint flow has a
            fixed dimension and cannot follow a minibatch, so ``"normal"`` (default)
            gives each datum of such a site its own Gaussian in unconstrained space,
            stored at the plate's full size and indexed by the minibatch
            (:class:`~flowguide.autoguide.local.LocalNormal`, as Pyro's
            ``AutoNormal``), and the flow serves the other sites: log q stays exact
            and the minibatch ELBO unbiased, but the local factors are independent of
            each other and of the flow's sites. ``"error"`` refuses such sites with a
            message naming them; for amortized local posteriors, guide them with
            :class:`~flowguide.models.vae.AmortizedLocalGuide` in an
            :class:`~pyro.infer.autoguide.AutoGuideList`. :attr:`local_sites` names
            them.
        create_plates: As in :class:`~pyro.infer.autoguide.AutoGuide`: a function of
            the model's arguments returning the plates (or one plate) the guide should
            use, for models that choose their minibatch themselves
            (``pyro.plate(..., subsample=index)``); required for such a plate of a
            local site (set-up refuses it otherwise: the guide's own rows would replace
            the model's). Other plates are created with the set-up's sizes and draw
            their own minibatch, which the model replays.

    The guide's parameters exist after :meth:`setup` (or the first call). A site that
    was not in a subsampled plate at set-up and is in one later changes shape, and is
    refused.

    Each class carries the training recipe measured for it (``benchmarks/README.md``):
    :attr:`recommended_particles`, :attr:`lr_decay` and :attr:`recommended_grad_clamp`.
    :func:`flowguide.training.fit` applies it by default; with ``SVI``,
    :meth:`recommended_optim` and :meth:`recommended_elbo` build it.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> from pyro.optim import Adam
        >>> def model(x):
        ...     loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
        >>> guide = AutoIAF(model, num_flows=2, hidden_dims=(16,))
        >>> svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
        >>> loss = svi.step(torch.randn(20) + 3.0)
        >>> sorted(guide.median(torch.randn(20)))
        ['loc']
    """

    def __init__(
        self,
        model: Callable,
        flow: Callable[[int], Flow],
        *,
        init_loc_fn: InitLocFn | None = None,
        init_scale: float | None = None,
        num_summary_samples: int = 4096,
        affine: str = "full",
        warm_start: str | None = "auto",
        stl: bool | None = None,
        subsampled_sites: str = "normal",
        create_plates: Callable | None = None,
    ) -> None:
        if not callable(flow):
            raise TypeError(f"flow must be a callable dim -> Flow, got {type(flow).__name__}")
        self._default_init = init_loc_fn is None and init_scale is None
        init_loc_fn = init_to_median if init_loc_fn is None else init_loc_fn
        init_scale = 0.1 if init_scale is None else init_scale
        if not (isinstance(init_scale, (int, float)) and init_scale > 0):
            raise ValueError(f"init_scale must be a positive number, got {init_scale!r}")
        if not (isinstance(num_summary_samples, int) and num_summary_samples >= 2):
            raise ValueError(f"num_summary_samples must be an integer >= 2, got {num_summary_samples!r}")
        if not isinstance(stl, (bool, type(None))):
            raise TypeError(f"stl must be True, False or None, got {stl!r}")
        if affine not in AFFINES:
            raise ValueError(f"affine must be one of {AFFINES}, got {affine!r}")
        if warm_start not in WARM_STARTS:
            raise ValueError(f"warm_start must be one of {WARM_STARTS}, got {warm_start!r}")
        if subsampled_sites not in SUBSAMPLED_SITES:
            raise ValueError(f"subsampled_sites must be one of {SUBSAMPLED_SITES}, got {subsampled_sites!r}")
        if create_plates is not None and not callable(create_plates):
            raise TypeError(f"create_plates must be callable, got {type(create_plates).__name__}")
        flow(1)  # a dry run on one dimension surfaces bad options now, not at the first step
        super().__init__(model, init_loc_fn=init_loc_fn)
        self._bare_model = (model,)  # without Pyro's InitMessenger: the log joint conditions every latent
        self._flow_fn = flow
        self.init_scale = float(init_scale)
        self.num_summary_samples = num_summary_samples
        self.stl = stl
        self.affine = affine
        self.warm_start = warm_start
        self.subsampled_sites = subsampled_sites
        self.create_plates = create_plates
        #: Per-datum factors of the latent sites in subsampled plates (``None`` if there are none).
        self.local_guide: LocalNormal | None = None
        self._local_prototypes: dict[str, dict] = {}
        self._whole_model_trace: tuple[poutine.Trace, dict[str, bool]] | None = None
        #: Whether the Laplace warm start set the head (``False`` before set-up or after a fallback).
        self.warm_started = False
        #: Why a requested warm start was not used (``None`` if it was, or none was asked for).
        self.warm_start_fallback: str | None = None
        self._known_signatures: set = set()

    _prototype_hide_fn = staticmethod(_hide_enumerated)

    #: Largest latent dimension at which ``stl=None`` turns sticking the landing on.
    stl_max_dim: int = 0
    #: Largest latent dimension at which ``warm_start="auto"`` tries the Laplace start
    #: (its Hessian takes one backward pass of the model per dimension).
    auto_laplace_max_dim: int = 200
    #: Unit in which the flow layers before the affine head store their parameters
    #: (:class:`~flowguide.nn.UnitScaled`; the maps are unchanged). Adam moves each stored
    #: number by about its learning rate per step, so the layers move ``core_unit`` times
    #: as fast as the head, as if their rate alone were that much lower. Chosen per class
    #: by measurement (``docs/autoguides.md``, "Large constant learning rates"); 1 for a
    #: flow of unknown layers.
    core_unit: float = 1.0
    #: Whether ``stl=None`` turns sticking the landing on after a successful Laplace warm start.
    stl_when_warm: bool = False
    #: Training recipe, chosen by measurement (``benchmarks/README.md``): the learning rate
    #: decays geometrically to this fraction of its initial value over the run (``None``:
    #: constant). :class:`~flowguide.training.Trainer` applies it by default;
    #: :meth:`recommended_optim` builds it for ``SVI``.
    lr_decay: float | None = 0.01
    #: Training recipe: vectorized ELBO particles per step (:meth:`recommended_elbo`).
    recommended_particles: int = 8
    #: Training recipe: every gradient entry is clamped to ``[-c, c]`` before the update
    #: (``ClippedAdam``'s ``clip_norm``; ``None``: no clamp). On the funnel it halved
    #: AutoIAF's KL on one seed (0.71 -> 0.32 nats) and left the other alone.
    recommended_grad_clamp: float | None = 10.0

    def recommended_optim(self, num_steps: int, lr: float = 1e-2) -> PyroOptim:
        r"""Pyro optimizer of the measured recipe for ``num_steps`` SVI steps.

        ``ClippedAdam`` with the rate decayed geometrically, :math:`\text{lr}_t = \text{lr}
        \cdot \text{lr\_decay}^{t / \text{num\_steps}}`, and gradient entries clamped to
        :attr:`recommended_grad_clamp`; plain ``Adam`` where the class does neither
        (``AutoPlanarFlow``). The per-datum factors of :attr:`local_sites` keep the full
        rate: each moves only when its datum is in the minibatch. A decayed rate settles the
        final iterate: Adam's steps keep a size of about ``lr`` even where the gradient is
        pure noise, so at a constant rate the guide jitters around the optimum.

        Arguments:
            num_steps: Steps of the run (the decay reaches :attr:`lr_decay` at the last).
            lr: Initial learning rate.

        Example:
            >>> import pyro, pyro.distributions as dist
            >>> from pyro.infer import SVI
            >>> def model():
            ...     pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            >>> guide = AutoIAF(model)
            >>> svi = SVI(model, guide, guide.recommended_optim(1000), guide.recommended_elbo())
            >>> loss = svi.step()
        """
        return _recipe_optim(num_steps, lr, self.lr_decay, self.recommended_grad_clamp, self._is_local_param)

    def _is_local_param(self, name: str) -> bool:
        """Whether a Pyro parameter name is one of :attr:`local_guide`'s."""
        return self.local_guide is not None and name.startswith(self.local_guide._pyro_name + ".")

    def recommended_elbo(self, **options: Any) -> Trace_ELBO:
        """``Trace_ELBO`` with the recipe's :attr:`recommended_particles`, vectorized;
        ``options`` (``max_plate_nesting``, ...) are passed on and override.

        Example:
            >>> import pyro, pyro.distributions as dist
            >>> def model():
            ...     pyro.sample("z", dist.Normal(0.0, 1.0))
            >>> elbo = AutoIAF(model).recommended_elbo(max_plate_nesting=0)
            >>> elbo.num_particles, elbo.vectorize_particles
            (8, True)
        """
        options = {"num_particles": self.recommended_particles, "vectorize_particles": True, **options}
        return Trace_ELBO(**options)

    @property
    def uses_stl(self) -> bool:
        """Whether the ELBO's gradient sticks the landing (``stl``, or the class default)."""
        if self.stl is not None:
            return self.stl
        if self.prototype_trace is None:
            return False
        return self.latent_dim <= self.stl_max_dim or (self.stl_when_warm and self.warm_started)

    def __getstate__(self) -> dict:
        # Pyro's AutoGuide drops the model reference *from the live guide* when pickled;
        # keep it here and drop it only from the pickled copy.
        model, master = self._model, self.master
        try:
            return {**super().__getstate__(), "_bare_model": (None,)}
        finally:
            self._model, self.master = model, master

    # ------------------------------------------------------------------ setup
    def setup(self, *args: Any, **kwargs: Any) -> AutoFlow:
        """Trace the model once and create every parameter; returns ``self``."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        return self

    @property
    def local_sites(self) -> tuple[str, ...]:
        """Latent sites guided per datum by :attr:`local_guide` (see ``subsampled_sites``).

        Example:
            >>> import pyro, pyro.distributions as dist, torch
            >>> def model(x):
            ...     scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
            ...     with pyro.plate("data", len(x), subsample_size=10) as index:
            ...         z = pyro.sample("z", dist.Normal(0.0, scale))
            ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x[index])
            >>> guide = AutoIAF(model).setup(torch.randn(100))
            >>> guide.local_sites, guide.latent_dim, tuple(guide.median()["z"].shape)
            (('z',), 1, (100,))
        """
        return tuple(self._local_prototypes)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        AutoGuide._setup_prototype(self, *args, **kwargs)  # every site and plate of the model
        try:
            self._check_sites()
            self._split_local_sites(args, kwargs)
            self._check_local_plates(args, kwargs)
            self._known_signatures = {_signature((args, kwargs))}
            if self.latent_dim:
                self._setup_flow(args, kwargs)
        finally:
            self._whole_model_trace = None  # not kept: the guide is pickled and moved without it

    def _whole_model(self, args: tuple, kwargs: dict) -> tuple[poutine.Trace, dict[str, bool]]:
        """The model traced with nothing hidden (observed and subsample sites too), and
        which plates' rows the model chose (:class:`_SubsampleSources`). Traced at most
        once per set-up, for the checks that need it, leaving the user's random stream
        as a cold start would."""
        if self._whole_model_trace is None:
            sources = _SubsampleSources()
            with torch.random.fork_rng(devices=[]), poutine.block(), sources:
                trace = poutine.trace(self.model).get_trace(*args, **kwargs)
            self._whole_model_trace = (trace, sources.chosen)
        return self._whole_model_trace

    def _split_local_sites(self, args: tuple, kwargs: dict) -> None:
        """Move the sites inside subsampled plates out of the prototype trace, which then
        holds the flow's sites only, and pack those as ``AutoContinuous`` does."""
        self._local_prototypes = {
            name: site for name, site in self.prototype_trace.iter_stochastic_nodes() if is_local(site)
        }
        for name in self._local_prototypes:
            self.prototype_trace.remove_node(name)
        if self._local_prototypes:
            self.local_guide = LocalNormal(self._local_prototypes, self.init_scale)
        self._unconstrained_shapes, self._cond_indep_stacks = {}, {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            with helpful_support_errors(site):
                self._unconstrained_shapes[name] = biject_to(site["fn"].support).inv(site["value"]).shape
            self._cond_indep_stacks[name] = site["cond_indep_stack"]
        self.latent_dim = sum(shape.numel() for shape in self._unconstrained_shapes.values())
        if not self.latent_dim and not self._local_prototypes:
            self._check_not_empty(args, kwargs)
        if self.warm_start == "laplace" and self._local_prototypes:
            raise ValueError(
                f"{type(self).__name__}: warm_start='laplace' fits the flow's sites given the data; latent "
                f"site '{next(iter(self._local_prototypes))}' is local to a subsampled plate. Pass "
                "warm_start=None, or 'auto' (which skips subsampled models)"
            )

    def _check_not_empty(self, args: tuple, kwargs: dict) -> None:
        """A model without latent sites is served by an empty guide (as Pyro's ``AutoNormal``
        serves it: SVI then fits the model's parameters by maximum likelihood), unless it
        has no site at all, which is refused as Pyro's ``AutoContinuous`` refuses it."""
        trace, _ = self._whole_model(args, kwargs)
        if not any(site["type"] in ("sample", "param") for site in trace.nodes.values()):
            raise RuntimeError(
                f"{type(self).__name__} found no sample or param site in the model: nothing to fit"
            )

    def _check_local_plates(self, args: tuple, kwargs: dict) -> None:
        """Refuse a local site whose plate takes its minibatch from the model's arguments
        (``subsample=index``) when ``create_plates`` does not give the guide that plate:
        the guide's plate would draw other rows than the model scores, silently."""
        plates = {frame.name for site in self._local_prototypes.values() for frame in subsampled_plates(site)}
        if not plates:
            return
        _, chosen = self._whole_model(args, kwargs)
        with torch.random.fork_rng(devices=[]), poutine.block():
            owner = self.master() if self.master is not None else self
            made = owner.create_plates(*args, **kwargs) if owner.create_plates is not None else []
        drawn = {name for name, model_chose in chosen.items() if not model_chose}
        given = {plate.name for plate in ([made] if isinstance(made, pyro.plate) else made)}
        for name in sorted(plates - drawn - given):
            raise ValueError(
                f"{type(self).__name__}: plate '{name}' of a local latent site takes its minibatch from the "
                "model's arguments (subsample=...), so the guide's own plate would draw other rows; pass "
                f"create_plates=, a function of the model's arguments returning pyro.plate('{name}', ..., "
                "subsample=...) with the same rows"
            )

    def _setup_flow(self, args: tuple, kwargs: dict) -> None:
        """Build the flow over the packed global latents and set its head from the init."""
        loc = self._init_loc()
        core = self._flow_fn(self.latent_dim)
        if not isinstance(core, Flow) or core.dim != self.latent_dim or core.context_dim is not None:
            raise TypeError(
                f"flow({self.latent_dim}) must return an unconditional Flow of dim {self.latent_dim}, "
                f"got {core!r:.80}"
            )
        for module in core.modules():
            if isinstance(module, UnitScaled):
                module.set_unit(self.core_unit)
        head = [TriangularLinear(self.latent_dim)] if self.affine == "full" else []
        flow = Flow([*core.layers, *head, ElementwiseAffine(self.latent_dim)])
        self.flow = flow.to(device=loc.device, dtype=loc.dtype)
        scale = torch.full_like(loc, self.init_scale)
        scale_tril = torch.diag(torch.full_like(loc, self.init_scale))
        if self._wants_warm_start(args, kwargs):
            loc, scale_tril = self._warm_start(loc, scale_tril, args, kwargs)
        if self.affine == "full":
            scale = self.flow.layers[-2].set_scale_tril(scale_tril)
        else:
            scale = scale_tril.diagonal()
        unit = _conditional_scale(scale_tril) if self.warm_started else None
        self.flow.layers[-1].set_loc_scale(loc, scale, unit)

    def _wants_warm_start(self, args: tuple, kwargs: dict) -> bool:
        if self.warm_start == "auto":
            if self._default_init and self.latent_dim <= self.auto_laplace_max_dim:
                if not self._local_prototypes and not self._subsampled(args, kwargs):
                    return True
                self.warm_start_fallback = "the model subsamples a plate: a minibatch's Laplace fit is noisy"
            return False
        return self.warm_start == "laplace"

    def _subsampled(self, args: tuple, kwargs: dict) -> bool:
        """Whether the model subsamples a plate (of latent or of observed sites)."""
        trace, _ = self._whole_model(args, kwargs)
        return any(is_local(site) for site in trace.nodes.values() if site["type"] == "sample")

    def _warm_start(
        self, loc: Tensor, scale_tril: Tensor, args: tuple, kwargs: dict
    ) -> tuple[Tensor, Tensor]:
        """The Laplace start, or the cold one where there is none (or, for ``"auto"``, where
        the cold start has the higher ELBO); records why in :attr:`warm_start_fallback`."""
        log_joint = functools.partial(self._log_joint, args=args, kwargs=kwargs)
        try:
            with warnings.catch_warnings():  # a diverging search visits NaN points: expected, and handled
                warnings.filterwarnings("ignore", message="Encountered NaN")
                laplace = self._laplace(loc, log_joint)
        except _NoJointDensity as error:
            if self.warm_start == "laplace":
                raise
            laplace = str(error)
        if isinstance(laplace, tuple) and self.warm_start == "auto":
            cold, warm = (_gaussian_elbo(log_joint, *start) for start in ((loc, scale_tril), laplace))
            if not warm >= cold:
                laplace = f"the Laplace start's ELBO ({warm:.4g}) is below the cold start's ({cold:.4g})"
        if isinstance(laplace, str):
            self.warm_start_fallback = laplace
            if self.warm_start == "laplace":
                warnings.warn(
                    f"{type(self).__name__}: warm_start='laplace' fell back to init_loc_fn and init_scale: "
                    f"{laplace}",
                    stacklevel=4,
                )
            return loc, scale_tril
        self.warm_started = True
        return laplace

    def _laplace(self, init: Tensor, log_joint: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor] | str:
        """MAP and Cholesky factor of the inverse Hessian there (diagonal if ``affine="diagonal"``),
        in unconstrained space; or why there is no usable Laplace approximation."""
        log_joint(init)  # refuses models it cannot serve before the search hides why
        latent = _laplace_map(log_joint, init)
        if latent is None:
            return "it found no finite MAP (an unbounded density?)"
        hessian = torch.autograd.functional.hessian(lambda x: -log_joint(x), latent)
        scale_tril = _inverse_cholesky(hessian)
        if scale_tril is None:
            return (
                "the Hessian of the negative log joint at the MAP is not positive definite "
                "(a flat or improper direction)"
            )
        if self.affine == "diagonal":
            scale_tril = torch.diag(hessian.diagonal().rsqrt())
        return latent, scale_tril

    def _log_joint(self, latent: Tensor, args: tuple, kwargs: dict) -> Tensor:
        r"""Model log joint at an unconstrained vector, with each constraint's log-Jacobian."""
        values, log_jacobian = {}, 0.0
        for site, unconstrained in self._unpack_latent(latent):
            transform = biject_to(site["fn"].support)
            values[site["name"]] = value = transform(unconstrained)
            log_jacobian = log_jacobian + transform.log_abs_det_jacobian(unconstrained, value).sum()
        conditioned = poutine.condition(self._bare_model[0] or self.model, values)
        trace = poutine.block(poutine.trace(conditioned).get_trace)(*args, **kwargs)
        for name, site in trace.iter_stochastic_nodes():
            if name not in values and not site_is_subsample(site):  # it would be sampled: a noisy MAP
                raise _NoJointDensity(
                    f"{type(self).__name__}: warm_start='laplace' needs a density over the guide's latents "
                    f"only; site '{name}' is not one of them (an enumerated site?)"
                )
        return trace.log_prob_sum() + log_jacobian

    def _check_sites(self) -> None:
        guide = type(self).__name__
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            if site["fn"].support.is_discrete:
                raise ValueError(
                    f"{guide} cannot serve discrete latent site '{name}': enumerate it "
                    f"(infer={{'enumerate': 'parallel'}} with TraceEnum_ELBO, see "
                    "https://pyro.ai/examples/enumeration.html) or hide it with "
                    f"poutine.block(model, hide=['{name}'])"
                )
            if self.subsampled_sites != "error":
                continue
            for frame in subsampled_plates(site):
                raise ValueError(
                    f"{guide} cannot serve latent site '{name}' inside plate '{frame.name}', "
                    f"which is subsampled ({frame.size} of {frame.full_size}): a joint flow would "
                    "share one density across minibatches, and subsampled_sites='error'. Pass "
                    "subsampled_sites='normal' for per-datum factors, or guide local latents with "
                    "an amortized guide (AutoGuideList) and keep global latents here."
                )

    def _check_shapes(self, args: tuple, kwargs: dict) -> None:
        """Re-trace the model when its arguments change shape; refuse changed sites."""
        signature = _signature((args, kwargs))
        if signature in self._known_signatures or torch._C._get_tracing_state():
            return
        if self.model is None:
            raise RuntimeError(
                f"{type(self).__name__} was unpickled without its model and got arguments of new shapes; "
                "build a new guide for the model to check them"
            )
        model = poutine.block(self.model, self._prototype_hide_fn)
        trace = poutine.block(poutine.trace(model).get_trace)(*args, **kwargs)
        for name, site in self._all_sites():
            now = trace.nodes.get(name)
            if now is None or not self._serves(name, site, now):
                raise ValueError(
                    f"{type(self).__name__}: latent site '{name}' changed shape from "
                    f"{_shape_text(site)} at setup to {_shape_text(now)}; build a new guide for new shapes"
                )
        self._known_signatures.add(signature)

    def _serves(self, name: str, setup: dict, now: dict) -> bool:
        """Whether site ``name`` as traced ``now`` is the one set up: a local site of any
        minibatch size (the whole plate included) with the same full shape, or a flow site
        of the same shape outside subsampled plates."""
        if name in self._local_prototypes:
            return full_shape(now) == full_shape(setup)
        return not is_local(now) and now["value"].shape == setup["value"].shape

    # ------------------------------------------------------------- posterior
    def get_base_dist(self):
        return self._require_flow().base()

    def get_transform(self, *args: Any, **kwargs: Any):
        return self._require_flow().transform()

    def get_posterior(self, *args: Any, **kwargs: Any) -> FlowDistribution:
        """The flow distribution over the packed unconstrained latent vector."""
        return self._require_flow()(stl=self.uses_stl)

    def _require_flow(self) -> Flow:
        """The flow, or a ``RuntimeError`` saying why there is none."""
        self._require_setup()
        if not self.latent_dim:
            what = (
                "only latent sites local to subsampled plates (see local_guide)"
                if self._local_prototypes
                else "no latent site"
            )
            raise RuntimeError(f"{type(self).__name__} has no flow: the model has {what}")
        return self.flow

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        else:
            self._check_shapes(args, kwargs)
        if self.latent_dim:
            result = super().forward(*args, **kwargs)  # creates the plates too
        else:
            result = {}
            self._create_plates(*args, **kwargs)
        for name, site in self._local_prototypes.items():
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    stack.enter_context(self.plates[frame.name])
                result[name] = self.local_guide.sample(name, stl=self.stl is not False)
        return result

    # ------------------------------------------------------------- summaries
    def _require_setup(self) -> None:
        if self.prototype_trace is None:
            raise RuntimeError(f"{type(self).__name__} has no parameters yet: call guide.setup(*args) first")

    def _constrain(self, latent: Tensor) -> dict[str, Tensor]:
        """Unpack latents of shape ``(N, D)`` into constrained values ``(N, *site_shape)``."""
        result, pos = {}, 0
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            shape = self._unconstrained_shapes[name]
            size = shape.numel()
            value = latent[:, pos : pos + size].reshape(latent.shape[:1] + shape)
            result[name] = biject_to(site["fn"].support)(value)
            pos += size
        return result

    def _base_draws(self, num_samples: int, seed: int | None = None, antithetic: bool = False) -> Tensor:
        """Standard normal draws ``(N, D)``; ``antithetic`` pairs each draw ``u`` with ``-u``."""
        loc = self.flow.base_loc
        generator = None
        if seed is not None:
            generator = torch.Generator(device=loc.device).manual_seed(seed)
        count = -(-num_samples // 2) if antithetic else num_samples
        u = torch.randn(count, self.latent_dim, generator=generator, device=loc.device, dtype=loc.dtype)
        return torch.cat([u, -u]) if antithetic else u

    def _draw_latent(self, num_samples: int, seed: int | None = None, antithetic: bool = False) -> Tensor:
        """Push base draws (see :meth:`_base_draws`) through the flow."""
        return self.flow.transform()(self._base_draws(num_samples, seed, antithetic))

    @torch.no_grad()
    def sample_posterior(self, num_samples: int, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Draw ``num_samples`` joint posterior samples of every site (constrained).

        Returns:
            Dict from site name to a tensor of shape ``(num_samples, *site_shape)``;
            :attr:`local_sites` at their plates' full size.
        """
        self.setup(*args, **kwargs)
        result = self._constrain(self._draw_latent(num_samples)) if self.latent_dim else {}
        if self.local_guide is not None:
            result.update(self.local_guide.sample_full(num_samples))
        return result

    @torch.no_grad()
    def quantiles(self, quantiles: Sequence[float] | Tensor, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Marginal posterior quantiles of each site, by Monte Carlo.

        Quantiles of each unconstrained coordinate are estimated from
        ``num_summary_samples`` draws (fixed seed: repeated calls agree) and pushed
        through the site's constraint, so for elementwise monotone constraints they are
        the constrained marginal quantiles, and for others (simplex, ordered, ...)
        valid points of the support, as in :class:`~pyro.infer.autoguide.AutoNormal`.
        The draws are antithetic (each base draw :math:`u` with :math:`-u`): where the
        posterior is symmetric, as a Gaussian guide or a flow at initialization is, the
        median is exact and quantiles are symmetric about it, not only within Monte
        Carlo error.

        :attr:`local_sites` have exact quantiles, at their plates' full size.

        Returns:
            Dict from site name to a tensor of shape ``(len(quantiles), *site_shape)``.
        """
        self.setup(*args, **kwargs)
        qs = torch.as_tensor(quantiles, dtype=torch.float64)
        if qs.dim() != 1 or not ((qs >= 0) & (qs <= 1)).all():
            raise ValueError(f"quantiles must be a 1-D sequence of numbers in [0, 1], got {quantiles!r}")
        result = {}
        if self.latent_dim:
            latent = self._draw_latent(self.num_summary_samples, seed=0, antithetic=True)
            result = self._constrain(torch.quantile(latent, qs.to(latent), dim=0))  # (Q, D)
        if self.local_guide is not None:
            result.update(self.local_guide.quantiles(qs))
        return result

    @torch.no_grad()
    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        r"""Posterior mean and standard deviation of the packed unconstrained latent.

        Pyro's Gaussian :class:`~pyro.infer.autoguide.AutoContinuous` guides return
        their location and scale parameters here; for a flow these are the moments of
        :math:`z = \mu + \sigma \odot w`, estimated from the same antithetic draws as
        :meth:`quantiles`. The draws of :math:`w` (the flow before its final
        elementwise affine layer) are scaled afterwards, so a tiny ``init_scale`` keeps
        its precision.

        Returns:
            ``(loc, scale)``, each of shape ``(latent_dim,)`` (the flow's sites; empty
            where every latent site is local).
        """
        self.setup(*args, **kwargs)
        if not self.latent_dim:
            local = None if self.local_guide is None else next(self.local_guide.parameters())
            empty = torch.zeros(0) if local is None else local.new_zeros(0)
            return empty, empty
        body = ComposeFlowTransform(self.flow.transform().parts[:-1])
        w = body(self._base_draws(self.num_summary_samples, seed=0, antithetic=True))
        head = self.flow.layers[-1]
        scale = head.log_scale.exp()
        return head.location + scale * w.mean(0), scale * w.std(0)

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Marginal posterior medians of each site (Monte Carlo, see :meth:`quantiles`)."""
        return {name: value[0] for name, value in self.quantiles([0.5], *args, **kwargs).items()}

    # --------------------------------------------------------------- density
    def log_density(self, values: dict[str, Tensor], *args: Any, **kwargs: Any) -> Tensor:
        r"""Exact :math:`\log q(z)` of constrained site values, at any point.

        Each value is mapped to unconstrained space, the packed vector is scored by the
        flow (through its inverse) and the log-Jacobian of each constraint is added.

        Arguments:
            values: Dict from every latent site name to its value, with optional
                leading batch dimensions shared by all sites; :attr:`local_sites` at
                their plates' full size (the density of every datum's latents).
            *args: The model's positional arguments (used to set the guide up).
            **kwargs: The model's keyword arguments.

        Returns:
            The log-density, with the shared batch shape.
        """
        self.setup(*args, **kwargs)
        batches = {name: self._value_batch(values, name, site) for name, site in self._all_sites()}
        batch = next(iter(batches.values()), torch.Size())
        for name, site_batch in batches.items():
            if site_batch != batch:
                raise ValueError(f"site '{name}' has batch shape {tuple(site_batch)}, others {tuple(batch)}")
        log_q, parts = 0.0, []
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            transform = biject_to(site["fn"].support)
            unconstrained = transform.inv(values[name])
            ladj = transform.inv.log_abs_det_jacobian(values[name], unconstrained)
            log_q = log_q + sum_rightmost(ladj, ladj.dim() - len(batch))
            parts.append(unconstrained.reshape(*batch, -1))
        if parts:
            log_q = log_q + self.flow().log_prob(torch.cat(parts, -1))
        for name in self._local_prototypes:
            log_q = log_q + self.local_guide.log_density(name, values[name], len(batch))
        return torch.as_tensor(log_q)  # 0 for a model without latent sites

    def _all_sites(self) -> list[tuple[str, dict]]:
        """The flow's sites, then the local ones, as ``(name, prototype site)``."""
        return [*self.prototype_trace.iter_stochastic_nodes(), *self._local_prototypes.items()]

    @staticmethod
    def _value_batch(values: dict[str, Tensor], name: str, site: dict) -> torch.Size:
        """The batch shape of ``values[name]`` given the site's (full) shape; refuses a
        missing value or a wrong shape, naming the site."""
        if name not in values:
            raise ValueError(f"log_density needs a value for latent site '{name}'")
        value, shape = values[name], full_shape(site)
        if value.shape[value.dim() - len(shape) :] != shape:
            expected = ", ".join(map(str, shape))
            raise ValueError(f"site '{name}' must have shape (..., {expected}), got {tuple(value.shape)}")
        return value.shape[: value.dim() - len(shape)]


class AutoPlanarFlow(AutoFlow):
    r"""Flow autoguide with ``num_flows`` planar layers (Rezende & Mohamed, 2015).

    Cheapest per layer (:math:`O(D)` parameters); each layer bends the density along one
    direction, so it suits low-dimensional or nearly Gaussian posteriors. Keep Adam's
    rate at 0.02 or below, or pass ``stl=False``: with one particle at 0.05, sticking the
    landing let the layers bend away from the fit on five seeds of six (the guides page
    of the docs has the measurements).

    Arguments:
        model: A Pyro model.
        num_flows: Number of flow layers.
        **options: ``init_loc_fn``, ``init_scale``, ``num_summary_samples``, ``affine``,
            ``warm_start``, ``stl``, ``subsampled_sites`` and ``create_plates`` as in
            :class:`AutoFlow`.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        >>> guide = AutoPlanarFlow(model).setup()
        >>> guide()["z"].shape
        torch.Size([3])
    """

    # The planar inverse is a 1-D root find per layer: its cost does not grow with D.
    stl_max_dim = UNBOUNDED
    # Measured: a decayed rate stops the planar layers before they reach the posterior
    # (banana 0.23 -> 0.34 nats, funnel 1.62 -> 1.89), so the rate stays constant.
    lr_decay = None
    recommended_grad_clamp = None

    def __init__(
        self,
        model: Callable,
        *,
        num_flows: int = 8,
        **options: Any,
    ) -> None:
        flow = functools.partial(planar_flow, num_flows=num_flows)
        super().__init__(model, flow, **options)


class AutoIAF(AutoFlow):
    r"""Flow autoguide of inverse autoregressive layers (Kingma et al., 2016).

    Sampling (what training does) is one MADE pass per layer; :meth:`log_density` at
    arbitrary points takes :math:`D` passes. Scales are soft-clamped.

    Arguments:
        model: A Pyro model.
        num_flows: Number of flow layers.
        hidden_dims: Hidden widths of each layer's conditioner.
        mixing: Layer between flows (``"reverse"``, ``"random"``, ``"lu"``, ``"none"``).
        log_scale_bound: Bound :math:`b` of each layer's soft-clamped log-scale. The
            default, :math:`\min(3, 12 / \text{num\_flows})`, caps what the layers'
            scales can compound to at :math:`e^{12}`: with :math:`b = 3` for every
            depth, eight layers overflowed on Neal's funnel within 13 steps in 3 of 3
            seeds with plain gradients (and in one run of one with sticking the
            landing); with :math:`b = 1.5` none did. Four layers keep 3, the measured
            default.
        **options: ``init_loc_fn``, ``init_scale``, ``num_summary_samples``, ``affine``,
            ``warm_start``, ``stl``, ``subsampled_sites`` and ``create_plates`` as in
            :class:`AutoFlow`.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
        >>> guide = AutoIAF(model, num_flows=2).setup()
        >>> bool(guide()["s"] > 0)
        True
    """

    # The inverse takes D sequential MADE passes per layer: about 2.5x the plain step at
    # D = 10 but tens of times at D = 200 (benchmarks/README.md), so only small D get it.
    stl_max_dim = 32
    # core_unit stays 1 (docs/autoguides.md): at Adam 0.1 with one particle, unit 1 breaks
    # the fit in 1-2 of 6 seeds and 0.5 or 0.3 in none, but at 1e-2 unit 0.5 left the
    # funnel under 0.5 nats on 4 of 6 seeds (unit 1: 5), 0.3 took the conjugate regression
    # over 0.02 nats (0.0054 -> 0.0212 on seed 2), and 0.1 slowed the funnel.

    def __init__(
        self,
        model: Callable,
        *,
        num_flows: int = 4,
        hidden_dims: Sequence[int] = (64, 64),
        mixing: str = "reverse",
        log_scale_bound: float | None = None,
        **options: Any,
    ) -> None:
        if log_scale_bound is None:
            log_scale_bound = min(3.0, 12.0 / max(num_flows, 1))
        flow = functools.partial(
            iaf,
            num_flows=num_flows,
            hidden_dims=tuple(hidden_dims),
            mixing=mixing,
            log_scale_bound=log_scale_bound,
        )
        super().__init__(model, flow, **options)


class AutoNeuralSpline(AutoFlow):
    r"""Flow autoguide of rational-quadratic spline layers (Durkan et al., 2019).

    The most flexible elementwise map; the affine layer after the splines puts the
    posterior where it belongs, so the splines only act on standardized coordinates.

    Arguments:
        model: A Pyro model.
        num_flows: Number of flow layers.
        hidden_dims: Hidden widths of each layer's conditioner.
        structure: ``"coupling"`` (both directions one pass) or ``"autoregressive"``.
        bins: Spline bins per coordinate.
        bound: Half-width of the spline interval in standardized coordinates.
        mixing: Layer between flows (``"reverse"``, ``"random"``, ``"lu"``, ``"none"``).
        min_bin: Smallest bin width and height, as a fraction of :math:`2B`.
        min_derivative: Smallest knot derivative. The defaults (0.01 and 0.1, against
            1e-3 for bare flows) bound the slopes, and so the path gradient through the
            inverse that sticking the landing needs (see ``stl`` below).
        **options: ``init_loc_fn``, ``init_scale``, ``num_summary_samples``, ``affine``,
            ``warm_start``, ``stl``, ``subsampled_sites`` and ``create_plates`` as in
            :class:`AutoFlow`. With ``stl=None``
            (default) sticking the landing is on exactly when ``warm_start="laplace"``
            succeeded: started at the Laplace fit it was stable and reached the exact
            Gaussian posterior; from a cold start its gradients through the spline
            inverse were heavy-tailed and stalled or diverged the fit
            (``benchmarks/README.md``).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("p", dist.Beta(2.0, 3.0))
        >>> guide = AutoNeuralSpline(model).setup()
        >>> 0 < float(guide.median()["p"]) < 1
        True
    """

    # From a cold start, measured unstable (benchmarks/README.md): the path gradient needs
    # grad_z log q(z) through the spline inverse, heavy-tailed while the head is far from
    # the posterior; its spikes stall Adam on the head and the fit drifts away. Started
    # at the Laplace fit it is stable.
    stl_max_dim = 0
    stl_when_warm = True
    # Measured at Adam 0.1, one particle (docs/autoguides.md): at unit 1 the conditioners'
    # full-rate first steps bent the splines until the fit broke (4 of 4 seeds); at 0.1 none.
    core_unit = 0.1
    # Its layers move a tenth as far per step, and a decay to 1% then stopped them short:
    # with fit()'s recipe, banana 0.103 / 0.089 and funnel 1.67 / 1.65 nats (seeds 0 / 1),
    # against 0.058 / 0.066 and 1.39 / 1.28 with a decay to 10%; the regression 0.0000 both.
    lr_decay = 0.1

    def __init__(
        self,
        model: Callable,
        *,
        num_flows: int = 4,
        hidden_dims: Sequence[int] = (64, 64),
        structure: str = "coupling",
        bins: int = 8,
        bound: float = 5.0,
        mixing: str = "reverse",
        min_bin: float = 0.01,
        min_derivative: float = 0.1,
        **options: Any,
    ) -> None:
        flow = functools.partial(
            neural_spline_flow,
            num_flows=num_flows,
            hidden_dims=tuple(hidden_dims),
            structure=structure,
            bins=bins,
            bound=bound,
            mixing=mixing,
            min_bin=min_bin,
            min_derivative=min_derivative,
        )
        super().__init__(model, flow, **options)


class AutoAffineCoupling(AutoFlow):
    r"""Flow autoguide of RealNVP affine coupling layers (Dinh et al., 2017).

    Both sampling and scoring are one pass per layer; scales are soft-clamped.

    Arguments:
        model: A Pyro model.
        num_flows: Number of flow layers.
        hidden_dims: Hidden widths of each layer's conditioner.
        mixing: Layer between flows (``"reverse"``, ``"random"``, ``"lu"``, ``"none"``).
        log_scale_bound: Bound :math:`b` of each layer's soft-clamped log-scale. The
            default 1.5 was measured: at 3 the layers' scales compound (up to
            :math:`e^{3 \cdot \text{num\_flows}}`) and Adam at lr 0.02 overflowed within
            five steps in 5 of 8 seeds on a three-site model, and a 2-D banana fit
            stalled at KL 1.0; at 1.5 neither happened and the funnel fit improved.
        **options: ``init_loc_fn``, ``init_scale``, ``num_summary_samples``, ``affine``,
            ``warm_start``, ``stl``, ``subsampled_sites`` and ``create_plates`` as in
            :class:`AutoFlow`.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0).expand([2, 2]).to_event(2))
        >>> guide = AutoAffineCoupling(model).setup()
        >>> guide.quantiles([0.1, 0.9])["z"].shape
        torch.Size([2, 2, 2])
    """

    # The coupling inverse is one pass per layer, as cheap as sampling.
    stl_max_dim = UNBOUNDED

    def __init__(
        self,
        model: Callable,
        *,
        num_flows: int = 4,
        hidden_dims: Sequence[int] = (64, 64),
        mixing: str = "reverse",
        log_scale_bound: float = 1.5,
        **options: Any,
    ) -> None:
        flow = functools.partial(
            affine_coupling_flow,
            num_flows=num_flows,
            hidden_dims=tuple(hidden_dims),
            mixing=mixing,
            log_scale_bound=log_scale_bound,
        )
        super().__init__(model, flow, **options)
