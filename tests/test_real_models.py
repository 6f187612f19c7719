"""The real-model suite: model densities, NUTS references and the time-to-accuracy harness."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide.initialization import InitMessenger, init_to_value
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to

from flowguide.infer.stratified import _per_particle

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import real_models  # noqa: E402
from real_model_references import ESS_MIN, RHAT_MAX, flatten, load_reference  # noqa: E402
from suite_models import SuiteModel, latent_shapes, suite  # noqa: E402

CASES = suite()


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)  # the suite's priors follow the default dtype
    yield
    torch.set_default_dtype(torch.float32)


def test_the_suite_covers_the_issue():
    assert len(CASES) >= 10
    sizes = {name: sum(math.prod(s) for s in latent_shapes(case).values()) for name, case in CASES.items()}
    assert sizes["sp500_volatility"] > 100 and sizes["cancer_gp_classification"] >= 50
    assert sum(not case.vectorizes for case in CASES.values()) >= 1


@pytest.mark.parametrize("name", list(CASES))
def test_the_model_density_equals_the_hand_written_log_joint(name, float64):
    """At random constrained points, the model's trace log density and the independent
    hand-written joint agree to 1e-8 in float64."""
    case = CASES[name]
    init = InitMessenger(init_to_value(values=case.init))
    trace = pyro.poutine.trace(init(case.model)).get_trace(*case.args)
    sites = {
        n: s
        for n, s in trace.nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
    }
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        values = {}
        for n, site in sites.items():
            to_support = biject_to(site["fn"].support)
            shape = to_support.inverse_shape(site["value"].shape)
            values[n] = to_support(0.8 * torch.randn(shape, generator=generator))
        model = pyro.poutine.condition(case.model, data=values)
        expected = pyro.poutine.trace(model).get_trace(*case.args).log_prob_sum()
        actual = case.log_joint({n: v.unsqueeze(0) for n, v in values.items()})[0]
        assert torch.isfinite(expected)
        assert abs(float(actual - expected)) < 1e-8 * max(1.0, abs(float(expected))), (actual, expected)


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.vectorizes])
def test_under_a_particle_plate_the_model_scores_each_draw_by_its_log_joint(name, float64):
    """Guides train with vectorized particles: under a plate left of the model's own, the
    model's log density per particle equals the hand-written joint of that particle's draw."""
    case, draws = CASES[name], 3
    with pyro.plate("particles", draws, dim=-(case.max_plate_nesting + 1)):
        trace = pyro.poutine.trace(case.model).get_trace(*case.args)
    trace.compute_log_prob()
    per_draw = _per_particle(trace, case.max_plate_nesting + 1)
    values = {n: trace.nodes[n]["value"].reshape(draws, *s) for n, s in latent_shapes(case).items()}
    expected = case.log_joint(values)
    finite = torch.isfinite(expected)
    assert finite.any()
    assert torch.allclose(per_draw[finite], expected[finite], rtol=1e-8)


REFERENCED = sorted(p.stem for p in (BENCHMARKS / "references").glob("*.npz"))


def test_every_model_has_a_reference():
    assert set(REFERENCED) == set(CASES)


@pytest.mark.parametrize("name", REFERENCED)
def test_the_reference_loads_and_its_summary_matches_its_draws(name):
    ref = load_reference(name)
    names, _ = flatten(
        {k: torch.zeros(1, *s) for k, s in latent_shapes(CASES[name]).items()}, latent_shapes(CASES[name])
    )
    assert list(ref["names"]) == names
    draws = ref["draws"].astype(np.float64)
    total = ref["record"]["chains"] * ref["record"]["draws_per_chain"]
    assert draws.shape == (min(4000, total), len(names)) and np.all(ref["sd"] > 0)
    assert np.all(np.abs(draws.mean(0) - ref["mean"]) < 0.1 * ref["sd"])
    assert np.all(np.abs(draws.std(0, ddof=1) / ref["sd"] - 1) < 0.1)
    assert ref["rhat"].max() < RHAT_MAX and ref["ess_bulk"].min() > ESS_MIN
    record = ref["record"]
    assert record["max_rhat"] == pytest.approx(float(ref["rhat"].max()))
    assert record["provenance"]["commit"] and {"torch", "pyro"} <= set(record["provenance"]["versions"])


def conjugate() -> tuple[SuiteModel, dict]:
    """Three means with a Normal(0, 1) prior and 20 unit-variance observations each: the
    posterior is Normal(sum y / (n + 1), 1 / sqrt(n + 1)) per coordinate, exactly."""
    y = torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + torch.tensor(
        [1.0, -2.0, 0.5], dtype=torch.float64
    )

    def model(y):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(3).to(y), 1.0).to_event(1))
        with pyro.plate("obs", y.shape[0]):
            pyro.sample("y", dist.Normal(mu, 1.0).to_event(1), obs=y)

    def log_joint(v):
        mu = v["mu"]
        prior = -0.5 * (mu**2).sum(-1) - 1.5 * math.log(2 * math.pi)
        likelihood = -0.5 * ((y - mu.unsqueeze(-2)) ** 2).sum((-1, -2)) - 30 * math.log(2 * math.pi)
        return prior + likelihood

    case = SuiteModel("conjugate", model, (y,), log_joint, max_plate_nesting=1)
    n = y.shape[0]
    mean, sd = (y.sum(0) / (n + 1)).numpy(), np.full(3, 1 / math.sqrt(n + 1))
    draws = mean + sd * np.random.default_rng(0).standard_normal((20000, 3))
    ref = {"names": np.array(["mu[0]", "mu[1]", "mu[2]"]), "mean": mean, "sd": sd, "draws": draws}
    return case, ref


@pytest.mark.slow
def test_the_harness_w1_falls_below_005_on_a_conjugate_model():
    """Time to accuracy on an exact posterior: AutoIAF's W1 falls from its start to 0.05
    (a cold start: the Laplace start would be the posterior itself)."""
    case, ref = conjugate()
    args = real_models.parse(
        ["--target", "0.05", "--seconds", "60", "--eval-every", "50", "--eval-draws", "4000"]
    )
    result = real_models.run_guide("AutoIAF", case, latent_shapes(case), ref, args, warm_start=None)
    w1 = [point[2] for point in result["curve"]]
    assert w1[-1] <= 0.05 < w1[0], w1
    assert real_models.time_to_target(result["curve"], 0.05) == result["curve"][-1][1]
    assert np.all(np.abs(result["mean_error"]) < 0.1) and np.all(np.abs(result["sd_ratio"] - 1) < 0.1)
    assert (
        math.isfinite(result["khat"]) and result["elbo"] <= result["iwae"]
    )  # stopped at the target, not converged


def test_the_harness_w1_of_exact_draws_is_small_and_of_shifted_draws_is_the_shift():
    _, ref = conjugate()
    exact = ref["mean"] + ref["sd"] * np.random.default_rng(1).standard_normal((4000, 3))
    assert real_models.mean_w1(exact, ref) < 0.05
    assert real_models.mean_w1(exact + 0.5 * ref["sd"], ref) == pytest.approx(0.5, abs=0.05)


def test_real_models_quick_run(tmp_path):
    out = tmp_path / "rows.json"
    rows = real_models.main(["--quick", "--out", str(out)])
    assert {row["method"] for row in rows} == {"AutoIAF", "AutoNormal", "NUTS"}
    for row in rows:
        assert row["finite"] and math.isfinite(row["w1"]) and row["curve"]
        assert row["seconds"] >= row["curve"][0][1]
    assert out.exists()


def test_real_models_stl_part_quick_run(tmp_path):
    out = tmp_path / "stl.json"
    rows = real_models.main(["--part", "stl", "--quick", "--out", str(out)])
    stl = {row["guide"]: row for row in rows if row["part"] == "stl"}
    assert stl["pyro.AutoIAFNormal"]["ratio"] == 1.0
    assert all(row["step_seconds"] > 1e-4 for row in rows)  # each timed a real step
    paths = [row for row in rows if row["part"] == "particles"]
    assert [row["path"].split(",")[0] for row in paths] == ["vmap", "sequential", "sequential"]
    assert all(math.isfinite(row["w1"]) for row in paths) and out.exists()
