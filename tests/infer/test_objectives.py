"""Sticking-the-landing and DReG objectives: unbiased, and quiet at the optimum."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, RenyiELBO, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import Adam

from flowguide import AutoIAF
from flowguide.infer import DReG_ELBO, TraceSTL_ELBO

DATA = torch.tensor([0.3, 1.4, -0.2, 2.1])
PRIOR_SD, NOISE_SD = 2.0, 1.0


def model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, NOISE_SD), obs=data)


def exact_posterior(data) -> tuple[float, float]:
    precision = 1 / PRIOR_SD**2 + len(data) / NOISE_SD**2
    return float(data.sum()) / NOISE_SD**2 / precision, precision**-0.5


def gradient_draws(elbo, guide, num: int) -> torch.Tensor:
    """``num`` independent gradient estimates of the loss, one row each."""
    params = [p for p in guide.parameters() if p.requires_grad]
    rows = []
    for _ in range(num):
        for p in params:
            p.grad = None
        elbo.loss_and_grads(model, guide, DATA)
        rows.append(torch.cat([p.grad.reshape(-1) for p in params]))
    return torch.stack(rows)


def normal_guide(loc: float, scale: float) -> AutoNormal:
    guide = AutoNormal(model)
    guide(DATA)
    with torch.no_grad():
        guide.locs.loc.copy_(torch.tensor(loc))
        guide.scales.loc_unconstrained.copy_(torch.tensor(scale).expm1().log())  # a softplus constraint
    assert float(guide.scales.loc.detach()) == pytest.approx(scale)
    return guide


def assert_same_mean(a: torch.Tensor, b: torch.Tensor, z: float = 4.5):
    se = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    assert ((a.mean(0) - b.mean(0)).abs() / se.clamp_min(1e-12)).max() < z, (a.mean(0), b.mean(0), se)


@pytest.fixture(autouse=True)
def _seed():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)


def test_stl_gradient_is_unbiased_for_a_normal_guide():
    guide = normal_guide(0.2, 0.8)  # posterior: mean 0.85, sd 0.49
    plain = gradient_draws(Trace_ELBO(), guide, 1000)
    stl = gradient_draws(TraceSTL_ELBO(), guide, 1000)
    assert_same_mean(stl, plain)
    assert plain.mean(0).abs().min() > 0.1  # not at the optimum: the means are informative


def test_stl_gradient_is_unbiased_for_a_flow_guide():
    """A guide whose parameters are a plain nn.Module's (not pyro.param statements)."""
    guide = AutoIAF(model, num_flows=2, hidden_dims=(8,), stl=False, init_scale=0.7)
    guide(DATA)
    plain = gradient_draws(Trace_ELBO(num_particles=4, vectorize_particles=True), guide, 600)
    stl = gradient_draws(TraceSTL_ELBO(num_particles=4, vectorize_particles=True), guide, 600)
    assert_same_mean(stl, plain)
    assert not torch.equal(stl[0], plain[0])  # a different estimator, not the same one twice


def test_stl_gradient_vanishes_at_the_exact_posterior():
    loc, scale = exact_posterior(DATA)
    guide = normal_guide(loc, scale)
    plain = gradient_draws(Trace_ELBO(), guide, 200)
    stl = gradient_draws(TraceSTL_ELBO(), guide, 200)
    assert plain.var(0).max() > 0.1
    assert stl.var(0).max() < 1e-8
    assert stl.abs().max() < 1e-3


def test_dreg_gradient_is_unbiased_for_the_iwae_bound():
    guide = normal_guide(0.2, 0.8)
    plain = gradient_draws(RenyiELBO(alpha=0, num_particles=8, vectorize_particles=True), guide, 1000)
    dreg = gradient_draws(DReG_ELBO(num_particles=8), guide, 1000)
    assert_same_mean(dreg, plain)
    assert plain.mean(0).abs().max() > 0.1  # not at the optimum


def test_dreg_gradient_vanishes_at_the_exact_posterior():
    loc, scale = exact_posterior(DATA)
    guide = normal_guide(loc, scale)
    plain = gradient_draws(RenyiELBO(alpha=0, num_particles=8, vectorize_particles=True), guide, 200)
    dreg = gradient_draws(DReG_ELBO(num_particles=8), guide, 200)
    assert plain.var(0).max() > 1e-3
    assert dreg.var(0).max() < 1e-8


