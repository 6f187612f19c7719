"""Objectives for any Pyro guide: sticking the landing, DReG, annealing, stratified mixtures."""

from flowguide.infer.annealing import AnnealedELBO, linear_schedule
from flowguide.infer.objectives import DReG_ELBO, TraceSTL_ELBO, detached_guide_log_probs
from flowguide.infer.particles import VmapParticlesELBO
from flowguide.infer.stratified import MixtureGuide, StratifiedELBO

__all__ = [
    "AnnealedELBO",
    "DReG_ELBO",
    "MixtureGuide",
    "StratifiedELBO",
    "TraceSTL_ELBO",
    "VmapParticlesELBO",
    "detached_guide_log_probs",
    "linear_schedule",
]
