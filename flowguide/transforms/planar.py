r"""The planar map of Rezende & Mohamed (2015) with an exact numerical inverse."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from flowguide.transforms.base import FlowTransform

__all__ = ["PlanarTransform"]

# The slope w.u_hat is kept above -1 + _MARGIN, so the map's smallest derivative along w
# is at least _MARGIN: the inverse stays well conditioned and log|det J| stays finite.
_MARGIN = 1e-4


class PlanarTransform(FlowTransform):
    r"""Planar map :math:`f(x) = x + \hat u \tanh(w^\top x + b)`.

    With :math:`\hat u = u + [m(w^\top u) - w^\top u] \, w / \|w\|^2` and
    :math:`m(a) = -1 + \epsilon + \mathrm{softplus}(a)`, the slope
    :math:`c = w^\top \hat u > -1`, which makes the map invertible. Its log-determinant
    is :math:`\log(1 + c \, \tanh'(a))` with :math:`a = w^\top x + b`.

    The inverse is not analytic but reduces to one dimension: projecting
    :math:`y = f(x)` on :math:`w` gives :math:`a + c \tanh(a) = w^\top y + b`, a strictly
    increasing equation in :math:`a` whose root lies within :math:`|c|` of the right-hand
    side. It is solved by bracketed Newton iteration without gradient tracking, then one
    differentiable Newton step supplies exact first-order gradients (implicit function
    theorem). Then :math:`x = y - \hat u \tanh(a)`.

    Arguments:
        u: Raw direction :math:`u`, shape ``(..., D)``.
        w: Normal :math:`w`, shape ``(..., D)``.
        b: Offset :math:`b`, shape ``(...)``.
        max_iter: Most Newton iterations of the inverse.

    References:
        Variational Inference with Normalizing Flows (Rezende and Mohamed, 2015),
        arXiv:1505.05770.

    Example:
        >>> import torch
        >>> t = PlanarTransform(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 1.0]), torch.tensor(0.1))
        >>> x = torch.tensor([0.3, -0.7])
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-6)
        True
    """

    def __init__(self, u: Tensor, w: Tensor, b: Tensor, max_iter: int = 100) -> None:
        super().__init__(1)
        self.w, self.b, self.max_iter = w, b, max_iter
        wu = (w * u).sum(-1, keepdim=True)
        norm2 = (w * w).sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        target = -1 + _MARGIN + F.softplus(wu)
        self.u_hat = u + (target - wu) * w / norm2
        self.slope = (w * self.u_hat).sum(-1)

    @staticmethod
    def identity_u(w: Tensor) -> Tensor:
        r"""The raw :math:`u` for which :math:`\hat u = 0`, so the map is the identity.

        :math:`u = \alpha w / \|w\|^2` with :math:`m(\alpha) = 0`, i.e.
        :math:`\alpha = \log(e^{1 - \epsilon} - 1)`: the constraint's correction then
        cancels :math:`u` exactly, while gradients still reach :math:`u` and :math:`w`
        through :math:`\hat u` (and :math:`b` once :math:`\hat u \ne 0`). A flow of such
        maps starts where its affine head puts it.

        Example:
            >>> w = torch.tensor([0.5, -1.0])
            >>> t = PlanarTransform(PlanarTransform.identity_u(w), w, torch.tensor(0.3))
            >>> bool(t.u_hat.abs().max() < 1e-6)
            True
        """
        alpha = math.log(math.expm1(1 - _MARGIN))
        return alpha * w / (w * w).sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)

    def _preactivation(self, v: Tensor) -> Tensor:
        return (self.w * v).sum(-1) + self.b

    def _ladj(self, a: Tensor) -> Tensor:
        return torch.log1p(self.slope * (1 - torch.tanh(a) ** 2))

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a = self._preactivation(x)
        y = x + self.u_hat * torch.tanh(a).unsqueeze(-1)
        return y, self._ladj(a)

    def inv_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        t = self._preactivation(y)
        c = self.slope.expand_as(t)
        a = _solve_monotone(t.detach(), c.detach(), self.max_iter)
        # One Newton step with gradients: exact first-order sensitivity at the root.
        a = a - (a + c * torch.tanh(a) - t) / (1 + c * (1 - torch.tanh(a) ** 2))
        x = y - self.u_hat * torch.tanh(a).unsqueeze(-1)
        return x, -self._ladj(a)


@torch.no_grad()
def _solve_monotone(t: Tensor, c: Tensor, max_iter: int) -> Tensor:
    r"""Solve :math:`a + c \tanh(a) = t` elementwise for :math:`c > -1` (no gradients).

    Under ``torch.jit.trace`` (``JitTrace_ELBO``) the solver runs as a TorchScript
    function, which the traced graph calls with its loop and early stop intact: traced
    as Python, the loop would be frozen at the iteration count of its first call (none at
    all for an identity map).
    """
    solve = _scripted_solver() if torch.jit.is_tracing() else _newton_bisection
    return solve(t, c, max_iter, torch.finfo(t.dtype).eps)


@functools.cache
def _scripted_solver() -> Callable[[Tensor, Tensor, int, float], Tensor]:
    return torch.jit.script(_newton_bisection)


def _newton_bisection(t: Tensor, c: Tensor, max_iter: int, eps: float) -> Tensor:
    """Newton steps that leave the bracket ``[t - |c|, t + |c|]`` (which shrinks as the
    sign of the residual is learned) fall back to bisection, so convergence is
    guaranteed; iteration stops once every residual is at rounding level."""
    lo, hi = t - c.abs(), t + c.abs()
    a = t.clone()
    tol = 4 * eps * (1 + t.abs())
    for _ in range(max_iter):
        th = torch.tanh(a)
        r = a + c * th - t
        if bool((r.abs() <= tol).all()):
            break
        lo = torch.where(r < 0, a, lo)
        hi = torch.where(r > 0, a, hi)
        step = a - r / (1 + c * (1 - th**2))
        a = torch.where((step > lo) & (step < hi), step, (lo + hi) / 2)
    return a
