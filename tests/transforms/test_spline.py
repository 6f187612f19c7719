"""The rational-quadratic spline kernel: identity start, tails, boundary, monotonicity."""

from __future__ import annotations

import pytest
import torch

from flowguide.transforms import SplineSpec


def test_raw_zeros_give_the_identity(device, dtype):
    spec = SplineSpec(bins=5, bound=2.0)
    g = spec(torch.zeros(spec.num_params, device=device, dtype=dtype))
    x = torch.linspace(-4, 4, 101, device=device, dtype=dtype)
    y, ladj = g.call_and_ladj(x)
    exact = 1e-12 if dtype == torch.float64 else 1e-6  # rounding of the knot arithmetic
    torch.testing.assert_close(y, x, atol=exact, rtol=0)
    torch.testing.assert_close(ladj, torch.zeros_like(x), atol=exact, rtol=0)


def test_map_is_continuous_monotone_with_unit_slope_at_the_boundary(device, dtype):
    spec = SplineSpec(bins=7, bound=3.0)
    g = spec(2 * torch.randn(spec.num_params, device=device, dtype=dtype))
    eps = 1e-7 if dtype == torch.float64 else 1e-4
    x = torch.tensor([-3 - eps, -3.0, -3 + eps, 3 - eps, 3.0, 3 + eps], device=device, dtype=dtype)
    y, ladj = g.call_and_ladj(x)
    torch.testing.assert_close(y, x, atol=10 * eps, rtol=0)  # knots at +-B are fixed points
    torch.testing.assert_close(ladj, torch.zeros_like(x), atol=1e3 * eps, rtol=0)  # slope 1 there
    grid = torch.linspace(-5, 5, 2001, device=device, dtype=dtype)
    assert (g(grid).diff() > 0).all()


def test_inverse_is_exact_at_knots_and_in_tails(device, dtype, tol):
    spec = SplineSpec(bins=4, bound=1.5)
    g = spec(torch.randn(3, spec.num_params, device=device, dtype=dtype))
    knots_x, knots_y = g.knots_x, g.knots_y
    torch.testing.assert_close(g(knots_x.mT).mT, knots_y, atol=tol, rtol=0)
    torch.testing.assert_close(g.inv(knots_y.mT).mT, knots_x, atol=tol, rtol=0)
    far = torch.tensor([[-1e4, 1e4, 7.0]], device=device, dtype=dtype).expand(3, 3).mT
    torch.testing.assert_close(g.inv(g(far)), far, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bins": 0}, "bins"),
        ({"bins": 2.5}, "bins"),
        ({"bound": -1.0}, "bound"),
        ({"bins": 10, "min_bin": 0.2}, "min_bin"),
        ({"min_derivative": 0.0}, "min_derivative"),
    ],
)
def test_bad_spline_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SplineSpec(**kwargs)


def test_inverse_gradient_is_the_implicit_one(device, dtype):
    """x(θ, y) = g_θ⁻¹(y) satisfies g_θ(x(θ, y)) = y, so that composition has gradient 0 in
    the spline's raw parameters and 1 in y; and dx/dy = 1 / g'(x)."""
    spec = SplineSpec(bins=6, bound=2.0)
    raw = (3 * torch.randn(4, spec.num_params, device=device, dtype=dtype)).requires_grad_(True)
    y = (4 * torch.rand(50, 4, device=device, dtype=dtype) - 2).requires_grad_(True)
    g = spec(raw)
    x, _ = g.inv_and_ladj(y)
    exact, loose = (1e-9, 1e-9) if dtype == torch.float64 else (1e-3, 1e-4)
    d_raw, d_y = torch.autograd.grad(g(x).sum(), (raw, y))
    torch.testing.assert_close(d_raw, torch.zeros_like(d_raw), atol=exact, rtol=0)
    torch.testing.assert_close(d_y, torch.ones_like(d_y), atol=loose, rtol=0)
    dx_dy = torch.autograd.grad(g.inv(y).sum(), y)[0]
    _, log_slope = g._forward(x.detach())
    torch.testing.assert_close(dx_dy, (-log_slope).exp(), rtol=loose, atol=0)


def test_inverse_gradient_is_finite_for_steep_float32_splines(device):
    """With steep bins the root formula's discriminant rounds to zero at the interval's
    ends and in the (clamped) tails in float32; differentiating that formula gave NaN
    there (found in training); the inverse's gradient must stay finite."""
    spec = SplineSpec(bins=8, bound=5.0)
    raw = (12 * torch.randn(20000, spec.num_params, device=device)).requires_grad_(True)
    g = spec(raw)
    edges = torch.tensor([-7.0, -5.0, -4.999, 0.0, 4.999, 5.0, 7.0], device=device)
    y = edges.unsqueeze(-1).expand(-1, 20000).clone().requires_grad_(True)
    x, ladj = g.inv_and_ladj(y)
    grads = torch.autograd.grad((x + ladj).sum(), (raw, y))
    assert all(torch.isfinite(d).all() for d in grads)
    assert torch.equal(x[[0, -1]], y[[0, -1]])  # identity tails
