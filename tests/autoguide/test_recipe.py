"""Each guide's training recipe: the optimizer it builds for SVI, when it sticks the landing, large rates."""

from __future__ import annotations

import dataclasses
import functools
import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from autoguide_cases import DATA, GUIDES, LOCAL_DATA, SMALL, data_plate, local_model, rich_model
from pyro.infer import (
    SVI,
    Trace_ELBO,
)
from pyro.infer.autoguide import (
    init_to_feasible,
)
from pyro.optim import Adam

from flowguide import AutoAffineCoupling, AutoFlow, AutoIAF, AutoNeuralSpline, AutoPlanarFlow, iaf
from flowguide.apps.exact import Funnel
from flowguide.nn import UnitScaled


def test_recommended_optim_leaves_the_local_factors_at_the_full_rate():
    guide = AutoIAF(local_model, create_plates=data_plate, **SMALL)
    optim = guide.recommended_optim(num_steps=20)
    svi = SVI(local_model, guide, optim, guide.recommended_elbo())
    for step in range(20):
        svi.step(LOCAL_DATA, torch.arange(12).roll(4 * step)[:4])
    store = pyro.get_param_store()
    rates = {store.param_name(p): o.param_groups[0]["lr"] for p, o in optim.optim_objs.items()}
    local = {name: rate for name, rate in rates.items() if ".local_guide." in name}
    assert len(local) == 4 and all(rate == 1e-2 for rate in local.values())
    assert all(rate == pytest.approx(1e-4) for name, rate in rates.items() if name not in local)


@pytest.mark.parametrize("name", GUIDES)
def test_sticking_the_landing_changes_gradients_not_losses(name):
    stl, plain = (GUIDES[name](rich_model, stl=flag).setup(DATA) for flag in (True, False))
    plain.load_state_dict(stl.state_dict())
    results = []
    for guide in (stl, plain):
        pyro.set_rng_seed(1)
        loss = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1).differentiable_loss(
            rich_model, guide, DATA
        )
        results.append((loss, torch.autograd.grad(loss, list(guide.parameters()))))
    (loss_stl, grad_stl), (loss_plain, grad_plain) = results
    assert torch.allclose(loss_stl, loss_plain, rtol=1e-5)
    assert any(not torch.allclose(a, b) for a, b in zip(grad_stl, grad_plain, strict=True))


@pytest.mark.parametrize(
    ("make", "dim", "expected"),
    [
        (lambda m: AutoIAF(m, **SMALL), AutoIAF.recipe.stl_max_dim, True),
        (lambda m: AutoIAF(m, **SMALL), AutoIAF.recipe.stl_max_dim + 1, False),
        (lambda m: AutoIAF(m, **SMALL, stl=True), 100, True),
        (lambda m: AutoAffineCoupling(m, **SMALL), 100, True),
        (lambda m: AutoPlanarFlow(m), 100, True),
        (lambda m: AutoNeuralSpline(m, **SMALL), 3, True),  # the "auto" warm start succeeds
        (lambda m: AutoNeuralSpline(m, **SMALL, warm_start=None), 3, False),
        (lambda m: AutoNeuralSpline(m, **SMALL, stl=True), 3, True),
        (lambda m: AutoFlow(m, flow=iaf), 3, False),
    ],
)
def test_default_sticking_the_landing_follows_class_and_dimension(make, dim, expected):
    def model():
        pyro.sample("z", dist.Normal(torch.zeros(dim), 1.0).to_event(1))

    guide = make(model)
    if guide.stl is None:
        assert not guide.uses_stl  # the dimension is unknown before set-up
    guide.setup()
    assert guide.uses_stl is expected
    assert (guide.get_posterior().path_log_prob is not None) is expected


@pytest.mark.parametrize("seed", [2, 4, 11])
def test_affine_coupling_defaults_survive_a_large_learning_rate(seed):
    """Pyro's own median test settings (lr 0.02, 500 particles): with a log-scale bound
    of 3 these seeds overflowed within five steps, the layers' scales compounding."""

    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.LogNormal(0.0, 1.0))
        pyro.sample("z", dist.Beta(2.0, 2.0))

    pyro.set_rng_seed(seed)
    guide = AutoAffineCoupling(model)
    elbo = Trace_ELBO(num_particles=500, vectorize_particles=True)
    svi = SVI(model, guide, Adam({"lr": 0.02, "betas": (0.8, 0.99)}), elbo)
    assert all(math.isfinite(svi.step()) for _ in range(10))


