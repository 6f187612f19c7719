"""Bundled targets and models."""

from flowguide.models.bundled import BUNDLED_MODELS, bundled_model
from flowguide.models.targets import TARGETS, Banana, Ring, grid_log_normalizer

__all__ = ["BUNDLED_MODELS", "TARGETS", "Banana", "Ring", "bundled_model", "grid_log_normalizer"]
