"""Variance-reduced ELBO objectives for any Pyro guide: sticking the landing and DReG."""

from flowguide.infer.objectives import DReG_ELBO, TraceSTL_ELBO, detached_guide_log_probs

__all__ = ["DReG_ELBO", "TraceSTL_ELBO", "detached_guide_log_probs"]
