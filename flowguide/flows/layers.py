r"""Flow layers: ``nn.Module``\ s that own parameters and build a transform per call.

Calling a layer with an optional ``context`` returns a
:class:`~flowguide.transforms.FlowTransform` whose tensors are the layer's parameters
(or functions of them and of the context). All state is in parameters and buffers, so
``.to(device)``, ``.double()`` and ``state_dict()`` work as for any module.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn

from flowguide.nn import MADE, MLP, check_dim
from flowguide.nn.networks import _Constant
from flowguide.transforms import (
    AffineTransform,
    AutoregressiveTransform,
    CouplingTransform,
    FlowTransform,
    HouseholderTransform,
    LowRankLinearTransform,
    LULinearTransform,
    MapSpec,
    PermutationTransform,
    PlanarTransform,
    TriangularLinearTransform,
)

__all__ = [
    "FlowLayer",
    "ElementwiseAffine",
    "Planar",
    "Autoregressive",
    "Coupling",
    "Permutation",
    "LULinear",
    "TriangularLinear",
    "LowRankLinear",
    "Householder",
]


class FlowLayer(nn.Module):
    """Base class: ``layer(context=None)`` returns this layer's transform.

    Arguments:
        dim: Number of coordinates :math:`D \\ge 1`.
        context_dim: Size of the context vector, or ``None`` for an unconditional layer.

    Attributes:
        sequential_inverse: Whether the inverse takes more than one pass (autoregressive
            layers take :math:`D`, planar layers a root find); sticking the landing then
            avoids it (:meth:`~flowguide.flows.Flow.forward`).
    """

    sequential_inverse: bool = False

    def __init__(self, dim: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.dim = check_dim("dim", dim)
        self.context_dim = None if context_dim is None else check_dim("context_dim", context_dim)

    def forward(self, context: Tensor | None = None) -> FlowTransform:
        return self.build(check_context(context, self.context_dim, type(self).__name__))

    def build(self, context: Tensor | None) -> FlowTransform:
        """Build the transform for a validated ``context``."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}"


def check_context(context: Tensor | None, context_dim: int | None, owner: str) -> Tensor | None:
    """Return ``context`` if it fits ``context_dim``, else raise a clear error."""
    if context_dim is None:
        if context is not None:
            raise ValueError(f"{owner} is unconditional (context_dim=None) but got a context")
        return None
    if context is None:
        raise ValueError(f"{owner} needs a context of size context_dim={context_dim}")
    if not isinstance(context, Tensor):
        raise TypeError(f"context must be a torch.Tensor, got {type(context).__name__}")
    if context.dim() < 1 or context.shape[-1] != context_dim:
        raise ValueError(
            f"context must have shape (..., {context_dim}) for {owner}, got {tuple(context.shape)}"
        )
    return context


class ElementwiseAffine(FlowLayer):
    r"""Learnable elementwise affine map :math:`z = \mu + e^{s} \odot u`.

    Starts as the identity; :meth:`set_loc_scale` sets it from an initial location and
    scale (as autoguides do). The location is stored in units of a fixed ``loc_unit``
    (a buffer, ones unless set): :math:`\mu = \text{loc} \odot \text{loc\_unit}`. An
    optimizer such as Adam moves every parameter by about its learning rate per step
    whatever the gradient's size, so with ``loc_unit`` set to the posterior's width
    each step moves :math:`\mu_i` by that fraction of the width in coordinate
    :math:`i`, not by a fixed distance.

    Arguments:
        dim: Number of coordinates.

    Example:
        >>> import torch
        >>> layer = ElementwiseAffine(2)
        >>> layer.set_loc_scale(torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.5]))
        >>> layer()(torch.ones(2))
        tensor([ 3.0000, -0.5000], grad_fn=<AddBackward0>)
        >>> unit = torch.tensor([0.5, 0.5])  # one optimizer step of 0.1 on loc moves mu by 0.05
        >>> layer.set_loc_scale(torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.5]), loc_unit=unit)
        >>> layer.loc.data, layer.location
        (tensor([ 2., -2.]), tensor([ 1., -1.], grad_fn=<MulBackward0>))
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("loc_unit", torch.ones(dim))

    @property
    def location(self) -> Tensor:
        r""":math:`\mu`, the location in the coordinates of :math:`z`."""
        return self.loc * self.loc_unit

    @torch.no_grad()
    def set_loc_scale(self, loc: Tensor, scale: Tensor, loc_unit: Tensor | None = None) -> None:
        r"""Set :math:`\mu` and :math:`e^{s}` in place (shapes ``(D,)``, ``scale > 0``), and
        the location's unit if ``loc_unit`` (positive, shape ``(D,)``) is given."""
        if loc_unit is not None:
            if not (loc_unit.shape == self.loc_unit.shape and (loc_unit > 0).all()):
                raise ValueError(f"loc_unit must be positive with shape {tuple(self.loc_unit.shape)}")
            self.loc_unit.copy_(loc_unit)
        self.loc.copy_(loc / self.loc_unit)
        self.log_scale.copy_(torch.as_tensor(scale, dtype=self.loc.dtype).log())

    def build(self, context: Tensor | None) -> FlowTransform:
        return AffineTransform(self.location, self.log_scale, event_dim=1)


