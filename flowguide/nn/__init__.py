"""Conditioner networks for coupling and autoregressive flows."""

from flowguide.nn.networks import (
    MADE,
    MLP,
    PACK_LIMIT,
    LinearStack,
    UnitScaled,
    check_dim,
    check_hidden_dims,
)

__all__ = [
    "MADE",
    "MLP",
    "PACK_LIMIT",
    "LinearStack",
    "UnitScaled",
    "check_dim",
    "check_hidden_dims",
]
