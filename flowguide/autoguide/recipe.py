r"""The training recipe of a flow autoguide: one frozen value, read by SVI users and ``fit`` alike.

Each flow autoguide class carries a :class:`Recipe`, chosen by measurement
(``benchmarks/fit_quality.py``): how many particles its ELBO draws, how the learning
rate decays and how far gradients are clamped, the unit its flow layers store their
parameters in, and when it sticks the landing or tries the Laplace start.

The rate decays geometrically over a run of :math:`T` updates,

.. math::
    \text{lr}_t = \text{lr} \cdot \text{lr\_decay}^{\min(t, T) / T},

and every gradient entry is clamped to :math:`[-c, c]` before the update.
:class:`RecipeSchedule` applies both to any torch optimizer; it is the one
implementation behind :meth:`Recipe.pyro_optim` (for ``pyro.infer.SVI``) and behind
:class:`~flowguide.training.Trainer` (for :func:`~flowguide.training.fit`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from pyro.infer import ELBO, RenyiELBO, Trace_ELBO
from pyro.optim import Adam, PyroOptim
from torch import Tensor

from flowguide.infer.stratified import StratifiedELBO

__all__ = [
    "PathGradientObjective",
    "Recipe",
    "RecipeAdam",
    "RecipeGuide",
    "RecipeSchedule",
    "current_objective",
    "sticks_the_landing",
]


@dataclass(frozen=True)
class Recipe:
    r"""How a flow autoguide is trained and which estimator it uses, chosen by measurement.

    Attributes:
        particles: ELBO particles per step, vectorized (:meth:`elbo`).
        lr_decay: Fraction of the initial learning rate reached at the end of the run
            (geometric decay); ``None`` keeps the rate constant. A decayed rate settles
            the final iterate: Adam's steps keep a size of about the rate even where the
            gradient is pure noise.
        grad_clamp: Every gradient entry is clamped to ``[-grad_clamp, grad_clamp]``
            before the update; ``None``: no clamp.
        core_unit: Unit in which the flow layers before the affine head store their
            parameters (:class:`~flowguide.nn.UnitScaled`; the maps are unchanged). Adam
            moves each stored number by about its rate per step, so the layers move
            ``core_unit`` times as fast as the head.
        stl_max_dim: Largest latent dimension at which ``stl=None`` sticks the landing
            (the cost of the inverse pass it needs grows with the dimension in
            autoregressive flows).
        stl_when_warm: Whether ``stl=None`` sticks the landing after a successful Laplace start.
        laplace_max_dim: Largest latent dimension at which ``warm_start="auto"`` tries the
            Laplace start (its Hessian takes one backward pass per dimension).

    Example:
        >>> recipe = Recipe(lr_decay=0.1)
        >>> round(recipe.lr_factor(50, 100), 4), recipe.lr_factor(200, 100)
        (0.3162, 0.1)
    """

    particles: int = 8
    lr_decay: float | None = 0.01
    grad_clamp: float | None = 10.0
    core_unit: float = 1.0
    stl_max_dim: int = 0
    stl_when_warm: bool = False
    laplace_max_dim: int = 200

    def __post_init__(self) -> None:
        if not (isinstance(self.particles, int) and self.particles >= 1):
            raise ValueError(f"Recipe.particles must be a positive integer, got {self.particles!r}")
        if self.lr_decay is not None and not (_is_number(self.lr_decay) and 0 < self.lr_decay <= 1):
            raise ValueError(f"Recipe.lr_decay must be in (0, 1] or None, got {self.lr_decay!r}")
        if self.grad_clamp is not None and not (_is_number(self.grad_clamp) and self.grad_clamp > 0):
            raise ValueError(f"Recipe.grad_clamp must be a positive number or None, got {self.grad_clamp!r}")
        if not (_is_number(self.core_unit) and self.core_unit > 0):
            raise ValueError(f"Recipe.core_unit must be a positive number, got {self.core_unit!r}")
        for name in ("stl_max_dim", "laplace_max_dim"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 0):
                raise ValueError(f"Recipe.{name} must be a non-negative integer, got {getattr(self, name)!r}")

    def lr_factor(self, update: int, horizon: int | None) -> float:
        """The rate's factor after ``update`` updates of a run of ``horizon``; it stays at
        ``lr_decay`` past the horizon, and at 1 without a decay or a horizon."""
        if self.lr_decay is None or not horizon:
            return 1.0
        return self.lr_decay ** (min(update, horizon) / horizon)

    def sticks_the_landing(self, latent_dim: int, warm_started: bool) -> bool:
        """Whether ``stl=None`` sticks the landing for this dimension and start."""
        return latent_dim <= self.stl_max_dim or (self.stl_when_warm and warm_started)

    def elbo(self, **options: Any) -> Trace_ELBO:
        """:class:`~flowguide.infer.StratifiedELBO` (``Trace_ELBO`` for a single flow, summed
        over the components for a mixture) with :attr:`particles` (per component),
        vectorized; ``options`` pass on and override.

        Example:
            >>> elbo = Recipe().elbo(max_plate_nesting=0)
            >>> elbo.num_particles, elbo.vectorize_particles
            (8, True)
        """
        return StratifiedELBO(**{"num_particles": self.particles, "vectorize_particles": True, **options})

    def pyro_optim(
        self, num_steps: int, lr: float = 1e-2, full_rate: Callable[[str], bool] | None = None
    ) -> PyroOptim:
        """A Pyro optimizer for ``num_steps`` SVI steps: :class:`RecipeAdam` (Adam with this
        recipe's decay and clamp), or plain ``Adam`` where the recipe does neither.
        Parameters whose name ``full_rate`` accepts keep the full rate.

        Example:
            >>> optim = Recipe(lr_decay=0.5).pyro_optim(num_steps=100, lr=0.02)
            >>> optim.pt_optim_constructor.__name__
            'RecipeAdam'
        """
        if not (isinstance(num_steps, int) and num_steps >= 1):
            raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
        if not (_is_number(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if self.lr_decay is None and self.grad_clamp is None:
            return Adam({"lr": lr})
        args = {"lr": lr, "recipe": self, "horizon": num_steps}
        if full_rate is None:
            return PyroOptim(RecipeAdam, args)
        return PyroOptim(RecipeAdam, lambda name: {**args, "full_rate": full_rate(name)})


@runtime_checkable
class PathGradientObjective(Protocol):
    """An objective that differentiates the guide's log-density along the sample path itself
    (flowguide's ``TraceSTL_ELBO`` and ``DReG_ELBO``): a guide's own sticking the landing
    adds nothing to its gradient, only an inverse pass.

    Example:
        >>> from pyro.infer import Trace_ELBO
        >>> from flowguide.infer import TraceSTL_ELBO
        >>> [isinstance(objective, PathGradientObjective) for objective in (TraceSTL_ELBO(), Trace_ELBO())]
        [True, False]
    """

    computes_path_gradients: bool


def current_objective() -> ELBO | None:
    """The Pyro ELBO whose evaluation is calling the guide now (the nearest ELBO method on
    the call stack), or ``None`` (a guide called by ``Predictive`` or by hand). Pyro's ELBOs
    do not tell the guide which objective they compute; their methods do hold it as ``self``.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro.infer import RenyiELBO
        >>> seen = []
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> def guide():
        ...     seen.append(type(current_objective()).__name__)
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> _ = RenyiELBO(alpha=0.5).loss(model, guide)
        >>> guide()
        >>> seen[0], seen[-1]
        ('RenyiELBO', 'NoneType')
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_varnames[:1] == ("self",):
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, ELBO):
                return candidate
        frame = frame.f_back
    return None


def sticks_the_landing(stl: bool | None, default: bool, objective: ELBO | None, owner: str) -> bool:
    r"""Whether a guide sticks the landing under ``objective``.

    Sticking the landing drops the score term :math:`\partial_\phi \log q_\phi(z)`,
    whose expectation is zero under :math:`q`. That keeps ``Trace_ELBO``-type gradients
    unbiased, but not those of an importance-weighted objective, whose weights make the
    expectation differ (Tucker et al., 2019): under ``RenyiELBO`` with ``alpha != 1`` the
    default is off and ``stl=True`` is refused. Under a :class:`PathGradientObjective` the
    default is off too (it would add only an inverse pass). Elsewhere ``stl`` is taken as
    given, and ``None`` means ``default`` (the recipe's).

    References:
        G. Tucker, D. Lawson, S. Gu, C. Maddison. Doubly Reparameterized Gradient
        Estimators for Monte Carlo Objectives. ICLR 2019, arXiv:1810.04152.

    Example:
        >>> from pyro.infer import RenyiELBO, Trace_ELBO
        >>> [sticks_the_landing(None, True, objective, "G") for objective in (Trace_ELBO(), RenyiELBO(0.5))]
        [True, False]
        >>> sticks_the_landing(True, True, RenyiELBO(0.5), "G")
        Traceback (most recent call last):
        ...
        ValueError: G: stl=True under RenyiELBO(alpha=0.5) gives biased gradients: ...
    """
    if isinstance(objective, RenyiELBO) and objective.alpha != 1:
        if stl:
            raise ValueError(
                f"{owner}: stl=True under RenyiELBO(alpha={objective.alpha}) gives biased gradients: "
                "the path-only estimator is unbiased for the ELBO, not for an importance-weighted "
                "bound. Pass stl=None (off under this objective) or False, or use "
                "flowguide.infer.DReG_ELBO for the importance-weighted bound's low-variance gradient"
            )
        return False
    if isinstance(objective, PathGradientObjective) and objective.computes_path_gradients:
        return bool(stl)
    return default if stl is None else stl


@runtime_checkable
class RecipeGuide(Protocol):
    """A guide that carries a training recipe: what :class:`~flowguide.training.Trainer` reads."""

    @property
    def recipe(self) -> Recipe:
        """The guide's training recipe."""
        ...

    def full_rate_parameters(self) -> list[Tensor]:
        """Parameters that keep the full rate under the recipe's decay (per-datum factors,
        which move only when their datum is in the minibatch)."""
        ...


class RecipeSchedule:
    """A recipe's gradient clamp and rate decay on a torch optimizer.

    The undecayed rate and the update count live in each parameter group (keys
    ``recipe_lr``, ``recipe_updates``), so ``optimizer.state_dict()`` carries them and a
    resumed run continues the schedule exactly.

    Arguments:
        optimizer: A torch optimizer.
        recipe: The recipe whose ``lr_decay`` and ``grad_clamp`` apply.
        horizon: Updates of the run (the decay reaches ``lr_decay`` there).
        full_rate: Indices of parameter groups that keep the full rate.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        recipe: Recipe,
        horizon: int | None,
        full_rate: Sequence[int] = (),
    ) -> None:
        self.optimizer, self.recipe, self.horizon = optimizer, recipe, horizon
        for index, group in enumerate(optimizer.param_groups):
            group.setdefault("recipe_lr", group["lr"])
            group.setdefault("recipe_updates", 0)
            group["recipe_full_rate"] = index in full_rate

    def clamp(self) -> None:
        """Clamp every gradient entry to ``[-grad_clamp, grad_clamp]`` in place."""
        if self.recipe.grad_clamp is None:
            return
        bound = self.recipe.grad_clamp
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.clamp_(-bound, bound)

    def advance(self) -> None:
        """Count one applied update and set each group's rate for the next."""
        for group in self.optimizer.param_groups:
            group["recipe_updates"] += 1
            if self.recipe.lr_decay is not None and not group["recipe_full_rate"]:
                factor = self.recipe.lr_factor(group["recipe_updates"], self.horizon)
                group["lr"] = group["recipe_lr"] * factor


class RecipeAdam(torch.optim.Adam):
    """``torch.optim.Adam`` that applies a :class:`Recipe`'s clamp and decay at every step
    (through :class:`RecipeSchedule`); what :meth:`Recipe.pyro_optim` gives ``SVI``.

    Arguments:
        params: Parameters or parameter groups.
        lr: Initial learning rate.
        recipe: The recipe.
        horizon: Steps of the run.
        full_rate: Keep the full rate (no decay) for every group.
        **options: Further ``torch.optim.Adam`` options.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        recipe: Recipe,
        horizon: int,
        full_rate: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(params, lr=lr, **options)
        groups = range(len(self.param_groups)) if full_rate else ()
        self.schedule = RecipeSchedule(self, recipe, horizon, groups)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        self.schedule.clamp()
        loss = super().step(closure)
        self.schedule.advance()
        return loss


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
