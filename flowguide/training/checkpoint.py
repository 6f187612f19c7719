"""Atomic checkpoints: write to a temporary file in the same folder, then rename.

A rename within one file system is atomic, so a reader (or a resumed run) sees either
the previous complete checkpoint or the new complete one, never a torn file, even when
the writer is killed mid-write.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint"]

#: Format version written into every checkpoint.
VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, mode: int | None = None) -> Path:
    """Write ``state`` to ``path`` atomically (``torch.save`` to a temporary file, then
    ``os.replace``). Returns the path.

    Arguments:
        state: What to save.
        path: The checkpoint file; its folder is created.
        mode: The file's permission bits; default ``0o666`` less the process's umask, as
            ``torch.save`` and ``open`` give a new file (the temporary file would be
            ``0o600``). Pass ``0o600`` to keep a checkpoint private.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> save_checkpoint({"step": 3}, folder / "ckpt.pt").name
        'ckpt.pt'
        >>> load_checkpoint(folder / "ckpt.pt")["step"]
        3
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _default_mode() if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            torch.save({**state, "version": VERSION}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _default_mode() -> int:
    """``0o666`` less the umask (read by setting it and putting it back)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = None
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Checkpoints hold random-number-generator states (Python tuples and NumPy arrays), so
    they are unpickled in full: load only files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise ValueError(f"{path} is not a flowguide checkpoint (version {VERSION})")
    return state
