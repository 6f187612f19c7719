"""Named constructors of every flow layer and builder, driving the shared tests.

Each entry builds a :class:`~flowguide.flows.Flow` from ``(dim, context_dim)``;
single layers are wrapped in a one-layer flow so that every entry is used the same way.
``conditional`` says whether the entry accepts a context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flowguide.flows.builders import affine_coupling_flow, iaf, neural_spline_flow, planar_flow
from flowguide.flows.flow import Flow
from flowguide.flows.layers import (
    Autoregressive,
    Coupling,
    ElementwiseAffine,
    FlowLayer,
    Householder,
    LowRankLinear,
    LULinear,
    Permutation,
    Planar,
    TriangularLinear,
)
from flowguide.transforms import AffineSpec, SplineSpec

__all__ = ["Entry", "REGISTRY"]

_HIDDEN = (16, 16)


@dataclass(frozen=True)
class Entry:
    """A registry entry: how to build it and what it supports."""

    build: Callable[[int, int | None], Flow]
    conditional: bool


def _layer(make: Callable[[int, int | None], FlowLayer], conditional: bool) -> Entry:
    return Entry(lambda dim, context_dim: Flow([make(dim, context_dim)]), conditional)


#: Every transform under test, by id, with the capabilities it declares (the registry test's input).
REGISTRY: dict[str, Entry] = {
    "elementwise_affine": _layer(lambda d, c: ElementwiseAffine(d), False),
    "permutation_reverse": _layer(lambda d, c: Permutation.reverse(d), False),
    "permutation_random": _layer(lambda d, c: Permutation.random(d, seed=1), False),
    "lu_linear": _layer(lambda d, c: LULinear(d), False),
    "triangular_linear": _layer(lambda d, c: TriangularLinear(d), False),
    "low_rank_linear": _layer(lambda d, c: LowRankLinear(d, rank=min(d, 2)), False),
    "householder": _layer(lambda d, c: Householder(d, reflections=3), False),
    "planar": _layer(lambda d, c: Planar(d, c, _HIDDEN), True),
    "affine_autoregressive": _layer(lambda d, c: Autoregressive(d, AffineSpec(), _HIDDEN, c), True),
    "spline_autoregressive": _layer(
        lambda d, c: Autoregressive(d, SplineSpec(bins=6, bound=3.0), _HIDDEN, c), True
    ),
    "affine_coupling": _layer(lambda d, c: Coupling(d, AffineSpec(), _HIDDEN, c), True),
    "spline_coupling": _layer(lambda d, c: Coupling(d, SplineSpec(bins=6, bound=3.0), _HIDDEN, c), True),
    "planar_flow": Entry(lambda d, c: planar_flow(d, 3, _HIDDEN, c), True),
    "iaf": Entry(lambda d, c: iaf(d, 3, _HIDDEN, c), True),
    "iaf_lu": Entry(lambda d, c: iaf(d, 2, _HIDDEN, c, mixing="lu"), True),
    "nsf_coupling": Entry(lambda d, c: neural_spline_flow(d, 3, _HIDDEN, c, bound=3.0), True),
    "nsf_autoregressive": Entry(
        lambda d, c: neural_spline_flow(d, 2, _HIDDEN, c, structure="autoregressive", bound=3.0),
        True,
    ),
    "affine_coupling_flow": Entry(lambda d, c: affine_coupling_flow(d, 3, _HIDDEN, c, mixing="random"), True),
}
