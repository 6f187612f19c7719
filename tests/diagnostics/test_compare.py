"""The comparison (main job): end to end in smoke mode, and its numbers on an exact model."""

from __future__ import annotations

import json
import math

import pytest

from flowguide.apps.cli import main
from flowguide.apps.compare import compare_guides, markdown_table, run_comparison
from flowguide.apps.exact import BetaBinomial, ConjugateRegression


def test_compare_command_writes_table_json_and_figures(tmp_path, capsys):
    argv = [
        "compare",
        "--smoke",
        "--model",
        "banana",
        "--guides",
        "AutoNormal",
        "AutoIAF",
        "--schedule",
        "recipe",
    ]
    assert main([*argv, "--reference", "nuts", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "k-hat" in out and "AutoIAF" in out and "mean err" in out
    report = json.loads((tmp_path / "compare_banana.json").read_text())
    assert [g["guide"] for g in report["guides"]] == ["AutoNormal", "AutoIAF"]
    assert report["settings"]["steps"] == 5 and report["settings"]["reference"] == "nuts"
    assert report["settings"]["schedule"] == "recipe"
    for row in report["guides"]:
        assert len(row["losses"]) == 5 and math.isfinite(row["elbo"]) and row["iwae"] >= row["elbo"]
        assert row["kl"] == pytest.approx(report["settings"]["log_z"] - row["elbo"])
        assert row["mean_error"] >= 0 and row["num_params"] > 0
    assert "| AutoIAF |" in (tmp_path / "compare_banana.md").read_text()
    for figure in ("elbo_banana.png", "pairs_banana.png"):
        assert (tmp_path / figure).stat().st_size > 10_000


@pytest.mark.parametrize("schedule", ["constant", "recipe"])
def test_trained_guides_close_the_gap_on_an_exact_model(schedule):
    """Guides whose family holds the Gaussian posterior of a conjugate regression."""
    case = ConjugateRegression(dim=3, num_data=20)
    # A decay over 300 steps stops a cold-started AutoMultivariateNormal short (KL 2.7):
    # the recipe is the warm-started flows'; AutoIAF starts at the Laplace fit.
    guides = ["AutoMultivariateNormal", "AutoIAF"] if schedule == "constant" else ["AutoIAF"]
    rows, samples = compare_guides(
        case.model,
        case.args,
        guides,
        steps=300,
        num_samples=3000,
        log_z=case.log_z,
        progress=False,
        schedule=schedule,
    )
    for row in rows:
        assert -0.01 < row.kl < 0.05  # KL(q||p) >= 0 up to Monte Carlo error, and small after training
        assert row.elbo <= row.iwae <= case.log_z + 3 * row.iwae_se
        assert row.khat < 0.7 and row.ess > 1000
        assert samples[row.guide]["w"].shape == (3000, 3)
    assert "| AutoIAF |" in markdown_table(rows)


def test_bad_options_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown guides"):
        compare_guides(BetaBinomial().model, BetaBinomial().args, ["AutoMagic"])
    with pytest.raises(ValueError, match="reference"):
        run_comparison("banana", ["AutoNormal"], reference="hmc", out=tmp_path)
    with pytest.raises(ValueError, match="schedule must be one of"):
        compare_guides(BetaBinomial().model, BetaBinomial().args, ["AutoNormal"], schedule="cosine")
    with pytest.raises(ValueError, match="observes \\['y'\\]"):
        run_comparison("eight_schools", ["AutoNormal"], reference="exact", out=tmp_path)
    with pytest.raises(ValueError, match="unknown bundled model"):
        run_comparison("donut", ["AutoNormal"], out=tmp_path)
    with pytest.raises(SystemExit):
        main(["compare", "--steps", "0", "--out", str(tmp_path)])


def test_models_that_observe_nothing_are_scored_against_their_exact_draws(tmp_path):
    """The funnel observes nothing, so its posterior is its prior: ``auto`` uses exact draws."""
    rows = run_comparison(
        "funnel",
        ["AutoNormal"],
        steps=300,
        num_samples=2000,
        reference_samples=4000,
        out=tmp_path,
        progress=False,
    )
    report = json.loads((tmp_path / "compare_funnel.json").read_text())
    assert report["settings"]["reference"] == "exact"
    # A Gaussian cannot follow the funnel's neck: v's spread is far too small.
    assert rows[0].std_error > 0.5 and rows[0].kl > 1.0


def test_the_recipe_schedule_gives_each_guide_its_own_recipe():
    """``schedule="recipe"``: a flow guide's own recipe (the spline guide decays to 10%, the
    planar guide keeps a constant rate), the default recipe for Pyro's guides."""
    from pyro.infer.autoguide import AutoNormal

    from flowguide import AutoNeuralSpline, AutoPlanarFlow, Recipe
    from flowguide.apps.compare import recipe_for

    case = BetaBinomial()
    spline, planar, normal = AutoNeuralSpline(case.model), AutoPlanarFlow(case.model), AutoNormal(case.model)
    assert recipe_for(spline, "recipe").lr_decay == 0.1
    assert recipe_for(planar, "recipe").lr_decay is None
    assert recipe_for(normal, "recipe") == Recipe()
    assert recipe_for(spline, "constant") is None
    with pytest.raises(ValueError, match="schedule must be one of"):
        recipe_for(spline, "decay")
