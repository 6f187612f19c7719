"""Sticking-the-landing gradients: same values, unbiased, and zero noise at q = p."""

from __future__ import annotations

import copy

import pytest
import torch
from registry import REGISTRY

# Flows whose inverse is exact to rounding (every registry entry is), unconditional use;
# not the orthogonal maps, which leave a standard normal base unchanged (q does not depend
# on their parameters, so there is no gradient for sticking the landing to remove).
NAMES = [
    name for name in REGISTRY if name not in {"permutation_reverse", "permutation_random", "householder"}
]


def _perturbed(name: str, dim: int, dtype: torch.dtype, device: torch.device):
    flow = REGISTRY[name].build(dim, None).to(device=device, dtype=dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return flow


def _elbo_grad(flow, log_p, num_samples: int, stl: bool) -> torch.Tensor:
    """Gradient of the Monte Carlo ELBO ``mean(log p(z) - log q(z))`` as one flat vector."""
    q = flow(stl=stl)
    z = q.rsample((num_samples,))
    elbo = (log_p(z) - q.log_prob(z)).mean()
    grads = torch.autograd.grad(elbo, list(flow.parameters()), allow_unused=True)
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).flatten()
            for g, p in zip(grads, flow.parameters(), strict=True)
        ]
    )


@pytest.mark.parametrize("name", NAMES)
def test_stl_keeps_the_value_of_log_q(name, dtype, device, tol):
    flow = _perturbed(name, 3, dtype, device)
    q = flow(stl=True)
    z = q.rsample((7,))
    assert torch.allclose(q.log_prob(z), flow().log_prob(z), atol=tol)


@pytest.mark.parametrize("name", NAMES)
def test_stl_gradient_vanishes_when_q_equals_p(name, dtype, device):
    """With p = q (a frozen copy), the STL gradient is zero sample by sample; the plain one is not."""
    flow = _perturbed(name, 3, dtype, device)
    target = copy.deepcopy(flow).requires_grad_(False)

    def log_p(z):
        return target().log_prob(z)

    stl = _elbo_grad(flow, log_p, 16, stl=True)
    plain = _elbo_grad(flow, log_p, 16, stl=False)
    assert plain.norm() > 1e-3
    limit = 1e-9 if dtype == torch.float64 else 1e-3
    assert stl.norm() < limit * max(1.0, plain.norm()), (stl.norm(), plain.norm())


@pytest.mark.parametrize("name", ["iaf", "spline_coupling", "planar_flow", "affine_coupling_flow"])
def test_stl_gradient_is_unbiased(name, device):
    """Mean STL and plain gradients agree within Monte Carlo error (a 5-sigma z-test per coordinate)."""
    dtype = torch.float64
    flow = _perturbed(name, 2, dtype, device)
    scale_tril = torch.tensor([[1.0, 0.0], [0.8, 0.5]], dtype=dtype, device=device)

    def log_p(z):  # a correlated Gaussian target that q does not equal
        return torch.distributions.MultivariateNormal(
            torch.ones(2, dtype=dtype), scale_tril=scale_tril
        ).log_prob(z)

    repeats = 300
    stl = torch.stack([_elbo_grad(flow, log_p, 8, stl=True) for _ in range(repeats)])
    plain = torch.stack([_elbo_grad(flow, log_p, 8, stl=False) for _ in range(repeats)])
    diff = stl.mean(0) - plain.mean(0)
    se = ((stl.var(0) + plain.var(0)) / repeats).sqrt()
    informative = se > 1e-8
    assert informative.sum() > 3
    z = diff[informative].abs() / se[informative]
    assert z.max() < 5.0, z.max()
    # and sticking the landing is the lower-variance estimator here already
    assert stl.var(0).sum() < plain.var(0).sum()


def test_stl_holds_an_amortized_context_fixed(device):
    """In amortized inference the context (an encoder's output) parameterizes q: at q = p the
    STL gradient with respect to it vanishes too."""
    dtype = torch.float64
    flow = REGISTRY["iaf"].build(3, 4).to(device=device, dtype=dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    context = torch.randn(5, 4, dtype=dtype, device=device, requires_grad=True)
    target = copy.deepcopy(flow).requires_grad_(False)
    frozen = context.detach()

    def grad(stl: bool) -> torch.Tensor:
        q = flow(context, stl=stl)
        z = q.rsample((6,))
        elbo = (target(frozen).log_prob(z) - q.log_prob(z)).mean()
        return torch.autograd.grad(elbo, context)[0]

    assert grad(stl=False).norm() > 1e-3
    assert grad(stl=True).norm() < 1e-9


SEQUENTIAL = [name for name in REGISTRY if REGISTRY[name].build(2, None).sequential_inverse]


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("name", SEQUENTIAL)
def test_jacobian_path_equals_the_inverse_path(name, conditional, device):
    r"""Where the inverse is sequential, sticking the landing takes :math:`\nabla_z \log q` from
    the Jacobian of one batched forward pass: draw by draw it equals the gradient through
    the inverse, in float64, with and without a context."""
    dtype = torch.float64
    flow = REGISTRY[name].build(4, 3 if conditional else None).to(device=device, dtype=dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    context = torch.randn(5, 3, dtype=dtype, device=device) if conditional else None
    u = torch.randn(6, 5, 4, dtype=dtype, device=device)
    z = flow.transform(context)(u).detach().requires_grad_(True)
    (jacobian_path,) = torch.autograd.grad(flow.path_log_prob(context, z, u).sum(), z)
    (inverse_path,) = torch.autograd.grad(flow._detached_log_prob(context, z).sum(), z)
    assert torch.allclose(jacobian_path, inverse_path, rtol=1e-8, atol=1e-10)
    # the Jacobian path holds the parameters fixed as the inverse does
    grads = torch.autograd.grad(
        flow.path_log_prob(context, z, u).sum(), list(flow.parameters()), allow_unused=True
    )
    assert all(g is None for g in grads)


def test_jacobian_path_stops_at_its_largest_dimension(device):
    """Above ``JACOBIAN_PATH_MAX_DIM`` the path goes through the inverse (and agrees with it)."""
    from flowguide.flows.flow import JACOBIAN_PATH_MAX_DIM

    dim = JACOBIAN_PATH_MAX_DIM + 1
    flow = REGISTRY["iaf"].build(dim, None).to(device=device, dtype=torch.float64)
    u = torch.randn(2, dim, dtype=torch.float64, device=device)
    z = flow.transform(None)(u).detach().requires_grad_(True)
    path = flow.path_log_prob(None, z, u)
    assert torch.allclose(path, flow._detached_log_prob(None, z))  # the value itself: the inverse ran
