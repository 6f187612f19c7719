"""The Laplace start: exact on a conjugate model, its units, its fallbacks and the "auto" choice."""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from autoguide_cases import SMALL
from pyro.infer import (
    SVI,
    Trace_ELBO,
    config_enumerate,
)
from pyro.infer.autoguide import (
    init_to_feasible,
    init_to_median,
    init_to_value,
)
from pyro.infer.importance import vectorized_importance_weights
from pyro.optim import Adam

from flowguide import AutoIAF
from flowguide.apps.exact import ConjugateRegression, Funnel
from flowguide.flows import TriangularLinear


def test_laplace_warm_start_is_the_exact_posterior_of_a_conjugate_model():
    """Before any step, the guide is the exact Gaussian posterior: its log-density agrees
    with the closed form at its own draws and the importance-weighted KL is ~0."""
    case = ConjugateRegression(dim=4, num_data=12)
    guide = AutoIAF(case.model, **SMALL, warm_start="laplace").setup(*case.args)
    draws = guide.sample_posterior(500, *case.args)
    mean, cov = case._posterior()
    exact = dist.MultivariateNormal(mean, cov).log_prob(draws["w"].double())
    # g is near (not exactly) the identity at initialization: a few hundredths of a nat
    assert (guide.log_density(draws, *case.args).double() - exact).abs().max() < 0.05
    with torch.no_grad():
        log_w = vectorized_importance_weights(
            case.model, guide, *case.args, num_samples=4000, max_plate_nesting=1
        )[0]
    assert abs(case.log_z - float(log_w.double().mean())) < 1e-3


def test_laplace_warm_start_with_a_diagonal_head_uses_the_diagonal_of_the_hessian():
    case = ConjugateRegression(dim=3, num_data=10)
    guide = AutoIAF(case.model, **SMALL, affine="diagonal", warm_start="laplace").setup(*case.args)
    head = guide.flow.head.elementwise
    mean, cov = case._posterior()
    precision = torch.linalg.inv(cov)
    assert torch.allclose(head.location.double(), mean, atol=1e-3)  # float32 L-BFGS
    assert torch.allclose(head.log_scale.exp().double(), precision.diagonal().rsqrt(), rtol=1e-3)
    assert not any(isinstance(module, TriangularLinear) for module in guide.flow.modules())


@pytest.mark.parametrize("affine", ["full", "diagonal"])
def test_after_a_laplace_start_adam_steps_the_location_in_units_of_its_conditional_scale(affine):
    """Adam's first step moves each parameter by its learning rate (m/sqrt(v) = sign g):
    after a Laplace start the location moves by lr / sqrt(H_ii), a fixed fraction of the
    posterior's width given the other coordinates, not by lr in absolute units."""
    scale_tril = torch.tensor([[0.05, 0.0, 0.0], [0.5, 2.0, 0.0], [-0.02, 0.3, 0.2]])
    cov = scale_tril @ scale_tril.T

    def model():
        pyro.sample("z", dist.MultivariateNormal(torch.tensor([1.0, -2.0, 0.5]), scale_tril=scale_tril))

    guide = AutoIAF(model, **SMALL, affine=affine, warm_start="laplace", stl=False).setup()
    head = guide.flow.head.elementwise
    unit = torch.linalg.inv(cov).diagonal().rsqrt()
    assert unit.max() / unit.min() > 10  # coordinates of different widths: the check can tell
    torch.testing.assert_close(head.loc_unit, unit, rtol=1e-3, atol=0)  # float32 L-BFGS
    before = head.location.detach().clone()
    svi = SVI(model, guide, Adam({"lr": 0.1}), Trace_ELBO())
    svi.step()
    moved = (head.location.detach() - before).abs()
    torch.testing.assert_close(moved, 0.1 * unit, rtol=1e-4, atol=0)
    cold = AutoIAF(model, **SMALL, warm_start=None).setup().flow.head.elementwise
    assert (cold.loc_unit == 1).all() and torch.equal(cold.loc, cold.location)


def test_laplace_warm_start_falls_back_with_a_warning_on_a_flat_direction():
    def model():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(0.0, 1.0).mask(False))  # no density: a flat direction

    with pytest.warns(UserWarning, match="not positive definite"):
        guide = AutoIAF(model, **SMALL, warm_start="laplace", init_loc_fn=init_to_feasible).setup()
    assert torch.allclose(guide.flow.head.elementwise.log_scale.exp(), torch.tensor(0.1))
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    assert math.isfinite(svi.step())


def test_laplace_warm_start_falls_back_with_a_warning_without_a_finite_map():
    """Neal's funnel has no useful mode: L-BFGS runs the log-scale off to overflow."""
    case = Funnel(dim=5)
    with pytest.warns(UserWarning, match="no finite MAP"):
        guide = AutoIAF(case.model, **SMALL, warm_start="laplace").setup()
    assert torch.allclose(guide.flow.head.elementwise.log_scale.exp(), torch.tensor(0.1))


def test_laplace_warm_start_refuses_enumerated_sites():
    @config_enumerate
    def model():
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        which = pyro.sample("which", dist.Categorical(torch.ones(2) / 2))
        pyro.sample("x", dist.Normal(loc + which, 1.0), obs=torch.tensor(0.5))

    with pytest.raises(ValueError, match="site 'which' is not one of them"):
        AutoIAF(model, **SMALL, warm_start="laplace").setup()


