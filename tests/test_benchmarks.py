"""Benchmark scripts run end to end with tiny budgets (their numbers are not tested here)."""

from __future__ import annotations

import json
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


def test_fit_quality_quick_run(monkeypatch, capsys, tmp_path):
    out_file = tmp_path / "rows.json"
    argv = [
        "fit_quality.py",
        "--quick",
        "--guides",
        "AutoIAF",
        "--targets",
        "beta_binomial",
        "--out",
        str(out_file),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(BENCHMARKS / "fit_quality.py"), run_name="__main__")
    out = capsys.readouterr().out
    for variant in ("new", "old", "stl", "no_stl", "diagonal", "laplace"):
        assert f" {variant} " in out
    rows = json.loads(out_file.read_text())["rows"]
    assert {row["variant"] for row in rows} == {"new", "old", "stl", "no_stl", "diagonal", "laplace"}