class Planar(FlowLayer):
    r"""Planar layer :math:`f(x) = x + \hat u \tanh(w^\top x + b)`.

    Unconditional: :math:`u, w, b` are one learned vector ``raw``, a
    :class:`~flowguide.nn.UnitScaled` module (``raw.set_unit`` chooses the unit they are
    stored in). Conditional (amortized, as in the
    VAE of Rezende & Mohamed): an MLP maps the context to :math:`(u, w, b)` per data
    point; its output bias starts at the unconditional initialization.

    Arguments:
        dim: Number of coordinates.
        context_dim: Size of the context, or ``None``.
        hidden_dims: Hidden widths of the context network.

    Example:
        >>> import torch
        >>> layer = Planar(3, context_dim=5)
        >>> t = layer(torch.randn(8, 5))  # one planar map per context row
        >>> t(torch.randn(8, 3)).shape
        torch.Size([8, 3])
    """

    sequential_inverse = True

    def __init__(self, dim: int, context_dim: int | None = None, hidden_dims: Sequence[int] = (64,)) -> None:
        super().__init__(dim, context_dim)
        init = _identity_planar_init(dim)
        if self.context_dim is None:
            self.raw = _Constant(2 * dim + 1)
            with torch.no_grad():
                self.raw.bias.copy_(init)
        else:
            self.hyper = MLP(self.context_dim, 1, 2 * dim + 1, hidden_dims)
            with torch.no_grad():
                self.hyper.output_bias().copy_(init)

    def build(self, context: Tensor | None) -> FlowTransform:
        raw = self.raw.value if context is None else self.hyper(context).squeeze(-2)
        u, w, b = raw.split([self.dim, self.dim, 1], -1)
        return PlanarTransform(u, w, b.squeeze(-1))


def _identity_planar_init(dim: int) -> Tensor:
    """Raw ``(u, w, b)`` of an identity planar map: ``w`` a random unit vector (it breaks
    the symmetry between layers; the slope along ``w`` moves ``u_hat`` by ``1 / |w|``, so a
    short ``w`` would make the start ill-conditioned), ``b = 0`` and the ``u`` that
    :meth:`PlanarTransform.identity_u` gives."""
    w = torch.randn(dim)
    w = w / w.norm()
    return torch.cat([PlanarTransform.identity_u(w), w, torch.zeros(1)])


class Autoregressive(FlowLayer):
    r"""Inverse autoregressive layer: an elementwise map conditioned by a MADE.

    With :class:`~flowguide.transforms.AffineSpec` this is IAF; with
    :class:`~flowguide.transforms.SplineSpec` the autoregressive neural spline flow.

    Arguments:
        dim: Number of coordinates.
        spec: The elementwise map.
        hidden_dims: Hidden widths of the MADE.
        context_dim: Size of the context, or ``None``.
        order: Autoregressive order (default natural).

    Example:
        >>> import torch
        >>> from flowguide.transforms import AffineSpec
        >>> layer = Autoregressive(4, AffineSpec(), hidden_dims=[16])  # one IAF layer
        >>> x = torch.randn(10, 4)
        >>> torch.allclose(layer().inv(layer()(x)), x, atol=1e-5)
        True
    """

    sequential_inverse = True

    def __init__(
        self,
        dim: int,
        spec: MapSpec,
        hidden_dims: Sequence[int] = (64, 64),
        context_dim: int | None = None,
        order: Tensor | None = None,
    ) -> None:
        super().__init__(dim, context_dim)
        self.spec = spec
        self.made = MADE(dim, spec.num_params, hidden_dims, self.context_dim, order)

    def build(self, context: Tensor | None) -> FlowTransform:
        return AutoregressiveTransform(partial(self.made, context=context), self.spec, self.made.passes)


