r"""Coupling and autoregressive structure around an elementwise map.

Both take a *conditioner* ``hyper`` (a callable from a tensor to raw parameters of
shape ``(..., D', P)``) and a :class:`~flowguide.transforms.elementwise.MapSpec`. The
same spline or affine map therefore serves coupling and autoregressive flows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowguide.transforms.base import FlowTransform
from flowguide.transforms.elementwise import MapSpec

__all__ = ["CouplingTransform", "AutoregressiveTransform"]

Conditioner = Callable[[Tensor], Tensor]


class CouplingTransform(FlowTransform):
    r"""Coupling layer: :math:`y_{1:d} = x_{1:d}`, :math:`y_{d:} = g_{\theta(x_{1:d})}(x_{d:})`.

    The Jacobian is block-triangular, so :math:`\log|\det J|` is the sum of the
    elementwise log-derivatives of :math:`g`; both directions cost one conditioner pass.

    Arguments:
        hyper: Conditioner mapping ``x[..., :split]`` to raw parameters
            ``(..., D - split, P)``.
        spec: Elementwise map built from those parameters.
        split: Number of leading coordinates that pass through unchanged.

    Example:
        >>> import torch
        >>> from flowguide.transforms import AffineSpec
        >>> hyper = lambda kept: torch.stack([kept, kept], -1)  # shift = raw log-scale = x_1
        >>> t = CouplingTransform(hyper, AffineSpec(), split=1)
        >>> t.call_and_ladj(torch.tensor([0.5, 1.0]))[0]
        tensor([0.5000, 2.1412])

    References:
        Density estimation using Real NVP (Dinh, Sohl-Dickstein and Bengio, 2017),
        arXiv:1605.08803.
    """

    def __init__(self, hyper: Conditioner, spec: MapSpec, split: int) -> None:
        super().__init__(1)
        self.hyper, self.spec, self.split = hyper, spec, split

    def _apply(self, v: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        kept, moved = v[..., : self.split], v[..., self.split :]
        g = self.spec(self.hyper(kept))
        out, ladj = g.inv_and_ladj(moved) if inverse else g.call_and_ladj(moved)
        kept = kept.expand(*out.shape[:-1], self.split)  # a context may widen the batch
        return torch.cat([kept, out], -1), ladj.sum(-1)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._apply(x, inverse=False)

    def inv_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._apply(y, inverse=True)


class AutoregressiveTransform(FlowTransform):
    r"""Inverse autoregressive layer: :math:`y_i = g_{\theta_i(x_{<i})}(x_i)`.

    The parameters depend on the *input* (base side), so the forward (sampling)
    direction costs one conditioner pass, as in IAF. The inverse is sequential:
    starting from any guess, pass :math:`k` fixes the coordinate of degree :math:`k`,
    so ``passes`` (the number of distinct degrees) passes give the exact inverse.

    Arguments:
        hyper: Autoregressive conditioner mapping ``x`` to ``(..., D, P)``, where the
            parameters of coordinate ``i`` depend only on coordinates of lower degree.
        spec: Elementwise map built from those parameters.
        passes: Conditioner passes needed by the inverse (at most ``D``).

    Example:
        >>> import torch
        >>> from flowguide.transforms import AffineSpec
        >>> def hyper(x):  # shift_i = sum of x_<i, unit scale
        ...     shift = torch.cumsum(x, -1) - x
        ...     return torch.stack([shift, torch.zeros_like(x)], -1)
        >>> t = AutoregressiveTransform(hyper, AffineSpec(), passes=3)
        >>> y = t(torch.tensor([1.0, 2.0, 3.0]))
        >>> y, t.inv(y)
        (tensor([1., 3., 6.]), tensor([1., 2., 3.]))

    References:
        Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al.,
        2016), arXiv:1606.04934.
    """

    def __init__(self, hyper: Conditioner, spec: MapSpec, passes: int) -> None:
        super().__init__(1)
        self.hyper, self.spec, self.passes = hyper, spec, passes

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, ladj = self.spec(self.hyper(x)).call_and_ladj(x)
        return y, ladj.sum(-1)

    def inv_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.zeros_like(y)
        for _ in range(self.passes):
            x, ladj = self.spec(self.hyper(x)).inv_and_ladj(y)
        return x, ladj.sum(-1)
