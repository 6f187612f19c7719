"""A normalizing flow: a standard normal base and a stack of flow layers."""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from flowguide.flows.distribution import FlowDistribution
from flowguide.flows.layers import FlowLayer, check_context
from flowguide.transforms import ComposeFlowTransform

__all__ = ["Flow"]


class Flow(nn.Module):
    r"""Standard normal base noise pushed through ``layers`` in order.

    ``flow(context)`` returns a :class:`FlowDistribution` with batch shape
    ``context.shape[:-1]`` (``()`` when unconditional); ``flow.transform(context)``
    returns the composed transform. Conditional layers receive the context; the others
    (permutations, linear and elementwise layers) do not need it.

    Arguments:
        layers: Flow layers, all of the same ``dim``; the conditional ones must share
            one ``context_dim``.

    Example:
        >>> from flowguide.flows import Flow, Planar
        >>> flow = Flow([Planar(2), Planar(2)])
        >>> flow().sample((4,)).shape
        torch.Size([4, 2])
    """

    def __init__(self, layers: Sequence[FlowLayer]) -> None:
        super().__init__()
        layers = list(layers)
        if not layers or not all(isinstance(layer, FlowLayer) for layer in layers):
            raise TypeError("layers must be a non-empty sequence of FlowLayer modules")
        dims = {layer.dim for layer in layers}
        if len(dims) != 1:
            raise ValueError(f"all layers must have the same dim, got dims {sorted(dims)}")
        contexts = {layer.context_dim for layer in layers} - {None}
        if len(contexts) > 1:
            raise ValueError(f"conditional layers disagree on context_dim: {sorted(contexts)}")
        self.dim = dims.pop()
        self.context_dim = contexts.pop() if contexts else None
        self.layers = nn.ModuleList(layers)
        self.register_buffer("base_loc", torch.zeros(self.dim))
        self.register_buffer("base_scale", torch.ones(self.dim))

    def transform(self, context: Tensor | None = None) -> ComposeFlowTransform:
        """The composed transform from base noise to the latent, given ``context``."""
        context = check_context(context, self.context_dim, "Flow")
        parts = [layer(context if layer.context_dim else None) for layer in self.layers]
        return ComposeFlowTransform(parts)

    def base(self, batch_shape: tuple[int, ...] = ()) -> dist.TorchDistribution:
        """The standard normal base distribution with the given batch shape."""
        normal = dist.Normal(self.base_loc, self.base_scale)
        return normal.expand(torch.Size(batch_shape) + normal.batch_shape).to_event(1)

    def forward(self, context: Tensor | None = None) -> FlowDistribution:
        transform = self.transform(context)
        batch_shape = torch.Size() if context is None else context.shape[:-1]
        return FlowDistribution(self.base(batch_shape), transform)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}"
