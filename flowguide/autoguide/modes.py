r"""Mode search at set-up: L-BFGS from several starts, merged maxima, and their masses.

A reverse-KL fit from one Laplace start stays on the mode that start found. The search
runs the Laplace fit (:mod:`~flowguide.autoguide.laplace`) from the ``init_loc_fn`` point,
from over-dispersed points around the first mode, and from the prior draws of highest log
joint among many scored in one vectorized pass (a narrow mode has a small basin but a high
density), within a time budget (:class:`ModeSearch`), and merges maxima that are the same mode: two maxima
:math:`\hat z_i, \hat z_j` with Laplace factors :math:`S_i, S_j` are one mode where

.. math::
    \max\big(\|S_i^{-1}(\hat z_j - \hat z_i)\|, \|S_j^{-1}(\hat z_i - \hat z_j)\|\big) < 1,

i.e. each lies within one standard deviation of the other in both metrics. Each mode's
mass starts from the Laplace evidence
:math:`\log m_k = \log p(x, \hat z_k) + \tfrac D2 \log 2\pi + \log|\det S_k|` and, where
there are several modes, is refined by importance sampling from the equal mixture of the
Laplace Gaussians, each draw's weight :math:`p(x,z)/\bar q(z)` shared out by the
Gaussians' responsibilities :math:`r_k(z) = N_k(z) / \sum_j N_j(z)`:

.. math::
    \hat m_k = \frac{\sum_i w_i\, r_k(z_i)}{\sum_i w_i},
    \qquad z_i \sim \bar q = \tfrac1K \textstyle\sum_j N_j.

The same responsibilities (with the masses as prior weights) assign draws of a trained
guide to modes, which is how :func:`coverage` tells a mode the guide missed.

References:
    L. Tierney, J. B. Kadane. Accurate Approximations for Posterior Moments and Marginal
    Densities. JASA 81 (1986).

    A. Owen, Y. Zhou. Safe and Effective Importance Sampling. JASA 95 (2000).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.transforms import biject_to
from torch import Tensor

from flowguide.autoguide.laplace import LogJoint, Start, laplace_approximation, laplace_map
from flowguide.autoguide.sites import SitePlan

__all__ = [
    "Mode",
    "ModeCoverage",
    "ModeSearch",
    "assign",
    "coverage",
    "dispersed_starts",
    "find_modes",
    "prior_starts",
    "same_mode",
    "screened_starts",
]


@dataclass(frozen=True)
class ModeSearch:
    """How a flow autoguide searches for modes at set-up.

    Attributes:
        starts: L-BFGS starts in all, the ``init_loc_fn`` point included; the others are
            split between over-dispersed points around the first mode and screened prior
            draws (``screen_draws``).
        time_budget: Seconds after which no further start is begun (the first always
            runs, and a started search finishes), so set-up takes about this long at most
            beyond one Laplace fit per start begun.
        dispersion: Over-dispersed starts are the first mode plus ``dispersion`` times
            its Laplace factor times standard normal noise.
        min_mass: Modes with less estimated mass get no mixture component (they are still
            listed in ``guide.modes``).
        max_components: At most this many components for ``components="auto"``.
        mass_draws: Importance draws per mode for the mass estimate (only where there are
            several modes).
        screen_draws: Prior draws scored by the log joint in one vectorized pass; the
            best of them, each at least a quarter of the draws' spread from the others,
            are starts. A narrow mode has a small basin that few random starts reach, but
            its density is high, so a screened draw finds it. Models that do not
            vectorize over a batch of draws get plain prior draws instead.
        seed: Seed of the starts' and the mass estimate's draws (the global random state
            is left as it was).

    Example:
        >>> ModeSearch(starts=4).time_budget
        5.0
    """

    starts: int = 8
    time_budget: float = 5.0
    dispersion: float = 3.0
    min_mass: float = 0.02
    max_components: int = 4
    mass_draws: int = 128
    screen_draws: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("starts", "max_components", "mass_draws", "screen_draws"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"ModeSearch.{name} must be a positive integer, got {value!r}")
        for name in ("time_budget", "dispersion"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"ModeSearch.{name} must be a non-negative number, got {value!r}")
        if not (isinstance(self.min_mass, (int, float)) and 0 <= self.min_mass < 1):
            raise ValueError(f"ModeSearch.min_mass must lie in [0, 1), got {self.min_mass!r}")


@dataclass(frozen=True)
class Mode:
    r"""A local maximum of the log joint with its Laplace Gaussian and estimated mass.

    Attributes:
        start: The Laplace Gaussian :math:`N(\hat z, S S^\top)` (full :math:`S`).
        log_density: :math:`\log p(x, \hat z)` in unconstrained space (constraints'
            log-Jacobians included).
        mass: Estimated posterior mass (the modes' masses sum to 1).
        primary: Whether it is the mode the ``init_loc_fn`` start found.
    """

    start: Start
    log_density: float
    mass: float = 1.0
    primary: bool = False

    @property
    def loc(self) -> Tensor:
        r""":math:`\hat z`, the packed unconstrained maximum."""
        return self.start.loc

    def laplace_log_mass(self) -> float:
        r""":math:`\log p(x,\hat z) + \frac D2 \log 2\pi + \log|\det S|`."""
        dim = self.loc.numel()
        return (
            self.log_density
            + 0.5 * dim * math.log(2 * math.pi)
            + float(self.start.scale_tril.diagonal().log().sum())
        )

    def log_normal(self, z: Tensor) -> Tensor:
        """Log-density of the mode's Laplace Gaussian at rows ``z`` of shape ``(N, D)``."""
        scale_tril = self.start.scale_tril.to(z)
        return torch.distributions.MultivariateNormal(self.loc.to(z), scale_tril=scale_tril).log_prob(z)


@dataclass(frozen=True)
class ModeCoverage:
    """How much of a guide's mass lies at one mode found by the search.

    Attributes:
        mode: Index into ``guide.modes``.
        mass: The mode's mass estimated by the search.
        guide_mass: Fraction of the guide's draws assigned to the mode (:func:`assign`).
        missing: Whether the guide puts almost no mass there: ``guide_mass`` below
            ``threshold`` times ``mass``, for a mode of at least the search's ``min_mass``.
    """

    mode: int
    mass: float
    guide_mass: float
    missing: bool


def same_mode(a: Start, b: Start) -> bool:
    """Whether two maxima lie within one standard deviation of each other in both their
    Laplace metrics (the module docstring)."""
    gap = (b.loc - a.loc).unsqueeze(-1)
    da = torch.linalg.solve_triangular(a.scale_tril, gap, upper=False).norm()
    db = torch.linalg.solve_triangular(b.scale_tril, -gap, upper=False).norm()
    return bool(torch.maximum(da, db) < 1)


def prior_starts(
    model: Callable, plan: SitePlan, args: tuple, kwargs: dict, count: int, seed: int
) -> list[Tensor]:
    """Packed unconstrained draws of the flow's sites from the model's prior (the data
    held as observed), under a forked random state seeded with ``seed``. Draws the model
    cannot make (an improper prior) or that are not finite are left out."""
    draws = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(count):
            try:
                trace = poutine.block(poutine.trace(model).get_trace)(*args, **kwargs)
                parts = [
                    biject_to(site["fn"].support).inv(trace.nodes[name]["value"].detach()).reshape(-1)
                    for name, site in plan.flow_sites()
                ]
            except (NotImplementedError, ValueError, RuntimeError, KeyError):
                return draws  # an improper prior, or a model whose sites vary between runs
            latent = torch.cat(parts)
            if torch.isfinite(latent).all():
                draws.append(latent)
    return draws


def screened_starts(
    model: Callable, plan: SitePlan, args: tuple, kwargs: dict, count: int, search: ModeSearch
) -> list[Tensor]:
    """The ``count`` best of ``search.screen_draws`` prior draws by the log joint in
    unconstrained space, each at least 0.25 (in units of the draws' standard deviation per
    coordinate) from those chosen before; plain :func:`prior_starts` where the model does
    not vectorize over a batch of draws."""
    if count < 1:
        return []
    try:
        draws, scores = _screen(model, plan, args, kwargs, search)
    except (NotImplementedError, ValueError, RuntimeError, KeyError, IndexError):
        return prior_starts(model, plan, args, kwargs, count, search.seed)
    keep = torch.isfinite(scores) & torch.isfinite(draws).all(-1)
    draws, scores = draws[keep], scores[keep]
    if not len(draws):
        return prior_starts(model, plan, args, kwargs, count, search.seed)
    unit = draws.std(0).clamp_min(1e-12) if len(draws) > 1 else torch.ones_like(draws[0])
    chosen: list[Tensor] = []
    for index in scores.argsort(descending=True):
        point = draws[index]
        if all(((point - other) / unit).norm() > 0.25 for other in chosen):
            chosen.append(point)
            if len(chosen) == count:
                break
    return chosen


def _screen(model: Callable, plan: SitePlan, args: tuple, kwargs: dict, search: ModeSearch) -> tuple:
    """Prior draws ``(M, D)`` of the flow's sites and their log joints with the constraints'
    log-Jacobians, from one trace of the model under a plate of ``M`` draws."""
    nesting = max(
        (-frame.dim for _, site in plan.flow_sites() for frame in site["cond_indep_stack"]), default=0
    )
    count, dim = search.screen_draws, -nesting - 1
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(search.seed + 3)
        with poutine.block(), pyro.plate("_mode_screen", count, dim=dim):
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        trace.compute_log_prob()
        scores = sum(
            _per_draw(site["log_prob"], dim, count)
            for site in trace.nodes.values()
            if site["type"] == "sample"
        )
        parts = []
        for name, site in plan.flow_sites():
            value = trace.nodes[name]["value"]
            transform = biject_to(site["fn"].support)
            unconstrained = transform.inv(value)
            scores = scores + _per_draw(transform.log_abs_det_jacobian(unconstrained, value), dim, count)
            if unconstrained.numel() != count * plan.unconstrained_shapes[name].numel():
                raise ValueError(f"site '{name}' did not vectorize over the screening draws")
            parts.append(unconstrained.reshape(count, -1))
    return torch.cat(parts, -1), scores


def _per_draw(log_prob: Tensor, dim: int, count: int) -> Tensor:
    """A site's log-density summed to one value per screening draw (the draws at ``dim``)."""
    if log_prob.dim() < -dim or log_prob.shape[dim] != count:
        return log_prob.sum().expand(count)
    return log_prob.movedim(dim, 0).reshape(count, -1).sum(-1)


def dispersed_starts(first: Start, count: int, dispersion: float, seed: int) -> list[Tensor]:
    """``count`` points :math:`\\hat z + c\\, S \\epsilon` around the first mode."""
    generator = torch.Generator().manual_seed(seed + 1)
    eps = torch.randn(count, first.loc.numel(), generator=generator).to(first.loc)
    return list(first.loc + dispersion * eps @ first.scale_tril.T)


def find_modes(
    log_p: LogJoint, first: Mode | None, starts: Sequence[Tensor], search: ModeSearch
) -> list[Mode]:
    """The distinct modes from ``first`` and the Laplace fits from ``starts``, sorted by
    estimated mass (largest first), with their masses; empty where none was found.

    Arguments:
        log_p: The log joint of a packed unconstrained vector.
        first: The mode of the ``init_loc_fn`` start (full Laplace factor), if it has one.
        starts: Further L-BFGS starts, tried in order until the time budget is spent.
        search: The search's settings.

    Example:
        >>> import torch
        >>> def log_p(z):  # modes at -3 and 3, the right one three times as heavy
        ...     right = -0.5 * (z - 3) ** 2 + torch.tensor(3.0).log()
        ...     return torch.stack([-0.5 * (z + 3) ** 2, right]).logsumexp(0).sum()
        >>> starts = [torch.tensor([-5.0]), torch.tensor([4.0]), torch.tensor([2.5])]
        >>> modes = find_modes(log_p, None, starts, ModeSearch())
        >>> [(round(float(m.loc), 2), round(m.mass, 2)) for m in modes]
        [(3.0, 0.75), (-3.0, 0.25)]
    """
    began = time.perf_counter()
    modes = [] if first is None else [first]
    for init in starts:
        if time.perf_counter() - began > search.time_budget:
            break
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Encountered NaN")
            point = laplace_map(log_p, init, max_iter=30, tolerance_grad=1e-3)  # coarse: cheap
        if point is None or any(_within_one_sd(other.start, point) for other in modes):
            continue  # no maximum, or one already known: no Hessian needed
        mode = _laplace_mode(log_p, point)  # polished, with its Laplace factor
        if mode is None:
            continue
        twin = next((i for i, other in enumerate(modes) if same_mode(other.start, mode.start)), None)
        if twin is None:
            modes.append(mode)
        elif mode.log_density > modes[twin].log_density and not modes[twin].primary:
            modes[twin] = mode
    if not modes:
        return []
    masses = _masses(log_p, modes, search)
    modes = [replace(mode, mass=float(mass)) for mode, mass in zip(modes, masses, strict=True)]
    return sorted(modes, key=lambda mode: -mode.mass)


def _within_one_sd(mode: Start, point: Tensor) -> bool:
    """Whether ``point`` lies within one standard deviation of ``mode`` in its Laplace metric."""
    gap = (point - mode.loc).unsqueeze(-1)
    return bool(torch.linalg.solve_triangular(mode.scale_tril, gap, upper=False).norm() < 1)


def _laplace_mode(log_p: LogJoint, init: Tensor) -> Mode | None:
    """The Laplace fit from ``init`` as a :class:`Mode`, or ``None`` where there is none."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Encountered NaN")
            start = laplace_approximation(log_p, init)
        if isinstance(start, str):
            return None
        point = start.loc.detach().requires_grad_(True)
        value = log_p(point)
        (gradient,) = torch.autograd.grad(value, [point])
    except (ValueError, RuntimeError):  # the model rejected the start point
        return None
    # a maximum, not a point where the line search gave up: log p changes by less than
    # 0.01 within one Laplace standard deviation in any direction
    flat = bool((start.scale_tril.T @ gradient).norm() < 0.01)
    value = float(value.detach())
    return Mode(start, value) if flat and math.isfinite(value) else None


def _masses(log_p: LogJoint, modes: list[Mode], search: ModeSearch) -> Tensor:
    """The modes' masses: Laplace evidences, refined by importance sampling where several."""
    laplace = torch.tensor([mode.laplace_log_mass() for mode in modes], dtype=torch.float64).softmax(0)
    if len(modes) == 1:
        return laplace
    loc = modes[0].loc
    generator = torch.Generator().manual_seed(search.seed + 2)
    draws = torch.cat(
        [
            mode.loc
            + torch.randn(search.mass_draws, loc.numel(), generator=generator).to(loc)
            @ mode.start.scale_tril.T
            for mode in modes
        ]
    )
    with torch.no_grad():
        log_normals = torch.stack([mode.log_normal(draws) for mode in modes], -1)  # (N, K)
        log_mix = log_normals.logsumexp(-1) - math.log(len(modes))
        log_target = torch.stack([_safe(log_p, z) for z in draws])
    log_w = (log_target - log_mix).double()
    if not torch.isfinite(log_w.logsumexp(0)):
        return laplace
    weights = (log_w - log_w.logsumexp(0)).exp()
    responsibilities = (log_normals - log_normals.logsumexp(-1, keepdim=True)).exp().double()
    return weights @ responsibilities


def _safe(log_p: LogJoint, z: Tensor) -> Tensor:
    """``log_p(z)``, or ``-inf`` where the model rejects the point or scores it non-finite."""
    try:
        value = log_p(z)
    except (ValueError, RuntimeError):
        return torch.tensor(-math.inf, dtype=z.dtype)
    return value if torch.isfinite(value) else torch.tensor(-math.inf, dtype=z.dtype)


def assign(z: Tensor, modes: Sequence[Mode]) -> Tensor:
    """Index of the mode each row of ``z`` (shape ``(N, D)``) belongs to: the largest
    :math:`\\log m_k + \\log N_k(z)` (the Laplace mixture's classification)."""
    scores = torch.stack([math.log(max(mode.mass, 1e-300)) + mode.log_normal(z) for mode in modes], -1)
    return scores.argmax(-1)


def coverage(
    draws: Tensor, modes: Sequence[Mode], min_mass: float = 0.02, threshold: float = 0.2
) -> list[ModeCoverage]:
    """The share of a guide's ``draws`` (shape ``(N, D)``) at each mode, and which modes it
    missed: a mode of mass at least ``min_mass`` where the share is below ``threshold``
    times the mode's mass.

    Example:
        >>> import torch
        >>> from flowguide.autoguide.laplace import Start
        >>> left = Mode(Start(torch.tensor([-4.0]), torch.eye(1), True), 0.0, mass=0.5)
        >>> right = Mode(Start(torch.tensor([4.0]), torch.eye(1), True), 0.0, mass=0.5)
        >>> draws = torch.randn(1000, 1) - 4.0  # a guide on the left mode only
        >>> [row.missing for row in coverage(draws, [left, right])]
        [False, True]
    """
    shares = torch.bincount(assign(draws, modes), minlength=len(modes)).double() / len(draws)
    return [
        ModeCoverage(
            i, mode.mass, float(share), mode.mass >= min_mass and float(share) < threshold * mode.mass
        )
        for i, (mode, share) in enumerate(zip(modes, shares, strict=True))
    ]