class Coupling(FlowLayer):
    r"""Coupling layer: the last ``dim - split`` coordinates are mapped elementwise,
    conditioned (through an MLP) on the first ``split`` and the context.

    Arguments:
        dim: Number of coordinates.
        spec: The elementwise map.
        hidden_dims: Hidden widths of the conditioner.
        context_dim: Size of the context, or ``None``.
        split: Coordinates passed through (default ``dim // 2``).

    Example:
        >>> import torch
        >>> from flowguide.transforms import SplineSpec
        >>> layer = Coupling(4, SplineSpec(bins=8), hidden_dims=[16], context_dim=2)
        >>> y, ladj = layer(torch.zeros(2)).call_and_ladj(torch.randn(6, 4))
        >>> y.shape, ladj.shape
        (torch.Size([6, 4]), torch.Size([6]))
    """

    def __init__(
        self,
        dim: int,
        spec: MapSpec,
        hidden_dims: Sequence[int] = (64, 64),
        context_dim: int | None = None,
        split: int | None = None,
    ) -> None:
        super().__init__(dim, context_dim)
        self.split = dim // 2 if split is None else split
        if not 0 <= self.split < dim:
            raise ValueError(f"split must lie in [0, dim), got split={split} for dim={dim}")
        self.spec = spec
        self.hyper = MLP(self.split, dim - self.split, spec.num_params, hidden_dims, self.context_dim)

    def build(self, context: Tensor | None) -> FlowTransform:
        return CouplingTransform(partial(self.hyper, context=context), self.spec, self.split)


class Permutation(FlowLayer):
    """Fixed permutation of the coordinates (a buffer, no parameters).

    Arguments:
        order: A permutation of ``range(dim)``.

    Example:
        >>> Permutation.reverse(3).order
        tensor([2, 1, 0])
    """

    def __init__(self, order: Tensor) -> None:
        order = torch.as_tensor(order, dtype=torch.long)
        super().__init__(order.numel())
        if not torch.equal(order.sort().values, torch.arange(self.dim)):
            raise ValueError(f"order must be a permutation of range({self.dim}), got {order.tolist()}")
        self.register_buffer("order", order)

    @classmethod
    def reverse(cls, dim: int) -> Permutation:
        """The permutation that reverses the coordinates."""
        return cls(torch.arange(check_dim("dim", dim) - 1, -1, -1))

    @classmethod
    def random(cls, dim: int, seed: int = 0) -> Permutation:
        """A random permutation drawn from a generator seeded with ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        return cls(torch.randperm(check_dim("dim", dim), generator=generator))

    def build(self, context: Tensor | None) -> FlowTransform:
        return PermutationTransform(self.order)


class LULinear(FlowLayer):
    r"""Learned invertible linear map :math:`y = L U x + c`, initialized to the identity.

    Holds :math:`D(D-1)/2` entries for each triangle, :math:`D` log-diagonal entries and
    a bias; parameter count is quadratic in :math:`D`.

    Arguments:
        dim: Number of coordinates.

    Example:
        >>> import torch
        >>> layer = LULinear(3)
        >>> layer()(torch.tensor([1.0, 2.0, 3.0]))  # the identity until trained
        tensor([1., 2., 3.], grad_fn=<AddBackward0>)
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        n = dim * (dim - 1) // 2
        self.register_buffer("lower_index", torch.tril_indices(dim, dim, -1))
        rows, cols = self.lower_index
        self.register_buffer("_lower_flat", rows * dim + cols, persistent=False)
        self.register_buffer("_upper_flat", cols * dim + rows, persistent=False)
        self.lower_entries = nn.Parameter(torch.zeros(n))
        self.upper_entries = nn.Parameter(torch.zeros(n))
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def build(self, context: Tensor | None) -> FlowTransform:
        lower = _scatter(self.lower_entries, self._lower_flat, self.dim)
        upper = _scatter(self.upper_entries, self._upper_flat, self.dim)
        return LULinearTransform(lower, upper, self.log_diag, self.bias)


