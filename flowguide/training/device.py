"""Device resolution and moving nested arguments to a device."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["resolve_device", "to_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else is checked and returned.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but CUDA is not available")
    return device


def to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``obj`` with every tensor inside tuples, lists and dicts moved to ``device``.

    Example:
        >>> import torch
        >>> moved = to_device({"x": (torch.zeros(2), 3)}, torch.device("cpu"))
        >>> moved["x"][0].device, moved["x"][1]
        (device(type='cpu'), 3)
    """
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(x, device, non_blocking) for x in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    return obj
