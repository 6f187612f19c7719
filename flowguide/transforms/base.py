"""The base class of every flowguide transform and the fused call protocol.

Direction convention, stated once for the whole package: **forward maps base noise
``u`` to the latent ``z``** (the sampling direction). A guide samples by calling the
transform and scores a point by inverting it.

Every transform offers :meth:`FlowTransform.call_and_ladj`, which returns the output
and :math:`\\log|\\det J|` of the map in one pass, and :meth:`FlowTransform.inv_and_ladj`,
which does the same for the inverse. The inverse of a transform is again a
:class:`FlowTransform`, so fused calls work in both directions. No log-determinant
depends on a cache: each is computed from the input it is given.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from torch.distributions import Transform, constraints

__all__ = ["FlowTransform", "InverseFlowTransform", "ComposeFlowTransform"]


class FlowTransform(Transform):
    r"""A bijection :math:`y = f(x)` with a fused log-determinant.

    Subclasses implement :meth:`call_and_ladj` and :meth:`inv_and_ladj`; the methods
    torch expects (``_call``, ``_inverse``, ``log_abs_det_jacobian``) are derived from
    them. ``event_dim`` is the number of rightmost dimensions the map acts on jointly:
    1 for the vector maps of a flow, 0 for elementwise maps.

    Arguments:
        event_dim: Number of rightmost dimensions forming one event (0 or 1).

    Example:
        >>> import torch
        >>> from flowguide.transforms import PermutationTransform
        >>> t = PermutationTransform(torch.tensor([1, 0]))
        >>> y, ladj = t.call_and_ladj(torch.tensor([1.0, 2.0]))
        >>> y, ladj, t.inv(y)
        (tensor([2., 1.]), tensor(0.), tensor([1., 2.]))
    """

    bijective = True

    def __init__(self, event_dim: int = 1) -> None:
        self._event_dim = event_dim
        super().__init__(cache_size=0)

    @property
    def domain(self) -> constraints.Constraint:
        return constraints.independent(constraints.real, self._event_dim)

    @property
    def codomain(self) -> constraints.Constraint:
        return constraints.independent(constraints.real, self._event_dim)

    @property
    def inv(self) -> InverseFlowTransform:
        return InverseFlowTransform(self)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return :math:`y = f(x)` and :math:`\log|\det \partial y / \partial x|`.

        The log-determinant has the batch shape of ``x`` (``x.shape[:-event_dim]``).
        """
        raise NotImplementedError

    def inv_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return :math:`x = f^{-1}(y)` and :math:`\log|\det \partial x / \partial y|`.

        The second output is the log-determinant of the *inverse*, i.e. minus the
        forward log-determinant at ``x``.
        """
        raise NotImplementedError

    def _call(self, x: Tensor) -> Tensor:
        return self.call_and_ladj(x)[0]

    def _inverse(self, y: Tensor) -> Tensor:
        return self.inv_and_ladj(y)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]


class InverseFlowTransform(FlowTransform):
    """The inverse :math:`f^{-1}` of a :class:`FlowTransform`, itself fused.

    Arguments:
        base: The transform to invert.
    """

    def __init__(self, base: FlowTransform) -> None:
        super().__init__(base._event_dim)
        self.base = base

    @property
    def inv(self) -> FlowTransform:
        return self.base

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.base.inv_and_ladj(x)

    def inv_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.base.call_and_ladj(y)

    def __repr__(self) -> str:
        return f"Inverse({self.base!r})"


class ComposeFlowTransform(FlowTransform):
    r"""The composition :math:`f_K \circ \dots \circ f_1` with summed log-determinants.

    Arguments:
        parts: Transforms in application order (the first one sees the base noise).

    Example:
        >>> import torch
        >>> from flowguide.transforms import AffineTransform, PermutationTransform
        >>> t = ComposeFlowTransform([
        ...     AffineTransform(torch.zeros(2), torch.tensor([0.0, 1.0]), event_dim=1),
        ...     PermutationTransform(torch.tensor([1, 0])),
        ... ])
        >>> t.call_and_ladj(torch.ones(2))[1]
        tensor(1.)
    """

    def __init__(self, parts: Sequence[FlowTransform]) -> None:
        super().__init__(1)
        self.parts = list(parts)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _chain(self.parts, x, inverse=False)

    def inv_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return _chain(self.parts[::-1], y, inverse=True)

    def __repr__(self) -> str:
        inner = ", ".join(repr(p) for p in self.parts)
        return f"ComposeFlowTransform([{inner}])"


def _chain(parts: Sequence[FlowTransform], x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
    ladj = x.new_zeros(x.shape[:-1])
    for part in parts:
        x, term = part.inv_and_ladj(x) if inverse else part.call_and_ladj(x)
        ladj = ladj + term
    return x, ladj
