"""Flow modules: layers that own parameters, the :class:`Flow` stack and builders."""

from flowguide.flows.builders import (
    Mixing,
    Structure,
    affine_coupling_flow,
    conditioner_widths,
    iaf,
    neural_spline_flow,
    planar_flow,
)
from flowguide.flows.distribution import FlowDistribution
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
    check_context,
)

__all__ = [
    "Autoregressive",
    "Coupling",
    "ElementwiseAffine",
    "Flow",
    "FlowDistribution",
    "FlowLayer",
    "Householder",
    "LULinear",
    "LowRankLinear",
    "Mixing",
    "Permutation",
    "Planar",
    "Structure",
    "TriangularLinear",
    "affine_coupling_flow",
    "check_context",
    "conditioner_widths",
    "iaf",
    "neural_spline_flow",
    "planar_flow",
]
