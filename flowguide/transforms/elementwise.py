r"""Elementwise monotone maps built from parameter tensors.

These are the "transformers" of coupling and autoregressive flows: a conditioner
produces a tensor of raw parameters of shape ``(..., D, P)`` and a :class:`MapSpec`
turns it into an elementwise bijection. Raw parameters equal to zero give the
identity map, so a conditioner whose last layer starts at zero starts the flow as the
identity.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flowguide.transforms._spline_kernel import (
    bin_index,
    fused_spline,
    fused_spline_inverse,
    gather_bins,
    rq_root,
    rq_terms,
    with_tails,
)
from flowguide.transforms.base import FlowTransform

__all__ = [
    "ElementwiseTransform",
    "AffineTransform",
    "RQSplineTransform",
    "MapSpec",
    "AffineSpec",
    "SplineSpec",
    "soft_clamp",
]


def soft_clamp(x: Tensor, bound: float) -> Tensor:
    r"""Smoothly squash ``x`` into :math:`(-b, b)` as :math:`b \tanh(x / b)`.

    Unlike a hard clamp, the gradient is positive everywhere, so a saturated
    log-scale can still be trained back.
    """
    return bound * torch.tanh(x / bound)


class ElementwiseTransform(FlowTransform):
    """Base of the elementwise maps; log-determinants are summed over events.

    Subclasses implement :meth:`_forward` and :meth:`_backward`, both returning the
    elementwise log-derivative of the *forward* map.

    Arguments:
        event_dim: Rightmost dimensions summed into the log-determinant.
    """

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _backward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _sum(self, ladj: Tensor) -> Tensor:
        return ladj.sum(tuple(range(-self._event_dim, 0))) if self._event_dim else ladj

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, ladj = self._forward(x)
        return y, self._sum(ladj)

    def inv_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x, ladj = self._backward(y)
        return x, -self._sum(ladj)


class AffineTransform(ElementwiseTransform):
    r"""The elementwise affine map :math:`y = \mu + e^{s} x`.

    Arguments:
        shift: Shift :math:`\mu`, broadcastable against the input.
        log_scale: Log-scale :math:`s`, broadcastable against the input.
        event_dim: Rightmost dimensions summed into the log-determinant.

    Example:
        >>> import torch
        >>> AffineTransform(torch.tensor(1.0), torch.tensor(0.0)).call_and_ladj(torch.tensor(2.0))
        (tensor(3.), tensor(0.))
    """

    sign = 1

    def __init__(self, shift: Tensor, log_scale: Tensor, event_dim: int = 0) -> None:
        super().__init__(event_dim)
        self.shift, self.log_scale = shift, log_scale

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self.shift + self.log_scale.exp() * x
        return y, self.log_scale.expand_as(y)

    def _backward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = (y - self.shift) * torch.exp(-self.log_scale)
        return x, self.log_scale.expand_as(x)


class RQSplineTransform(ElementwiseTransform):
    r"""Monotone rational-quadratic spline on :math:`[-B, B]` with identity tails.

    Inside the interval the map is the spline of Durkan et al. (2019) through
    :math:`K + 1` knots :math:`(x_k, y_k)` with positive derivatives :math:`d_k`; the
    boundary derivatives are 1, so outside the interval the map is the identity and
    the whole of :math:`\mathbb{R}` is covered. In bin :math:`k`, with
    :math:`\xi = (x - x_k) / w_k` and :math:`s_k = h_k / w_k`,

    .. math::
        y = y_k + \frac{h_k [s_k \xi^2 + d_k \xi (1 - \xi)]}
                       {s_k + (d_{k+1} + d_k - 2 s_k) \xi (1 - \xi)}.

    Arguments:
        knots_x: Knot abscissae, shape ``(..., K + 1)``, from :math:`-B` to :math:`B`.
        knots_y: Knot ordinates, shape ``(..., K + 1)``, from :math:`-B` to :math:`B`.
        derivatives: Derivatives at the knots, shape ``(..., K + 1)``, all positive.
        event_dim: Rightmost dimensions summed into the log-determinant.

    References:
        Neural Spline Flows (Durkan, Bekasov, Murray and Papamakarios, 2019),
        arXiv:1906.04032.

    Example:
        >>> import torch
        >>> spec = SplineSpec(bins=4, bound=2.0)
        >>> g = spec(torch.randn(3, spec.num_params))  # three coordinates
        >>> x = torch.tensor([-5.0, 0.3, 1.9])
        >>> y, ladj = g.call_and_ladj(x)
        >>> float(y[0]), torch.allclose(g.inv(y), x, atol=1e-5)  # identity tail, exact inverse
        (-5.0, True)
    """

    sign = 1

    def __init__(self, knots_x: Tensor, knots_y: Tensor, derivatives: Tensor, event_dim: int = 0) -> None:
        super().__init__(event_dim)
        self.knots_x, self.knots_y, self.derivatives = knots_x, knots_y, derivatives

    @property
    def bound(self) -> Tensor:
        return self.knots_x[..., -1]

    def _bin(self, knots: Tensor, v: Tensor) -> tuple[Tensor, ...]:
        """Bin of each ``v`` in ``knots`` and the bin's left knot, width, height and slopes."""
        ends = gather_bins(bin_index(knots, v), self.knots_x, self.knots_y, self.derivatives)
        (x0, x1), (y0, y1), (d0, d1) = (pair.unbind(-1) for pair in ends)
        return x0, y0, x1 - x0, y1 - y0, d0, d1

    def _inside(self, v: Tensor) -> tuple[Tensor, Tensor]:
        bound = self.bound
        return v.abs() < bound, torch.maximum(torch.minimum(v, bound), -bound)

    @staticmethod
    def _rq(x0: Tensor, y0: Tensor, w: Tensor, h: Tensor, d0: Tensor, d1: Tensor, x: Tensor):
        """Value and log-slope at ``x`` of the bin's rational quadratic."""
        return rq_terms(x0, y0, w, h, d0, d1, x)[:2]

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        inside, xc = self._inside(x)
        y, log_slope = self._rq(*self._bin(self.knots_x, xc), xc)
        return with_tails(inside, y, x, log_slope)

    def _backward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        inside, yc = self._inside(y)
        knots = self._bin(self.knots_y, yc)
        with torch.no_grad():
            root = rq_root(*knots, yc)
        # The value is the closed-form root; the gradient is the implicit-function one,
        # dx = (dy - dy/dθ dθ) / y'(x), carried by a Newton correction whose value is
        # removed. Differentiating the root formula instead gives NaN where its
        # discriminant rounds to zero (steep bins, and the clamped tails in float32).
        y_root, log_slope = self._rq(*knots, root)
        step = (yc - y_root) * torch.exp(-log_slope.detach())
        x = root + (step - step.detach())
        return with_tails(inside, x, y, self._rq(*knots, x)[1])


