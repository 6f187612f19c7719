"""Conditioner networks: the autoregressive property and input validation."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from flowguide.flows.layers import Planar
from flowguide.nn import MADE, MLP, PACK_LIMIT, LinearStack
from flowguide.nn.networks import _Constant


@pytest.mark.parametrize("order", [None, [2, 0, 4, 1, 3]], ids=["natural", "shuffled"])
@pytest.mark.parametrize("context_dim", [None, 2], ids=["plain", "ctx"])
def test_made_outputs_depend_only_on_lower_degrees(order, context_dim, device, dtype):
    order = None if order is None else torch.tensor(order)
    made = MADE(5, num_params=3, hidden_dims=[12, 12], context_dim=context_dim, order=order)
    made = made.to(device, dtype)
    with torch.no_grad():
        for p in made.parameters():
            p.normal_()
    context = None if context_dim is None else torch.randn(context_dim, device=device, dtype=dtype)
    dependence = torch.zeros(5, 5, dtype=torch.bool, device=device)
    for _ in range(32):  # several inputs, so that no connection hides behind an inactive ReLU
        jac = jacobian(lambda v: made(v, context), torch.randn(5, device=device, dtype=dtype))
        dependence |= jac.abs().sum(1) > 0  # jac: (output 5, param 3, input 5)
    degrees = made.degrees.to(device)
    allowed = degrees[None, :] < degrees[:, None]  # [i, j]: output i may see input j
    assert not (dependence & ~allowed).any(), "an output sees an input of equal or higher degree"
    assert (dependence == allowed).all(), "hidden widths suffice for every allowed connection"


def test_context_changes_the_output(device, dtype):
    made = MADE(3, num_params=2, hidden_dims=[8], context_dim=4, init_scale=1.0).to(device, dtype)
    x = torch.randn(3, device=device, dtype=dtype)
    a = made(x, torch.zeros(4, device=device, dtype=dtype))
    b = made(x, torch.ones(4, device=device, dtype=dtype))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("kind", ["mlp", "made"])
def test_identity_start_is_exact_and_every_weight_trains_from_step_two(kind, device, dtype):
    torch.manual_seed(0)
    net = (
        MLP(2, 3, num_params=4, hidden_dims=[16])
        if kind == "mlp"
        else MADE(3, num_params=4, hidden_dims=[16])
    )
    net = net.to(device, dtype)
    x = torch.randn(10, net.out_dim if kind == "made" else 2, device=device, dtype=dtype)
    optim = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(2):
        optim.zero_grad()
        out = net(x)
        if step == 0:
            assert (out == 0).all()
        (out * torch.arange(out.numel(), device=device, dtype=dtype).view_as(out)).sum().backward()
        grads = net.net.weights.grad.split(net.net.sizes)
        nonzero = [bool(g.abs().sum() > 0) for g in grads]  # weight, bias per layer
        assert nonzero == ([False, False, True, True] if step == 0 else [True] * 4)
        optim.step()


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: MLP(2, 3, 2, hidden_dims=[0]), r"hidden_dims\[0\]"),
        (lambda: MLP(2, 3, 2, hidden_dims=64), "hidden_dims"),
        (lambda: MADE(4, 2, hidden_dims=["a"]), r"hidden_dims\[0\]"),
    ],
)
def test_bad_hidden_dims_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("pack", [True, False])
def test_linear_stack_is_the_stack_of_linear_layers_it_packs(device, dtype, pack):
    torch.manual_seed(0)
    stack = LinearStack([3, 7, 5, 2], activation=torch.nn.Tanh, pack=pack).to(device, dtype)
    sizes = [3 * 7, 7, 7 * 5, 5, 5 * 2, 2]
    assert [p.numel() for p in stack.parameters()] == ([sum(sizes)] if pack else sizes)
    x = torch.randn(4, 3, device=device, dtype=dtype)
    h = x
    for k in range(3):
        weight, bias = stack.layer(k)
        h = torch.nn.functional.linear(h, weight, bias)
        h = torch.tanh(h) if k < 2 else h
    torch.testing.assert_close(stack(x), h)
    with torch.no_grad():
        stack.layer(-1)[1].fill_(3.0)  # the views write into the parameters
    last = stack.weights[-2:] if pack else stack.weights[-1]
    assert (last == 3.0).all()


def test_linear_stack_packs_up_to_the_limit_and_keeps_values_either_way():
    small = [4, 8, 3]
    assert LinearStack(small).packed and not LinearStack(small, pack=False).packed
    width = (PACK_LIMIT - 1) // 3  # [w, 1, w] holds 3 w + 1 weights, [w, 1, w + 2] 3 w + 5
    at_limit, over = LinearStack([width, 1, width]), LinearStack([width, 1, width + 2])
    assert sum(at_limit.sizes) <= PACK_LIMIT < sum(over.sizes)
    assert at_limit.packed and not over.packed
    torch.manual_seed(3)
    packed = LinearStack(small, pack=True)
    torch.manual_seed(3)
    separate = LinearStack(small, pack=False)
    torch.testing.assert_close(packed.weights.detach(), torch.cat([p.detach() for p in separate.weights]))
    with pytest.raises(TypeError, match="pack"):
        LinearStack(small, pack="yes")


def test_linear_stack_initializes_as_nn_linear_does():
    torch.manual_seed(1)
    stack = LinearStack([6, 4, 3])
    torch.manual_seed(1)
    layers = [torch.nn.Linear(6, 4), torch.nn.Linear(4, 3)]
    for k, layer in enumerate(layers):
        torch.testing.assert_close(stack.layer(k)[0], layer.weight.detach())
        torch.testing.assert_close(stack.layer(k)[1], layer.bias.detach())


def test_linear_stack_masks_weights_and_checks_mask_shapes():
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    stack = LinearStack([2, 2], masks=[mask])
    jac = jacobian(stack, torch.randn(2))
    assert jac[0, 1] == 0 and jac[1, 1] != 0
    with pytest.raises(ValueError, match="masks must have shapes"):
        LinearStack([2, 3], masks=[mask])
    with pytest.raises(ValueError, match="widths"):
        LinearStack([4])


def _unit_scaled_modules():
    """Each case: the module called, its unit-scaled part, and how to call it."""
    constant = _Constant(3)
    torch.nn.init.normal_(constant.bias)
    planar = Planar(3)
    cases = {
        "packed": LinearStack([3, 8, 2]),
        "unpacked": LinearStack([3, 8, 2], pack=False),
        "masked": MADE(3, num_params=2, hidden_dims=[8], init_scale=1.0).net,
        "constant": constant,
    }
    cases = {kind: (module, module, lambda m, x: m(x)) for kind, module in cases.items()}
    cases["planar"] = (planar, planar.raw, lambda m, x: m()(x))
    return cases


@pytest.mark.parametrize("kind", ["packed", "unpacked", "masked", "constant", "planar"])
def test_a_unit_keeps_the_map_and_scales_adams_steps(kind, device, dtype):
    """Adam's first step moves every stored number by exactly lr (times the sign of its
    gradient), so with unit 0.1 every value the module computes with moves by lr / 10."""
    torch.manual_seed(0)
    module, scaled, call = _unit_scaled_modules()[kind]
    module = module.to(device, dtype)
    x = torch.randn(5, 3, device=device, dtype=dtype)
    before = call(module, x).detach().clone()  # the constant's output is a view
    values = [p.detach().clone() for p in scaled._unit_parameters()]
    scaled.set_unit(0.1)
    assert float(scaled.unit) == pytest.approx(0.1) and scaled.unit.dtype == dtype
    torch.testing.assert_close(call(module, x), before)
    for value, stored in zip(values, scaled._unit_parameters(), strict=True):
        torch.testing.assert_close(stored * 0.1, value)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    call(module, x).pow(2).sum().backward()
    optimizer.step()
    for value, stored in zip(values, scaled._unit_parameters(), strict=True):
        moved = (stored.detach() * 0.1 - value).abs()
        moved = moved[stored.grad.abs() > 1e-6]  # Adam's eps is 1e-8
        torch.testing.assert_close(moved, torch.full_like(moved, 1e-3), rtol=1e-3, atol=0)
    restored, restored_scaled, _ = _unit_scaled_modules()[kind]
    restored = restored.to(device, dtype)
    restored.load_state_dict(module.state_dict())
    assert float(restored_scaled.unit) == pytest.approx(0.1)
    torch.testing.assert_close(call(restored, x), call(module, x))
    with pytest.raises(ValueError, match="unit must be a positive number"):
        scaled.set_unit(0.0)


def test_a_planar_layers_unit_is_where_its_parameters_are():
    """Unconditional, the unit scales (u, w, b); conditional, those come out of the context
    network, which has its own unit, and the layer holds no other."""
    assert [name for name, _ in Planar(3).named_buffers()] == ["raw.unit"]
    assert [name for name, _ in Planar(3, context_dim=2).named_buffers()] == ["hyper.net.unit"]
