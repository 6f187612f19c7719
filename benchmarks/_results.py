"""What the benchmark scripts share: writing their rows and settings as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def save_rows(out: Path | None, args: argparse.Namespace, rows: list[dict]) -> None:
    """Write ``{"settings": vars(args), "rows": rows}`` to ``out`` (nothing if ``out`` is None)."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args) | {"out": str(out)}, "rows": rows}, indent=1))
