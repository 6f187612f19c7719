r"""Builders that assemble a whole flow of ``num_flows`` layers for each family.

Every builder takes ``(dim, num_flows, hidden_dims, context_dim=None)`` plus family
options and returns a :class:`~flowguide.flows.Flow`. Between layers of the coupling
and autoregressive families sits a *mixing* layer: ``"reverse"`` or ``"random"``
permutations (free), ``"lu"`` (a learned LU-decomposed linear map, :math:`O(D^2)`
parameters), ``"householder"`` (a random permutation and :data:`HOUSEHOLDER_REFLECTIONS`
learned reflections, :math:`O(D)` parameters) or ``"none"``.

**Conditioner widths.** ``hidden_dims=None`` (the default) is :data:`DEFAULT_WIDTHS`
up to :data:`WIDE_MAX_DIM` coordinates. Above it the widths shrink so that a
conditioner holds about :data:`WEIGHTS_PER_COORDINATE` weights per coordinate (never
below :data:`MIN_WIDTH`): a conditioner's first and last layers have
:math:`(a + b P) h` weights for :math:`a` inputs and :math:`b` outputs of :math:`P`
parameters per coordinate, which at a fixed width grows as :math:`D h`, so a fixed width
of 64 made a flow of :math:`D = 10^4` some 8M parameters. With the bound a flow's size
is linear in :math:`D` at a constant per coordinate (``benchmarks/scale.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, get_args

from flowguide.flows.flow import Flow
from flowguide.flows.layers import (
    Autoregressive,
    Coupling,
    FlowLayer,
    Householder,
    LULinear,
    Permutation,
    Planar,
)
from flowguide.nn import check_dim, check_hidden_dims
from flowguide.transforms import AffineSpec, MapSpec, SplineSpec

__all__ = [
    "DEFAULT_WIDTHS",
    "HOUSEHOLDER_REFLECTIONS",
    "MIN_WIDTH",
    "WEIGHTS_PER_COORDINATE",
    "WIDE_MAX_DIM",
    "Mixing",
    "Structure",
    "affine_coupling_flow",
    "conditioner_widths",
    "iaf",
    "neural_spline_flow",
    "planar_flow",
]

#: Layers the builders can put between flow layers.
Mixing = Literal["reverse", "random", "lu", "householder", "none"]
#: Hidden widths of a conditioner at up to :data:`WIDE_MAX_DIM` coordinates.
DEFAULT_WIDTHS = (64, 64)
#: Largest dimension with the :data:`DEFAULT_WIDTHS` (the full head's threshold too).
WIDE_MAX_DIM = 512
#: Weights per coordinate a conditioner's first and last layers hold above :data:`WIDE_MAX_DIM`.
WEIGHTS_PER_COORDINATE = 48
#: Narrowest hidden width :func:`conditioner_widths` chooses.
MIN_WIDTH = 8
#: Reflections of ``mixing="householder"``.
HOUSEHOLDER_REFLECTIONS = 4
#: How a spline flow conditions its maps: on half the coordinates, or autoregressively.
Structure = Literal["coupling", "autoregressive"]


def _mixing(kind: Mixing, dim: int, index: int, seed: int) -> list[FlowLayer]:
    if kind == "reverse":
        return [Permutation.reverse(dim)]
    if kind == "random":
        return [Permutation.random(dim, seed=seed + index)]
    if kind == "lu":
        return [LULinear(dim)]
    if kind == "householder":
        reflections = min(HOUSEHOLDER_REFLECTIONS, dim)
        return [Permutation.random(dim, seed=seed + index), Householder(dim, reflections, seed + index)]
    return []


def conditioner_widths(
    hidden_dims: Sequence[int] | None, dim: int, weights_per_width: float
) -> tuple[int, ...]:
    r"""Hidden widths of a conditioner: ``hidden_dims`` as given, or the bounded default.

    Arguments:
        hidden_dims: Explicit widths, or ``None`` for :data:`DEFAULT_WIDTHS` up to
            :data:`WIDE_MAX_DIM` coordinates and above it widths :math:`h` with
            ``weights_per_width`` :math:`\cdot h \le` :data:`WEIGHTS_PER_COORDINATE`
            (at least :data:`MIN_WIDTH`, at most 64).
        dim: Number of coordinates :math:`D`.
        weights_per_width: Weights per coordinate and unit of width in the first and last
            layers: :math:`1 + P` for a MADE, :math:`(1 + P)/2` for a half-split coupling.

    Example:
        >>> conditioner_widths(None, 100, 3.0), conditioner_widths(None, 10_000, 3.0)
        ((64, 64), (16, 16))
    """
    if hidden_dims is not None:
        return tuple(check_hidden_dims(hidden_dims))
    if dim <= WIDE_MAX_DIM:
        return DEFAULT_WIDTHS
    width = max(MIN_WIDTH, min(DEFAULT_WIDTHS[0], math.floor(WEIGHTS_PER_COORDINATE / weights_per_width)))
    return (width,) * len(DEFAULT_WIDTHS)


def _stack(
    dim: int,
    num_flows: int,
    make: Callable[[], FlowLayer],
    mixing: Mixing,
    seed: int = 0,
) -> Flow:
    check_dim("dim", dim)
    check_dim("num_flows", num_flows)
    if mixing not in get_args(Mixing):
        raise ValueError(f"mixing must be one of {get_args(Mixing)}, got {mixing!r}")
    layers: list[FlowLayer] = []
    for index in range(num_flows):
        if index > 0:
            layers.extend(_mixing(mixing, dim, index, seed))
        layers.append(make())
    return Flow(layers)


def planar_flow(
    dim: int,
    num_flows: int = 8,
    hidden_dims: Sequence[int] = (64,),
    context_dim: int | None = None,
) -> Flow:
    r"""A stack of ``num_flows`` planar layers (Rezende & Mohamed, 2015).

    Each layer costs :math:`O(D)`; ``hidden_dims`` shape the context network of the
    amortized (conditional) variant and are unused otherwise.

    Arguments:
        dim: Number of latent coordinates :math:`D \ge 1`.
        num_flows: Number of flow layers :math:`K \ge 1` (mixing layers not counted).
        hidden_dims: Hidden widths of each layer's conditioner network.
        context_dim: Size of the context vector for a conditional flow, or ``None``.

    Example:
        >>> flow = planar_flow(3, num_flows=4)
        >>> flow().rsample((2,)).shape
        torch.Size([2, 3])
    """
    check_hidden_dims(hidden_dims)
    return _stack(dim, num_flows, lambda: Planar(dim, context_dim, hidden_dims), "none")


def iaf(
    dim: int,
    num_flows: int = 4,
    hidden_dims: Sequence[int] | None = None,
    context_dim: int | None = None,
    mixing: Mixing = "reverse",
    log_scale_bound: float = 3.0,
) -> Flow:
    r"""Inverse autoregressive flow (Kingma et al., 2016) with soft-clamped scales.

    Sampling is one MADE pass per layer; scoring a point is :math:`D` passes.

    Arguments:
        dim: Number of latent coordinates :math:`D \ge 1`.
        num_flows: Number of flow layers :math:`K \ge 1` (mixing layers not counted).
        hidden_dims: Hidden widths of each layer's conditioner network; ``None`` for
            :func:`conditioner_widths`' default.
        context_dim: Size of the context vector for a conditional flow, or ``None``.
        mixing: Layer between flows: ``"reverse"``, ``"random"``, ``"lu"``, ``"householder"``
            or ``"none"``.
        log_scale_bound: Bound :math:`b` of the soft-clamped log-scale.

    Example:
        >>> flow = iaf(4, num_flows=2, hidden_dims=[16])
        >>> z, log_q = flow().rsample_and_log_prob((3,))
        >>> z.shape, log_q.shape
        (torch.Size([3, 4]), torch.Size([3]))
    """
    spec = AffineSpec(log_scale_bound)
    widths = conditioner_widths(hidden_dims, dim, 1 + spec.num_params)
    return _stack(dim, num_flows, lambda: Autoregressive(dim, spec, widths, context_dim), mixing)


def neural_spline_flow(
    dim: int,
    num_flows: int = 4,
    hidden_dims: Sequence[int] | None = None,
    context_dim: int | None = None,
    structure: Structure = "coupling",
    bins: int = 8,
    bound: float = 5.0,
    mixing: Mixing = "reverse",
    min_bin: float = 1e-3,
    min_derivative: float = 1e-3,
) -> Flow:
    r"""Rational-quadratic neural spline flow (Durkan et al., 2019).

    Arguments:
        dim: Number of latent coordinates :math:`D \ge 1`.
        num_flows: Number of flow layers :math:`K \ge 1` (mixing layers not counted).
        hidden_dims: Hidden widths of each layer's conditioner network; ``None`` for
            :func:`conditioner_widths`' default.
        context_dim: Size of the context vector for a conditional flow, or ``None``.
        structure: ``"coupling"`` (both directions one pass) or ``"autoregressive"``
            (sampling one pass, scoring :math:`D` passes).
        bins: Spline bins per coordinate.
        bound: The spline acts on :math:`[-B, B]`; outside it is the identity.
        mixing: Layer between flows: ``"reverse"``, ``"random"``, ``"lu"``, ``"householder"``
            or ``"none"``.
        min_bin: Smallest bin width and height, as a fraction of :math:`2B`.
        min_derivative: Smallest knot derivative. With ``min_bin`` it bounds the
            spline's slopes away from 0 and infinity.

    Example:
        >>> import torch
        >>> flow = neural_spline_flow(2, num_flows=2, hidden_dims=[16])
        >>> flow().log_prob(torch.zeros(2)).shape
        torch.Size([])
    """
    if structure not in get_args(Structure):
        raise ValueError(f"structure must be one of {get_args(Structure)}, got {structure!r}")
    spec = SplineSpec(bins=bins, bound=bound, min_bin=min_bin, min_derivative=min_derivative)
    layer = Coupling if structure == "coupling" else Autoregressive
    per_width = (1 + spec.num_params) / (2 if structure == "coupling" else 1)
    widths = conditioner_widths(hidden_dims, dim, per_width)
    return _stack(dim, num_flows, lambda: layer(dim, spec, widths, context_dim), mixing)


def affine_coupling_flow(
    dim: int,
    num_flows: int = 4,
    hidden_dims: Sequence[int] | None = None,
    context_dim: int | None = None,
    mixing: Mixing = "reverse",
    log_scale_bound: float = 3.0,
) -> Flow:
    r"""RealNVP affine coupling flow (Dinh et al., 2017) with soft-clamped scales.

    Both directions cost one conditioner pass per layer.

    Arguments:
        dim: Number of latent coordinates :math:`D \ge 1`.
        num_flows: Number of flow layers :math:`K \ge 1` (mixing layers not counted).
        hidden_dims: Hidden widths of each layer's conditioner network; ``None`` for
            :func:`conditioner_widths`' default.
        context_dim: Size of the context vector for a conditional flow, or ``None``.
        mixing: Layer between flows: ``"reverse"``, ``"random"``, ``"lu"``, ``"householder"``
            or ``"none"``.
        log_scale_bound: Bound :math:`b` of the soft-clamped log-scale.

    Example:
        >>> flow = affine_coupling_flow(4, num_flows=3, hidden_dims=[16])
        >>> flow().sample((5,)).shape
        torch.Size([5, 4])
    """
    spec: MapSpec = AffineSpec(log_scale_bound)
    widths = conditioner_widths(hidden_dims, dim, (1 + spec.num_params) / 2)
    return _stack(dim, num_flows, lambda: Coupling(dim, spec, widths, context_dim), mixing)
