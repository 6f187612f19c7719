"""The command line runs end to end in smoke mode and rejects bad options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flowguide.apps.cli import main
from flowguide.apps.demo import run_demo


def test_demo_smoke_prints_a_table_and_saves_a_figure(tmp_path, capsys):
    assert main(["demo", "--smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("planar", "iaf", "neural_spline", "affine_coupling", "KL(q||p)"):
        assert name in out
    assert (tmp_path / "demo_banana.png").stat().st_size > 10_000


def test_demo_learns_the_banana():
    """A short fit already closes most of the KL gap left by the initial flow."""
    (before,) = run_demo("banana", ("affine_coupling",), steps=1)
    (after,) = run_demo("banana", ("affine_coupling",), steps=300)
    assert after.kl < 0.1 < before.kl


def test_module_entry_point_runs(tmp_path):
    args = ["demo", "--smoke", "--flows", "planar", "--target", "ring", "--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "flowguide", *args], capture_output=True, text=True, check=True, timeout=300
    )
    assert "ring" in result.stdout and (tmp_path / "demo_ring.png").exists()


def test_unknown_choices_raise():
    with pytest.raises(ValueError, match="target"):
        run_demo("donut")
    with pytest.raises(ValueError, match="unknown flows"):
        run_demo("banana", ("maf",))
