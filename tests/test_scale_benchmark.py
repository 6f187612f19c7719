"""The scale benchmark: its models score what they are written to, in one draw and over a
plate of vectorized particles; the hierarchical quadrature reference is the posterior;
``benchmarks/scale.py --quick`` runs and a failing guide becomes an error row."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.poutine.util import site_is_subsample

ROOT = Path(__file__).parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # what `python benchmarks/scale.py` does
scale_models = importlib.import_module("scale_models")

SMALL = {
    "hierarchical_centered": {"dim": 8},
    "hierarchical_noncentered": {"dim": 8},
    "bnn": {"hidden": 3},
    "gp_classification": {"dim": 30},
}


@pytest.fixture
def float64():
    """Cases built and scored in float64 (their data take torch's default dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def small_case(name: str, **kw):
    return scale_models.make_case(name, **SMALL[name], **kw)


def normal_lp(x, loc, scale):
    x, loc, scale = (torch.as_tensor(v, dtype=torch.float64) for v in (x, loc, scale))
    return (-0.5 * math.log(2 * math.pi) - scale.log() - 0.5 * ((x - loc) / scale) ** 2).sum()


def half_normal_lp(x, scale):
    return math.log(2.0) + normal_lp(x, 0.0, scale)


def model_log_joint(case, values: dict) -> torch.Tensor:
    return poutine.trace(poutine.condition(case.model, data=values)).get_trace(*case.args).log_prob_sum()


def hierarchical_values(case, centered: bool) -> tuple[dict, torch.Tensor]:
    """Random latents and the log joint by hand."""
    generator = torch.Generator().manual_seed(3)
    J = case.dim - 2
    mu, tau = torch.randn((), generator=generator), 0.3 + torch.rand((), generator=generator)
    y, sigma = case.data["y"], case.data["sigma"]
    prior = normal_lp(mu, 0.0, 5.0) + half_normal_lp(tau, 5.0)
    local = torch.randn(J, generator=generator)
    if centered:
        theta = mu + local
        values = {"mu": mu, "tau": tau, "theta": theta}
        return values, prior + normal_lp(theta, mu, tau) + normal_lp(y, theta, sigma)
    values = {"mu": mu, "tau": tau, "eta": local}
    return values, prior + normal_lp(local, 0.0, 1.0) + normal_lp(y, mu + tau * local, sigma)


def bnn_values(case) -> tuple[dict, torch.Tensor]:
    generator = torch.Generator().manual_seed(4)
    values, log_joint, h = {}, torch.zeros((), dtype=torch.float64), case.data["x"]
    layers = scale_models.bnn_layers(SMALL["bnn"]["hidden"])
    for i, (fan_in, fan_out) in enumerate(layers):
        w = torch.randn(fan_in, fan_out, generator=generator)
        b = torch.randn(fan_out, generator=generator)
        values |= {f"w{i}": w, f"b{i}": b}
        log_joint = log_joint + normal_lp(w, 0.0, 1.0 / math.sqrt(fan_in)) + normal_lp(b, 0.0, 1.0)
        h = h @ w + b
        if i < len(layers) - 1:
            h = torch.tanh(h)
    values["sd"] = torch.tensor(0.7)
    log_joint = log_joint + half_normal_lp(0.7, 1.0) + normal_lp(case.data["y"], h[:, 0], 0.7)
    return values, log_joint


def gp_values(case) -> tuple[dict, torch.Tensor]:
    """The OU prior against the dense Gaussian with covariance s^2 exp(-|x_i - x_j| / ell)."""
    x = case.data["x"]
    f = torch.randn(len(x), generator=torch.Generator().manual_seed(5))
    covariance = 2.25 * torch.exp(-(x[:, None] - x[None, :]).abs() / 1.0)
    prior = dist.MultivariateNormal(torch.zeros(len(x)), covariance).log_prob(f)
    logits, y = f[case.data["train"]], case.data["y"]
    likelihood = (
        y * torch.nn.functional.logsigmoid(logits) + (1 - y) * torch.nn.functional.logsigmoid(-logits)
    ).sum()
    return {"f": f}, prior + likelihood


HAND = {
    "hierarchical_centered": lambda case: hierarchical_values(case, centered=True),
    "hierarchical_noncentered": lambda case: hierarchical_values(case, centered=False),
    "bnn": bnn_values,
    "gp_classification": gp_values,
}


@pytest.mark.parametrize("name", list(SMALL))
def test_each_model_scores_its_hand_written_log_joint(name, float64):
    case = small_case(name, **({"reference": False} if name.startswith("hierarchical") else {}))
    values, expected = HAND[name](case)
    assert model_log_joint(case, values).dtype == torch.float64
    torch.testing.assert_close(model_log_joint(case, values), expected, rtol=0, atol=1e-8)


def latent_values(trace) -> dict:
    return {
        name: site["value"]
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


@pytest.mark.parametrize("name", list(SMALL))
def test_each_model_vectorizes_over_a_particle_plate(name, float64):
    """Over a plate of 3 particles left of the model's plates (where the vectorized ELBO
    puts it), each particle's log joint is its own single-draw log joint."""
    case, particles = small_case(name), 3
    shapes = {k: v.shape for k, v in latent_values(poutine.trace(case.model).get_trace(*case.args)).items()}
    with pyro.plate("particles", particles, dim=-(case.max_plate_nesting + 1)):
        values = latent_values(poutine.trace(case.model).get_trace(*case.args))
        trace = poutine.trace(poutine.condition(case.model, data=values)).get_trace(*case.args)
    trace.compute_log_prob()
    vectorized = sum(
        site["log_prob"].reshape(particles, -1).sum(-1)
        for site in trace.nodes.values()
        if site["type"] == "sample" and not site_is_subsample(site)
    )
    for i in range(particles):
        one = {k: v.select(0, i).reshape(shapes[k]) for k, v in values.items()}
        torch.testing.assert_close(vectorized[i], model_log_joint(case, one), rtol=0, atol=1e-8)


def test_ornstein_uhlenbeck_draws_have_its_covariance_across_scan_chunks(float64):
    """200 points with rho = e^-0.2: the scan runs in 4 chunks; variance and lag-1, lag-60
    correlations of 20,000 draws match scale^2 rho^lag."""
    torch.manual_seed(0)
    ou = scale_models.OrnsteinUhlenbeck(200, 1.5, math.exp(-0.2))
    f = ou.sample((20_000,))
    assert f.shape == (20_000, 200) and ou.log_prob(f).shape == (20_000,)
    assert f.var(0).mean() == pytest.approx(2.25, rel=0.03)
    for lag in (1, 60):
        correlation = (f[:, :-lag] * f[:, lag:]).mean() / 2.25
        assert correlation == pytest.approx(math.exp(-0.2 * lag), abs=0.02)
    expanded = ou.expand([4, 2])
    assert expanded.sample().shape == (4, 2, 200) and expanded.log_prob(f[:2]).shape == (4, 2)


def test_hierarchical_reference_matches_importance_sampling_from_the_prior(float64):
    """At J = 8, 2e5 prior draws of (mu, tau) weighted by the marginal likelihood, with the
    conditional moments of theta and eta in closed form: means within 0.05 posterior sd,
    sds within 5%."""
    data = scale_models.hierarchical_data(8)
    y, sigma = data["y"], data["sigma"]
    reference = scale_models.hierarchical_reference(y, sigma)
    generator = torch.Generator().manual_seed(2)
    mu = 5.0 * torch.randn(200_000, 1, generator=generator)
    tau = 5.0 * torch.randn(200_000, 1, generator=generator).abs()
    weights = dist.Normal(mu, (tau**2 + sigma**2).sqrt()).log_prob(y).sum(-1).softmax(0)[:, None]
    assert 1.0 / (weights**2).sum() > 2000  # effective sample size
    precision = 1.0 / tau**2 + 1.0 / sigma**2
    theta_mean = (mu / tau**2 + y / sigma**2) / precision
    moments = {
        "mu": (mu, 0.0 * mu),
        "tau": (tau, 0.0 * tau),
        "theta": (theta_mean, 1.0 / precision),
        "eta": ((theta_mean - mu) / tau, 1.0 / (precision * tau**2)),
    }
    for name, (mean, variance) in moments.items():
        expected_mean = (weights * mean).sum(0)
        expected_sd = ((weights * (variance + mean**2)).sum(0) - expected_mean**2).sqrt()
        ref_mean, ref_sd = reference[name]
        assert ((ref_mean - expected_mean).abs() / ref_sd).max() < 0.05, name
        assert ((ref_sd / expected_sd - 1).abs()).max() < 0.05, name


def test_scale_quick_run_prints_a_table_and_writes_rows(tmp_path):
    out_file = tmp_path / "scale.json"
    command = [sys.executable, str(BENCHMARKS / "scale.py"), "--quick", "--out", str(out_file)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "s/step" in run.stdout and "x AN" in run.stdout
    record = json.loads(out_file.read_text())
    assert record["benchmark"] == "scale" and record["settings"]["quick"]
    rows = record["rows"]
    assert {(r["model"], r["guide"], r["budget"]) for r in rows} == {
        (model, guide, budget)
        for model in SMALL
        for guide in ("AutoNormal", "AutoIAF")
        for budget in ("steps", "seconds")
    }
    for row in rows:
        assert row["error"] is None, row
        assert row["params"] > 0 and row["s_per_step"] > 0 and row["peak_rss_mb"] > 0
        assert math.isfinite(row["elbo"]) and row["steps"] >= 1
        reached = row["steps"] == 10 if row["budget"] == "steps" else row["train_s"] >= 0.5
        assert reached or row["capped"], row
        assert (row["mean_err_sd"] is not None) == row["model"].startswith("hierarchical")
        assert (row["heldout_lpd"] is not None) == (row["model"] in ("bnn", "gp_classification"))


def test_a_failing_guide_becomes_error_rows(monkeypatch):
    scale = importlib.import_module("scale")

    def broken(case):
        raise RuntimeError("no such guide")

    monkeypatch.setitem(scale.GUIDES, "broken", broken)
    args = scale.parse(["--one", "gp_classification", "20", "broken", "--steps", "2", "--seconds", "0"])
    rows = scale.run_one(args)
    assert [r["budget"] for r in rows] == ["steps", "seconds"]
    assert all(r["error"] == "RuntimeError: no such guide" and r["dim"] == 20 for r in rows)


def test_plate_defaults_quick_run_records_every_variant(tmp_path):
    out_file = tmp_path / "plate_defaults.json"
    command = [sys.executable, str(BENCHMARKS / "plate_defaults.py"), "--quick", "--out", str(out_file)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out_file.read_text())["rows"]
    plate_defaults = importlib.import_module("plate_defaults")
    assert {row["variant"] for row in rows} == set(plate_defaults.VARIANTS)
    assert all(len(row["curve"]) == 3 for row in rows)  # steps 0, 10 and 20


def test_head_threshold_quick_run_times_every_head(tmp_path):
    out_file = tmp_path / "head_threshold.json"
    command = [sys.executable, str(BENCHMARKS / "head_threshold.py"), "--quick", "--out", str(out_file)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out_file.read_text())["rows"]
    assert {(row["dim"], row["variant"]) for row in rows} == {
        (dim, variant) for dim in (16, 40) for variant in importlib.import_module("head_threshold").VARIANTS
    }
    assert all(row["s_per_step"] > 0 and row["params"] > 0 for row in rows)