def test_auto_warm_start_takes_the_laplace_fit_where_it_has_the_higher_elbo():
    case = ConjugateRegression(dim=3, num_data=10)
    pyro.set_rng_seed(0)
    auto = AutoIAF(case.model, **SMALL, warm_start="auto").setup(*case.args)
    pyro.set_rng_seed(0)
    laplace = AutoIAF(case.model, **SMALL, warm_start="laplace").setup(*case.args)
    assert auto.warm_started and auto.warm_start_fallback is None
    for mine, theirs in zip([auto.flow.head], [laplace.flow.head], strict=True):
        for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
            assert torch.allclose(a, b)


def test_auto_warm_start_keeps_the_cold_start_where_it_has_the_higher_elbo():
    """A narrow spike on a standard normal: the MAP sits on the spike, whose Laplace fit
    (scale ~0.01) has ELBO about -2.1 against about -1.6 for N(median, 0.1)."""

    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.factor("spike", torch.log1p(10 * torch.exp(-(z**2) / 2e-4)))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "auto" falls back silently
        guide = AutoIAF(model, **SMALL, warm_start="auto").setup()
    assert not guide.warm_started and "below the cold start's" in guide.warm_start_fallback
    assert torch.allclose(guide.flow.head.elementwise.log_scale.exp(), torch.tensor(0.1))
    laplace = AutoIAF(model, **SMALL, warm_start="laplace").setup()
    assert laplace.warm_started and float(laplace.flow.head.elementwise.log_scale.detach().exp()) < 0.02


def test_auto_warm_start_falls_back_silently_and_leaves_chosen_starts_alone():
    case = Funnel(dim=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        funnel = AutoIAF(case.model, **SMALL, warm_start="auto").setup()
    assert not funnel.warm_started and "no finite MAP" in funnel.warm_start_fallback
    regression = ConjugateRegression(dim=3, num_data=10)
    values = {"w": torch.tensor([0.5, -1.0, 2.0])}
    chosen = AutoIAF(regression.model, **SMALL, warm_start="auto", init_loc_fn=init_to_value(values=values))
    chosen.setup(*regression.args)
    assert not chosen.warm_started and chosen.warm_start_fallback is None  # never tried
    assert torch.allclose(chosen.flow.head.location, values["w"])
    scaled = AutoIAF(regression.model, **SMALL, warm_start="auto", init_scale=0.3).setup(*regression.args)
    assert not scaled.warm_started
    assert torch.allclose(scaled.flow.head.elementwise.log_scale.exp(), torch.tensor(0.3))


def test_auto_warm_start_skips_models_that_subsample_their_data():
    """A minibatch's Laplace fit is noisy and differs between data-parallel processes."""

    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("data", 100, subsample_size=10) as index:
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x[index])

    guide = AutoIAF(model, **SMALL).setup(torch.randn(100))
    assert not guide.warm_started and "subsamples a plate" in guide.warm_start_fallback


def test_the_log_joint_of_the_warm_start_does_not_run_init_loc_fn():
    """The MAP search conditions every latent: Pyro's InitMessenger must not draw (it
    once crashed on the NaN points of a diverging line search, and costs draws per call)."""
    calls = []

    def counting_init(site):
        calls.append(site["name"])
        return init_to_median(site)

    case = ConjugateRegression(dim=3, num_data=10)
    AutoIAF(case.model, **SMALL, warm_start="laplace", init_loc_fn=counting_init).setup(*case.args)
    assert calls == ["w"]  # once, for the prototype trace


def test_a_fallen_back_auto_warm_start_leaves_the_random_stream_as_a_cold_start_would():
    case = Funnel(dim=5)
    states = []
    for warm_start in (None, "auto"):
        pyro.set_rng_seed(0)
        guide = AutoIAF(case.model, **SMALL, warm_start=warm_start).setup()
        states.append((torch.cat([p.detach().reshape(-1) for p in guide.parameters()]), torch.randn(3)))
    assert torch.equal(states[0][0], states[1][0]) and torch.equal(states[0][1], states[1][1])


def test_auto_warm_start_on_eight_schools_falls_back_without_a_warning():
    """Its search visits NaN points; Pyro's "Encountered NaN" warnings are expected there."""
    from flowguide.apps.bundled import bundled_model

    case = bundled_model("eight_schools")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guide = AutoIAF(case.model, **SMALL).setup(*case.args)
    assert not guide.warm_started and guide.warm_start_fallback


def test_the_laplace_approximation_of_a_gaussian_is_the_gaussian(tol):
    """On log N(z; m, C) the MAP is m and the inverse Hessian's Cholesky factor is C's."""
    from flowguide.autoguide.laplace import Start, choose_start, laplace_approximation

    mean = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    scale_tril = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.3, 0.0], [-0.2, 0.1, 2.0]], dtype=torch.float64)
    target = dist.MultivariateNormal(mean, scale_tril=scale_tril)
    start = laplace_approximation(target.log_prob, torch.zeros(3, dtype=torch.float64))
    assert isinstance(start, Start) and start.laplace
    torch.testing.assert_close(start.loc, mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(start.scale_tril, scale_tril, atol=1e-6, rtol=0)
    cold = Start(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    chosen, reason = choose_start(target.log_prob, cold, "auto")
    assert reason is None and chosen.laplace
    flat = lambda z: -(z[:2] ** 2).sum()  # noqa: E731  (no curvature along the third coordinate)
    chosen, reason = choose_start(flat, cold, "laplace")
    assert chosen is cold and "not positive definite" in reason
