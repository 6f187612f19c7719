r"""The flow autoguide for Pyro's SVI: a drop-in replacement for ``AutoNormal`` with an exact log q(z).

All latent sites of the model outside subsampled plates are mapped to one unconstrained
vector (through ``biject_to`` of each site's support, as Pyro's
:class:`~pyro.infer.autoguide.AutoContinuous` does, see
:class:`~flowguide.autoguide.sites.SitePlan`) whose joint posterior is a normalizing flow

.. math::
    z = \mu + \sigma \odot L\, g(u), \qquad u \sim N(0, I),

with :math:`g` the identity at initialization and the affine head
(:class:`~flowguide.autoguide.head.AffineHead`) started at the ``init_loc_fn`` values
and ``init_scale``, or at a Laplace approximation
(:mod:`flowguide.autoguide.laplace`). The ELBO sees
:math:`\log q(z) = \log N(u) - \log|\det J_g| - \sum \log \sigma` plus the log-Jacobian
of each constraint, computed in the sampling pass. How each guide is trained is its
:class:`~flowguide.autoguide.recipe.Recipe`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any, get_args

import pyro
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoContinuous, AutoGuide
from pyro.optim import PyroOptim
from torch import Tensor

from flowguide.autoguide import laplace, modes
from flowguide.autoguide.head import HEAD_RANK, Affine, AffineHead, HeadedFlow, resolve_affine
from flowguide.autoguide.local import LocalNormal
from flowguide.autoguide.mixture import FlowMixture, MixtureDistribution
from flowguide.autoguide.multimodal import DEFAULT_SEARCH, Components, MultimodalGuide, check_mixture_options
from flowguide.autoguide.plate_flow import PlateFlowGuide
from flowguide.autoguide.recipe import Recipe, current_objective, sticks_the_landing
from flowguide.autoguide.sites import (
    ModelSurvey,
    SitePlan,
    SubsampledSites,
    check_local_plates,
    check_observed,
    check_sites,
    given_plates,
    hide_enumerated,
    init_to_median_or_flat,
)
from flowguide.autoguide.state import DeferredModuleState, adopt_stored_parameters
from flowguide.autoguide.summaries import PosteriorSummaries
from flowguide.flows import Flow, FlowDistribution
from flowguide.nn import UnitScaled, check_dim

__all__ = ["AutoFlow"]

InitLocFn = Callable[[dict], Tensor]


class EmptyModelError(RuntimeError, ValueError):
    """The model has no sample or param site (a ``RuntimeError``, as Pyro's
    ``AutoContinuous`` raises, and a ``ValueError``: the input is wrong)."""


class AutoFlow(DeferredModuleState, PosteriorSummaries, MultimodalGuide, PlateFlowGuide, AutoContinuous):
    r"""Autoguide whose joint posterior over all latent sites is a normalizing flow.

    Arguments:
        model: A Pyro model.
        flow: Callable ``dim -> Flow`` building the non-linear part :math:`g` for the
            latent dimension; it should start near the identity (all flowguide builders
            do). The affine head (see ``affine``) is appended after it.
        init_loc_fn: Per-site initialization (``init_to_median``, ``init_to_sample``,
            ``init_to_feasible``, ``init_to_value(values=...)``, ...); it sets
            :math:`\mu`. Default ``init_to_median``, and at flat-prior sites
            :func:`~flowguide.autoguide.sites.flat_start`.
        init_scale: Initial posterior scale :math:`\sigma` in unconstrained space.
        num_summary_samples: Draws used by :meth:`median` and :meth:`quantiles`.
        affine: The head (:mod:`~flowguide.autoguide.head`): ``"full"`` ends the flow in
            :math:`\mu + \sigma \odot L\,\cdot` with a learned unit lower-triangular
            :math:`L` (:math:`D(D-1)/2` parameters), so the guide contains every Gaussian;
            ``"lowrank"`` learns :math:`L = I + QRQ^\top` of rank ``head_rank``
            (:math:`O(D k)`, every diagonal-plus-rank-:math:`k` Gaussian); ``"diagonal"``
            drops :math:`L`; ``"auto"`` (default) is ``"full"`` up to
            :data:`~flowguide.autoguide.head.FULL_HEAD_MAX_DIM` latent coordinates and
            ``"lowrank"`` above.
        head_rank: Rank :math:`k` of a low-rank head (default
            :data:`~flowguide.autoguide.head.HEAD_RANK`).
        warm_start: ``"laplace"`` starts the head at the Laplace approximation
            (:mod:`~flowguide.autoguide.laplace`), falling back to the cold start with a
            warning where there is none. ``"auto"`` (default) tries it silently where
            neither ``init_loc_fn`` nor ``init_scale`` was given, no plate is subsampled
            and the latent dimension is at most the recipe's ``laplace_max_dim``, and
            keeps it only where its ELBO is at least the cold start's. ``None`` skips
            it. :attr:`warm_started` and :attr:`warm_start_fallback` tell what happened.
        stl: Sticking-the-landing gradients (Roeder, Wu & Duvenaud, 2017): the ELBO's
            :math:`\log q(z)` is differentiated along the sample path only, with the
            flow's parameters held fixed, so the gradient noise vanishes as
            :math:`q \to p`; values are unchanged. It costs one inverse pass per step,
            and is unbiased for ``Trace_ELBO``-type objectives but biased for
            importance-weighted ones: the guide reads the objective evaluating it and
            turns it off under ``RenyiELBO`` (``stl=True`` is refused there) and under
            flowguide's path-gradient objectives
            (:func:`~flowguide.autoguide.recipe.sticks_the_landing`). Elsewhere ``None``
            (default) follows the recipe (``stl_max_dim``, ``stl_when_warm``);
            :attr:`uses_stl` tells.
        subsampled_sites: Latent sites inside a plate subsampled at set-up follow the
            minibatch, which a joint flow cannot: ``"normal"`` (default) gives each datum
            its own Gaussian factor (:mod:`~flowguide.autoguide.local`; log q stays
            exact and the minibatch ELBO unbiased) and the flow serves the other sites;
            ``"error"`` refuses them, naming them. :attr:`local_sites` names them.
        local_plates: Plates whose members are exchangeable groups (group effects under
            global latents): their latent sites get one conditional flow shared by the
            members (:class:`~flowguide.autoguide.plate_flow.PlateFlow`), conditioned on
            the flow's latents and a learned per-member embedding, so that the funnel
            between a scale and the group effects is captured at a network size that does
            not grow with the groups; subsampled or not (a subsampled plate draws its
            minibatch's members, and the minibatch ELBO stays unbiased). The flow serves
            the other sites. :attr:`plate_sites` names the sites.
        create_plates: As in :class:`~pyro.infer.autoguide.AutoGuide`: the plates the
            guide should use, as a function of the model's arguments; required where a
            local site's plate takes its rows from the arguments (``subsample=index``).
        recipe: The training recipe (:class:`~flowguide.autoguide.recipe.Recipe`);
            default the class's :attr:`recipe`, measured for it.
        mode_search: Where the Laplace start is tried, L-BFGS also runs from screened
            prior draws and over-dispersed points within a time budget
            (:class:`~flowguide.autoguide.modes.ModeSearch`, default 8 starts and at most
            5 s); the distinct maxima, with their Laplace Gaussians and estimated masses,
            are :attr:`modes`. ``None`` tries the ``init_loc_fn`` point only.
        components: ``"auto"`` (default) makes the guide a mixture of flows
            (:class:`~flowguide.autoguide.mixture.FlowMixture`) with one component per
            mode of at least ``mode_search.min_mass`` (at most ``max_components``), each
            started at its mode's Laplace Gaussian, and weights learned; where one mode
            is found it is the single flow. An integer fixes :math:`K`; components beyond
            the modes found start at over-dispersed points. A mixture's log q is exact
            (logsumexp over the components) and it does not stick the landing; the
            recipe's ELBO (:class:`~flowguide.infer.StratifiedELBO`) sums over its
            components, at :math:`K` times a single flow's cost per step.

    The guide's parameters exist after :meth:`setup` (or the first call). A site that
    was not in a subsampled plate at set-up and is in one later changes shape, and is
    refused. :func:`flowguide.training.fit` applies the recipe by default; with ``SVI``,
    :meth:`recommended_optim` and :meth:`recommended_elbo` build it.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> from pyro.optim import Adam
        >>> from flowguide import AutoIAF
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

    #: The class's training recipe, chosen by measurement (``benchmarks/fit_quality.py``).
    recipe: Recipe = Recipe()

    def __init__(
        self,
        model: Callable,
        flow: Callable[[int], Flow],
        *,
        init_loc_fn: InitLocFn | None = None,
        init_scale: float | None = None,
        num_summary_samples: int = 4096,
        affine: Affine = "auto",
        head_rank: int = HEAD_RANK,
        warm_start: laplace.WarmStart = "auto",
        stl: bool | None = None,
        subsampled_sites: SubsampledSites = "normal",
        local_plates: Sequence[str] = (),
        create_plates: Callable | None = None,
        recipe: Recipe | None = None,
        mode_search: modes.ModeSearch | None = DEFAULT_SEARCH,
        components: Components = "auto",
    ) -> None:
        _check_options(flow, init_scale, num_summary_samples, stl, affine, warm_start, subsampled_sites)
        self.head_rank = check_dim("head_rank", head_rank)
        check_mixture_options(mode_search, components)
        if create_plates is not None and not callable(create_plates):
            raise TypeError(f"create_plates must be callable, got {type(create_plates).__name__}")
        if recipe is not None and not isinstance(recipe, Recipe):
            raise TypeError(f"recipe must be a flowguide Recipe, got {type(recipe).__name__}")
        flow(1)  # a dry run on one dimension surfaces bad options now, not at the first step
        self._default_init = init_loc_fn is None and init_scale is None
        super().__init__(model, init_loc_fn=init_to_median_or_flat if init_loc_fn is None else init_loc_fn)
        self._bare_model = (model,)  # without Pyro's InitMessenger: the log joint conditions every latent
        self._flow_fn = flow
        self.init_scale = 0.1 if init_scale is None else float(init_scale)
        self.num_summary_samples = num_summary_samples
        self.stl, self.affine, self.warm_start = stl, affine, warm_start
        self.subsampled_sites = subsampled_sites
        self.local_plates = _check_plates(local_plates)
        if self.local_plates and components not in ("auto", 1):
            raise ValueError(
                f"components={components!r} with local_plates: a mixture of flows does not "
                "condition plate flows; pass components='auto' or 1"
            )
        self.create_plates = create_plates
        self.mode_search, self.components = mode_search, components
        if recipe is not None:
            self.recipe = recipe
        #: The split of the latent sites (``None`` before set-up).
        self.plan: SitePlan | None = None
        #: Per-datum factors of the latent sites in subsampled plates (``None`` if there are none).
        self.local_guide: LocalNormal | None = None
        #: One plate flow per plate of ``local_plates`` (``None`` without any).
        self.plate_flows: torch.nn.ModuleDict | None = None
        #: Whether the Laplace warm start set the head (``False`` before set-up or after a fallback).
        self.warm_started = False
        #: Why a requested warm start was not used (``None`` if it was, or none was asked for).
        self.warm_start_fallback: str | None = None
        #: The modes the search found, largest mass first (empty where it did not run).
        self.modes: tuple[modes.Mode, ...] = ()
        self._primary_start: laplace.Start | None = None
        self._stratum: int | None = None

    _prototype_hide_fn = staticmethod(hide_enumerated)

    # ------------------------------------------------------------------ recipe
    def recommended_optim(self, num_steps: int, lr: float = 1e-2) -> PyroOptim:
        r"""Pyro optimizer of the recipe for ``num_steps`` SVI steps
        (:meth:`~flowguide.autoguide.recipe.Recipe.pyro_optim`): Adam with the rate decayed
        geometrically to ``recipe.lr_decay`` of ``lr`` and gradient entries clamped to
        ``recipe.grad_clamp``. The per-datum factors of :attr:`local_sites` keep the full
        rate: each moves only when its datum is in the minibatch.

        Arguments:
            num_steps: Steps of the run (the decay reaches ``lr_decay`` at the last).
            lr: Initial learning rate.

        Example:
            >>> import pyro, pyro.distributions as dist
            >>> from pyro.infer import SVI
            >>> from flowguide import AutoIAF
            >>> def model():
            ...     pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            >>> guide = AutoIAF(model)
            >>> svi = SVI(model, guide, guide.recommended_optim(1000), guide.recommended_elbo())
            >>> loss = svi.step()
        """
        return self.recipe.pyro_optim(num_steps, lr, self._is_local_param)

    def recommended_elbo(self, **options: Any) -> Trace_ELBO:
        """``Trace_ELBO`` with the recipe's particles, vectorized; ``options``
        (``max_plate_nesting``, ...) are passed on and override."""
        return self.recipe.elbo(**options)

    def full_rate_parameters(self) -> list[Tensor]:
        """The per-datum factors' parameters and the plate flows' per-member tables, which
        keep the full rate under the recipe's decay."""
        local = [] if self.local_guide is None else list(self.local_guide.parameters())
        return local + self._member_parameters()

    def _is_local_param(self, name: str) -> bool:
        """Whether a Pyro parameter name is one of :attr:`local_guide`'s or a per-member table."""
        if name in self._member_param_names():
            return True
        return self.local_guide is not None and name.startswith(self.local_guide._pyro_name + ".")

    @property
    def uses_stl(self) -> bool:
        """Whether the ELBO's gradient sticks the landing under ``Trace_ELBO``-type objectives
        (``stl``, or the recipe's default; not by default with ``local_plates``: there it
        costs about 1.5 times per step for a similar ELBO at equal seconds,
        ``benchmarks/plate_defaults.py``)."""
        if self.num_components > 1:
            return False
        if self.stl is not None:
            return self.stl
        if self.plan is None or self.plate_flows is not None:
            return False
        return self.recipe.sticks_the_landing(self.latent_dim, self.warm_started)

    def _sticks_the_landing(self, default: bool) -> bool:
        """Whether this call's estimator sticks the landing: ``stl`` or ``default``, as the
        objective evaluating the guide allows (:func:`~flowguide.autoguide.recipe.sticks_the_landing`)."""
        return sticks_the_landing(self.stl, default, current_objective(), type(self).__name__)

    def __getstate__(self) -> dict:
        # Pyro's AutoGuide drops the model reference *from the live guide* when pickled;
        # keep it here and drop it only from the pickled copy.
        model, master = self._model, self.master
        try:
            return {**super().__getstate__(), "_bare_model": (None,)}
        finally:
            self._model, self.master = model, master

    # ------------------------------------------------------------------ set-up
    def setup(self, *args: Any, **kwargs: Any) -> AutoFlow:
        """Trace the model once and create every parameter; returns ``self``. Once set up,
        take any values loaded into Pyro's parameter store since (see
        :mod:`~flowguide.autoguide.state`)."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        else:
            self._read_stored_parameters()
        return self

    @property
    def head_kind(self) -> Affine:
        """The head this guide builds at its latent dimension: ``affine`` with ``"auto"``
        resolved (:func:`~flowguide.autoguide.head.resolve_affine`); needs set-up."""
        self._require_setup()
        return resolve_affine(self.latent_dim, self.affine)

    @property
    def local_sites(self) -> tuple[str, ...]:
        """Latent sites guided per datum by :attr:`local_guide` (see ``subsampled_sites``).

        Example:
            >>> import pyro, pyro.distributions as dist, torch
            >>> from flowguide import AutoIAF
            >>> def model(x):
            ...     scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
            ...     with pyro.plate("data", len(x), subsample_size=10) as index:
            ...         z = pyro.sample("z", dist.Normal(0.0, scale))
            ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x[index])
            >>> guide = AutoIAF(model).setup(torch.randn(100))
            >>> guide.local_sites, guide.latent_dim, tuple(guide.median()["z"].shape)
            (('z',), 1, (100,))
        """
        return () if self.plan is None else tuple(self.plan.local)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        AutoGuide._setup_prototype(self, *args, **kwargs)  # every site and plate of the model
        owner = type(self).__name__
        check_sites(self.prototype_trace, owner, self.subsampled_sites, self.local_plates)
        plan = SitePlan(self.prototype_trace, owner, self.local_plates)
        survey = ModelSurvey(self._bare_model[0] or self.model, args, kwargs)  # no init_loc_fn run
        if not plan.latent_dim and not plan.full_size_sites() and not survey.has_sites():
            raise EmptyModelError(f"{owner} found no sample or param site in the model: nothing to fit")
        if self.warm_start == "laplace" and plan.full_size_sites():
            raise ValueError(
                f"{owner}: warm_start='laplace' fits the flow's sites given the data; latent "
                f"site '{next(iter(plan.full_size_sites()))}' is local to a subsampled plate or to "
                "local_plates. Pass warm_start=None, or 'auto' (which skips these models)"
            )
        check_local_plates(plan.full_size_sites(), survey, self._given_plates(args, kwargs), owner)
        check_observed(survey, owner)
        self.plan, self.latent_dim = plan, plan.latent_dim
        self._unconstrained_shapes = plan.unconstrained_shapes  # what AutoContinuous's methods read
        self._cond_indep_stacks = plan.cond_indep_stacks
        if plan.local:
            self.local_guide = LocalNormal(plan.local, self.init_scale)
        self._setup_plate_flows()
        plan.remember(args, kwargs)
        if self.latent_dim:
            self._setup_flow(survey, args, kwargs)
        self._read_stored_parameters()
        self._apply_deferred()

    def _read_stored_parameters(self) -> None:
        """Take the values Pyro's parameter store holds under the guide's names: the flow's
        (which Pyro would leave alone) and the per-datum factors' (which Pyro reads at a
        call; read here, so that summaries before one see them too)."""
        if self.latent_dim:
            adopt_stored_parameters(self, "flow")
        if self.plate_flows is not None:
            adopt_stored_parameters(self, "plate_flows")
        if self.local_guide is not None:
            with self._pyro_context:
                local = self.local_guide
                for name in self.plan.local:
                    local._loc_scale(name)

    def _given_plates(self, args: tuple, kwargs: dict) -> set[str]:
        """Names of the plates the guide's ``create_plates`` (or its master's) gives."""
        owner = self.master() if self.master is not None else self
        if owner.create_plates is None:
            return set()
        with torch.random.fork_rng(devices=[]), pyro.poutine.block():
            return given_plates(owner.create_plates(*args, **kwargs))

    def _setup_flow(self, survey: ModelSurvey, args: tuple, kwargs: dict) -> None:
        """Build the flow over the packed latents and set its head from the start; a
        mixture of flows where the start has several components."""
        loc = self.plan.init_latent()
        head = AffineHead(self.latent_dim, self.affine, self.head_rank)
        first = HeadedFlow(self._build_core(), head).to(loc)
        scale = torch.full_like(loc, self.init_scale)
        warm = self._wants_warm_start(survey)
        if not warm and self.components in ("auto", 1):
            first.head.set_diagonal_start(loc, scale)  # no D x D matrix: D may be 10^5
            self.flow = first
            return
        start = laplace.Start(loc, torch.diag(scale))
        if warm:
            start = self._warm_start(start, args, kwargs)
        first.head.set_start(start.loc, start.scale_tril, start.loc_unit)
        self.flow = self._mixture_or(first, start)

    def _build_core(self) -> Flow:
        """The flow builder's core for the latent dimension, in the recipe's unit."""
        core = self._flow_fn(self.latent_dim)
        if not isinstance(core, Flow) or core.dim != self.latent_dim or core.context_dim is not None:
            raise TypeError(
                f"flow({self.latent_dim}) must return an unconditional Flow of dim {self.latent_dim}, "
                f"got {core!r:.80}"
            )
        for module in core.modules():
            if isinstance(module, UnitScaled):
                module.set_unit(self.recipe.core_unit)
        return core

    def _wants_warm_start(self, survey: ModelSurvey) -> bool:
        if self.warm_start != "auto":
            return self.warm_start == "laplace"
        if not (self._default_init and self.latent_dim <= self.recipe.laplace_max_dim):
            return False
        if self.plan.local or survey.subsamples():
            self.warm_start_fallback = "the model subsamples a plate: a minibatch's Laplace fit is noisy"
            return False
        if self.plan.members:
            self.warm_start_fallback = (
                "local_plates: the Laplace fit of the flow's sites needs the plates' too"
            )
            return False
        return True

    def _warm_start(self, cold: laplace.Start, args: tuple, kwargs: dict) -> laplace.Start:
        """The Laplace start (of the heaviest mode where the search runs), or the cold one
        (recording why in :attr:`warm_start_fallback`)."""
        log_p = functools.partial(laplace.log_joint, self._bare_model[0] or self.model, self.plan)
        log_p = functools.partial(_call_with, log_p, args, kwargs)
        start, reason = laplace.choose_start(log_p, cold, self.warm_start, self.head_kind == "diagonal")
        if self.mode_search is not None and (
            start.laplace or not reason.startswith(laplace.REJECTED_BY_ELBO)
        ):
            start, reason = self._search_modes(log_p, cold, start, reason, args, kwargs)
        self.warm_started, self.warm_start_fallback = start.laplace, reason
        if reason is not None and self.warm_start == "laplace":
            warnings.warn(
                f"{type(self).__name__}: warm_start='laplace' fell back to init_loc_fn and init_scale: "
                f"{reason}",
                stacklevel=5,
            )
        return start

    # ------------------------------------------------------------------ posterior
    def get_base_dist(self):
        return self._single_flow("base distribution").base()

    def get_transform(self, *args: Any, **kwargs: Any):
        return self._single_flow("transform").transform()

    def get_posterior(self, *args: Any, **kwargs: Any) -> FlowDistribution | MixtureDistribution:
        """The flow distribution over the packed unconstrained latent vector (a
        :class:`~flowguide.autoguide.mixture.MixtureDistribution` for a mixture)."""
        flow = self._require_flow()
        if isinstance(flow, FlowMixture):
            return MixtureDistribution(flow)
        return flow(stl=self._sticks_the_landing(self.uses_stl))

    def sample_latent(self, *args: Any, **kwargs: Any) -> Tensor:
        """The packed latent (see :class:`~flowguide.autoguide.multimodal.MultimodalGuide`),
        kept for the call's plate flows, which condition on it."""
        latent = super().sample_latent(*args, **kwargs)
        self._latent_draw = latent
        return latent

    def _require_flow(self) -> HeadedFlow | FlowMixture:
        """The flow, or a ``RuntimeError`` saying why there is none."""
        self._require_setup()
        if not self.latent_dim:
            what = "no latent site"
            if self.plan.local:
                what = "only latent sites local to subsampled plates (see local_guide)"
            raise RuntimeError(f"{type(self).__name__} has no flow: the model has {what}")
        return self.flow

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        else:
            self.plan.check_shapes(None if self._model is None else self.model, args, kwargs)
            if self.latent_dim:
                adopt_stored_parameters(self, "flow")
        self._latent_draw = None
        if self.latent_dim:
            result = super().forward(*args, **kwargs)  # creates the plates too
        else:
            result = {}
            self._create_plates(*args, **kwargs)
        result.update(self._sample_members(self._latent_draw))
        self._latent_draw = None
        for name, site in self.plan.local.items():
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    stack.enter_context(self.plates[frame.name])
                result[name] = self.local_guide.sample(name, stl=self._sticks_the_landing(True))
        return result


