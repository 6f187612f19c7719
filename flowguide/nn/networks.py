r"""Conditioner networks: a plain MLP and a masked autoregressive MLP (MADE).

Both take an input ``x`` and an optional ``context`` (concatenated to the input after
broadcasting their batch shapes) and return raw map parameters of shape
``(..., D_out, P)``. Their last layer starts at zero (``init_scale=0``), so the flows
they drive start as the exact identity: a guide's median at initialization is its
``init_loc_fn`` value to rounding, not to the flow's small asymmetry. The hidden layers
get their first gradient on the second step, once the last layer has moved.

The output is multiplied by a fixed ``output_scale`` (default 0.1, about
:math:`1/\sqrt{64}`). Adam moves every weight by about the learning rate per step,
whatever the gradient's size, so in its first steps all weights of a wide last layer
move together and the output jumps by up to ``width * lr``; inside a stack of coupling
layers those jumps compound through the log-scales, and with a factor of 1 an affine
coupling guide overflowed within its first steps at lr 0.02.

A network can also store its weights in a smaller unit (:class:`UnitScaled`): the map
is unchanged, but an optimizer's steps of about the learning rate then move each weight
by ``unit`` times that. Autoguides use it to slow their flow layers against their affine
head (:attr:`flowguide.AutoFlow.core_unit`).

A network of up to :data:`PACK_LIMIT` weights keeps all its weights and biases in one
flat parameter (``weights``) and cuts it into layers at every call. The math is that of
a stack of ``nn.Linear`` layers with the same initialization, but an optimizer that
steps one tensor at a time (Pyro's ``pyro.optim`` wraps one torch optimizer per
parameter) does one step per network instead of two per layer. Larger networks keep one
parameter per weight and bias: the backward of the cut copies every gradient once more,
which at D = 1000 costs more than the optimizer steps it saves (measured in
``benchmarks/packing.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "MLP",
    "MADE",
    "LinearStack",
    "PACK_LIMIT",
    "UnitScaled",
    "check_dim",
    "check_hidden_dims",
]

#: Largest number of weights and biases a :class:`LinearStack` packs into one parameter
#: by default (``pack=None``); above it each is a parameter of its own. Chosen with
#: ``benchmarks/packing.py``: packing saves time on small stacks, where Pyro's one
#: optimizer per parameter dominates a step, and costs time on large ones.
PACK_LIMIT = 2**20


def check_dim(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_hidden_dims(hidden_dims: Sequence[int]) -> list[int]:
    """Validate a list of hidden widths, raising ``ValueError`` naming ``hidden_dims``."""
    if isinstance(hidden_dims, int) or not isinstance(hidden_dims, Sequence):
        raise ValueError(f"hidden_dims must be a sequence of ints, got {hidden_dims!r}")
    return [check_dim(f"hidden_dims[{i}]", h) for i, h in enumerate(hidden_dims)]


def _join(x: Tensor, context: Tensor | None) -> Tensor:
    if context is None:
        return x
    batch = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
    x = x.expand(*batch, x.shape[-1])
    return torch.cat([context.expand(*batch, context.shape[-1]), x], -1)


class UnitScaled:
    r"""Mixin for a module whose parameters are stored in units of :attr:`unit`.

    The value the module computes with is :math:`\theta = u\,\tilde\theta`, where
    :math:`\tilde\theta` is the stored parameter and :math:`u` the unit (1 unless set).
    :meth:`set_unit` rescales the stored numbers, so the map is unchanged; what changes is
    an optimizer's step. Adam moves every stored number by about its learning rate per
    step, whatever the gradient's size, so with unit :math:`u` each value moves by about
    :math:`u` times the rate: the same as a learning rate :math:`u` times smaller for
    this module alone, chosen by the module rather than by the optimizer. The unit is a
    buffer, so a saved state keeps its meaning. Subclasses call :meth:`_init_unit` in
    their constructor.

    Example:
        >>> stack = LinearStack([2, 4, 1])
        >>> x = torch.randn(3, 2)
        >>> before = stack(x)
        >>> stack.set_unit(0.1)
        >>> torch.allclose(stack(x), before), stack.unit
        (True, tensor(0.1000))
    """

    def _init_unit(self) -> None:
        self.register_buffer("unit", torch.ones(()))
        self._unit_value = 1.0  # a float copy: no device sync to test it per call

    def _scaled(self, x: Tensor) -> Tensor:
        """``x`` times the unit (``x`` itself while the unit is 1)."""
        return x if self._unit_value == 1.0 else x * self.unit

    def _unit_parameters(self) -> Iterator[nn.Parameter]:
        """The stored parameters the unit applies to."""
        return self.parameters(recurse=False)

    @torch.no_grad()
    def set_unit(self, unit: float) -> None:
        """Store the parameters in units of ``unit`` (positive), keeping their values."""
        if isinstance(unit, bool) or not isinstance(unit, (int, float)) or not unit > 0:
            raise ValueError(f"unit must be a positive number, got {unit!r}")
        for parameter in self._unit_parameters():
            parameter.mul_(self._unit_value / unit)
        self.unit.fill_(unit)
        self._unit_value = float(unit)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._unit_value = float(self.unit)


class _Constant(UnitScaled, nn.Module):
    """Output a learned vector (zeros at first) for every input row; no weights."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(size))
        self._init_unit()

    @property
    def value(self) -> Tensor:
        """The learned vector: the stored numbers times the unit."""
        return self._scaled(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        value = self.value
        return value.expand(*x.shape[:-1], value.shape[-1])


class LinearStack(UnitScaled, nn.Module):
    r"""Linear layers with activations between them, small stacks packed in one parameter.

    Computes :math:`h_{k+1} = a(W_k h_k + b_k)` for each layer but the last, which has
    no activation; a mask :math:`M_k`, where given, replaces :math:`W_k` by
    :math:`W_k \odot M_k`. The weights are initialized as ``nn.Linear`` initializes
    them. A packed stack stores them as one flat parameter ``weights`` that
    :meth:`forward` splits into views, so it costs an optimizer one tensor instead of
    two per layer; an unpacked one stores them as ``weights.0``, ``weights.1``, ...
    (a weight, flattened, then a bias, per layer). Packing changes the state-dict keys,
    not the values or the math. With a unit (:class:`UnitScaled`) every layer's output
    before its activation is multiplied by it, which is the same as multiplying its
    weight and bias.

    Arguments:
        widths: Sizes ``[in, hidden..., out]``; at least two entries.
        activation: Activation module class, instantiated once per hidden layer.
        masks: One 0/1 mask of shape ``(widths[k + 1], widths[k])`` per layer, or
            ``None`` for none (kept as buffers).
        pack: One parameter (``True``), one per weight and bias (``False``), or
            ``None`` to pack when the stack has at most :data:`PACK_LIMIT` weights.

    Example:
        >>> stack = LinearStack([3, 8, 2])
        >>> stack(torch.zeros(5, 3)).shape, [p.shape for p in stack.parameters()]
        (torch.Size([5, 2]), [torch.Size([50])])
        >>> [p.shape for p in LinearStack([3, 8, 2], pack=False).parameters()]
        [torch.Size([24]), torch.Size([8]), torch.Size([16]), torch.Size([2])]
    """

    def __init__(
        self,
        widths: Sequence[int],
        activation: type[nn.Module] = nn.ReLU,
        masks: Sequence[Tensor] | None = None,
        pack: bool | None = None,
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths needs at least an input and an output size, got {list(widths)}")
        self.shapes = list(pairwise(widths))
        if masks is not None and [tuple(m.shape) for m in masks] != [(b, a) for a, b in self.shapes]:
            raise ValueError(f"masks must have shapes (out, in) of each layer {self.shapes}")
        if pack is not None and not isinstance(pack, bool):
            raise TypeError(f"pack must be True, False or None, got {pack!r}")
        linears = [nn.Linear(a, b) for a, b in self.shapes]
        flat = [t.detach().flatten() for lin in linears for t in (lin.weight, lin.bias)]
        self.sizes = [t.numel() for t in flat]
        self.packed = sum(self.sizes) <= PACK_LIMIT if pack is None else pack
        if self.packed:
            self.weights = nn.Parameter(torch.cat(flat))
        else:
            self.weights = nn.ParameterList(nn.Parameter(t) for t in flat)
        self.activations = nn.ModuleList(activation() for _ in self.shapes[1:])
        self.masked = masks is not None
        self._init_unit()
        for k, mask in enumerate(masks or []):
            self.register_buffer(f"mask{k}", mask.to(flat[0].dtype))

    def _unit_parameters(self) -> Iterator[nn.Parameter]:
        return self.parameters()  # the weights, packed or not: the activations have none

    def layer(self, k: int) -> tuple[Tensor, Tensor]:
        """Views ``(weight, bias)`` of layer ``k`` (negative counts from the end) into
        ``weights``: the stored numbers, before the unit (:class:`UnitScaled`)."""
        return list(self._layers())[k]

    def _layers(self) -> Iterator[tuple[Tensor, Tensor]]:
        chunks = self.weights.split(self.sizes) if self.packed else tuple(self.weights)
        for k, (a, b) in enumerate(self.shapes):
            yield chunks[2 * k].view(b, a), chunks[2 * k + 1]

    def forward(self, x: Tensor) -> Tensor:
        for k, (weight, bias) in enumerate(self._layers()):
            if self.masked:
                weight = weight * getattr(self, f"mask{k}")
            x = self._scaled(nn.functional.linear(x, weight, bias))
            if k < len(self.activations):
                x = self.activations[k](x)
        return x


class _Conditioner(nn.Module):
    def __init__(self, out_dim: int, num_params: int, init_scale: float, output_scale: float) -> None:
        super().__init__()
        if not output_scale > 0:
            raise ValueError(f"output_scale must be positive, got {output_scale}")
        self.out_dim, self.num_params = out_dim, num_params
        self.init_scale, self.output_scale = init_scale, float(output_scale)

    def _near_identity(self) -> None:
        with torch.no_grad():
            for t in self.net.layer(-1):
                t.mul_(self.init_scale)

    def output_bias(self) -> Tensor:
        """A view of the last layer's bias (raw: before ``output_scale`` and the stack's
        unit), e.g. to set it in place.

        Example:
            >>> net = MLP(3, 2, num_params=1, hidden_dims=[8])
            >>> with torch.no_grad():
            ...     _ = net.output_bias().copy_(torch.tensor([10.0, -10.0]))
            ...     _ = net.net.layer(-1)[0].zero_()
            >>> net(torch.randn(1, 3)).flatten().tolist()  # times output_scale 0.1
            [1.0, -1.0]
        """
        return self.net.layer(-1)[1]

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = self.net(_join(x, context)) * self.output_scale
        return h.unflatten(-1, (self.out_dim, self.num_params))


class MLP(_Conditioner):
    """Fully connected conditioner ``(x, context) -> (..., out_dim, num_params)``.

    Arguments:
        in_dim: Size of ``x`` (may be 0: the output then depends on the context only).
        out_dim: Number of coordinates to parametrize.
        num_params: Parameters per coordinate.
        hidden_dims: Hidden layer widths.
        context_dim: Size of the context, or ``None`` for none.
        activation: Activation module class.
        init_scale: Factor on the last layer's initial weights and bias (0: identity start).
        output_scale: Fixed factor on the output (see the module docstring).

    Example:
        >>> net = MLP(3, 2, num_params=4, hidden_dims=[16])
        >>> net(torch.zeros(5, 3)).shape
        torch.Size([5, 2, 4])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_params: int,
        hidden_dims: Sequence[int] = (64, 64),
        context_dim: int | None = None,
        activation: type[nn.Module] = nn.ReLU,
        init_scale: float = 0.0,
        output_scale: float = 0.1,
    ) -> None:
        super().__init__(out_dim, num_params, init_scale, output_scale)
        widths = [in_dim + (context_dim or 0), *check_hidden_dims(hidden_dims)]
        if widths[0] == 0:  # nothing to condition on (a 1-D coupling): a learned constant
            self.net = _Constant(out_dim * num_params)
            return
        self.net = LinearStack([*widths, out_dim * num_params], activation)
        self._near_identity()


class MADE(_Conditioner):
    r"""Masked autoencoder for distribution estimation as an autoregressive conditioner.

    Coordinate ``order[k]`` gets degree ``k + 1``; hidden units get degrees in
    :math:`[1, D - 1]`; an output for coordinate :math:`i` sees only inputs of lower
    degree. Context inputs have degree 0 (seen by every unit). Parameter count is
    linear in :math:`D` for fixed hidden widths.

    Arguments:
        dim: Number of coordinates :math:`D`.
        num_params: Parameters per coordinate.
        hidden_dims: Hidden layer widths.
        context_dim: Size of the context, or ``None`` for none.
        order: Autoregressive order (a permutation of ``range(dim)``); default natural.
        activation: Activation module class.
        init_scale: Factor on the last layer's initial weights and bias (0: identity start).
        output_scale: Fixed factor on the output (see the module docstring).

    References:
        MADE: Masked Autoencoder for Distribution Estimation (Germain et al., 2015),
        arXiv:1502.03509.

    Example:
        >>> made = MADE(4, num_params=2, hidden_dims=[32])
        >>> made(torch.zeros(10, 4)).shape
        torch.Size([10, 4, 2])
    """

    def __init__(
        self,
        dim: int,
        num_params: int,
        hidden_dims: Sequence[int] = (64, 64),
        context_dim: int | None = None,
        order: Tensor | None = None,
        activation: type[nn.Module] = nn.ReLU,
        init_scale: float = 0.0,
        output_scale: float = 0.1,
    ) -> None:
        super().__init__(dim, num_params, init_scale, output_scale)
        hidden = check_hidden_dims(hidden_dims)
        order = torch.arange(dim) if order is None else order
        degrees_in = torch.empty(dim, dtype=torch.long)
        degrees_in[order] = torch.arange(1, dim + 1)
        degrees_in = torch.cat([torch.zeros(context_dim or 0, dtype=torch.long), degrees_in])
        self.register_buffer("degrees", degrees_in[(context_dim or 0) :])
        masks, previous = [], degrees_in
        for width in hidden:
            current = torch.arange(width) % max(dim - 1, 1) + 1
            masks.append((current[:, None] >= previous[None]).float())
            previous = current
        out = self.degrees.repeat_interleave(num_params)
        masks.append((out[:, None] > previous[None]).float())
        self.net = LinearStack([len(degrees_in), *hidden, len(out)], activation, masks)
        self._near_identity()
        #: Conditioner passes an exact sequential inverse needs (one per degree).
        self.passes = dim