@pytest.mark.parametrize("guide_class", [AutoNeuralSpline, AutoAffineCoupling])
def _large_rate_errors(guide: AutoFlow, seed: int = 1, steps: int = 300) -> tuple[float, float]:
    """Pyro's ``test_predictive.py`` setting (``benchmarks/large_rate.py``): five independent
    logit-Binomial coordinates, exact posterior Beta(1 + k, 1 + n - k) about 0.0145 wide,
    Adam at 0.1 with one particle. The worst coordinate's mean error in posterior widths
    and ``|log|`` width ratio."""

    def model(num_trials):
        with pyro.plate("data", num_trials.size(0)):
            phi = pyro.sample("phi", dist.Uniform(0.0, 1.0))
            return pyro.sample("obs", dist.Binomial(num_trials, phi))

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    trials = torch.full((5,), 1000.0)
    successes = dist.Binomial(trials, 0.7).sample()
    conditioned = poutine.condition(model, data={"obs": successes})
    guide = guide(conditioned)
    svi = SVI(conditioned, guide, Adam({"lr": 0.1}), Trace_ELBO())
    for _ in range(steps):
        svi.step(trials)
    draws = guide.sample_posterior(20_000, trials)["phi"]
    exact = dist.Beta(1 + successes, 1 + trials - successes)
    mean_error = ((draws.mean(0) - exact.mean) / exact.stddev).abs().max()
    return float(mean_error), float((draws.std(0) / exact.stddev).log().abs().max())


@pytest.mark.parametrize("guide_class", [AutoNeuralSpline, AutoAffineCoupling])
def test_a_large_constant_rate_does_not_throw_the_guide_off_its_start(guide_class):
    """Started close (the Laplace fit) and sticking the landing, the gradient is nearly
    noise-free, so Adam steps every parameter by the full rate. With its layers in unit 0.1
    the spline guide stays within a width of the posterior; in unit 1 the same run lands
    several widths off. ``benchmarks/large_rate.py`` measures both over six seeds: the
    thresholds here sit between the worst run in unit 0.1 and the best in unit 1."""
    mean_error, width_error = _large_rate_errors(guide_class)
    assert mean_error < 1.0 and width_error < 1.0
    if guide_class is AutoNeuralSpline:
        fast = functools.partial(guide_class, recipe=dataclasses.replace(guide_class.recipe, core_unit=1.0))
        mean_error, width_error = _large_rate_errors(fast)
        assert mean_error > 1.0 and width_error > 1.0


def test_spline_guide_sticks_the_landing_only_after_a_successful_warm_start():
    def model():
        pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    def flat_model():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(0.0, 1.0).mask(False))  # no density: the warm start falls back

    warm = AutoNeuralSpline(model, **SMALL, warm_start="laplace").setup()
    assert warm.warm_started and warm.uses_stl
    with pytest.warns(UserWarning, match="not positive definite"):
        fallback = AutoNeuralSpline(flat_model, **SMALL, warm_start="laplace", init_loc_fn=init_to_feasible)
        fallback.setup()
    assert not fallback.warm_started and not fallback.uses_stl
    cold = AutoNeuralSpline(model, **SMALL, warm_start=None).setup()
    assert not cold.warm_started and not cold.uses_stl
    specs = {layer.spec for layer in cold.flow.layers if hasattr(layer, "spec")}
    assert {(s.min_bin, s.min_derivative) for s in specs} == {(0.01, 0.1)}  # the guide's floors


@pytest.mark.parametrize(("num_flows", "bound"), [(2, 3.0), (4, 3.0), (8, 1.5), (16, 0.75)])
def test_iaf_scale_bounds_shrink_with_depth_so_deep_stacks_stay_finite(num_flows, bound):
    guide = AutoIAF(
        lambda: pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1)), num_flows=num_flows
    )
    guide.setup()
    specs = {layer.spec.log_scale_bound for layer in guide.flow.layers if hasattr(layer, "spec")}
    assert specs == {bound}


