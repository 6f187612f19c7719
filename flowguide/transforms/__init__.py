"""Pure invertible maps with fused log-determinants, built from tensors.

Forward maps base noise to the latent. See :mod:`flowguide.transforms.base`.
"""

from flowguide.transforms.base import ComposeFlowTransform, FlowTransform, InverseFlowTransform
from flowguide.transforms.elementwise import (
    AffineSpec,
    AffineTransform,
    ElementwiseTransform,
    MapSpec,
    RQSplineTransform,
    SplineSpec,
    soft_clamp,
)
from flowguide.transforms.linear import (
    HouseholderTransform,
    LowRankLinearTransform,
    LULinearTransform,
    PermutationTransform,
    TriangularLinearTransform,
)
from flowguide.transforms.planar import PlanarTransform
from flowguide.transforms.structure import AutoregressiveTransform, CouplingTransform

__all__ = [
    "AffineSpec",
    "AffineTransform",
    "AutoregressiveTransform",
    "ComposeFlowTransform",
    "CouplingTransform",
    "ElementwiseTransform",
    "FlowTransform",
    "HouseholderTransform",
    "InverseFlowTransform",
    "LULinearTransform",
    "LowRankLinearTransform",
    "MapSpec",
    "PermutationTransform",
    "TriangularLinearTransform",
    "PlanarTransform",
    "RQSplineTransform",
    "SplineSpec",
    "soft_clamp",
]
