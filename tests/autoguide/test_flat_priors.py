"""Flat (improper) priors: the guides start and fit where ``init_to_median`` cannot draw."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from flowguide import AutoIAF
from flowguide.autoguide.sites import flat_start, init_to_median_or_flat, is_flat
from flowguide.training import Trainer

Y = torch.tensor([0.3, 1.2, -0.4, 2.0, 0.9, 1.1, 0.2, 1.6])


def flat_location(y):
    """Flat priors on a location and on a positive ``s`` (with one observation of its log,
    so that its posterior is proper): the location's posterior, the scale known to be 1,
    is Normal(mean y, 1 / sqrt(n))."""
    mu = pyro.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
    s = pyro.sample("s", dist.ImproperUniform(constraints.positive, (), ()))
    pyro.sample("log_s", dist.Normal(s.log(), 1.0), obs=torch.tensor(0.0))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_flat_sites_are_recognized_and_start_at_the_image_of_zero():
    flat = dist.ImproperUniform(constraints.positive, (3,), ())
    assert is_flat(flat) and is_flat(flat.to_event(1)) and not is_flat(dist.Normal(0.0, 1.0))
    assert torch.equal(flat_start(flat), torch.ones(3))
    site = {"fn": dist.ImproperUniform(constraints.real, (), (2,)), "name": "x"}
    assert torch.equal(init_to_median_or_flat(site), torch.zeros(2))


def test_a_flat_prior_model_fits_at_the_defaults():
    pyro.set_rng_seed(0)
    guide = AutoIAF(flat_location)
    Trainer(flat_location, guide, device="cpu", progress=False).fit(Y, steps=600)
    draws = guide.sample_posterior(4000, Y)["mu"]
    se = 1 / math.sqrt(len(Y))
    assert abs(float(draws.mean()) - float(Y.mean())) < 0.3 * se
    assert abs(float(draws.std()) / se - 1) < 0.1