def test_eight_iaf_layers_train_on_the_funnel():
    """At a per-layer bound of 3, eight layers overflowed here within 13 steps (3 of 3 seeds)."""
    case = Funnel(dim=10)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoIAF(case.model, num_flows=8, stl=False)
    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(case.model, guide, Adam({"lr": 1e-2}), elbo)
    assert all(math.isfinite(svi.step()) for _ in range(60))


@pytest.mark.parametrize("name", list(GUIDES))
def test_recommended_optim_decays_the_rate_to_lr_decay_over_the_run(name):
    """``recommended_optim(n)`` is the measured recipe for SVI: after n steps the rate is
    ``lr * lr_decay`` (ClippedAdam's ``lrd``), or still ``lr`` where the class keeps it."""

    def model():
        pyro.sample("z", dist.Normal(torch.tensor([1.0, -1.0]), 0.5).to_event(1))

    guide = GUIDES[name](model)
    optim = guide.recommended_optim(40, lr=0.02)
    expected = "RecipeAdam" if guide.recipe.lr_decay is not None else "Adam"
    assert optim.pt_optim_constructor.__name__ == expected
    elbo = guide.recommended_elbo()
    assert (elbo.num_particles, elbo.vectorize_particles) == (8, True)
    svi = SVI(model, guide, optim, elbo)
    for _ in range(40):
        svi.step()
    rates = [group["lr"] for opt in optim.optim_objs.values() for group in opt.param_groups]
    final = 0.02 * (guide.recipe.lr_decay if guide.recipe.lr_decay is not None else 1.0)
    assert rates and rates == pytest.approx([final] * len(rates), rel=1e-9)
    assert (AutoPlanarFlow.recipe.lr_decay, AutoIAF.recipe.lr_decay) == (None, 0.01)
    with pytest.raises(ValueError, match="num_steps"):
        guide.recommended_optim(0)
    with pytest.raises(ValueError, match="lr"):
        guide.recommended_optim(10, lr=-1.0)


def test_a_recipe_refuses_bad_values_naming_them():
    from flowguide import Recipe

    for field, value in [
        ("particles", 0),
        ("lr_decay", 0.0),
        ("lr_decay", 1.5),
        ("grad_clamp", -1.0),
        ("core_unit", 0.0),
        ("stl_max_dim", -1),
        ("laplace_max_dim", 2.5),
    ]:
        with pytest.raises(ValueError, match=f"Recipe.{field}"):
            Recipe(**{field: value})
    with pytest.raises(TypeError, match="recipe must be a flowguide Recipe"):
        AutoIAF(lambda: None, recipe={"particles": 4})


def test_the_recipe_schedule_clamps_decays_and_resumes_exactly():
    """The rate after t of T updates is lr * decay^(t/T), floored at decay; gradient entries
    are clamped before each update; a state_dict carries the schedule to a new optimizer."""
    from flowguide import Recipe
    from flowguide.autoguide.recipe import RecipeSchedule

    recipe = Recipe(lr_decay=0.25, grad_clamp=0.5)
    p = torch.nn.Parameter(torch.zeros(3))
    sgd = torch.optim.SGD([p], lr=1.0)
    schedule = RecipeSchedule(sgd, recipe, horizon=4)
    rates = []
    for _ in range(6):
        p.grad = torch.tensor([2.0, -0.1, -3.0])
        schedule.clamp()
        torch.testing.assert_close(p.grad, torch.tensor([0.5, -0.1, -0.5]))
        sgd.step()
        schedule.advance()
        rates.append(sgd.param_groups[0]["lr"])
    assert rates == pytest.approx([0.25 ** (t / 4) for t in (1, 2, 3, 4)] + [0.25, 0.25])
    resumed = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=1.0)
    RecipeSchedule(resumed, recipe, horizon=4)
    resumed.load_state_dict(sgd.state_dict())
    assert resumed.param_groups[0]["recipe_updates"] == 6 and resumed.param_groups[0]["lr"] == 0.25


def test_a_guide_takes_a_recipe_of_its_own():
    """``recipe=`` replaces the class's recipe for one guide: here its particles and unit."""
    from flowguide import Recipe

    def model():
        pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    guide = AutoIAF(model, **SMALL, recipe=Recipe(particles=3, core_unit=0.5)).setup()
    assert guide.recommended_elbo().num_particles == 3 and AutoIAF.recipe.particles == 8
    units = {float(m.unit) for m in guide.flow.modules() if isinstance(m, UnitScaled)}
    assert units == {0.5}
