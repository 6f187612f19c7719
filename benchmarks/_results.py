"""What the benchmark scripts share: one result file per benchmark, with its provenance.

Every result file is JSON of the form::

    {"benchmark": "...", "provenance": {...}, "settings": {...}, "rows": [...]}

where ``provenance`` records the commit (and whether the tree had uncommitted changes),
the versions of Python, torch, Pyro and flowguide (and zuko where used), the device
(CPU model, cores, torch threads, CUDA device) and the command that wrote the file.
The current baseline of each benchmark lives in ``benchmarks/results/<benchmark>.json``;
``benchmarks/tables.py`` renders the documentation's tables from those files.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyro
import torch

import flowguide

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _git(*args: str) -> str:
    try:
        run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return run.stdout.strip() if run.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _script(path: str) -> str:
    """The running script's path relative to the repository root, where it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def _checkout() -> dict[str, Any]:
    """The commit and state of the tree, read when the benchmark starts (the code it runs)."""
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


CHECKOUT = _checkout()


def provenance(device: str | torch.device | None = None) -> dict[str, Any]:
    """Commit, versions, device and command of the running benchmark."""
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "flowguide": flowguide.__version__,
    }
    if "zuko" in sys.modules:
        versions["zuko"] = sys.modules["zuko"].__version__
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        **CHECKOUT,
        "versions": versions,
        "device": {
            "torch_device": str(device) if device is not None else "cpu",
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "cuda": cuda,
        },
        "command": shlex.join(["python", _script(sys.argv[0]), *sys.argv[1:]]),
    }


def _plain(value: Any) -> Any:
    """JSON-ready settings: paths and other objects as strings."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def save_rows(
    out: Path | None,
    args: argparse.Namespace,
    rows: list[dict],
    *,
    benchmark: str,
    device: str | torch.device | None = None,
) -> None:
    """Write the rows, the settings (``vars(args)``) and the provenance to ``out`` (nothing
    if ``out`` is ``None``)."""
    if out is None:
        return
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": benchmark,
        "provenance": provenance(device),
        "settings": _plain(vars(args)),
        "rows": _plain(rows),
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


def load(benchmark: str, results: Path = RESULTS) -> dict[str, Any]:
    """The current result file of ``benchmark``."""
    return json.loads((results / f"{benchmark}.json").read_text())