def test_dreg_loss_is_the_iwae_bound_and_model_parameters_get_its_gradient():
    def scaled_model(data):
        weight = pyro.param("weight", torch.tensor(0.5))
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(weight * z, 1.0), obs=data)

    guide = AutoNormal(scaled_model, init_scale=0.5)
    guide(DATA)
    weight = pyro.param("weight")
    grads = {}
    for name, elbo in [
        ("renyi", RenyiELBO(alpha=0, num_particles=8, vectorize_particles=True)),
        ("dreg", DReG_ELBO(num_particles=8)),
    ]:
        pyro.set_rng_seed(5)
        weight.grad = None
        loss = elbo.loss_and_grads(scaled_model, guide, DATA)
        grads[name] = (loss, weight.grad.clone())
    # the same draws: the same bound, and the model's gradient sum_k w_k dlog p/dtheta is the same
    assert grads["dreg"][0] == pytest.approx(grads["renyi"][0], rel=1e-5)
    torch.testing.assert_close(grads["dreg"][1], grads["renyi"][1])


def test_objectives_train_flow_guides_with_svi():
    loc, scale = exact_posterior(DATA)
    for elbo in (TraceSTL_ELBO(num_particles=4, vectorize_particles=True), DReG_ELBO(num_particles=4)):
        pyro.clear_param_store()
        guide = AutoIAF(model, num_flows=2, hidden_dims=(8,), stl=False, init_scale=0.5)
        svi = SVI(model, guide, Adam({"lr": 0.02}), elbo)
        losses = [svi.step(DATA) for _ in range(400)]
        assert all(math.isfinite(x) for x in losses)
        draws = guide.sample_posterior(4000, DATA)["loc"]
        assert abs(float(draws.mean()) - loc) < 0.05 and abs(float(draws.std()) - scale) < 0.05


def test_dreg_refuses_guides_that_are_not_reparameterized():
    def discrete_model():
        pyro.sample("k", dist.Bernoulli(0.3))

    def guide():
        pyro.sample("k", dist.Bernoulli(pyro.param("p", torch.tensor(0.5))))

    with pytest.raises(ValueError, match="site 'k'"):
        DReG_ELBO(num_particles=2, max_plate_nesting=0).loss_and_grads(discrete_model, guide)


class MethodGuide(torch.nn.Module):
    """A guide that is a method of an nn.Module with plain parameters (as FlowVAE.guide is)."""

    def __init__(self, loc: float, scale: float):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.tensor(loc))
        self.log_scale = torch.nn.Parameter(torch.tensor(scale).log())

    def parameters_as_list(self):
        return [self.loc, self.log_scale]

    def guide(self, data):
        pyro.module("holder", self)  # as FlowVAE.guide does
        pyro.sample("loc", dist.Normal(self.loc, self.log_scale.exp()))


def test_a_method_of_a_module_is_held_fixed():
    loc, scale = exact_posterior(DATA)
    holder = MethodGuide(loc, scale)
    for elbo in (TraceSTL_ELBO(), DReG_ELBO(num_particles=4)):
        rows = []
        for _ in range(50):
            holder.zero_grad()
            elbo.loss_and_grads(model, holder.guide, DATA)
            rows.append(torch.stack([p.grad.clone() for p in holder.parameters_as_list()]))
        assert torch.stack(rows).abs().max() < 1e-3  # path-only: zero at the exact posterior


def test_guides_registering_modules_with_pyro_module_are_refused():
    net = torch.nn.Linear(1, 2)

    def guide(data):
        pyro.module("encoder", net)
        loc, log_scale = net(torch.ones(1))
        pyro.sample("loc", dist.Normal(loc, log_scale.exp()))

    before = [p.detach().clone() for p in net.parameters()]
    for elbo in (TraceSTL_ELBO(), DReG_ELBO(num_particles=2)):
        with pytest.raises(TypeError, match="'encoder'"):
            elbo.loss_and_grads(model, guide, DATA)
    assert all(isinstance(p, torch.nn.Parameter) for p in net.parameters())  # not overwritten
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
