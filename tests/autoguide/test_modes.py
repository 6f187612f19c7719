"""The mode search, the mixture of flows, its stratified ELBO and the missing-mode diagnostic."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from autoguide_cases import DATA, SEARCHING, rich_model
from pyro.infer import Predictive, Trace_ELBO

from flowguide import AutoIAF, AutoNeuralSpline
from flowguide.autoguide.head import AffineHead, HeadedFlow
from flowguide.autoguide.laplace import Start
from flowguide.autoguide.mixture import FlowMixture
from flowguide.autoguide.modes import ModeSearch, same_mode
from flowguide.flows import iaf
from flowguide.infer import StratifiedELBO
from flowguide.training import fit


def two_modes(weights=(0.5, 0.5), locs=(-4.0, 4.0), scale=1.0):
    """A 1-D model whose posterior is the mixture sum_k w_k N(locs_k, scale^2) (log Z = 0)."""
    locs, log_w = torch.tensor(locs), torch.tensor(weights).log()
    wide = dist.Normal(0.0, 10.0)

    def model():
        z = pyro.sample("z", wide)
        log_p = (dist.Normal(locs, scale).log_prob(z.unsqueeze(-1)) + log_w).logsumexp(-1)
        pyro.factor("modes", log_p - wide.log_prob(z))

    return model


def gaussian(loc=1.0, scale=2.0, dim=3):
    def model():
        pyro.sample("z", dist.Normal(loc, scale).expand([dim]).to_event(1))

    return model


def test_two_modes_are_found_on_a_symmetric_bimodal_target():
    guide = AutoIAF(two_modes(), **SEARCHING).setup()
    assert len(guide.modes) == 2 and guide.num_components == 2
    found = sorted((float(m.loc), m.mass, float(m.start.scale_tril)) for m in guide.modes)
    for (loc, mass, scale), expected in zip(found, (-4.0, 4.0), strict=True):
        assert abs(loc - expected) < 1e-3 and abs(mass - 0.5) < 0.02 and abs(scale - 1.0) < 1e-2


def test_one_mode_is_found_on_a_gaussian_and_the_guide_stays_a_single_flow():
    guide = AutoIAF(gaussian(), **SEARCHING).setup()
    assert len(guide.modes) == 1 and guide.modes[0].mass == pytest.approx(1.0)
    assert guide.modes[0].loc.tolist() == pytest.approx([1.0] * 3, abs=1e-4)
    assert guide.num_components == 1 and isinstance(guide.flow, HeadedFlow)


def test_mode_masses_follow_unequal_weights():
    guide = AutoIAF(two_modes(weights=(0.25, 0.75)), **SEARCHING).setup()
    masses = {round(float(m.loc)): m.mass for m in guide.modes}
    assert masses[-4] == pytest.approx(0.25, abs=0.02) and masses[4] == pytest.approx(0.75, abs=0.02)
    assert sorted(guide.flow.weights.tolist()) == pytest.approx([0.25, 0.75], abs=0.02)


def test_a_spent_time_budget_stops_the_search_after_the_first_start():
    guide = AutoIAF(two_modes(), **SEARCHING, mode_search=ModeSearch(time_budget=0.0)).setup()
    assert len(guide.modes) == 1 and guide.modes[0].primary and guide.num_components == 1


def test_the_mode_search_leaves_the_global_random_state_as_it_was():
    draws = []
    for search in (None, ModeSearch()):
        pyro.set_rng_seed(3)
        AutoIAF(gaussian(), **SEARCHING, mode_search=search).setup()
        draws.append(torch.rand(4))
    assert torch.equal(*draws)


def test_the_search_serves_every_site_kind_and_finds_one_mode_there():
    guide = AutoIAF(rich_model, **SEARCHING).setup(DATA)
    assert len(guide.modes) >= 1 and guide.num_components == 1 and guide.warm_started
    assert guide.modes[0].loc.shape == (guide.latent_dim,) and guide.modes[0].mass > 0.5
    loss = StratifiedELBO(num_particles=4, vectorize_particles=True).loss(rich_model, guide, DATA)
    assert math.isfinite(loss)


def test_maxima_within_one_standard_deviation_are_one_mode():
    narrow, wide = torch.eye(2) * 0.1, torch.eye(2) * 2.0
    here = Start(torch.zeros(2), wide, True)
    assert same_mode(here, Start(torch.tensor([0.5, 0.0]), wide, True))
    assert not same_mode(here, Start(torch.tensor([3.0, 0.0]), wide, True))
    # within the wide mode's spread, but many of the narrow one's: two modes
    assert not same_mode(here, Start(torch.tensor([0.5, 0.0]), narrow, True))


def _random_mixture(dim: int, device, dtype) -> FlowMixture:
    torch.manual_seed(0)
    flows = []
    for k in range(3):
        flow = HeadedFlow(iaf(dim, num_flows=2, hidden_dims=[8]), AffineHead(dim)).to(device, dtype)
        tril = torch.eye(dim) + 0.3 * torch.randn(dim, dim).tril(-1)
        flow.head.set_start(
            torch.randn(dim).to(device, dtype) + 2 * k, (0.5 + 0.3 * k) * tril.to(device, dtype)
        )
        with torch.no_grad():
            for parameter in flow.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
        flows.append(flow)
    return FlowMixture(flows, torch.tensor([0.2, 0.5, 0.3], device=device, dtype=dtype))


def test_mixture_log_q_is_the_logsumexp_of_the_components_autograd_densities(device, dtype, tol):
    mixture = _random_mixture(2, device, dtype)
    z = mixture.draws(6, seed=1).detach()
    base = torch.distributions.Normal(torch.zeros(2, device=device, dtype=dtype), 1.0)
    per_component = []
    for flow in mixture.components:
        transform = flow.transform()
        rows = []
        for point in z:
            u = transform.inv(point).detach()
            jacobian = torch.autograd.functional.jacobian(transform, u)
            rows.append(base.log_prob(u).sum() - torch.linalg.slogdet(jacobian)[1])
        per_component.append(torch.stack(rows))
    expected = (torch.stack(per_component, -1) + mixture.weights.log()).logsumexp(-1)
    assert torch.allclose(mixture.log_prob(z), expected, atol=tol)


def test_a_mixture_density_integrates_to_one():
    mixture = _random_mixture(1, "cpu", torch.float64)
    grid = torch.linspace(-30, 40, 70_001, dtype=torch.float64).unsqueeze(-1)
    with torch.no_grad():
        mass = mixture.log_prob(grid).exp().sum() * (grid[1, 0] - grid[0, 0])
    assert float(mass) == pytest.approx(1.0, abs=1e-4)


def test_a_guide_trace_scores_the_exact_mixture_log_q():
    guide = AutoIAF(two_modes(), **SEARCHING).setup()
    with pyro.plate("particles", 16, dim=-1):
        trace = poutine.trace(guide).get_trace()
    trace.compute_log_prob()
    latent = trace.nodes[f"_{guide._pyro_name}_latent"]
    total = trace.nodes[guide.component_site]["log_prob"] + latent["log_prob"]
    assert torch.allclose(total, guide.flow.log_prob(latent["value"]), atol=1e-5)
    assert torch.allclose(total, guide.log_density({"z": trace.nodes["z"]["value"]}), atol=1e-5)


def _fixed_mixture_guide():
    """A two-component guide of a standard normal model, in float64, with set heads."""

    def model():
        pyro.sample("z", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))

    guide = AutoIAF(model, **SEARCHING, components=2, mode_search=None).double().setup()
    for flow, (loc, scale) in zip(guide.flow.components, ((-1.0, 0.8), (1.5, 1.2)), strict=True):
        flow.head.set_start(
            torch.tensor([loc], dtype=torch.float64), torch.tensor([[scale]], dtype=torch.float64)
        )
    with torch.no_grad():
        guide.flow.logits.copy_(torch.tensor([0.3, -0.2]))
    return model, guide


def _exact_elbo_gradient(guide) -> torch.Tensor:
    grid = torch.linspace(-20, 20, 40_001, dtype=torch.float64).unsqueeze(-1)
    log_q = guide.flow.log_prob(grid)
    log_p = dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0).log_prob(grid[:, 0])
    elbo = (log_q.exp() * (log_p - log_q)).sum() * (grid[1, 0] - grid[0, 0])
    return torch.autograd.grad(elbo, guide.flow.logits)[0]


def _logit_gradients(elbo, model, guide, count: int) -> torch.Tensor:
    """``count`` estimates of d(loss)/d(logits) from seed 0, stacked."""
    pyro.set_rng_seed(0)
    estimates = []
    for _ in range(count):
        guide.flow.logits.grad = None
        elbo.loss_and_grads(model, guide)
        estimates.append(guide.flow.logits.grad.clone())
    return torch.stack(estimates)


@pytest.mark.parametrize("objective", ["stratified", "trace_elbo"])
def test_the_mixture_weight_gradient_is_unbiased(objective):
    """Mean of many estimates of d(-ELBO)/d(logits) against quadrature of the exact ELBO."""
    model, guide = _fixed_mixture_guide()
    exact = -_exact_elbo_gradient(guide)
    loss = (
        StratifiedELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=0)
        if objective == "stratified"
        else Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=0)
    )
    estimates = _logit_gradients(loss, model, guide, 300)
    error = (estimates.mean(0) - exact).abs()
    standard_error = estimates.std(0) / math.sqrt(len(estimates))
    assert (error < 4 * standard_error + 1e-3).all(), (estimates.mean(0), exact, standard_error)


def test_the_stratified_gradient_has_less_variance_than_the_score_function():
    model, guide = _fixed_mixture_guide()
    spreads = []
    for loss in (StratifiedELBO, Trace_ELBO):
        elbo = loss(num_particles=8, vectorize_particles=True, max_plate_nesting=0)
        spreads.append(float(_logit_gradients(elbo, model, guide, 100).std(0).sum()))
    assert spreads[0] < 0.75 * spreads[1]


def test_the_stratified_elbo_is_trace_elbo_for_a_single_flow():
    model = gaussian()
    values = []
    for loss in (StratifiedELBO, Trace_ELBO):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        guide = AutoIAF(model, **SEARCHING).setup()
        pyro.set_rng_seed(1)
        value = loss(num_particles=4, vectorize_particles=True).differentiable_loss(model, guide)
        (grad,) = torch.autograd.grad(value, guide.flow.head.elementwise.log_scale)
        values.append((value.detach(), grad))
    assert torch.equal(values[0][0], values[1][0]) and torch.equal(values[0][1], values[1][1])


@pytest.mark.parametrize("vectorize", [True, False], ids=["vectorized", "sequential"])
def test_the_stratified_elbo_of_the_laplace_mixture_is_log_z(vectorize):
    guide = AutoIAF(two_modes(), **SEARCHING).setup()
    loss = StratifiedELBO(num_particles=32, vectorize_particles=vectorize, max_plate_nesting=0)
    assert loss.loss(two_modes(), guide) == pytest.approx(0.0, abs=0.02)


def test_the_missing_mode_diagnostic_fires_on_a_single_flow_and_not_on_the_mixture():
    single = AutoIAF(two_modes(), **SEARCHING, components=1).setup()
    assert [row.missing for row in single.mode_coverage()].count(True) == 1
    mixture = AutoIAF(two_modes(), **SEARCHING).setup()
    assert not any(row.missing for row in mixture.mode_coverage())
    assert AutoIAF(gaussian(), **SEARCHING, mode_search=None).setup().mode_coverage() == []


def test_components_beyond_the_modes_found_start_apart():
    guide = AutoIAF(gaussian(), **SEARCHING, components=3).setup()
    locs = torch.stack([flow.head.location for flow in guide.flow.components])
    assert guide.num_components == 3 and torch.cdist(locs, locs).triu(1).max() > 1.0


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"components": 0}, ValueError, "components must be 'auto' or a positive integer"),
        ({"components": "two"}, ValueError, "components must be"),
        ({"components": True}, ValueError, "components must be"),
        ({"mode_search": 8}, TypeError, "mode_search must be a flowguide ModeSearch"),
    ],
)
def test_bad_mixture_options_are_refused_by_name(options, error, match):
    with pytest.raises(error, match=match):
        AutoIAF(gaussian(), **options)


@pytest.mark.parametrize(
    ("field", "value"), [("starts", 0), ("min_mass", 1.0), ("time_budget", -1.0), ("max_components", 2.5)]
)
def test_bad_mode_search_settings_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=f"ModeSearch.{field}"):
        ModeSearch(**{field: value})


def test_a_mixture_refuses_what_needs_a_single_flow_and_bad_strata():
    guide = AutoIAF(two_modes(), **SEARCHING).setup()
    with pytest.raises(ValueError, match="mixture of 2 flows: it has no single transform"):
        guide.get_transform()
    with pytest.raises(ValueError, match=r"component must be integers in \[0, 2\)"), guide.stratum(2):
        pass


def test_a_mixture_guide_serves_predictive_summaries_and_its_state_dict():
    model = two_modes(weights=(0.3, 0.7))
    guide = AutoNeuralSpline(model, num_flows=1, hidden_dims=(8,)).setup()
    assert Predictive(model, guide=guide, num_samples=7)()["z"].shape == (7,)
    # the mixture's quantiles: 0.1 lies in the left mode (mass 0.3), 0.9 in the right
    exact = [
        -4.0 + dist.Normal(0.0, 1.0).icdf(torch.tensor(1 / 3)),
        4.0 + dist.Normal(0.0, 1.0).icdf(torch.tensor(6 / 7)),
    ]
    assert guide.quantiles([0.1, 0.9])["z"].tolist() == pytest.approx([float(x) for x in exact], abs=0.1)
    assert guide.sample_posterior(5)["z"].shape == (5,)
    points = {"z": torch.tensor([-4.0, 0.0, 4.0])}
    other = AutoNeuralSpline(model, num_flows=1, hidden_dims=(8,), mode_search=ModeSearch(seed=5)).setup()
    other.load_state_dict(guide.state_dict())
    assert torch.allclose(other.log_density(points), guide.log_density(points))


@pytest.mark.slow
def test_a_mixture_trained_from_equal_weights_recovers_the_true_ones():
    model = two_modes(weights=(0.3, 0.7))
    pyro.set_rng_seed(0)
    guide = AutoIAF(model).setup()
    with torch.no_grad():
        guide.flow.logits.zero_()
    fit(model, guide, steps=1500, progress=False)
    weights = {
        round(float(flow.head.location)): float(w)
        for flow, w in zip(guide.flow.components, guide.flow.weights, strict=True)
    }
    assert weights[-4] == pytest.approx(0.3, abs=0.05) and weights[4] == pytest.approx(0.7, abs=0.05)
