"""VmapParticlesELBO: the vectorized ELBO's estimator for models written for one draw."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from flowguide import AutoIAF
from flowguide.infer import VmapParticlesELBO

X = torch.randn(30, 3, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([1.0, -1.0, 0.5]) + 0.5 * torch.randn(30, generator=torch.Generator().manual_seed(1))


def broadcasting(x, y):
    """Broadcasts over particles: ``(x * w).sum(-1)``."""
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x * w).sum(-1), s), obs=y)


def one_draw(x, y):
    """The same model written for one draw: ``x @ w`` and a plain ``s``."""
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w, s), obs=y)


def _guide(model, dtype=torch.float64):
    pyro.set_rng_seed(3)
    guide = AutoIAF(model)
    guide(X.to(dtype), Y.to(dtype))
    guide.to(dtype)
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return guide


def _grad(loss, guide) -> torch.Tensor:
    grads = torch.autograd.grad(loss, list(guide.parameters()), allow_unused=True)
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).flatten()
            for g, p in zip(grads, guide.parameters(), strict=True)
        ]
    )


def test_same_loss_and_gradient_as_vectorized_particles_on_a_model_that_vectorizes():
    """Same seed, same guide draws: the loss and gradient equal Pyro's vectorized ELBO's."""
    torch.set_default_dtype(torch.float64)
    try:
        x, y = X.double(), Y.double()
        guide = _guide(broadcasting)
        pyro.set_rng_seed(7)
        reference = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
        expected = reference.differentiable_loss(broadcasting, guide, x, y)
        expected_grad = _grad(expected, guide)
        pyro.set_rng_seed(7)
        mapped = VmapParticlesELBO(num_particles=8, max_plate_nesting=1).differentiable_loss(
            broadcasting, guide, x, y
        )
        assert torch.allclose(mapped, expected, rtol=1e-12)
        assert torch.allclose(_grad(mapped, guide), expected_grad, rtol=1e-9, atol=1e-12)
        assert expected_grad.norm() > 1e-3
    finally:
        torch.set_default_dtype(torch.float32)


def test_same_expected_gradient_as_sequential_particles_on_a_model_that_does_not():
    """On a model written for one draw, the mapped and the sequential estimators' mean
    gradients agree within Monte Carlo error (a 5-sigma z-test per coordinate)."""
    torch.set_default_dtype(torch.float64)
    try:
        x, y = X.double(), Y.double()
        guide = _guide(one_draw)
        with pytest.raises(RuntimeError):  # the premise: Pyro's vectorized particles cannot run it
            Trace_ELBO(num_particles=8, vectorize_particles=True).differentiable_loss(one_draw, guide, x, y)
        mapped_elbo, sequential = VmapParticlesELBO(num_particles=8), Trace_ELBO(num_particles=8)
        repeats = 150
        mapped = torch.stack(
            [_grad(mapped_elbo.differentiable_loss(one_draw, guide, x, y), guide) for _ in range(repeats)]
        )
        plain = torch.stack(
            [_grad(sequential.differentiable_loss(one_draw, guide, x, y), guide) for _ in range(repeats)]
        )
        se = ((mapped.var(0) + plain.var(0)) / repeats).sqrt()
        informative = se > 1e-8
        assert informative.sum() > 10
        z = (mapped.mean(0) - plain.mean(0))[informative].abs() / se[informative]
        assert z.max() < 5.0, z.max()
        # and the particles differ from one another (not one draw repeated 8 times)
        assert mapped.var(0).sum() < plain.var(0).sum() * 1.5
        assert mapped.var(0).sum() > plain.var(0).sum() / 1.5
    finally:
        torch.set_default_dtype(torch.float32)


def test_a_non_reparameterized_guide_site_is_refused():
    def model():
        pyro.sample("k", dist.Bernoulli(0.3))

    def guide():
        pyro.sample("k", dist.Bernoulli(torch.tensor(0.4)))

    with pytest.raises(ValueError, match="'k' is not reparameterized"):
        VmapParticlesELBO(num_particles=4).differentiable_loss(model, guide)
