"""Guides, models and data shared by the autoguide tests."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import OrderedTransform
from pyro.infer import (
    JitTrace_ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)

from flowguide import AutoAffineCoupling, AutoIAF, AutoNeuralSpline, AutoPlanarFlow
from flowguide.apps.exact import BetaBinomial, ConjugateRegression, DirichletMultinomial

#: Small flows. The mode search is off: its cost at set-up (up to seconds) would multiply
#: across the suite, and these tests are about other things; ``test_modes.py`` tests the
#: search, and with it off a guide is set up exactly as before the search existed.
SMALL = {"num_flows": 2, "hidden_dims": (16,), "mode_search": None}
#: Small flows with the default mode search.
SEARCHING = {"num_flows": 2, "hidden_dims": (16,)}


GUIDES = {
    "planar": lambda model, **kw: AutoPlanarFlow(model, num_flows=3, **kw),
    "iaf": lambda model, **kw: AutoIAF(model, **SMALL, **kw),
    "spline_coupling": lambda model, **kw: AutoNeuralSpline(model, **SMALL, **kw),
    "spline_autoregressive": lambda model, **kw: AutoNeuralSpline(
        model, structure="autoregressive", **SMALL, **kw
    ),
    "affine_coupling": lambda model, **kw: AutoAffineCoupling(model, **SMALL, **kw),
}


def rich_model(data: torch.Tensor) -> None:
    """Every kind of site: scalar, vector, matrix, plates, and five constraints."""
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    vec = pyro.sample("vec", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    mat = pyro.sample("mat", dist.Normal(torch.zeros(2, 2), 1.0).to_event(2))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 0.5))
    frac = pyro.sample("frac", dist.Uniform(-1.0, 3.0))
    probs = pyro.sample("probs", dist.Dirichlet(torch.ones(4)))
    chol = pyro.sample("chol", dist.LKJCholesky(3, 2.0))
    cuts = pyro.sample(
        "cuts",
        dist.TransformedDistribution(dist.Normal(torch.zeros(3), 1.0).to_event(1), [OrderedTransform()]),
    )
    with pyro.plate("groups", 5):
        group = pyro.sample("group", dist.Normal(mu, 1.0))
    loc = (
        group.sum(-1, keepdim=True)
        + vec.sum(-1, keepdim=True)
        + mat.sum((-1, -2)).unsqueeze(-1)
        + frac.unsqueeze(-1)
        + probs[..., :1]
        + chol[..., 1, :1]
        + cuts[..., :1]
    )
    with pyro.plate("data", data.shape[-1]):
        pyro.sample("obs", dist.Normal(loc, scale.unsqueeze(-1)), obs=data)


DATA = torch.randn(6)


SUPPORTS = {
    "scale": constraints.positive,
    "frac": constraints.interval(-1.0, 3.0),
    "probs": constraints.simplex,
    "chol": constraints.corr_cholesky,
    "cuts": constraints.ordered_vector,
}


SHAPES = {
    "mu": (),
    "vec": (3,),
    "mat": (2, 2),
    "scale": (),
    "frac": (),
    "probs": (4,),
    "chol": (3, 3),
    "cuts": (3,),
    "group": (5,),
}


def guide_log_q(guide, *args) -> tuple[dict, torch.Tensor]:
    """Sample the guide and return its values and the log q(z) the ELBO would see."""
    trace = poutine.trace(guide).get_trace(*args)
    trace.compute_log_prob()
    log_q = sum(site["log_prob_sum"] for site in trace.nodes.values() if site["type"] == "sample")
    values = {name: site["value"] for name, site in trace.nodes.items() if name in SHAPES}
    return values, log_q


ELBOS = {
    "trace": lambda **kw: Trace_ELBO(**kw),
    "tracegraph": lambda **kw: TraceGraph_ELBO(**kw),
    "meanfield": lambda **kw: TraceMeanField_ELBO(**kw),
    "renyi": lambda **kw: RenyiELBO(alpha=0.5, **kw),
    "jit": lambda **kw: JitTrace_ELBO(**kw),
}


def _three_site_model():
    pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.MultivariateNormal(torch.zeros(5), torch.eye(5)))
    pyro.sample("s", dist.LogNormal(0.0, 1.0))


THREE_SITE_INITS = {"x": torch.tensor(0.7), "y": torch.linspace(-2.0, 3.0, 5), "s": torch.tensor(2.5)}


EVIDENCE_CASES = {
    "regression": ConjugateRegression(dim=3, num_data=10),
    "beta_binomial": BetaBinomial(),
    "dirichlet": DirichletMultinomial(alpha=(2.0, 2.0, 2.0, 2.0), counts=(12, 5, 3, 7)),
}


def local_model(data: torch.Tensor, index: torch.Tensor) -> None:
    """A global site and two local ones (a simplex and a positive site) per row of ``data``."""
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    with pyro.plate("data", len(data), subsample=index):
        rows = pyro.subsample(data, event_dim=1)
        probs = pyro.sample("probs", dist.Dirichlet(torch.ones(3)))
        rate = pyro.sample("rate", dist.LogNormal(mu, 1.0))
        pyro.sample("obs", dist.Normal(probs * rate.unsqueeze(-1), 1.0).to_event(1), obs=rows)


def data_plate(data: torch.Tensor, index: torch.Tensor) -> pyro.plate:
    return pyro.plate("data", len(data), subsample=index)


LOCAL_DATA = torch.randn(12, 3)