def _check_options(
    flow: Any,
    init_scale: Any,
    num_summary_samples: Any,
    stl: Any,
    affine: Any,
    warm_start: Any,
    subsampled_sites: Any,
) -> None:
    """Refuse bad constructor options with a message naming the option."""
    if not callable(flow):
        raise TypeError(f"flow must be a callable dim -> Flow, got {type(flow).__name__}")
    if init_scale is not None and not (isinstance(init_scale, (int, float)) and init_scale > 0):
        raise ValueError(f"init_scale must be a positive number, got {init_scale!r}")
    if not (isinstance(num_summary_samples, int) and num_summary_samples >= 2):
        raise ValueError(f"num_summary_samples must be an integer >= 2, got {num_summary_samples!r}")
    if not isinstance(stl, (bool, type(None))):
        raise TypeError(f"stl must be True, False or None, got {stl!r}")
    for name, value, allowed in (
        ("affine", affine, get_args(Affine)),
        ("warm_start", warm_start, (None, "laplace", "auto")),
        ("subsampled_sites", subsampled_sites, get_args(SubsampledSites)),
    ):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _check_plates(local_plates: Any) -> tuple[str, ...]:
    """``local_plates`` as a tuple of plate names, or a ``TypeError`` naming the option."""
    if isinstance(local_plates, str) or not all(isinstance(p, str) for p in local_plates):
        raise TypeError(f"local_plates must be a sequence of plate names, got {local_plates!r}")
    return tuple(local_plates)


def _call_with(log_p: Callable, args: tuple, kwargs: dict, latent: Tensor) -> Tensor:
    return log_p(latent, args, kwargs)
