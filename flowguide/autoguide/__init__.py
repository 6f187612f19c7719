"""Flow autoguides for Pyro's SVI: the guide, its site plan, Laplace start, head and recipe."""

from flowguide.autoguide.families import AutoAffineCoupling, AutoIAF, AutoNeuralSpline, AutoPlanarFlow
from flowguide.autoguide.guides import AutoFlow
from flowguide.autoguide.recipe import Recipe, RecipeGuide

__all__ = [
    "AutoAffineCoupling",
    "AutoFlow",
    "AutoIAF",
    "AutoNeuralSpline",
    "AutoPlanarFlow",
    "Recipe",
    "RecipeGuide",
]