def _scatter(entries: Tensor, flat_index: Tensor, dim: int) -> Tensor:
    """A ``(dim, dim)`` matrix of zeros with ``entries`` at the row-major ``flat_index``.

    One ``index_copy`` into the flattened matrix, which with its backward is much cheaper
    at large D than a two-index ``index_put`` and ``index``.
    The layers compute their flat indices once, as non-persistent buffers.
    """
    return entries.new_zeros(dim * dim).index_copy(0, flat_index, entries).view(dim, dim)


class TriangularLinear(FlowLayer):
    r"""Learned map :math:`y = L x` with :math:`L` unit lower-triangular: :math:`\log|\det J| = 0`.

    Followed by an elementwise affine layer, :math:`z = \mu + \sigma \odot L x` is a full
    Cholesky factor, so a flow ending in these two layers contains every Gaussian;
    :meth:`set_scale_tril` sets it from a Cholesky factor. :math:`D(D-1)/2` parameters.

    Arguments:
        dim: Number of coordinates.

    Example:
        >>> import torch
        >>> layer = TriangularLinear(2)
        >>> sigma = layer.set_scale_tril(torch.tensor([[2.0, 0.0], [1.0, 0.5]]))
        >>> sigma.tolist(), layer()(torch.tensor([1.0, 1.0])).tolist()  # L = [[1, 0], [2, 1]]
        ([2.0, 0.5], [1.0, 3.0])
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.register_buffer("lower_index", torch.tril_indices(dim, dim, -1))
        rows, cols = self.lower_index
        diagonal = torch.arange(dim) * (dim + 1)
        self.register_buffer("_lower_flat", rows * dim + cols, persistent=False)
        self.register_buffer("_unit_flat", torch.cat([rows * dim + cols, diagonal]), persistent=False)
        self.lower_entries = nn.Parameter(torch.zeros(dim * (dim - 1) // 2))

    def lower(self) -> Tensor:
        """The strictly lower triangle of :math:`L` (its unit diagonal is implied)."""
        return _scatter(self.lower_entries, self._lower_flat, self.dim)

    def unit_lower(self) -> Tensor:
        """:math:`L` itself: the strictly lower triangle plus the unit diagonal, in one scatter.

        Example:
            >>> TriangularLinear(2).unit_lower()  # the identity until trained
            tensor([[1., 0.],
                    [0., 1.]], grad_fn=<ViewBackward0>)
        """
        entries = torch.cat([self.lower_entries, self.lower_entries.new_ones(self.dim)])
        return _scatter(entries, self._unit_flat, self.dim)

    @torch.no_grad()
    def set_scale_tril(self, scale_tril: Tensor) -> Tensor:
        r"""Set :math:`L` from a Cholesky factor :math:`C = \mathrm{diag}(\sigma) L`; return :math:`\sigma`.

        Arguments:
            scale_tril: Lower-triangular :math:`C` with a positive diagonal, shape ``(D, D)``.
        """
        sigma = scale_tril.diagonal()
        rows, cols = self.lower_index
        self.lower_entries.copy_((scale_tril / sigma.unsqueeze(-1))[rows, cols])
        return sigma

    def build(self, context: Tensor | None) -> FlowTransform:
        return TriangularLinearTransform(self.unit_lower(), unit=True)


class LowRankLinear(FlowLayer):
    r"""Learned map :math:`y = (I + Q R Q^\top) x` of rank-:math:`k` correction, initialized
    to the identity (:class:`~flowguide.transforms.LowRankLinearTransform`).

    :math:`Q` is the orthonormal factor of a learned ``(D, k)`` matrix (a reduced QR per
    call, :math:`O(Dk^2)`), :math:`R = M - I` with :math:`M` lower-triangular of diagonal
    :math:`e^{s}`. Followed by an elementwise affine layer,
    :math:`z = \mu + \sigma \odot (I + QRQ^\top) x` has covariance
    :math:`\sigma(I + Q(MM^\top - I)Q^\top)\sigma`: every diagonal-plus-rank-:math:`k`
    Gaussian, with :math:`Dk + k(k+1)/2` parameters instead of :math:`D(D-1)/2`.

    Arguments:
        dim: Number of coordinates :math:`D`.
        rank: Rank :math:`k \le D` of the correction.
        seed: Seed of the random start of the ``(D, k)`` matrix (a generator of its own,
            so building the layer leaves the global random state alone).

    Example:
        >>> import torch
        >>> layer = LowRankLinear(3, rank=1)
        >>> torch.equal(layer()(torch.ones(3)), torch.ones(3))  # the identity until trained
        True
    """

    def __init__(self, dim: int, rank: int, seed: int = 0) -> None:
        super().__init__(dim)
        self.rank = check_dim("rank", rank)
        if rank > dim:
            raise ValueError(f"rank must be at most dim={dim}, got {rank}")
        generator = torch.Generator().manual_seed(seed)
        self.directions = nn.Parameter(torch.randn(dim, rank, generator=generator) / dim**0.5)
        self.lower_entries = nn.Parameter(torch.zeros(rank, rank))
        self.log_diag = nn.Parameter(torch.zeros(rank))

    def orthonormal(self) -> Tensor:
        """:math:`Q`, the orthonormal factor of :attr:`directions`."""
        return torch.linalg.qr(self.directions).Q

    @torch.no_grad()
    def set_scale_tril(self, scale_tril: Tensor) -> Tensor:
        r"""Fit the map to a Cholesky factor's correlation at rank :math:`k`; return :math:`\sigma`.

        With :math:`\Sigma = CC^\top`, :math:`\sigma = \sqrt{\operatorname{diag}\Sigma}`
        and the correlation's top :math:`k` eigenpairs :math:`(\lambda_j, v_j)`, sets
        :math:`Q = (v_j)` and :math:`M = \operatorname{diag}\sqrt{\lambda_j}`, so that
        :math:`I + Q(MM^\top - I)Q^\top` matches the correlation along those directions.

        Arguments:
            scale_tril: Lower-triangular :math:`C` with a positive diagonal, shape ``(D, D)``.
        """
        cov = scale_tril @ scale_tril.mT
        sigma = cov.diagonal().sqrt()
        values, vectors = torch.linalg.eigh(cov / torch.outer(sigma, sigma))
        top = values.argsort(descending=True)[: self.rank]
        self.directions.copy_(vectors[:, top])
        self.lower_entries.zero_()
        self.log_diag.copy_(0.5 * values[top].clamp_min(1e-6).log())
        return sigma

    def build(self, context: Tensor | None) -> FlowTransform:
        return LowRankLinearTransform(self.orthonormal(), self.lower_entries, self.log_diag)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rank={self.rank}"


class Householder(FlowLayer):
    r"""Learned orthogonal mixing: ``reflections`` Householder reflections
    (:class:`~flowguide.transforms.HouseholderTransform`), :math:`O(Dk)` parameters and
    cost, :math:`\log|\det J| = 0`. Between flow layers it rotates the coordinates that
    the next layer conditions on, at a cost linear in :math:`D` (``"lu"`` mixing is
    :math:`O(D^2)`).

    Arguments:
        dim: Number of coordinates :math:`D`.
        reflections: Number of reflections :math:`k`.
        seed: Seed of the random start of the reflection vectors (a generator of its own).

    Example:
        >>> import torch
        >>> layer = Householder(4, reflections=2)
        >>> x = torch.randn(3, 4)
        >>> torch.allclose(layer()(x).norm(dim=-1), x.norm(dim=-1))
        True
    """

    def __init__(self, dim: int, reflections: int = 4, seed: int = 0) -> None:
        super().__init__(dim)
        self.reflections = check_dim("reflections", reflections)
        generator = torch.Generator().manual_seed(seed)
        self.vectors = nn.Parameter(torch.randn(reflections, dim, generator=generator))

    def build(self, context: Tensor | None) -> FlowTransform:
        return HouseholderTransform(self.vectors)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, reflections={self.reflections}"
