"""Training that scales: the fit loop, checkpoints and exact resume, the NaN guard,
devices and multi-process data parallel."""

from flowguide.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from flowguide.training.device import resolve_device, to_device
from flowguide.training.distributed import init_from_env, is_distributed, is_main, shard_loader, world_size
from flowguide.training.guard import NaNGuard, NonFiniteError, diagnose
from flowguide.training.loop import EarlyStopping, History, Trainer, TrainingInterrupted, fit, fit_loader

__all__ = [
    "CheckpointError",
    "EarlyStopping",
    "History",
    "NaNGuard",
    "NonFiniteError",
    "Trainer",
    "TrainingInterrupted",
    "diagnose",
    "fit",
    "fit_loader",
    "init_from_env",
    "is_distributed",
    "is_main",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "shard_loader",
    "to_device",
    "world_size",
]
