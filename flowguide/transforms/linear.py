r"""Volume-preserving and linear mixing between flow layers."""

from __future__ import annotations

import torch
from torch import Tensor

from flowguide.transforms.base import FlowTransform

__all__ = ["PermutationTransform", "LULinearTransform"]


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
