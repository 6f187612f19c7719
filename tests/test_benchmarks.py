"""Benchmark scripts run end to end with tiny budgets (their numbers are not tested here)."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # what `python benchmarks/x.py` does: the scripts import _results


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
    variants = {"new", "old", "stl", "no_stl", "diagonal", "laplace", "cold", "recipe"}
    for variant in variants:
        assert f" {variant} " in out
    assert "KL(q||p) on beta_binomial" in out  # the summary table
    rows = json.loads(out_file.read_text())["rows"]
    assert {row["variant"] for row in rows} == variants | {"reference"}
    assert {row["guide"] for row in rows if row["variant"] == "reference"} == {
        "AutoNormal",
        "AutoMultivariateNormal",
    }


def test_fit_quality_sweep_changes_one_default_at_a_time():
    fit_quality = runpy.run_path(str(BENCHMARKS / "fit_quality.py"))
    options = fit_quality["guide_options"]
    assert options("AutoPlanarFlow", "flows_double") == {"num_flows": 16}
    assert options("AutoIAF", "flows_half") == {"num_flows": 2}
    assert options("AutoIAF", "width_128") == {"hidden_dims": (128, 128)}
    assert options("AutoNeuralSpline", "bins_16") == {"bins": 16}
    assert options("AutoIAF", "bins_16") is None  # not an option of that guide: skipped
    assert options("AutoPlanarFlow", "width_32") is None
    assert options("AutoIAF", "cosine") == {}  # a training change, not a guide option


def test_training_speed_quick_run(monkeypatch, capsys, tmp_path):
    out_file = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["training_speed.py", "--quick", "--out", str(out_file)])
    runpy.run_path(str(BENCHMARKS / "training_speed.py"), run_name="__main__")
    rows = json.loads(out_file.read_text())
    guides = {"AutoIAF", "AutoAffineCoupling", "AutoNeuralSpline", "FlowVAE(iaf, bernoulli), digits"}
    assert {r["guide"] for r in rows} == guides
    assert all(r["seconds_per_step"] > 0 and r["speedup_vs_cpu"] > 0 for r in rows)
    assert "s/step" in capsys.readouterr().out


def test_flows_vs_zuko_quick_run(monkeypatch, capsys, tmp_path):
    out_file = tmp_path / "zuko.json"
    monkeypatch.setattr(sys, "argv", ["flows_vs_zuko.py", "--quick", "--out", str(out_file)])
    runpy.run_path(str(BENCHMARKS / "flows_vs_zuko.py"), run_name="__main__")
    rows = json.loads(out_file.read_text())["rows"]
    assert {(r["flow"], r["mode"]) for r in rows} == {
        (flow, mode)
        for flow in ("NSF coupling", "NSF autoregressive", "IAF (inverted MAF)", "RealNVP")
        for mode in ("sample", "train")
    }
    for row in rows:  # matched pairs: the same depth and widths give parameter counts of one size
        assert 0.5 < row["ours_params"] / row["zuko_params"] < 2.0, row
        assert row["ratio"] > 0 and math.isfinite(row["ratio"])


def test_equal_time_quick_run(monkeypatch, capsys, tmp_path):
    out_file = tmp_path / "equal.json"
    argv = ["equal_time.py", "--quick", "--models", "funnel", "--guides", "AutoNormal", "AutoIAF"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out_file)])
    runpy.run_path(str(BENCHMARKS / "equal_time.py"), run_name="__main__")
    rows = json.loads(out_file.read_text())["rows"]
    assert [r["guide"] for r in rows] == ["AutoNormal", "AutoIAF"]
    for row in rows:
        assert row["steps"] >= 1 and row["finite"]
        assert row["kl"] == pytest.approx(-row["elbo"])  # the funnel's log Z is 0


def test_annealing_quick_run(monkeypatch, capsys, tmp_path):
    out_file = tmp_path / "anneal.json"
    monkeypatch.setattr(sys, "argv", ["annealing.py", "--quick", "--out", str(out_file)])
    runpy.run_path(str(BENCHMARKS / "annealing.py"), run_name="__main__")
    rows = json.loads(out_file.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["plain", "annealed"]
    assert all(0 <= r["mass_right"] <= 1 and math.isfinite(r["kl"]) for r in rows)


def test_packing_quick_run(monkeypatch, capsys, tmp_path):
    out_file = tmp_path / "packing.json"
    monkeypatch.setattr(sys, "argv", ["packing.py", "--quick", "--out", str(out_file)])
    runpy.run_path(str(BENCHMARKS / "packing.py"), run_name="__main__")
    assert "PACK_LIMIT" in capsys.readouterr().out
    rows = json.loads(out_file.read_text())["rows"]
    assert {row["flow"] for row in rows} == {"planar", "iaf", "spline_coupling", "affine_coupling"}
    assert all(row[mode] > 0 for row in rows for mode in ("packed", "separate", "default"))
    assert max(row["largest_stack"] for row in rows) > 0
