"""Every example script runs in smoke mode."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_in_smoke_mode(script, monkeypatch, capsys, device):
    monkeypatch.setattr(sys, "argv", [str(script), "--smoke", "--device", str(device)])
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out.strip()


def test_examples_exist():
    assert EXAMPLES, "the examples folder has no scripts"
