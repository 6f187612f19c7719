r"""Two-dimensional unnormalized target densities with known normalizing constants.

Each target is a callable ``log_p(z) -> Tensor`` on ``(..., 2)`` inputs with an
attribute ``log_z`` (the exact :math:`\log Z` where one is known in closed form).
:func:`grid_log_normalizer` recomputes :math:`\log Z` by quadrature, so fits to any
target can be scored by :math:`\mathrm{KL}(q \| p) = \log Z - \mathrm{ELBO}`.

Example:
    >>> import torch
    >>> float(TARGETS["banana"](torch.tensor([0.0, -1.0]))) == 0.0  # the mode: log p~ = 0
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

__all__ = ["Banana", "Ring", "TARGETS", "Target", "grid_log_normalizer"]


class Target(Protocol):
    """An unnormalized 2-D log-density with a bounding ``box`` and, if known, ``log_z``."""

    box: tuple[tuple[float, float], tuple[float, float]]
    log_z: float

    def __call__(self, z: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class Banana:
    r"""A curved density: :math:`z_1 \sim N(0, 1)`, :math:`z_2 \mid z_1 \sim N(c (z_1^2 - 1), \sigma^2)`.

    Unnormalized as :math:`\log \tilde p(z) = -z_1^2/2 - (z_2 - c(z_1^2 - 1))^2 / (2\sigma^2)`,
    so :math:`Z = 2\pi\sigma`.

    Arguments:
        curvature: The bend :math:`c`.
        sigma: Conditional standard deviation :math:`\sigma` of :math:`z_2`.
    """

    curvature: float = 1.0
    sigma: float = 0.5

    @property
    def box(self) -> tuple[tuple[float, float], tuple[float, float]]:
        c = self.curvature
        return (-7.0, 7.0), (-abs(c) - 5 * self.sigma, 36 * abs(c) + 5 * self.sigma)

    @property
    def log_z(self) -> float:
        return math.log(2 * math.pi * self.sigma)

    def __call__(self, z: Tensor) -> Tensor:
        z1, z2 = z.unbind(-1)
        return -0.5 * z1**2 - 0.5 * ((z2 - self.curvature * (z1**2 - 1)) / self.sigma) ** 2


@dataclass(frozen=True)
class Ring:
    r"""A ring of radius :math:`r` and width :math:`\sigma`.

    :math:`\log \tilde p(z) = -(\|z\| - r)^2 / (2\sigma^2)` and, in polar coordinates,

    :math:`Z = 2\pi\sigma [\sigma e^{-r^2/2\sigma^2} + r \sqrt{\pi/2}\,(1 + \mathrm{erf}(r/\sigma\sqrt 2))]`

    Arguments:
        radius: Ring radius :math:`r`.
        sigma: Radial width :math:`\sigma`.
    """

    radius: float = 2.0
    sigma: float = 0.3

    @property
    def box(self) -> tuple[tuple[float, float], tuple[float, float]]:
        r = self.radius + 8 * self.sigma
        return (-r, r), (-r, r)

    @property
    def log_z(self) -> float:
        r, s = self.radius, self.sigma
        tail = s * math.exp(-(r**2) / (2 * s**2))
        body = r * math.sqrt(math.pi / 2) * (1 + math.erf(r / (s * math.sqrt(2))))
        return math.log(2 * math.pi * s * (tail + body))

    def __call__(self, z: Tensor) -> Tensor:
        return -0.5 * ((z.norm(dim=-1) - self.radius) / self.sigma) ** 2


#: The 2-D targets with log Z on a grid, by name.
TARGETS: dict[str, Target] = {"banana": Banana(), "ring": Ring()}


def grid_log_normalizer(log_p: Target, points: int = 1001) -> float:
    r"""Estimate :math:`\log \int \tilde p(z) dz` on the target's ``box`` by the midpoint rule.

    Arguments:
        log_p: Unnormalized log-density on ``(..., 2)`` tensors with a ``box`` attribute
            ``((low_1, high_1), (low_2, high_2))`` holding all but a negligible mass.
        points: Grid points per axis.

    Returns:
        The estimate of :math:`\log Z` in float64.

    Example:
        >>> abs(grid_log_normalizer(Banana()) - Banana().log_z) < 1e-6
        True
    """
    axes = [torch.linspace(low, high, points, dtype=torch.float64) for low, high in log_p.box]
    cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    return float(torch.logsumexp(log_p(grid).flatten(), 0) + cell.log())
