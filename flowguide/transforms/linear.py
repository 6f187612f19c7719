r"""Volume-preserving and linear mixing between flow layers."""

from __future__ import annotations

import torch
from torch import Tensor

from flowguide.transforms.base import FlowTransform

__all__ = [
    "HouseholderTransform",
    "LULinearTransform",
    "LowRankLinearTransform",
    "PermutationTransform",
    "TriangularLinearTransform",
]


class PermutationTransform(FlowTransform):
    r"""Reorder coordinates: :math:`y = x_{\pi}`; :math:`\log|\det J| = 0`.

    Arguments:
        order: A permutation of ``range(D)`` (a long tensor).

    Example:
        >>> import torch
        >>> PermutationTransform(torch.tensor([2, 0, 1]))(torch.tensor([10.0, 20.0, 30.0]))
        tensor([30., 10., 20.])
    """

    def __init__(self, order: Tensor) -> None:
        super().__init__(1)
        self.order = order

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[..., self.order], x.new_zeros(x.shape[:-1])

    def inv_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y[..., torch.argsort(self.order)], y.new_zeros(y.shape[:-1])


class LULinearTransform(FlowTransform):
    r"""Affine map :math:`y = L U x + c` with unit lower :math:`L` and upper :math:`U`.

    The diagonal of :math:`U` is :math:`e^{s}`, so :math:`\log|\det J| = \sum_i s_i`,
    and the inverse is two triangular solves.

    Arguments:
        lower: Matrix whose strictly lower triangle is :math:`L`'s, shape ``(D, D)``.
        upper: Matrix whose strictly upper triangle is :math:`U`'s, shape ``(D, D)``.
        log_diag: Log of :math:`U`'s diagonal, shape ``(D,)``.
        bias: Offset :math:`c`, shape ``(D,)``.

    References:
        Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma and Dhariwal,
        2018), arXiv:1807.03039.

    Example:
        >>> import torch
        >>> t = LULinearTransform(torch.ones(2, 2), torch.ones(2, 2), torch.zeros(2), torch.zeros(2))
        >>> t.call_and_ladj(torch.tensor([1.0, 1.0]))  # L U = [[1, 1], [1, 2]]
        (tensor([2., 3.]), tensor(0.))
    """

    def __init__(self, lower: Tensor, upper: Tensor, log_diag: Tensor, bias: Tensor) -> None:
        super().__init__(1)
        eye = torch.eye(lower.shape[-1], dtype=lower.dtype, device=lower.device)
        self.lower = lower.tril(-1) + eye
        self.upper = upper.triu(1) + torch.diag_embed(log_diag.exp())
        self.log_diag, self.bias = log_diag, bias

    def _ladj(self, v: Tensor) -> Tensor:
        return self.log_diag.sum().expand(v.shape[:-1])

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = x @ (self.lower @ self.upper).mT + self.bias
        return y, self._ladj(x)

    def inv_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        rhs = (y - self.bias).unsqueeze(-1)
        z = torch.linalg.solve_triangular(self.lower, rhs, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(self.upper, z, upper=True).squeeze(-1)
        return x, -self._ladj(y)


class TriangularLinearTransform(FlowTransform):
    r"""Linear map :math:`y = L x` with :math:`L` unit lower-triangular, so :math:`\log|\det J| = 0`.

    The inverse is one triangular solve.

    Arguments:
        lower: Matrix whose strictly lower triangle is :math:`L`'s, shape ``(D, D)``.
        unit: ``lower`` already is :math:`L` (unit diagonal, zeros above): used as is.

    Example:
        >>> import torch
        >>> t = TriangularLinearTransform(torch.tensor([[9.0, 9.0], [2.0, 9.0]]))  # L = [[1, 0], [2, 1]]
        >>> t.call_and_ladj(torch.tensor([1.0, 1.0]))
        (tensor([1., 3.]), tensor(0.))
    """

    def __init__(self, lower: Tensor, unit: bool = False) -> None:
        super().__init__(1)
        if unit:  # the caller built L itself (a copy of tril and eye costs more than the matmul)
            self.lower = lower
        else:
            eye = torch.eye(lower.shape[-1], dtype=lower.dtype, device=lower.device)
            self.lower = lower.tril(-1) + eye

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x @ self.lower.mT, x.new_zeros(x.shape[:-1])

    def inv_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.linalg.solve_triangular(self.lower, y.unsqueeze(-1), upper=False, unitriangular=True)
        return x.squeeze(-1), y.new_zeros(y.shape[:-1])


class LowRankLinearTransform(FlowTransform):
    r"""Linear map :math:`y = (I + Q R Q^\top) x` with :math:`Q` orthonormal ``(D, k)``.

    :math:`M = I_k + R` is lower-triangular with diagonal :math:`e^{s}`, so by the
    determinant lemma :math:`\det(I + Q R Q^\top) = \det M` and
    :math:`\log|\det J| = \sum_j s_j`; the inverse is
    :math:`x = y - Q R M^{-1} Q^\top y`. Both directions and the log-determinant cost
    :math:`O(Dk)` per point. :math:`(I + QRQ^\top)(I + QRQ^\top)^\top = I + Q(MM^\top - I)Q^\top`
    ranges over every positive-definite identity-plus-rank-:math:`k` matrix, so after a
    diagonal scale the map covers every diagonal-plus-low-rank covariance (the linear
    case of orthogonal Sylvester flows).

    Arguments:
        q: Orthonormal columns :math:`Q`, shape ``(D, k)``.
        lower: Matrix whose strictly lower triangle is :math:`R`'s, shape ``(k, k)``.
        log_diag: :math:`s`, the log of :math:`M`'s diagonal, shape ``(k,)``.

    References:
        R. van den Berg, L. Hasenclever, J. M. Tomczak, M. Welling. Sylvester Normalizing
        Flows for Variational Inference. UAI 2018, arXiv:1803.05649.

    Example:
        >>> import torch
        >>> q = torch.tensor([[1.0], [0.0]])
        >>> t = LowRankLinearTransform(q, torch.zeros(1, 1), torch.tensor([2.0]).log())
        >>> t.call_and_ladj(torch.tensor([1.0, 1.0]))  # doubles the first coordinate
        (tensor([2., 1.]), tensor(0.6931))
    """

    def __init__(self, q: Tensor, lower: Tensor, log_diag: Tensor) -> None:
        super().__init__(1)
        self.q, self.log_diag = q, log_diag
        self.m = lower.tril(-1) + torch.diag_embed(log_diag.exp())
        self.r = self.m - torch.eye(len(log_diag), dtype=q.dtype, device=q.device)

    def _ladj(self, v: Tensor) -> Tensor:
        return self.log_diag.sum().expand(v.shape[:-1])

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x + (x @ self.q) @ self.r.mT @ self.q.mT, self._ladj(x)

    def inv_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        c = (y @ self.q).unsqueeze(-1)  # Q^T y = M Q^T x
        qx = torch.linalg.solve_triangular(self.m, c, upper=False).squeeze(-1)
        return y - (qx @ self.r.mT) @ self.q.mT, -self._ladj(y)


class HouseholderTransform(FlowTransform):
    r"""Product of Householder reflections :math:`y = H_k \cdots H_1 x`,
    :math:`H_i = I - 2 v_i v_i^\top / \lVert v_i \rVert^2`: orthogonal, so
    :math:`\log|\det J| = 0`, and :math:`O(Dk)` per point in each direction.

    Arguments:
        vectors: The reflection vectors :math:`v_1, \ldots, v_k` as rows, shape ``(k, D)``.

    References:
        J. M. Tomczak, M. Welling. Improving Variational Auto-Encoders using Householder
        Flow. 2016, arXiv:1611.09630.

    Example:
        >>> import torch
        >>> y = HouseholderTransform(torch.tensor([[1.0, -1.0]]))(torch.tensor([1.0, 0.0]))
        >>> y.round(decimals=6)  # v = (1, -1) swaps the coordinates
        tensor([0., 1.])
    """

    def __init__(self, vectors: Tensor) -> None:
        super().__init__(1)
        self.units = vectors / vectors.norm(dim=-1, keepdim=True)

    def _reflect(self, x: Tensor, order: range) -> Tensor:
        for i in order:
            v = self.units[i]
            x = x - 2.0 * (x @ v).unsqueeze(-1) * v
        return x

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._reflect(x, range(len(self.units))), x.new_zeros(x.shape[:-1])

    def inv_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._reflect(y, range(len(self.units) - 1, -1, -1)), y.new_zeros(y.shape[:-1])
