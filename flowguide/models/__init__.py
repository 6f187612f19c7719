"""Bundled targets and models."""

from flowguide.models.targets import TARGETS, Banana, Ring, grid_log_normalizer

__all__ = ["TARGETS", "Banana", "Ring", "grid_log_normalizer"]
