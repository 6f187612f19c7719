r"""What a flow autoguide adds for posteriors with several modes: the mode search at set-up,
the mixture of flows it leads to, its component site, and the coverage diagnostic.

:class:`MultimodalGuide` is a mixin of :class:`~flowguide.autoguide.AutoFlow`; the search
itself is :mod:`~flowguide.autoguide.modes`, the mixture
:mod:`~flowguide.autoguide.mixture`, and its objective
:class:`~flowguide.infer.StratifiedELBO`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import JitTrace_ELBO, Trace_ELBO
from torch import Tensor

from flowguide.autoguide import laplace, modes
from flowguide.autoguide.head import AffineHead, HeadedFlow
from flowguide.autoguide.mixture import FlowMixture
from flowguide.autoguide.recipe import current_objective
from flowguide.infer.stratified import StratifiedELBO

__all__ = ["Components", "DEFAULT_SEARCH", "MultimodalGuide", "check_mixture_options"]

#: Mixture components: ``"auto"`` (one per mode the search found), or a number.
Components = Literal["auto"] | int
#: The default mode search (:class:`~flowguide.autoguide.modes.ModeSearch`).
DEFAULT_SEARCH = modes.ModeSearch()


class MultimodalGuide:
    """Mixin: the mode search, the mixture and its component site for a flow autoguide.

    The guide supplies ``plan``, ``latent_dim``, ``flow``, ``affine``, ``head_rank``,
    ``head_kind``, ``stl``, ``mode_search``, ``components``, ``modes``,
    ``_primary_start`` and ``_stratum`` (set in its constructor),
    ``_bare_model``/``model``, ``_build_core()``, ``_require_flow()`` and
    ``_require_setup()``.
    """

    def _search_modes(
        self,
        log_p: laplace.LogJoint,
        cold: laplace.Start,
        start: laplace.Start,
        reason: str | None,
        args: tuple,
        kwargs: dict,
    ) -> tuple[laplace.Start, str | None]:
        """Run the mode search (:mod:`~flowguide.autoguide.modes`) and return the start of its
        heaviest mode; set :attr:`modes`. Where the ``init_loc_fn`` point had no Laplace fit,
        a mode found elsewhere is taken only where its ELBO is at least the cold start's (a
        funnel's neck is a finite maximum that no guide should start at)."""
        search, first = self.mode_search, None
        if start.laplace:
            full = start if self.head_kind != "diagonal" else laplace.laplace_approximation(log_p, start.loc)
            if isinstance(full, laplace.Start):
                first = modes.Mode(full, float(log_p(start.loc).detach()), primary=True)
        extra = search.starts - 1
        dispersed = (
            modes.dispersed_starts(first.start, extra // 2, search.dispersion, search.seed) if first else []
        )
        model = self._bare_model[0] or self.model
        prior = modes.screened_starts(model, self.plan, args, kwargs, extra - len(dispersed), search)
        found = modes.find_modes(log_p, first, _alternate(dispersed, prior), search)
        if not found:
            return start, reason
        best = self._head_start(found[0], start)
        if not start.laplace and laplace.gaussian_elbo(log_p, best) < laplace.gaussian_elbo(log_p, cold):
            return start, reason  # the only modes found lose to the cold start
        self.modes, self._primary_start = tuple(found), start
        return best, None

    def _head_start(self, mode: modes.Mode, primary: laplace.Start) -> laplace.Start:
        """The head's start at ``mode``: the warm start itself for the ``init_loc_fn`` mode,
        else its Laplace Gaussian (conditional scales only, for a diagonal head)."""
        if mode.primary:
            return primary
        if self.head_kind != "diagonal":
            return mode.start
        return laplace.Start(
            mode.loc, torch.diag(laplace.conditional_scale(mode.start.scale_tril)), laplace=True
        )

    def _component_starts(self, start: laplace.Start) -> list[tuple[laplace.Start, float]]:
        """Each mixture component's start and initial weight, the given start first."""
        if self.components == 1:
            return [(start, 1.0)]
        search = self.mode_search or DEFAULT_SEARCH
        primary = self._primary_start or start
        heavy = [mode for mode in self.modes if mode.mass >= search.min_mass]
        if self.components == "auto":
            heavy = heavy[: search.max_components]
            return (
                [(start, 1.0)] if len(heavy) <= 1 else [(self._head_start(m, primary), m.mass) for m in heavy]
            )
        chosen = [(self._head_start(m, primary), max(m.mass, 1e-3)) for m in self.modes[: self.components]]
        chosen = chosen or [(start, 1.0)]
        shifts = modes.dispersed_starts(
            start, self.components - len(chosen), search.dispersion, search.seed + 7
        )
        weight = sum(w for _, w in chosen) / len(chosen)
        return chosen + [(laplace.Start(loc, start.scale_tril, start.laplace), weight) for loc in shifts]

    def _mixture_or(self, first: HeadedFlow, start: laplace.Start) -> HeadedFlow | FlowMixture:
        """``first`` (set from ``start``), or a mixture of it and one more headed flow per
        further component start (:meth:`_component_starts`)."""
        starts = self._component_starts(start)
        if len(starts) == 1:
            return first
        flows = [first]
        for other, _ in starts[1:]:
            flow = HeadedFlow(
                self._build_core(), AffineHead(self.latent_dim, self.affine, self.head_rank)
            ).to(first.base_loc)
            flow.head.set_start(other.loc, other.scale_tril, other.loc_unit)
            flows.append(flow)
        if self.stl:
            warnings.warn(
                f"{type(self).__name__}: stl=True is not used by a mixture of {len(flows)} flows "
                "(its log q needs every component's inverse); pass components=1 to stick the landing",
                stacklevel=5,
            )
        weights = torch.tensor([weight for _, weight in starts]).to(first.base_loc)
        return FlowMixture(flows, weights)

    def sample_latent(self, *args: Any, **kwargs: Any) -> Tensor:
        """The packed latent; for a mixture, after its component (a site of its own, see
        :mod:`~flowguide.autoguide.mixture`), observed at :meth:`stratum`'s component within one."""
        flow = self._require_flow()
        if not isinstance(flow, FlowMixture):
            return super().sample_latent(*args, **kwargs)
        fixed = None if self._stratum is None else torch.as_tensor(self._stratum, device=flow.logits.device)
        score_term = fixed is None and _scores_components(current_objective(), type(self).__name__)
        component = pyro.sample(
            self.component_site, dist.Categorical(logits=flow.logits), obs=fixed, infer={"is_auxiliary": True}
        )
        return pyro.sample(
            f"_{self._pyro_name}_latent", flow(component, score_term), infer={"is_auxiliary": True}
        )

    @property
    def num_components(self) -> int:
        """:math:`K`, the mixture's components (1 for a single flow, and before set-up)."""
        if self.plan is None or not self.latent_dim or not isinstance(self.flow, FlowMixture):
            return 1
        return self.flow.num_components

    @property
    def component_site(self) -> str:
        """The name of a mixture's component site."""
        return f"_{self._pyro_name}_component"

    @contextmanager
    def stratum(self, component: int | Tensor) -> Iterator[None]:
        """Within the block, a mixture's draws come from ``component``: its site is observed
        there (an index, or a tensor of indices shaped as the site's batch, e.g. one per
        vectorized particle), as :class:`~flowguide.infer.StratifiedELBO` does."""
        indices = torch.as_tensor(component)
        if indices.dtype.is_floating_point or not ((indices >= 0) & (indices < self.num_components)).all():
            raise ValueError(f"component must be integers in [0, {self.num_components}), got {component!r}")
        previous, self._stratum = self._stratum, component
        try:
            yield
        finally:
            self._stratum = previous

    @torch.no_grad()
    def mode_coverage(self, num_samples: int = 4096, threshold: float = 0.2) -> list[modes.ModeCoverage]:
        """The guide's share of mass at each of :attr:`modes`, and which it misses
        (:func:`~flowguide.autoguide.modes.coverage`: a share below ``threshold`` times the
        mode's estimated mass); empty where the search found no mode.

        Arguments:
            num_samples: Guide draws to assign to the modes.
            threshold: A mode is missed where the guide's share there is below this
                fraction of its estimated mass.
        """
        self._require_setup()
        if not self.modes:
            return []
        min_mass = (self.mode_search or DEFAULT_SEARCH).min_mass
        return modes.coverage(self.flow.draws(num_samples), self.modes, min_mass, threshold)

    def _single_flow(self, what: str) -> HeadedFlow:
        flow = self._require_flow()
        if isinstance(flow, FlowMixture):
            raise ValueError(
                f"{type(self).__name__} is a mixture of {flow.num_components} flows: it has no single {what} "
                "(NeuTra reparameterization needs one). Pass components=1"
            )
        return flow


def _scores_components(objective: Any, owner: str) -> bool:
    """Whether a mixture's latent adds the score term Pyro's ``Trace_ELBO`` needs (see
    :mod:`~flowguide.autoguide.mixture`); refuses objectives under which the weights'
    gradient would be biased."""
    if objective is None or isinstance(objective, StratifiedELBO):
        return False  # not training (Predictive, summaries, diagnostics), or stratified
    if type(objective) in (Trace_ELBO, JitTrace_ELBO):
        return True
    raise ValueError(
        f"{owner} is a mixture of flows: train it with flowguide.infer.StratifiedELBO (its recipe's, "
        f"guide.recommended_elbo()) or Trace_ELBO; under {type(objective).__name__} the mixture "
        "weights' gradient would be biased. Pass components=1 for a single flow"
    )


def _alternate(first: list, second: list) -> list:
    """The items of both lists taken in turn (so a time budget spends on both kinds)."""
    merged = [item for pair in zip(first, second, strict=False) for item in pair]
    longer = first if len(first) > len(second) else second
    return merged + longer[min(len(first), len(second)) :]


def check_mixture_options(mode_search: Any, components: Any) -> None:
    """Refuse a bad ``mode_search`` or ``components``, naming the option."""
    if mode_search is not None and not isinstance(mode_search, modes.ModeSearch):
        raise TypeError(
            f"mode_search must be a flowguide ModeSearch or None, got {type(mode_search).__name__}"
        )
    if components != "auto" and not (
        isinstance(components, int) and not isinstance(components, bool) and components >= 1
    ):
        raise ValueError(f"components must be 'auto' or a positive integer, got {components!r}")
