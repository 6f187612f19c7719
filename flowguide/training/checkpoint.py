"""Atomic checkpoints: write to a temporary file in the same folder, then rename.

A rename within one file system is atomic, so a reader (or a resumed run) sees either
the previous complete checkpoint or the new complete one, never a torn file, even when
the writer is killed mid-write. The state is stored with its SHA-256, so a file damaged
afterwards is refused by name rather than loaded with wrong numbers.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "check_writable",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
]

#: Format version written into every checkpoint: 2 holds the state serialized with its SHA-256.
VERSION = 2


class CheckpointError(OSError):
    """A checkpoint could not be written or read; the message names the file and why.

    Example:
        >>> import tempfile, pathlib
        >>> damaged = pathlib.Path(tempfile.mkdtemp()) / "ckpt.pt"
        >>> _ = damaged.write_bytes(b"not a checkpoint")
        >>> try:
        ...     load_checkpoint(damaged)
        ... except CheckpointError as error:
        ...     print("ckpt.pt is truncated or corrupted" in str(error))
        True
    """


def check_writable(path: str | os.PathLike) -> Path:
    """Make ``path``'s folder and write (then remove) a file there, or raise
    :class:`CheckpointError` saying why: a run learns before its first step that it could
    not save, not after an hour.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> check_writable(folder / "runs" / "ckpt.pt") == folder / "runs" / "ckpt.pt"
        True
        >>> sorted(p.name for p in (folder / "runs").iterdir())  # the probe is gone
        []
    """
    path = Path(path)
    fd, probe = _temporary(path, ".probe")
    os.close(fd)
    os.unlink(probe)
    return path


def _temporary(path: Path, suffix: str) -> tuple[int, str]:
    """Make ``path``'s folder and a new hidden file beside ``path`` (``mkstemp``), or raise
    :class:`CheckpointError` saying why."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as error:
        raise CheckpointError(f"cannot write checkpoints to {path}: {error.strerror or error}") from error


def remove_stale_temporaries(path: str | os.PathLike) -> int:
    """Remove the temporary files a writer of ``path`` killed mid-write left behind (the
    checkpoint itself is never touched); returns how many. Call it where no other process
    writes the same checkpoint: a trainer does, as it starts (rank 0 alone writes).

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / ".ckpt.pt.abc123.tmp").write_bytes(b"half a write")
        >>> path = save_checkpoint({"step": 1}, folder / "ckpt.pt")
        >>> remove_stale_temporaries(path), sorted(p.name for p in folder.iterdir())
        (1, ['ckpt.pt'])
    """
    path = Path(path)
    stale = list(path.parent.glob(f".{path.name}.*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


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
    fd, tmp = _temporary(path, ".tmp")  # fails as check_writable does, without a probe file per save
    try:
        os.chmod(tmp, _default_mode() if mode is None else mode)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        with os.fdopen(fd, "wb") as f:
            torch.save(
                {"version": VERSION, "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}, f
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:  # a full disk, a quota, a file too large
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(
            f"could not write checkpoint {path}: {error.strerror or error}; the previous checkpoint "
            "there, if any, is untouched"
        ) from error
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
    try:
        container = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated or corrupted: torch raises several kinds
        raise CheckpointError(
            f"{path} is truncated or corrupted and cannot be read ({_why(error)})"
        ) from error
    if not isinstance(container, dict) or container.get("version") != VERSION:
        raise ValueError(f"{path} is not a flowguide checkpoint (version {VERSION})")
    payload = container.get("payload")
    if not isinstance(payload, bytes) or hashlib.sha256(payload).hexdigest() != container.get("sha256"):
        raise CheckpointError(
            f"{path} is corrupted: its contents do not match the checksum written with them"
        )
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)


def _why(error: Exception) -> str:
    first = str(error).splitlines()[0][:200] if str(error) else "no detail"
    return f"{type(error).__name__}: {first}"
