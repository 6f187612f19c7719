"""Builders and flow modules: options, errors that name the argument, scaling in D."""

from __future__ import annotations

import itertools

import pytest
import torch

from flowguide.flows import (
    Flow,
    LULinear,
    Permutation,
    Planar,
    affine_coupling_flow,
    iaf,
    neural_spline_flow,
    planar_flow,
)

BUILDERS = {
    "planar_flow": planar_flow,
    "iaf": iaf,
    "nsf_coupling": neural_spline_flow,
    "nsf_autoregressive": lambda *a, **k: neural_spline_flow(*a, structure="autoregressive", **k),
    "affine_coupling_flow": affine_coupling_flow,
}


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", BUILDERS)
def test_parameter_count_is_affine_in_dim(name):
    """For fixed hidden widths, doubling D adds a constant number of parameters each time."""
    counts = [num_params(BUILDERS[name](d, 3, hidden_dims=(32, 32))) for d in (8, 16, 32, 64)]
    steps = [b - a for a, b in itertools.pairwise(counts)]
    assert steps[1] == 2 * steps[0] and steps[2] == 2 * steps[1], counts


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("context_dim", [None, 2], ids=["plain", "ctx"])
def test_one_dimensional_flows_work(name, context_dim, device, dtype, tol):
    flow = BUILDERS[name](1, 2, hidden_dims=(8,), context_dim=context_dim).to(device, dtype)
    context = None if context_dim is None else torch.randn(10, 2, device=device, dtype=dtype)
    q = flow(context)
    z, log_q = q.rsample_and_log_prob((10,) if context is None else ())
    assert z.shape == (10, 1)
    torch.testing.assert_close(q.log_prob(z), log_q, atol=tol, rtol=0)


@pytest.mark.parametrize("name", BUILDERS)
def test_context_changes_the_distribution(name, device, dtype):
    flow = BUILDERS[name](3, 2, hidden_dims=(8,), context_dim=2).to(device, dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    contexts = torch.tensor([[0.0, 0.0], [2.0, -1.0]], device=device, dtype=dtype)
    z = torch.randn(3, device=device, dtype=dtype)
    log_q = flow(contexts).log_prob(z)
    assert log_q.shape == (2,) and (log_q[0] - log_q[1]).abs() > 1e-6


def test_density_integrates_to_one_on_a_grid(device):
    """A flow's log_prob is a normalized density: its grid integral in 2-D is 1."""
    torch.manual_seed(1)
    flow = neural_spline_flow(2, 2, hidden_dims=(16,), bound=3.0).to(device, torch.float64)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))  # smooth enough for a 0.015-wide grid
    axis = torch.linspace(-9, 9, 1201, device=device, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1)
    with torch.no_grad():
        mass = flow().log_prob(grid).exp().sum() * (axis[1] - axis[0]) ** 2
    assert abs(float(mass) - 1) < 1e-4


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: iaf(0), ValueError, "dim"),
        (lambda: iaf(-3), ValueError, "dim"),
        (lambda: iaf(2.5), ValueError, "dim"),
        (lambda: planar_flow(3, num_flows=0), ValueError, "num_flows"),
        (lambda: iaf(3, context_dim=0), ValueError, "context_dim"),
        (lambda: iaf(3, mixing="shuffle"), ValueError, "mixing"),
        (lambda: neural_spline_flow(3, structure="masked"), ValueError, "structure"),
        (lambda: neural_spline_flow(3, bins=0), ValueError, "bins"),
        (lambda: affine_coupling_flow(3, hidden_dims=(16, -1)), ValueError, r"hidden_dims\[1\]"),
        (lambda: iaf(3, log_scale_bound=0.0), ValueError, "log_scale_bound"),
        (lambda: Permutation(torch.tensor([0, 0, 1])), ValueError, "order"),
        (lambda: Flow([]), TypeError, "layers"),
        (lambda: Flow([Planar(2), Planar(3)]), ValueError, "dim"),
        (lambda: Flow([Planar(2, context_dim=1), Planar(2, context_dim=2)]), ValueError, "context_dim"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_bad_context_raises_naming_the_shape():
    flow = iaf(3, 2, hidden_dims=(8,), context_dim=4)
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., 4\)"):
        flow(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="needs a context"):
        flow()
    with pytest.raises(TypeError, match=r"context must be a torch\.Tensor"):
        flow([0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="unconditional"):
        iaf(3, 2)(torch.zeros(4))


def test_mixing_options_build_the_expected_layers():
    assert sum(isinstance(m, LULinear) for m in iaf(4, 3, mixing="lu").layers) == 2
    assert sum(isinstance(m, Permutation) for m in iaf(4, 3, mixing="random").layers) == 2
    assert len(iaf(4, 3, mixing="none").layers) == 3
    layers = affine_coupling_flow(6, 3, mixing="random").layers
    orders = [m.order for m in layers if isinstance(m, Permutation)]
    assert not torch.equal(orders[0], orders[1])


def test_modules_move_with_to_and_double(device):
    flow = iaf(3, 2, hidden_dims=(8,), context_dim=2).to(device).double()
    tensors = [*flow.parameters(), *flow.buffers()]
    assert all(t.device.type == device.type for t in tensors)
    assert all(t.dtype == torch.float64 for t in tensors if t.is_floating_point())
    z = flow(torch.zeros(2, device=device, dtype=torch.float64)).sample((4,))
    assert z.dtype == torch.float64 and z.device.type == device.type


def test_expanded_distribution_keeps_the_fused_path(device, dtype, tol):
    """Pyro expands distributions inside plates; the fused sampler must survive it."""
    q = iaf(3, 2, hidden_dims=(8,)).to(device, dtype)().expand((5,))
    z, log_q = q.rsample_and_log_prob((2,))
    assert z.shape == (2, 5, 3) and log_q.shape == (2, 5)
    torch.testing.assert_close(q.log_prob(z), log_q, atol=tol, rtol=0)


def test_scoring_own_sample_reuses_the_sampling_pass(device, dtype, tol):
    """The fused path gives the same value and gradients as scoring through the inverse."""
    flow = neural_spline_flow(3, 2, hidden_dims=(8,)).to(device, dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    q = flow()
    z = q.rsample((4,))
    fused = q.log_prob(z)
    through_inverse = flow().log_prob(z)  # a fresh distribution has no record of z
    torch.testing.assert_close(fused, through_inverse, atol=tol, rtol=0)
    params = list(flow.parameters())
    g_fused = torch.autograd.grad(fused.sum(), params, retain_graph=True)
    g_inverse = torch.autograd.grad(through_inverse.sum(), params)
    for a, b in zip(g_fused, g_inverse, strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    with torch.no_grad():
        z0 = q.sample()
    assert q.log_prob(z0).requires_grad  # no-grad sample scored with grad: inverse path


def test_triangular_linear_unit_lower_is_the_strict_triangle_plus_the_identity():
    from flowguide.flows import TriangularLinear

    layer = TriangularLinear(4)
    with torch.no_grad():
        layer.lower_entries.copy_(torch.arange(1.0, 7.0))
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [2, 3, 1, 0], [4, 5, 6, 1]], dtype=torch.float32)
    torch.testing.assert_close(layer.unit_lower(), expected)
    torch.testing.assert_close(layer.lower(), expected - torch.eye(4))
    assert set(layer.state_dict()) == {"lower_index", "lower_entries"}  # flat indices are not saved
