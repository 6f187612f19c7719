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
