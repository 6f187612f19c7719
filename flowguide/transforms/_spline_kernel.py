r"""The rational-quadratic spline as one autograd node, with a hand-written backward.

A spline map of a coupling or autoregressive layer goes from raw conditioner outputs
to knots (softmax, cumulative sum, softplus) and then, in the bin of each input, to
the rational quadratic of Durkan et al. (2019) and its log-slope. Written with torch
operations that is about 75 small operations forward and 70 autograd nodes backward;
in a flow guide of a few dozen latents their per-call overhead, not arithmetic, is
most of an SVI step. :func:`fused_spline` computes the same outputs without recording
a graph and differentiates them in one backward written out below, in fewer, batched
operations; :func:`fused_spline_inverse` does the same for the inverse (the closed-form
root, differentiated by the implicit-function theorem from the same partials).

With :math:`\xi = (x - x_k) / w`, :math:`s = h / w`, :math:`t = \xi (1 - \xi)`,
:math:`c = d_0 + d_1 - 2 s` and :math:`\delta = s + c\, t`,

.. math::
    y = y_k + h R, \quad R = \frac{s \xi^2 + d_0 t}{\delta}, \qquad
    \log y' = 2 \log s + \log P - 2 \log \delta, \quad
    P = d_1 \xi^2 + 2 s t + d_0 (1 - \xi)^2,

so each partial derivative of :math:`R` or :math:`\log y'` in :math:`(\xi, s, d_0,
d_1)` is a combination of the partials of the three polynomials
:math:`s \xi^2 + d_0 t`, :math:`\delta` and :math:`P` (:func:`_bin_partials`). The
knots' own chain (a cumulative sum, the softmax, the softplus) follows in
:func:`_raw_gradient`.

The graph-recording formula stays: it is the reference the tests compare against, it
serves calls that want no gradient, and it runs under ``torch.jit.trace`` (a traced
custom ``Function`` cannot be serialized). A backward pass that builds a graph of its own
(``create_graph=True``, for second derivatives) also differentiates that formula,
recomputed from the saved inputs, so higher derivatives stay exact.

References:
    Neural Spline Flows (Durkan, Bekasov, Murray and Papamakarios, 2019),
    arXiv:1906.04032.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

__all__ = [
    "bin_index",
    "gather_bins",
    "rq_terms",
    "rq_root",
    "with_tails",
    "fused_spline",
    "fused_spline_inverse",
]

Reference = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class _Parts(Protocol):
    """What the kernel needs of a :class:`~flowguide.transforms.SplineSpec`."""

    bins: int
    bound: float
    min_bin: float

    def parts(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]: ...


def bin_index(knots: Tensor, v: Tensor) -> Tensor:
    """Index ``k`` of the bin of each ``v`` (shape ``(..., 1)``): the interior knots at or below it.

    Example:
        >>> bin_index(torch.tensor([-1.0, 0.0, 2.0, 3.0]), torch.tensor([-5.0, 0.5, 2.0]))
        tensor([[0],
                [1],
                [2]])
    """
    return (v.unsqueeze(-1) >= knots[..., 1:-1]).sum(-1, keepdim=True)


def gather_bins(index: Tensor, *tables: Tensor) -> list[Tensor]:
    """Both ends of each bin: ``table[..., k]`` and ``table[..., k + 1]`` stacked last.

    Arguments:
        index: Bin indices ``k`` with a trailing dimension of 1.
        tables: Knot tables ``(..., K + 1)``, broadcastable against ``index``.

    Example:
        >>> gather_bins(torch.tensor([[1], [0]]), torch.tensor([0.0, 1.0, 3.0]))
        [tensor([[1., 3.],
                [0., 1.]])]
    """
    pair = torch.cat([index, index + 1], -1)
    batch = torch.broadcast_shapes(pair.shape[:-1], *(t.shape[:-1] for t in tables))
    pair = pair.expand(*batch, 2)
    # one small gather per table: stacking the tables first copies all of them
    return [torch.gather(t.expand(*batch, t.shape[-1]), -1, pair) for t in tables]


def rq_terms(x0: Tensor, y0: Tensor, w: Tensor, h: Tensor, d0: Tensor, d1: Tensor, v: Tensor):
    r"""Value and log-slope at ``v`` of the bin's rational quadratic, and the terms behind them.

    ``v`` is mapped to :math:`\xi = (v - x_k) / w` clamped to :math:`[0, 1]`, so a point
    outside the bin gets the value at the nearer end. Works with or without autograd.

    Returns:
        ``(value, log_slope, terms)`` with ``terms`` the tuple
        :math:`(\xi, 1 - \xi, \xi^2, s, 2 s, t, c, \delta, P, R)`.

    Example:
        >>> one = torch.tensor(1.0)  # the bin [0, 1] -> [0, 1] with unit slopes: the identity
        >>> value, log_slope, _ = rq_terms(0 * one, 0 * one, one, one, one, one, torch.tensor(0.25))
        >>> value, log_slope
        (tensor(0.2500), tensor(0.))
    """
    s = h / w
    xi = ((v - x0) / w).clamp(0, 1)
    rest = 1 - xi
    t, sq, s2 = xi * rest, xi * xi, s + s
    c = d0 + d1 - s2
    denom = s + c * t
    poly = d1 * sq + s2 * t + d0 * rest * rest
    ratio = (s * sq + d0 * t) / denom
    q = s / denom
    log_slope = (q * q * poly).log()
    return y0 + h * ratio, log_slope, (xi, rest, sq, s, s2, t, c, denom, poly, ratio)


def rq_root(x0: Tensor, y0: Tensor, w: Tensor, h: Tensor, d0: Tensor, d1: Tensor, y: Tensor) -> Tensor:
    """Closed-form solution of ``rq(x) = y`` in the bin (the stable root of a quadratic), clamped to it.

    Example:
        >>> one = torch.tensor(1.0)  # the identity bin [0, 1] -> [0, 1]
        >>> rq_root(0 * one, 0 * one, one, one, one, one, torch.tensor(0.25))
        tensor(0.2500)
    """
    s = h / w
    dy = y - y0
    c = d0 + d1 - 2 * s
    a = h * (s - d0) + dy * c
    b = h * d0 - dy * c
    cc = -s * dy
    disc = (b**2 - 4 * a * cc).clamp_min(0)
    return x0 + w * (2 * cc / (-b - disc.sqrt())).clamp(0, 1)


def with_tails(inside: Tensor, value: Tensor, ident: Tensor, log_slope: Tensor) -> tuple[Tensor, Tensor]:
    """The spline's value and log-slope inside :math:`[-B, B]`, the identity (log-slope 0) outside.

    Example:
        >>> inside = torch.tensor([True, False])
        >>> with_tails(inside, torch.tensor([0.5, 9.0]), torch.tensor([0.4, 7.0]), torch.tensor([0.1, 0.2]))
        (tensor([0.5000, 7.0000]), tensor([0.1000, 0.0000]))
    """
    return torch.where(inside, value, ident), torch.where(inside, log_slope, torch.zeros_like(log_slope))


def _bin_partials(d0: Tensor, d1: Tensor, terms: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    r"""Partials of :math:`R` and :math:`\log y'` in :math:`(\xi, s, d_0, d_1)`, stacked first.

    With :math:`N = s \xi^2 + d_0 t` the numerator of :math:`R`,
    :math:`\partial R = (\partial N - R\, \partial\delta) / \delta` and
    :math:`\partial \log y' = \partial P / P - 2\, \partial\delta / \delta`
    (plus :math:`2 / s` in :math:`s`, added by the caller).
    """
    xi, rest, sq, _, s2, t, c, denom, poly, ratio = terms
    u = rest - xi  # dt / dxi
    d_num = torch.stack([s2 * xi + d0 * u, sq, t, torch.zeros_like(t)])
    d_den = torch.stack([c * u, 1 - (t + t), t, t])
    d_poly = torch.stack([d1 * (xi + xi) + s2 * u - d0 * (rest + rest), t + t, rest * rest, sq])
    inv_d = denom.reciprocal()
    return (d_num - ratio * d_den) * inv_d, d_poly / poly - (inv_d + inv_d) * d_den


def _raw_gradient(spec: _Parts, grad_tables: Tensor, softmax: Tensor, inner: Tensor) -> Tensor:
    """Gradient of the raw parameters from that of the stacked tables ``(..., 3, K + 1)``."""
    k = spec.bins
    g_knots = grad_tables[..., :2, 1:k] * (2 * spec.bound)  # knot j = B (2 c_j - 1) is interior
    # c_j sums the fractions before j: fraction i collects the knots after it
    g_frac = torch.nn.functional.pad(g_knots.flip(-1).cumsum(-1).flip(-1), (0, 1))
    g_frac = g_frac * (1 - spec.min_bin * k)
    g_sizes = softmax * (g_frac - (softmax * g_frac).sum(-1, keepdim=True))
    g_inner = grad_tables[..., 2, 1:k] * torch.sigmoid(inner)  # softplus' derivative
    return torch.cat([g_sizes.flatten(-2), g_inner], -1)


def _locate(raw: Tensor, v: Tensor, spec: _Parts, row: int) -> tuple[Tensor, ...]:
    """Knots from ``raw`` and the bin of each ``v`` among the knots of ``row`` (0: x, 1: y).

    Returns the softmax and shifted interior derivatives (for the backward), the gather
    index ``(..., 3, 2)`` into the stacked tables, and the bin's
    :math:`(x_k, y_k, w, h, d_k, d_{k+1})`.
    """
    softmax, inner, knots, derivatives = spec.parts(raw)
    tables = torch.cat([knots, derivatives.unsqueeze(-2)], -2)  # (..., 3, K + 1): one gather for all
    index = bin_index(knots[..., row, :], v)
    batch = index.shape[:-1]
    if batch != raw.shape[:-1]:  # a coupling's or autoregressive layer's are equal
        batch = torch.broadcast_shapes(batch, raw.shape[:-1])
    pair = torch.cat([index, index + 1], -1).unsqueeze(-2).expand(*batch, 3, 2)
    low, high = tables.expand(*batch, *tables.shape[-2:]).gather(-1, pair).unbind(-1)
    (x0, y0, d0), (w, h, _), d1 = low.unbind(-1), (high - low).unbind(-1), high[..., 2]
    return softmax, inner, pair, x0, y0, w, h, d0, d1


class _Saved(NamedTuple):
    """What both kernels save for their backward, by name (``ctx.saved_tensors`` unpacks
    every tensor again at each access, so a backward reads it once)."""

    raw: Tensor
    v: Tensor  # the point: x for the forward, y for the inverse
    softmax: Tensor
    inner: Tensor
    pair: Tensor
    inside: Tensor
    w: Tensor
    h: Tensor
    d0: Tensor
    d1: Tensor
    terms: tuple[Tensor, ...]  # rq_terms' ten terms, at x
    log_slope: Tensor | None  # the inverse's log g'(x)


def _save(ctx: Any, *tensors: Tensor, terms: tuple[Tensor, ...], log_slope: Tensor | None = None) -> None:
    """``ctx.save_for_backward`` in :class:`_Saved`'s order."""
    ctx.save_for_backward(*tensors, *terms, *(() if log_slope is None else (log_slope,)))