class _RawRQSpline(RQSplineTransform):
    """The spline a :class:`SplineSpec` builds: kept as raw parameters, knots made on demand.

    Where a gradient is wanted, each direction runs as one autograd node
    (:func:`fused_spline`, :func:`fused_spline_inverse`). The knot tables, which the
    recorded formulas use, are built from the raw parameters when first read, and built
    again if they were built without gradients and gradients are now on.
    """

    def __init__(self, spec: SplineSpec, raw: Tensor, event_dim: int = 0) -> None:
        ElementwiseTransform.__init__(self, event_dim)
        self.spec, self.raw = spec, raw
        self._tables: tuple[Tensor, Tensor, Tensor] | None = None
        self._tables_recorded = False

    def _knot_tables(self) -> tuple[Tensor, Tensor, Tensor]:
        if self._tables is None or (torch.is_grad_enabled() and not self._tables_recorded):
            self._tables = _tables_of(self.spec, self.raw)
            self._tables_recorded = torch.is_grad_enabled()
        return self._tables

    knots_x = property(lambda self: self._knot_tables()[0])
    knots_y = property(lambda self: self._knot_tables()[1])
    derivatives = property(lambda self: self._knot_tables()[2])

    def _one_node(self, v: Tensor) -> bool:
        """Whether to run the one-node kernel: a gradient is wanted and nothing traces."""
        wanted = torch.is_grad_enabled() and (self.raw.requires_grad or v.requires_grad)
        return wanted and not torch.jit.is_tracing()

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self._one_node(x):
            return fused_spline(self.raw, x, self.spec, functools.partial(_recorded, self.spec, False))
        return super()._forward(x)  # no graph to save work for, or a trace to serialize

    def _backward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if self._one_node(y):
            return fused_spline_inverse(self.raw, y, self.spec, functools.partial(_recorded, self.spec, True))
        return super()._backward(y)


