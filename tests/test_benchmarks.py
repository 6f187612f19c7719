"""Benchmark scripts run end to end with tiny budgets (their numbers are not tested here)."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.poutine.util import site_is_subsample

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # what `python benchmarks/x.py` does: the scripts import _results


def test_guides_vs_pyro_quick_run(monkeypatch, capsys):
    outs = {}
    for part in ("speed", "size"):
        argv = ["guides_vs_pyro.py", "--quick", "--dims", "10", "--part", part]
        monkeypatch.setattr(sys, "argv", argv)
        runpy.run_path(str(BENCHMARKS / "guides_vs_pyro.py"), run_name="__main__")
        outs[part] = capsys.readouterr().out
    assert "Seconds per SVI step" in outs["speed"] and "spline_coupling" in outs["speed"]
    assert "Parameter count" in outs["size"] and "AutoNeuralSpline (default)" in outs["size"]


def test_fit_quality_quick_run(monkeypatch, capsys, tmp_path):
    out_file = tmp_path / "rows.json"
    argv = ["fit_quality.py", "--quick", "--guides", "AutoIAF", "--targets", "beta_binomial"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out_file)])
    runpy.run_path(str(BENCHMARKS / "fit_quality.py"), run_name="__main__")
    record = json.loads(out_file.read_text())
    assert record["benchmark"] == "fit_quality"
    assert {(row["guide"], row["variant"]) for row in record["rows"]} == {
        ("AutoIAF", "defaults"),
        ("AutoIAF", "recipe"),
        ("AutoNormal", "defaults"),
        ("AutoMultivariateNormal", "defaults"),
        ("pyro.AutoIAFNormal", "defaults"),
        ("pyro.spline_coupling", "defaults"),
    }
    assert all(math.isfinite(row["kl"]) and row["skipped"] == 0 for row in record["rows"])


def test_a_result_file_records_commit_versions_device_and_command(monkeypatch, tmp_path):
    """Every benchmark writes through ``_results.save_rows``: the provenance is in the file."""
    out_file = tmp_path / "large_rate.json"
    monkeypatch.setattr(sys, "argv", ["large_rate.py", "--quick", "--out", str(out_file)])
    runpy.run_path(str(BENCHMARKS / "large_rate.py"), run_name="__main__")
    record = json.loads(out_file.read_text())
    provenance = record["provenance"]
    assert len(provenance["commit"]) == 40 and isinstance(provenance["dirty"], bool)
    assert {"python", "torch", "pyro", "flowguide"} <= set(provenance["versions"])
    assert provenance["device"]["cores"] >= 1 and provenance["device"]["threads"] >= 1
    assert provenance["command"].startswith("python benchmarks/large_rate.py --quick")
    assert record["settings"]["steps"] == 5 and len(record["rows"]) == 2


def test_training_speed_quick_run(monkeypatch, capsys, tmp_path):
    out_file = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["training_speed.py", "--quick", "--out", str(out_file)])
    runpy.run_path(str(BENCHMARKS / "training_speed.py"), run_name="__main__")
    rows = json.loads(out_file.read_text())["rows"]
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


def test_multimodal_quick_run(monkeypatch, capsys, tmp_path):
    out_file = tmp_path / "multimodal.json"
    monkeypatch.setattr(sys, "argv", ["multimodal.py", "--quick", "--out", str(out_file)])
    runpy.run_path(str(BENCHMARKS / "multimodal.py"), run_name="__main__")
    rows = json.loads(out_file.read_text())["rows"]
    assert [r["method"] for r in rows] == ["iaf", "iaf_single_annealed", "zuko_nsf"]
    assert rows[0]["components"] == 3 and rows[0]["true_masses"] == pytest.approx([1 / 3] * 3, abs=0.01)
    assert all(0 <= r["mass_error"] <= 1 and math.isfinite(r["kl"]) for r in rows)


def test_multimodal_targets_vectorized_models_match_their_log_densities():
    """Each target's Pyro model, over a plate of draws as the ELBO runs it, scores what its
    log-density does (the KL is computed from the latter)."""
    targets = runpy.run_path(str(BENCHMARKS / "multimodal.py"))["TARGETS"]
    for name, make in targets.items():
        target = make()
        z = torch.randn(5, target.dim) + 0.5
        with pyro.plate("draws", 5, dim=-2):
            trace = poutine.trace(poutine.condition(target.pyro_model(), {"z": z.unsqueeze(-2)})).get_trace()
        trace.compute_log_prob()
        log_joint = sum(
            site["log_prob"].reshape(5, -1).sum(-1)
            for site in trace.nodes.values()
            if site["type"] == "sample" and not site_is_subsample(site)
        )
        assert torch.allclose(log_joint, target.log_p(z), atol=1e-3), name


def test_multimodal_unimodal_quick_run(monkeypatch, capsys, tmp_path):
    out_file = tmp_path / "unimodal.json"
    argv = ["multimodal.py", "--quick", "--part", "unimodal", "--out", str(out_file)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(BENCHMARKS / "multimodal.py"), run_name="__main__")
    rows = json.loads(out_file.read_text())["rows"]
    assert len(rows) == 4 and all(r["components"] == 1 and r["identical_fit"] for r in rows)


def test_packing_quick_run(monkeypatch, capsys, tmp_path):
    out_file = tmp_path / "packing.json"
    monkeypatch.setattr(sys, "argv", ["packing.py", "--quick", "--out", str(out_file)])
    runpy.run_path(str(BENCHMARKS / "packing.py"), run_name="__main__")
    assert "PACK_LIMIT" in capsys.readouterr().out
    rows = json.loads(out_file.read_text())["rows"]
    assert {row["flow"] for row in rows} == {"planar", "iaf", "spline_coupling", "affine_coupling"}
    assert all(row[mode] > 0 for row in rows for mode in ("packed", "separate", "default"))
    assert max(row["largest_stack"] for row in rows) > 0
