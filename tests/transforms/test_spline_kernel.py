"""The one-node spline kernel against the graph-recording formula it replaces.

Both compute the same values from the same raw parameters; the kernel's hand-written
backward must give autograd's gradients of the graph-recording formula, for every
input, in both outputs, in the tails, at the knots and under broadcasting.
"""

from __future__ import annotations

import io

import pytest
import torch

from flowguide.transforms import RQSplineTransform, SplineSpec

SHAPES = {  # raw batch, x shape
    "same-batch": ((40, 3), (40, 3)),
    "raw-broadcast": ((3,), (40, 3)),
    "x-broadcast": ((40, 3), (3,)),
    "scalar": ((), ()),
}


def _reference(spec: SplineSpec, raw: torch.Tensor) -> RQSplineTransform:
    """The spline built from explicit knot tables: the graph-recording path throughout."""
    _, _, knots, derivatives = spec.parts(raw)
    return RQSplineTransform(knots[..., 0, :], knots[..., 1, :], derivatives)


def _inputs(spec, raw_batch, x_shape, device, dtype):
    raw = 1.5 * torch.randn(*raw_batch, spec.num_params, device=device, dtype=dtype)
    x = 1.4 * spec.bound * (2 * torch.rand(x_shape, device=device, dtype=dtype) - 1)  # some in the tails
    return raw.requires_grad_(True), x.requires_grad_(True)


@pytest.mark.parametrize("bins", [1, 2, 8])
@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_kernel_equals_the_graph_recording_spline_with_its_gradients(bins, shape, device, dtype):
    spec = SplineSpec(bins=bins, bound=2.0, min_bin=0.01, min_derivative=0.1)
    raw, x = _inputs(spec, *SHAPES[shape], device, dtype)
    y, log_slope = spec(raw)._forward(x)
    y_ref, log_slope_ref = _reference(spec, raw)._forward(x)
    torch.testing.assert_close(y, y_ref, atol=0, rtol=0)  # same formula, same order
    torch.testing.assert_close(log_slope, log_slope_ref, atol=0, rtol=0)
    # independent upstream gradients for the two outputs, so each backward path is seen
    g_y, g_l = torch.randn_like(y), torch.randn_like(y)
    got = torch.autograd.grad((g_y * y + g_l * log_slope).sum(), (raw, x))
    want = torch.autograd.grad((g_y * y_ref + g_l * log_slope_ref).sum(), (raw, x))
    exact = 1e-10 if dtype == torch.float64 else 1e-4
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=exact, rtol=exact)


@pytest.mark.parametrize("bins", [1, 2, 8])
@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_inverse_kernel_equals_the_recorded_inverse_with_its_gradients(bins, shape, device, dtype):
    """The one-node inverse: same root and log-slope as the recorded inverse, and its
    implicit-function gradients equal those of the recorded Newton correction."""
    spec = SplineSpec(bins=bins, bound=2.0, min_bin=0.01, min_derivative=0.1)
    raw, y = _inputs(spec, *SHAPES[shape], device, dtype)
    x, log_slope = spec(raw)._backward(y)
    assert type(x.grad_fn).__name__ == "_FusedSplineInverseBackward"
    x_ref, log_slope_ref = _reference(spec, raw)._backward(y)
    exact = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(x, x_ref, atol=exact, rtol=0)
    torch.testing.assert_close(log_slope, log_slope_ref, atol=exact, rtol=0)
    g_x, g_l = torch.randn_like(x), torch.randn_like(x)
    got = torch.autograd.grad((g_x * x + g_l * log_slope).sum(), (raw, y))
    want = torch.autograd.grad((g_x * x_ref + g_l * log_slope_ref).sum(), (raw, y))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=exact, rtol=exact)


