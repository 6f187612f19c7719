"""Objectives for any Pyro guide: sticking the landing, DReG, and annealing."""

from flowguide.infer.annealing import AnnealedELBO, linear_schedule
from flowguide.infer.objectives import DReG_ELBO, TraceSTL_ELBO, detached_guide_log_probs

__all__ = ["AnnealedELBO", "DReG_ELBO", "TraceSTL_ELBO", "detached_guide_log_probs", "linear_schedule"]
