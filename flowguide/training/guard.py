"""The NaN guard: non-finite steps are not applied, and repeated ones are explained.

A step is bad when its loss, any gradient, or any parameter after the update is not
finite. A bad step leaves the parameters as they were before it: a non-finite loss or
gradient skips the update (the optimizer state is untouched too), and an update that
made a parameter non-finite is rolled back from a copy of the parameters (the
optimizer's own state, e.g. Adam's moments, keeps that step: its gradients were
finite, so it stays finite). The guard optionally lowers the learning rate, and after
``max_bad_steps`` bad steps in a row training stops with :class:`NonFiniteError`, whose
message names the parameters with non-finite gradients and the model or guide sample
sites whose log-density, or its gradient, is not finite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor

__all__ = ["NaNGuard", "NonFiniteError", "diagnose"]


@dataclass(frozen=True)
class NaNGuard:
    """Settings of the NaN guard.

    Arguments:
        max_bad_steps: Consecutive bad steps after which training stops with an error.
        lr_backoff: Factor applied to every learning rate after a bad step (1 keeps it).
        check_params: Also check the parameters after each update and roll back a step
            that made one non-finite (costs one parameter copy per step).
    """

    max_bad_steps: int = 10
    lr_backoff: float = 0.5
    check_params: bool = True

    def __post_init__(self) -> None:
        if self.max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be >= 1, got {self.max_bad_steps}")
        if not 0 < self.lr_backoff <= 1:
            raise ValueError(f"lr_backoff must lie in (0, 1], got {self.lr_backoff}")


class NonFiniteError(FloatingPointError):
    """Training stopped after too many consecutive non-finite steps; the message says where."""


def all_finite(tensors: Sequence[Tensor]) -> bool:
    """Whether every entry of every tensor is finite, with one device synchronization: the
    largest absolute entry of each (a NaN or an infinity carries through, and unlike a
    2-norm it cannot overflow) is checked at once.

    Example:
        >>> all_finite([torch.ones(2), torch.tensor([float("nan")])])
        False
    """
    peaks = [t.detach().abs().max() for t in tensors if t.numel()]
    return not peaks or bool(torch.isfinite(torch.stack(peaks)).all())


def bad_gradients(named_params: Iterable[tuple[str, Tensor]]) -> list[str]:
    """Names of the parameters whose gradient has a NaN or an infinity."""
    return [n for n, p in named_params if p.grad is not None and not torch.isfinite(p.grad).all()]


def diagnose(
    model: Callable, guide: Callable, params: dict[str, Tensor], *args, attempts: int = 20, **kwargs
) -> str:
    """Trace the guide and the model again, up to ``attempts`` times (a site may be
    non-finite for some draws only), and say which sample or factor sites are
    non-finite: their log-density, or the gradient of their log-density with respect to
    ``params``, naming the parameters whose gradient it is."""
    for _ in range(attempts):
        found = _traced_problems(model, guide, params, args, kwargs)
        if found:
            return "; ".join(found)
    return f"no sample or factor site was non-finite in {attempts} new draws"


def _traced_problems(model: Callable, guide: Callable, params: dict[str, Tensor], args, kwargs) -> list[str]:
    try:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        model_trace.compute_log_prob()
        guide_trace.compute_log_prob()
    except (ValueError, RuntimeError) as error:  # a distribution refused a non-finite argument
        return [f"tracing the model and guide failed: {str(error).splitlines()[0]}"]
    found = []
    for where, trace in (("model", model_trace), ("guide", guide_trace)):
        for name, site in trace.nodes.items():
            if site["type"] == "sample" and "log_prob" in site:
                problem = _site_problem(site["log_prob"], params)
                if problem:
                    kind = "factor site" if isinstance(site["fn"], dist.Unit) else "site"
                    found.append(f"{where} {kind} {name!r} ({problem})")
    return found


def _site_problem(log_prob: Tensor, params: dict[str, Tensor]) -> str:
    if not torch.isfinite(log_prob).all():
        return "non-finite log-density"
    if not log_prob.requires_grad:
        return ""
    names = [name for name, p in params.items() if p.requires_grad]
    grads = torch.autograd.grad(
        log_prob.sum(), [params[n] for n in names], retain_graph=True, allow_unused=True
    )
    bad = [n for n, g in zip(names, grads, strict=True) if g is not None and not torch.isfinite(g).all()]
    return f"non-finite gradient with respect to {bad}" if bad else ""
