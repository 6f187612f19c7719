"""Benchmark scripts run end to end with tiny budgets (their numbers are not tested here)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_guides_vs_pyro_quick_run(monkeypatch, capsys):
    argv = ["guides_vs_pyro.py", "--quick", "--targets", "beta_binomial", "--dims", "10"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(BENCHMARKS / "guides_vs_pyro.py"), run_name="__main__")
    out = capsys.readouterr().out
    for heading in ("KL(q||p)", "Seconds per SVI step", "Parameter count"):
        assert heading in out
    assert "spline_coupling" in out and "AutoNeuralSpline (default)" in out