def _tables_of(spec: SplineSpec, raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(knots_x, knots_y, derivatives)`` of ``spec``'s spline with raw parameters ``raw``."""
    _, _, knots, derivatives = spec.parts(raw)
    return knots[..., 0, :], knots[..., 1, :], derivatives


def _recorded(spec: SplineSpec, inverse: bool, raw: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``spec``'s spline at ``v`` (forward, or inverse) by the graph-recording formula."""
    spline = RQSplineTransform(*_tables_of(spec, raw))
    return spline._backward(v) if inverse else spline._forward(v)


class MapSpec:
    """Recipe turning raw parameters ``(..., D, P)`` into an elementwise map.

    ``num_params`` is ``P``; calling the spec builds the map. Raw zeros give the
    identity, which is what the zero initialization of a conditioner relies on.
    """

    num_params: int

    def __call__(self, raw: Tensor) -> ElementwiseTransform:
        raise NotImplementedError


class AffineSpec(MapSpec):
    r"""Affine map :math:`y = \mu + e^{s} x` with a soft-clamped log-scale.

    The raw parameters are :math:`(\mu, \tilde s)` and :math:`s = b \tanh(\tilde s / b)`,
    which keeps every scale in :math:`(e^{-b}, e^{b})` while leaving a gradient everywhere.

    Arguments:
        log_scale_bound: The bound :math:`b` of the log-scale; must be positive.

    Example:
        >>> import torch
        >>> g = AffineSpec(log_scale_bound=2.0)(torch.tensor([[0.5, 100.0]]))
        >>> round(float(g.log_scale), 4)  # 100 is squashed below the bound
        2.0
    """

    num_params = 2

    def __init__(self, log_scale_bound: float = 3.0) -> None:
        if not log_scale_bound > 0:
            raise ValueError(f"log_scale_bound must be positive, got {log_scale_bound}")
        self.log_scale_bound = float(log_scale_bound)

    def __call__(self, raw: Tensor) -> AffineTransform:
        shift, log_scale = raw.unbind(-1)
        return AffineTransform(shift, soft_clamp(log_scale, self.log_scale_bound))

    def __repr__(self) -> str:
        return f"AffineSpec(log_scale_bound={self.log_scale_bound})"


class SplineSpec(MapSpec):
    r"""Rational-quadratic spline with ``bins`` bins on :math:`[-B, B]`.

    Raw parameters are ``bins`` unnormalized widths, ``bins`` unnormalized heights and
    ``bins - 1`` unconstrained interior derivatives (:math:`3K - 1` in all). Widths and
    heights go through a softmax with a floor ``min_bin``; derivatives through a shifted
    softplus with a floor ``min_derivative``, shifted so that raw zeros give slope 1.

    Arguments:
        bins: Number of bins :math:`K \ge 1`.
        bound: Half-width :math:`B > 0` of the spline's interval.
        min_bin: Smallest bin width and height as a fraction of :math:`2B`.
        min_derivative: Smallest knot derivative.

    Example:
        >>> import torch
        >>> spec = SplineSpec(bins=8)
        >>> spec.num_params
        23
        >>> spec(torch.zeros(spec.num_params))(torch.tensor(1.234))  # raw zeros: identity
        tensor(1.2340)
    """

    def __init__(
        self,
        bins: int = 8,
        bound: float = 5.0,
        min_bin: float = 1e-3,
        min_derivative: float = 1e-3,
    ) -> None:
        if not (isinstance(bins, int) and bins >= 1):
            raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound}")
        if not 0 <= min_bin * bins < 1:
            raise ValueError(f"min_bin * bins must lie in [0, 1), got min_bin={min_bin}")
        if not 0 < min_derivative < 1:
            raise ValueError(f"min_derivative must lie in (0, 1), got {min_derivative}")
        self.bins, self.bound = bins, float(bound)
        self.min_bin, self.min_derivative = min_bin, min_derivative
        self._shift = math.log(math.expm1(1 - min_derivative))
        self.num_params = 3 * bins - 1

    def parts(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""The knots from raw parameters ``(..., 3K - 1)``, and what their gradient needs.

        Returns:
            ``(softmax, inner, knots, derivatives)``: the softmax of the unnormalized
            widths and heights ``(..., 2, K)``; the shifted raw interior derivatives
            ``(..., K - 1)``; the knot abscissae and ordinates ``(..., 2, K + 1)``, ends
            exactly at :math:`\pm B`; the knot derivatives ``(..., K + 1)``.

        Example:
            >>> softmax, inner, knots, derivatives = SplineSpec(bins=2, bound=1.0).parts(torch.zeros(5))
            >>> knots, torch.allclose(derivatives, torch.ones(3))  # raw zeros: equal bins, unit slopes
            (tensor([[-1.,  0.,  1.],
                    [-1.,  0.,  1.]]), True)
        """
        k = self.bins
        softmax = raw[..., : 2 * k].unflatten(-1, (2, k)).softmax(-1)  # widths and heights together
        inner = raw[..., 2 * k :] + self._shift
        fractions = self.min_bin + (1 - self.min_bin * k) * softmax
        cumulative = F.pad(F.pad(fractions[..., :-1].cumsum(-1), (1, 0), value=0.0), (0, 1), value=1.0)
        knots = self.bound * (2 * cumulative - 1)  # 2 * 0 - 1 and 2 * 1 - 1 are exact
        derivatives = F.pad(self.min_derivative + F.softplus(inner), (1, 1), value=1.0)
        return softmax, inner, knots, derivatives

    def __call__(self, raw: Tensor) -> RQSplineTransform:
        return _RawRQSpline(self, raw)

    def __repr__(self) -> str:
        return f"SplineSpec(bins={self.bins}, bound={self.bound})"
