"""The planar map: invertibility constraint, numeric inverse and its gradients."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from flowguide.transforms import PlanarTransform


@pytest.mark.parametrize("scale", [0.01, 1.0, 50.0], ids=["small", "unit", "huge"])
@pytest.mark.parametrize("alignment", [-1.0, 1.0], ids=["against", "along"])
def test_inverse_converges_for_any_slope(scale, alignment, device, dtype, tol):
    """u along or against w gives slopes w.u_hat near -1 or large: both must invert."""
    w = torch.randn(5, device=device, dtype=dtype)
    u = alignment * scale * w + 0.1 * torch.randn(5, device=device, dtype=dtype)
    t = PlanarTransform(u, w, torch.tensor(0.3, device=device, dtype=dtype))
    assert bool(t.slope > -1)
    x = 3 * torch.randn(200, 5, device=device, dtype=dtype)
    y, ladj = t.call_and_ladj(x)
    x_back, ladj_inv = t.inv_and_ladj(y)
    torch.testing.assert_close(x_back, x, atol=tol * max(1.0, scale), rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=tol, rtol=0)


def test_inverse_gradient_is_the_implicit_function_gradient(device):
    """d x / d theta of the numeric inverse equals -J_x^{-1} d f / d theta (exact IFT)."""
    dtype = torch.float64
    u, w = torch.randn(3, device=device, dtype=dtype), torch.randn(3, device=device, dtype=dtype)
    b = torch.tensor(0.2, device=device, dtype=dtype)
    y = torch.randn(3, device=device, dtype=dtype)
    x = PlanarTransform(u, w, b).inv(y)

    def forward(x_, u_, w_):
        return PlanarTransform(u_, w_, b)(x_)

    j_x, j_u, j_w = jacobian(forward, (x, u, w))
    got_u, got_w = jacobian(lambda u_, w_: PlanarTransform(u_, w_, b).inv(y), (u, w))
    torch.testing.assert_close(got_u, -torch.linalg.solve(j_x, j_u), atol=1e-10, rtol=0)
    torch.testing.assert_close(got_w, -torch.linalg.solve(j_x, j_w), atol=1e-10, rtol=0)


def test_identity_u_makes_the_identity_map_that_still_learns(device, dtype):
    """The guides' start: u_hat = 0 exactly, so f(x) = x with log|det J| = 0, while the
    gradient of a loss still reaches u, w and b through u_hat."""
    w = torch.randn(4, 3, device=device, dtype=dtype).requires_grad_(True)
    u = PlanarTransform.identity_u(w.detach()).requires_grad_(True)
    b = torch.randn(4, device=device, dtype=dtype).requires_grad_(True)
    t = PlanarTransform(u, w, b)
    x = torch.randn(4, 3, device=device, dtype=dtype)
    y, ladj = t.call_and_ladj(x)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(y, x, atol=10 * eps, rtol=0)
    torch.testing.assert_close(ladj, torch.zeros_like(ladj), atol=10 * eps, rtol=0)
    (y.sum() ** 2 + ladj.sum()).backward()
    assert all(p.grad.abs().max() > 1e-3 for p in (u, w))
    zero = torch.zeros(3, device=device, dtype=dtype)  # w = 0: u = 0, still the identity
    assert torch.equal(PlanarTransform.identity_u(zero), zero)


def test_inverse_under_jit_trace_keeps_its_iterations():
    """JitTrace_ELBO traces the inverse (sticking the landing) on its first step, when the
    maps are the identity and the root needs no iteration; the traced graph must still
    solve later calls, whose maps bend."""
    w, b = torch.randn(3), torch.tensor(0.2)

    def inverse(u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return PlanarTransform(u, w, b).inv(y)

    traced = torch.jit.trace(inverse, (PlanarTransform.identity_u(w), torch.randn(50, 3)))
    u = 4.0 * w + torch.randn(3)
    x = torch.randn(50, 3)
    y = PlanarTransform(u, w, b)(x)
    torch.testing.assert_close(traced(u, y), x, atol=1e-4, rtol=0)
