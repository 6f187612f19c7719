r"""The affine head of a flow autoguide and the flow it ends.

A flow autoguide's posterior over the packed unconstrained latent is

.. math::
    z = \mu + \sigma \odot L\, g(u), \qquad u \sim N(0, I),

with :math:`g` the flow's non-linear core (near the identity at the start) and the
**head** :math:`w \mapsto \mu + \sigma \odot L w`: :math:`L` unit lower-triangular
(``affine="full"``, so the guide contains every Gaussian), a rank-:math:`k` correction
:math:`I + QRQ^\top` (``affine="lowrank"``, every diagonal-plus-rank-:math:`k` Gaussian,
:math:`O(Dk)` parameters and cost, :class:`~flowguide.flows.LowRankLinear`) or the
identity (``affine="diagonal"``). ``"auto"`` is ``"full"`` up to
:data:`FULL_HEAD_MAX_DIM` coordinates and ``"lowrank"`` above, where the full head's
:math:`D(D-1)/2` parameters dominate a step (``benchmarks/head_threshold.py``). The
head is set from the guide's Gaussian start and puts the posterior where it belongs, so
the core acts on standardized coordinates.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from flowguide.flows import ElementwiseAffine, Flow, FlowLayer, LowRankLinear, TriangularLinear
from flowguide.nn import check_dim
from flowguide.transforms import ComposeFlowTransform, FlowTransform

__all__ = ["FULL_HEAD_MAX_DIM", "HEAD_RANK", "Affine", "AffineHead", "HeadedFlow", "resolve_affine"]

#: The head's linear part: ``"auto"``, a learned unit lower-triangular :math:`L`, a
#: rank-:math:`k` correction, or none.
Affine = Literal["auto", "full", "lowrank", "diagonal"]

#: Largest dimension at which ``affine="auto"`` learns the full :math:`L`
#: (``benchmarks/head_threshold.py``).
FULL_HEAD_MAX_DIM = 512

#: Default rank :math:`k` of the low-rank head (``benchmarks/head_threshold.py``).
HEAD_RANK = 16


def resolve_affine(dim: int, affine: Affine) -> Affine:
    """The head kind ``affine`` names at dimension ``dim``: ``"auto"`` is ``"full"`` up to
    :data:`FULL_HEAD_MAX_DIM` and ``"lowrank"`` above; the others are themselves.

    Example:
        >>> resolve_affine(100, "auto"), resolve_affine(10_000, "auto"), resolve_affine(10_000, "full")
        ('full', 'lowrank', 'full')
    """
    if affine not in get_args(Affine):
        raise ValueError(f"affine must be one of {get_args(Affine)}, got {affine!r}")
    if affine == "auto":
        return "full" if dim <= FULL_HEAD_MAX_DIM else "lowrank"
    return affine


class AffineHead(FlowLayer):
    r"""The map :math:`w \mapsto \mu + \sigma \odot L w`; :math:`\log|\det J| = \sum_i \log \sigma_i`.

    Arguments:
        dim: Number of coordinates :math:`D`.
        affine: ``"full"`` learns :math:`L` (:math:`D(D-1)/2` parameters); ``"lowrank"``
            learns :math:`L = I + QRQ^\top` of rank ``rank`` (:math:`Dk + k(k+1)/2`);
            ``"diagonal"`` keeps :math:`L = I`; ``"auto"`` (default) chooses by
            :func:`resolve_affine`.
        rank: Rank :math:`k` of the low-rank head (at most ``dim``; default
            :data:`HEAD_RANK`).

    Example:
        >>> import torch
        >>> head = AffineHead(2)
        >>> head.set_start(torch.tensor([1.0, 0.0]), torch.tensor([[2.0, 0.0], [1.0, 0.5]]))
        >>> head()(torch.tensor([1.0, 1.0])).tolist()  # mu + S w with S the scale_tril
        [3.0, 1.5]
    """

    def __init__(self, dim: int, affine: Affine = "auto", rank: int = HEAD_RANK) -> None:
        super().__init__(dim)
        self.affine = resolve_affine(dim, affine)
        check_dim("rank", rank)
        self.linear: TriangularLinear | LowRankLinear | None = None
        if self.affine == "full":
            self.linear = TriangularLinear(dim)
        elif self.affine == "lowrank":
            self.linear = LowRankLinear(dim, min(rank, dim))
        self.elementwise = ElementwiseAffine(dim)

    def build(self, context: Tensor | None) -> FlowTransform:
        parts = [self.elementwise()] if self.linear is None else [self.linear(), self.elementwise()]
        return ComposeFlowTransform(parts)

    def set_start(self, loc: Tensor, scale_tril: Tensor, loc_unit: Tensor | None = None) -> None:
        r"""Set the head to :math:`N(\text{loc}, S S^\top)` pushed from :math:`N(0, I)`, with
        :math:`S` = ``scale_tril`` (only its diagonal without :math:`L`, its best
        rank-:math:`k` fit with a low-rank :math:`L`); the location is stored in
        ``loc_unit`` (see :class:`~flowguide.flows.ElementwiseAffine`)."""
        scale = scale_tril.diagonal() if self.linear is None else self.linear.set_scale_tril(scale_tril)
        self.elementwise.set_loc_scale(loc, scale, loc_unit)

    def set_diagonal_start(self, loc: Tensor, scale: Tensor) -> None:
        r"""Set the head to :math:`N(\text{loc}, \operatorname{diag} \text{scale}^2)`:
        :math:`L = I` and :math:`\sigma` = ``scale``, without forming a :math:`D \times D` matrix."""
        if self.linear is not None:
            for parameter in self.linear.parameters():
                if parameter is not getattr(self.linear, "directions", None):
                    torch.nn.init.zeros_(parameter)
        self.elementwise.set_loc_scale(loc, scale)

    @property
    def location(self) -> Tensor:
        r""":math:`\mu`."""
        return self.elementwise.location

    @property
    def scale(self) -> Tensor:
        r""":math:`\sigma`."""
        return self.elementwise.log_scale.exp()

    def moments(self, core_draws: Tensor) -> tuple[Tensor, Tensor]:
        r"""Mean and standard deviation of :math:`z` from draws of the core's output
        :math:`y = g(u)`, shape ``(N, D)``. The draws of :math:`w = L y` are scaled
        afterwards, so a tiny :math:`\sigma` keeps its precision."""
        w = core_draws if self.linear is None else self.linear()(core_draws)
        scale = self.scale
        return self.location + scale * w.mean(0), scale * w.std(0)


class HeadedFlow(Flow):
    r"""A flow's core layers followed by an :class:`AffineHead`: :math:`z = h(g(u))`.

    Arguments:
        core: The non-linear part :math:`g`, an unconditional flow.
        head: The head :math:`h`, of the same dimension.
    """

    def __init__(self, core: Flow, head: AffineHead) -> None:
        super().__init__([*core.layers, head])

    @property
    def head(self) -> AffineHead:
        """The affine head (the last layer)."""
        return self.layers[-1]

    def core_transform(self) -> ComposeFlowTransform:
        """The transform :math:`g` of the core layers alone."""
        return ComposeFlowTransform([layer() for layer in self.layers[:-1]])

    def base_draws(self, num_samples: int, seed: int | None = None, antithetic: bool = False) -> Tensor:
        """Standard normal draws ``(N, D)``, from a generator of ``seed`` if given;
        ``antithetic`` pairs each draw :math:`u` with :math:`-u`."""
        loc = self.base_loc
        generator = None if seed is None else torch.Generator(device=loc.device).manual_seed(seed)
        count = -(-num_samples // 2) if antithetic else num_samples
        u = torch.randn(count, self.dim, generator=generator, device=loc.device, dtype=loc.dtype)
        return torch.cat([u, -u]) if antithetic else u

    def draws(self, num_samples: int, seed: int | None = None, antithetic: bool = False) -> Tensor:
        """Draws ``(N, D)`` of the latent from :meth:`base_draws` of the same arguments."""
        return self.transform()(self.base_draws(num_samples, seed, antithetic))

    def log_prob(self, z: Tensor) -> Tensor:
        r"""Exact :math:`\log q(z)` at any point (through the inverse)."""
        return self().log_prob(z)

    def moments(self, num_samples: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of the flow from ``num_samples`` antithetic draws
        (see :meth:`AffineHead.moments`)."""
        u = self.base_draws(num_samples, seed=seed, antithetic=True)
        return self.head.moments(self.core_transform()(u))
