"""Flow autoguides for Pyro's SVI: the guide, its site plan, Laplace start, mode search,
mixture, head and recipe."""

from flowguide.autoguide.families import AutoAffineCoupling, AutoIAF, AutoNeuralSpline, AutoPlanarFlow
from flowguide.autoguide.guides import AutoFlow
from flowguide.autoguide.modes import ModeSearch
from flowguide.autoguide.recipe import Recipe, RecipeGuide

__all__ = [
    "AutoAffineCoupling",
    "AutoFlow",
    "AutoIAF",
    "AutoNeuralSpline",
    "AutoPlanarFlow",
    "ModeSearch",
    "Recipe",
    "RecipeGuide",
]
