"""Flow autoguides for Pyro's SVI."""

from flowguide.autoguide.guides import AutoAffineCoupling, AutoFlow, AutoIAF, AutoNeuralSpline, AutoPlanarFlow

__all__ = ["AutoAffineCoupling", "AutoFlow", "AutoIAF", "AutoNeuralSpline", "AutoPlanarFlow"]