def test_kernel_gradient_at_knots_ends_and_tails(device, dtype):
    """Knots, the interval's ends and the tails: where the bin or the branch changes."""
    spec = SplineSpec(bins=5, bound=1.5)
    raw = torch.randn(4, spec.num_params, device=device, dtype=dtype).requires_grad_(True)
    knots_x = _reference(spec, raw).knots_x.detach()
    beyond = torch.tensor([-9.0, -1.5, 1.5, 9.0], device=device, dtype=dtype).expand(4, 4)
    x = torch.cat([knots_x.mT, beyond.mT]).requires_grad_(True)  # (10, 4): knots and ends
    y, log_slope = spec(raw)._forward(x)
    y_ref, log_slope_ref = _reference(spec, raw)._forward(x)
    got = torch.autograd.grad((y + log_slope).sum(), (raw, x))
    want = torch.autograd.grad((y_ref + log_slope_ref).sum(), (raw, x))
    exact = 1e-10 if dtype == torch.float64 else 1e-4
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=exact, rtol=exact)
    assert torch.equal(y[-4:][[0, -1]], x[-4:][[0, -1]].detach())  # identity tails


def test_spec_uses_the_kernel_only_where_a_gradient_is_wanted(device, dtype):
    spec = SplineSpec(bins=4)
    raw = torch.randn(6, spec.num_params, device=device, dtype=dtype, requires_grad=True)
    x = torch.randn(6, device=device, dtype=dtype)
    y, _ = spec(raw).call_and_ladj(x)
    assert type(y.grad_fn).__name__ == "_FusedSplineBackward"
    with torch.no_grad():
        y_free, _ = spec(raw).call_and_ladj(x)
        x_free, _ = spec(raw).inv_and_ladj(y)
    torch.testing.assert_close(y_free, y.detach(), atol=0, rtol=0)
    torch.testing.assert_close(x_free, spec(raw).inv(y), atol=0, rtol=0)


def test_knot_tables_read_without_gradients_are_rebuilt_with_them(device, dtype):
    spec = SplineSpec(bins=4)
    raw = torch.randn(3, spec.num_params, device=device, dtype=dtype, requires_grad=True)
    spline = spec(raw)
    with torch.no_grad():
        assert spline.knots_x.grad_fn is None
    assert spline.knots_x.grad_fn is not None and spline.derivatives.grad_fn is not None


def test_second_derivatives_are_the_graph_recording_formulas(device, dtype):
    """``create_graph=True`` differentiates the recorded formula: Hessians stay exact."""
    spec = SplineSpec(bins=4, bound=2.0)
    raw, x = _inputs(spec, (6,), (6,), device, dtype)

    def through(evaluate):
        def f(raw_, x_):
            y, log_slope = evaluate(raw_, x_)
            return (y**2 + log_slope).sum()

        return f

    exact = 1e-10 if dtype == torch.float64 else 1e-4
    for direction in ("call_and_ladj", "inv_and_ladj"):
        fused = through(lambda r, v, d=direction: getattr(spec(r), d)(v))
        recorded = through(lambda r, v, d=direction: getattr(_reference(spec, r), d)(v))
        got = torch.autograd.functional.hessian(fused, (raw.detach(), x.detach()))
        want = torch.autograd.functional.hessian(recorded, (raw.detach(), x.detach()))
        for row_got, row_want in zip(got, want, strict=True):
            for a, b in zip(row_got, row_want, strict=True):
                torch.testing.assert_close(a, b, atol=exact, rtol=exact)


def test_traced_spline_records_no_python_function(device, dtype):
    """``torch.jit.trace`` gets the graph-recording formula: a custom Function cannot be saved."""
    spec = SplineSpec(bins=4)
    raw, x = _inputs(spec, (5,), (5,), device, dtype)
    for direction in ("call_and_ladj", "inv_and_ladj"):
        evaluate = lambda r, v, d=direction: getattr(spec(r), d)(v)  # noqa: E731
        traced = torch.jit.trace(evaluate, (raw, x), check_trace=False)
        assert "prim::PythonOp" not in {node.kind() for node in traced.graph.nodes()}
        torch.jit.save(traced, io.BytesIO())  # fails for a graph holding a Python function
        torch.testing.assert_close(traced(raw, x)[0], evaluate(raw, x)[0], atol=0, rtol=0)
