"""Sticking the landing under each objective: the mean gradient over many draws is the
exact gradient of what the objective estimates, for every ``stl`` setting it allows."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import init_to_value

from flowguide import AutoIAF
from flowguide.infer import DReG_ELBO, TraceSTL_ELBO

X, NOISE, LOC, SCALE = 1.2, 0.5, 0.3, 0.8  # data, its noise, and a guide N(LOC, SCALE^2) off the posterior


def model():
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    pyro.sample("x", dist.Normal(z, NOISE), obs=torch.tensor(X))


def log_weight(z: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    log_p = dist.Normal(0.0, 1.0).log_prob(z) + dist.Normal(z, NOISE).log_prob(torch.tensor(X))
    return log_p - dist.Normal(loc, log_scale.exp()).log_prob(z)


def exact_gradient(alpha: float | None, particles: int) -> torch.Tensor:
    """d/d(loc, log scale) of E_eps[bound], by Gauss-Hermite quadrature over the particles'
    noise (float64): the ELBO (``alpha=None``) or the K-sample Renyi bound
    ``1/(1-alpha) log mean_k w_k^(1-alpha)`` (``alpha=0``: the IWAE bound)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    nodes, weights = torch.tensor(nodes), torch.tensor(weights / math.sqrt(2 * math.pi))
    loc = torch.tensor(LOC, dtype=torch.float64, requires_grad=True)
    log_scale = torch.tensor(math.log(SCALE), dtype=torch.float64, requires_grad=True)
    grids = torch.meshgrid(*[nodes] * particles, indexing="ij")
    mass = torch.ones(()).double()
    for w in torch.meshgrid(*[weights] * particles, indexing="ij"):
        mass = mass * w
    log_w = torch.stack([log_weight(loc + log_scale.exp() * eps, loc, log_scale) for eps in grids])
    if alpha is None:
        bound = log_w.mean(0)
    else:
        bound = ((1 - alpha) * log_w).logsumexp(0) - math.log(particles)
        bound = bound / (1 - alpha)
    return torch.stack(torch.autograd.grad((mass * bound).sum(), [loc, log_scale]))


def guide_gradients(objective, stl, calls: int) -> torch.Tensor:
    """The head's gradient of ``-loss`` from ``calls`` evaluations, as rows."""
    pyro.clear_param_store()
    guide = AutoIAF(
        model,
        num_flows=1,
        hidden_dims=(4,),
        init_loc_fn=init_to_value(values={"z": torch.tensor(LOC)}),
        init_scale=SCALE,
        warm_start=None,
        stl=stl,
    ).setup()
    head = guide.flow.head.elementwise
    rows = []
    for _ in range(calls):
        for p in guide.parameters():
            p.grad = None
        objective.loss_and_grads(model, guide)
        rows.append(-torch.cat([head.loc.grad, head.log_scale.grad]))
    return torch.stack(rows).double()


ELBO_LIKE = {
    "Trace_ELBO": lambda: Trace_ELBO(num_particles=200, vectorize_particles=True),
    "TraceMeanField_ELBO": lambda: TraceMeanField_ELBO(num_particles=200, vectorize_particles=True),
    "TraceGraph_ELBO": lambda: TraceGraph_ELBO(num_particles=200, vectorize_particles=True),
    "TraceSTL_ELBO": lambda: TraceSTL_ELBO(num_particles=200, vectorize_particles=True),
}
BOUNDS = {  # (objective, alpha of the bound it estimates), two particles a bound
    "RenyiELBO(0.5)": (lambda: RenyiELBO(alpha=0.5, num_particles=2, vectorize_particles=True), 0.5),
    "DReG_ELBO": (lambda: DReG_ELBO(num_particles=2, max_plate_nesting=0), 0.0),
}


def assert_mean_matches(rows: torch.Tensor, exact: torch.Tensor) -> None:
    mean, error = rows.mean(0), rows.std(0) / math.sqrt(rows.shape[0])
    assert ((mean - exact).abs() < 4 * error + 1e-3).all(), (mean, exact, error)


@pytest.mark.parametrize("stl", [None, True, False], ids=["default", "stl", "plain"])
@pytest.mark.parametrize("name", ELBO_LIKE)
def test_elbo_gradients_are_unbiased_with_and_without_sticking_the_landing(name, stl):
    torch.manual_seed(0)
    assert_mean_matches(guide_gradients(ELBO_LIKE[name](), stl, calls=40), exact_gradient(None, 1))


@pytest.mark.parametrize("stl", [None, False], ids=["default", "plain"])
@pytest.mark.parametrize("name", BOUNDS)
def test_importance_weighted_gradients_are_unbiased_at_the_defaults(name, stl):
    make, alpha = BOUNDS[name]
    torch.manual_seed(0)
    assert_mean_matches(guide_gradients(make(), stl, calls=800), exact_gradient(alpha, 2))


def test_sticking_the_landing_is_refused_where_it_biases_the_gradient():
    with pytest.raises(ValueError, match=r"stl=True under RenyiELBO\(alpha=0\.5\) gives biased gradients"):
        guide_gradients(RenyiELBO(alpha=0.5, num_particles=2, vectorize_particles=True), True, calls=1)


def test_forcing_it_under_a_renyi_bound_would_be_biased(monkeypatch):
    """Why it is refused: the path-only estimator of the Renyi bound (what ``stl=True`` would
    compute) misses its exact gradient by far more than its Monte Carlo error."""
    import flowguide.autoguide.guides

    torch.manual_seed(0)
    objective = RenyiELBO(alpha=0.5, num_particles=2, vectorize_particles=True)
    monkeypatch.setattr(flowguide.autoguide.guides, "current_objective", lambda: None)  # no refusal
    rows = guide_gradients(objective, True, calls=1000)
    mean, error = rows.mean(0), rows.std(0) / math.sqrt(rows.shape[0])
    assert ((mean - exact_gradient(0.5, 2)).abs() > 5 * error).any()  # about 7 SE off
