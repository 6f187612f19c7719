r"""Tempered (annealed) ELBOs for multimodal posteriors.

Reverse-KL fits are mode-seeking: a guide that starts near one mode rarely finds the
others. Annealing fits the tempered targets :math:`p_\beta(z) \propto p(x, z)^{\beta}`
with :math:`\beta` rising from :math:`\beta_0 < 1` to 1: at small :math:`\beta` the
target is flat enough for the guide to spread over several modes, and it keeps the mass
it found as :math:`\beta \to 1`. The objective at step :math:`t` is

.. math::
    \mathcal L_t = \mathbb E_q\big[\beta_t \log p(x, z) - \log q(z)\big],

and from the last annealing step on it is the plain ELBO.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.poutine as poutine
from pyro.infer import ELBO, Trace_ELBO

__all__ = ["AnnealedELBO", "linear_schedule"]


def linear_schedule(steps: int, start: float = 0.1) -> Callable[[int], float]:
    r""":math:`\beta_t = \beta_0 + (1 - \beta_0)\, t / T` for :math:`t < T`, then 1.

    Arguments:
        steps: :math:`T`, the number of annealing steps.
        start: :math:`\beta_0 \in (0, 1]`.

    Example:
        >>> beta = linear_schedule(100, start=0.5)
        >>> beta(0), beta(50), beta(100), beta(1000)
        (0.5, 0.75, 1.0, 1.0)
    """
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not 0 < start <= 1:
        raise ValueError(f"start must lie in (0, 1], got {start!r}")
    return lambda t: 1.0 if t >= steps else start + (1 - start) * t / steps


class AnnealedELBO(ELBO):
    r"""An ELBO whose model term is scaled by :math:`\beta_t` (see the module docstring).

    Each :meth:`loss_and_grads` call (one SVI step) advances :math:`t`;
    :class:`~flowguide.training.Trainer`, which differentiates :meth:`differentiable_loss`,
    calls :meth:`advance` after each applied update (and checkpoints :attr:`step`).
    :meth:`loss` and :meth:`differentiable_loss` evaluate at the current :math:`\beta_t`
    without advancing. Attributes it does not have (``num_particles``,
    ``max_plate_nesting``, ...) are read from the wrapped ELBO. The scaling is
    ``poutine.scale`` around the model, so every log-density of the model (priors,
    likelihood and factors) is tempered.

    Arguments:
        schedule: Step :math:`t \mapsto \beta_t`, e.g. :func:`linear_schedule`.
        elbo: The ELBO to temper (``Trace_ELBO()`` by default); its particles and
            vectorization are used.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro.infer import SVI
        >>> from pyro.optim import Adam
        >>> from flowguide import AutoIAF
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> elbo = AnnealedELBO(linear_schedule(8, start=0.5))
        >>> svi = SVI(model, AutoIAF(model, num_flows=1, hidden_dims=(8,)), Adam({"lr": 1e-2}), elbo)
        >>> _ = [svi.step() for _ in range(4)]
        >>> elbo.step, elbo.beta
        (4, 0.75)
    """

    def __init__(self, schedule: Callable[[int], float], elbo: ELBO | None = None) -> None:
        if not callable(schedule):
            raise TypeError(f"schedule must be a callable step -> beta, got {type(schedule).__name__}")
        self.schedule = schedule
        self.elbo = Trace_ELBO() if elbo is None else elbo
        self.step = 0

    @property
    def beta(self) -> float:
        """:math:`\\beta_t` at the current step."""
        beta = float(self.schedule(self.step))
        if not 0 < beta <= 1:
            raise ValueError(f"the schedule gave beta = {beta} at step {self.step}; it must lie in (0, 1]")
        return beta

    def __getattr__(self, name: str) -> Any:
        if name == "elbo":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.elbo, name)

    def advance(self) -> None:
        """Move to the next step of the schedule.

        Example:
            >>> elbo = AnnealedELBO(linear_schedule(4, start=0.2))
            >>> elbo.advance()
            >>> elbo.step, elbo.beta
            (1, 0.4)
        """
        self.step += 1

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict):
        return self.elbo._get_trace(self._tempered(model), guide, args, kwargs)

    def _tempered(self, model: Callable) -> Callable:
        return poutine.scale(model, scale=self.beta)

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        return self.elbo.loss(self._tempered(model), guide, *args, **kwargs)

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any):
        return self.elbo.differentiable_loss(self._tempered(model), guide, *args, **kwargs)

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        loss = self.elbo.loss_and_grads(self._tempered(model), guide, *args, **kwargs)
        self.advance()
        return loss
