"""flowguide: normalizing-flow variational inference for Pyro with exact densities.

Forward always maps base noise to the latent (the sampling direction).
"""

from flowguide.autoguide import (
    AutoAffineCoupling,
    AutoFlow,
    AutoIAF,
    AutoNeuralSpline,
    AutoPlanarFlow,
    ModeSearch,
    Recipe,
)
from flowguide.flows import (
    Flow,
    FlowDistribution,
    affine_coupling_flow,
    iaf,
    neural_spline_flow,
    planar_flow,
)

__version__ = "0.1.0"

__all__ = [
    "AutoAffineCoupling",
    "AutoFlow",
    "AutoIAF",
    "AutoNeuralSpline",
    "AutoPlanarFlow",
    "Flow",
    "FlowDistribution",
    "ModeSearch",
    "Recipe",
    "__version__",
    "affine_coupling_flow",
    "iaf",
    "neural_spline_flow",
    "planar_flow",
]