def _saved(ctx: Any) -> _Saved:
    """The tensors :func:`_save` stored, unpacked once."""
    t = ctx.saved_tensors
    return _Saved(*t[:10], t[10:20], t[20] if len(t) > 20 else None)


def _raw_and_point_gradients(
    spec: _Parts, saved: _Saved, grad_value: Tensor, grad_log_slope: Tensor, partials: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """Gradients of the raw parameters and of the point from those of the value and
    log-slope of the bin's rational quadratic (the tails' entries are zeroed)."""
    w, h = saved.w, saved.h
    xi, _, _, s, *_, ratio = saved.terms
    d_ratio, d_log_slope = partials
    g_xi, g_s, g_d0, g_d1 = (grad_value * h * d_ratio + grad_log_slope * d_log_slope).unbind(0)
    g_s = g_s + 2 * grad_log_slope / s
    # A point inside [-B, B] lies in its bin, where the clamp of xi is inactive; the
    # tails' points are masked (their clamped terms touch only the fixed end knots).
    g_v = g_xi / w
    g_w = -(g_v * xi + g_s * s / w)  # w is in xi = (v - x0) / w and in s = h / w
    g_h = grad_value * ratio + g_s / w
    ends = torch.stack([-g_v - g_w, g_w, grad_value - g_h, g_h, g_d0, g_d1], -1).unflatten(-1, (3, 2))
    ends = torch.where(saved.inside[..., None, None], ends, 0.0)  # the identity tails hold no knots
    grad_tables = ends.new_zeros(*ends.shape[:-1], spec.bins + 1).scatter_add_(-1, saved.pair, ends)
    grad_raw = _raw_gradient(spec, grad_tables, saved.softmax, saved.inner)
    return grad_raw.sum_to_size(saved.raw.shape), g_v


class _FusedSpline(torch.autograd.Function):
    """One autograd node from raw spline parameters and inputs to outputs and log-slopes."""

    @staticmethod
    def forward(ctx: FunctionCtx, raw: Tensor, x: Tensor, spec: _Parts, reference: Reference):
        softmax, inner, pair, x0, y0, w, h, d0, d1 = _locate(raw, x, spec, row=0)
        value, log_slope, terms = rq_terms(x0, y0, w, h, d0, d1, x)
        inside = x.abs() < spec.bound  # the end knots are exactly -B and B
        ctx.spec, ctx.reference = spec, reference
        _save(ctx, raw, x, softmax, inner, pair, inside, w, h, d0, d1, terms=terms)
        return with_tails(inside, value, x, log_slope)

    @staticmethod
    def backward(ctx: Any, grad_value: Tensor, grad_log_slope: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient is wanted
            return (*_recorded_gradient(ctx, grad_value, grad_log_slope), None, None)
        saved = _saved(ctx)
        partials = _bin_partials(saved.d0, saved.d1, saved.terms)
        grad_raw, g_v = _raw_and_point_gradients(ctx.spec, saved, grad_value, grad_log_slope, partials)
        return grad_raw, torch.where(saved.inside, g_v, grad_value).sum_to_size(saved.v.shape), None, None


class _FusedSplineInverse(torch.autograd.Function):
    r"""One autograd node for the inverse: :math:`x = g^{-1}(y)` and :math:`\log g'(x)`.

    The backward is the implicit-function one: with :math:`G` the total gradient
    reaching :math:`x` (directly and through the log-slope),
    :math:`\partial_y = G / g'(x)` and the parameters get the forward kernel's
    gradient at :math:`x` for an upstream value gradient of :math:`-G / g'(x)`.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, raw: Tensor, y: Tensor, spec: _Parts, reference: Reference):
        softmax, inner, pair, x0, y0, w, h, d0, d1 = _locate(raw, y, spec, row=1)
        root = rq_root(x0, y0, w, h, d0, d1, y.clamp(-spec.bound, spec.bound))
        _, log_slope, terms = rq_terms(x0, y0, w, h, d0, d1, root)
        inside = y.abs() < spec.bound
        x, log_slope = with_tails(inside, root, y, log_slope)
        ctx.spec, ctx.reference = spec, reference
        _save(ctx, raw, y, softmax, inner, pair, inside, w, h, d0, d1, terms=terms, log_slope=log_slope)
        return x, log_slope

    @staticmethod
    def backward(ctx: Any, grad_x: Tensor, grad_log_slope: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():
            return (*_recorded_gradient(ctx, grad_x, grad_log_slope), None, None)
        saved = _saved(ctx)
        partials = _bin_partials(saved.d0, saved.d1, saved.terms)
        total = grad_x + grad_log_slope * partials[1][0] / saved.w  # log g'(x) moves with x
        grad_y = total * torch.exp(-saved.log_slope)
        grad_raw, _ = _raw_and_point_gradients(ctx.spec, saved, -grad_y, grad_log_slope, partials)
        return grad_raw, torch.where(saved.inside, grad_y, grad_x).sum_to_size(saved.v.shape), None, None


def _recorded_gradient(ctx: Any, grad_value: Tensor, grad_log_slope: Tensor) -> tuple[Tensor | None, ...]:
    """The inputs' gradients through the graph-recording formula, as a differentiable graph."""
    raw, x = ctx.saved_tensors[:2]
    wanted = [t for t, needed in zip((raw, x), ctx.needs_input_grad[:2], strict=True) if needed]
    outputs = ctx.reference(raw, x)
    grads = iter(torch.autograd.grad(outputs, wanted, (grad_value, grad_log_slope), create_graph=True))
    return tuple(next(grads) if needed else None for needed in ctx.needs_input_grad[:2])


def fused_spline(raw: Tensor, x: Tensor, spec: _Parts, reference: Reference) -> tuple[Tensor, Tensor]:
    """Spline values and log-slopes at ``x`` from raw parameters ``(..., 3K - 1)``, one autograd node.

    Arguments:
        raw: Raw spline parameters, the ``spec``'s layout.
        x: Inputs, broadcastable against ``raw.shape[:-1]``.
        spec: The spline's recipe (bins, bound, floors and :meth:`parts`).
        reference: ``(raw, x) -> (value, log_slope)`` by the graph-recording formula,
            equal to this function; it serves gradients that must be differentiable.

    Under ``torch.jit.trace`` the caller should call ``reference`` instead (see the
    module's docstring). :class:`~flowguide.transforms.SplineSpec`'s splines call this
    in their forward direction whenever a gradient is wanted.

    Example:
        >>> from flowguide.transforms import SplineSpec
        >>> spec = SplineSpec(bins=4)
        >>> raw = torch.randn(3, spec.num_params, requires_grad=True)
        >>> y, log_slope = spec(raw).call_and_ladj(torch.tensor([-6.0, 0.1, 2.0]))
        >>> type(y.grad_fn).__name__, float(y[0])  # one autograd node; the identity tail
        ('_FusedSplineBackward', -6.0)
    """
    return _FusedSpline.apply(raw, x, spec, reference)


def fused_spline_inverse(raw: Tensor, y: Tensor, spec: _Parts, reference: Reference) -> tuple[Tensor, Tensor]:
    r"""Inverse :math:`x = g^{-1}(y)` and forward log-slope :math:`\log g'(x)`, one autograd node.

    The value is the closed-form root (:func:`rq_root`); the gradient is the
    implicit-function one, computed from the forward kernel's partials at :math:`x`.
    Arguments as for :func:`fused_spline`, with ``reference`` the recorded inverse
    ``(raw, y) -> (x, log_slope)``.

    Example:
        >>> from flowguide.transforms import SplineSpec
        >>> spec = SplineSpec(bins=4)
        >>> raw = torch.randn(3, spec.num_params, requires_grad=True)
        >>> y = torch.tensor([-6.0, 0.1, 2.0])
        >>> x, _ = spec(raw).inv_and_ladj(y)
        >>> type(x.grad_fn).__name__, torch.allclose(spec(raw)(x), y, atol=1e-5)
        ('_FusedSplineInverseBackward', True)
    """
    return _FusedSplineInverse.apply(raw, y, spec, reference)
