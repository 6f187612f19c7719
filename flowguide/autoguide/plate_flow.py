r"""One conditional flow shared by the members of a plate (amortized hierarchical VI).

A hierarchical model's group effects :math:`\theta_j`, :math:`j = 1..N`, inside a plate
under global latents :math:`z_g` (such as :math:`\mu, \tau`) are conditionally
independent given :math:`z_g` in the posterior too, and the dependence that matters, the
funnel between :math:`\tau` and every :math:`\theta_j`, is one function of :math:`z_g`.
:class:`PlateFlow` guides them by

.. math::
    q(x_{1:N} \mid z_g) = \prod_{j=1}^{N} q(x_j \mid z_g), \qquad
    x_j = m_j + e^{s_j} \odot g(u_j;\, c_j), \quad u_j \sim N(0, I), \quad
    c_j = (P z_g,\ e_j),

with :math:`x_j` member :math:`j`'s latents in unconstrained space (every site of the
plate, concatenated), :math:`g` a conditional IAF shared by all members (the identity at
the start), :math:`e_j` a learned per-member embedding, :math:`m_j, s_j` per-member
location and log-scale (so the family contains :class:`~pyro.infer.autoguide.AutoNormal`'s
factors) and :math:`P` the identity, or a learned projection to :data:`CONTEXT_GLOBALS`
coordinates where :math:`z_g` is longer. The network's parameters do not grow with
:math:`N`; each member holds :math:`2d + E` numbers, against AutoNormal's :math:`2d`.

:math:`\log q(x_j \mid z_g)` is exact (the change of variables through :math:`g`); the
members of a subsampled plate are drawn for the minibatch only, with their parameters
indexed by the plate's rows, and Pyro's plate scales their log-densities by
:math:`N/B`, so the minibatch ELBO is an unbiased estimate of the full data's.

A guide with plate flows does not stick the landing unless ``stl=True`` is passed: it
has no Laplace start, and sticking the landing costs an inverse pass per step, about 1.5
times the step, for a similar ELBO at equal seconds (``benchmarks/plate_defaults.py``).

References:
    A. Agrawal, J. Domke. Amortized Variational Inference for Simple Hierarchical
    Models. NeurIPS 2021, arXiv:2111.03144.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.transforms import biject_to
from pyro.distributions.util import sum_rightmost
from pyro.ops.tensor_utils import periodic_repeat
from torch import Tensor, nn

from flowguide.flows import Flow, FlowDistribution, iaf
from flowguide.flows.flow import detached_parameters
from flowguide.transforms import AffineTransform, ComposeFlowTransform

__all__ = ["CONTEXT_GLOBALS", "EMBEDDING_DIM", "MEMBER_TABLES", "MemberSite", "PlateFlow", "PlateFlowGuide"]

#: Length of a member's embedding :math:`e_j`.
EMBEDDING_DIM = 4
#: Global coordinates the context holds as they are; a longer :math:`z_g` is projected to this many.
CONTEXT_GLOBALS = 16


@dataclass(frozen=True)
class MemberSite:
    """Where one latent site's per-member values sit in a member's vector :math:`x_j`.

    Attributes:
        name: The site.
        support: Its support (``biject_to`` maps :math:`x_j`'s slice onto it).
        event_dim: The site's event dimensions (constrained).
        shape: One member's unconstrained shape, including the plate's singleton
            dimensions to the right of the plate (see :class:`PlateFlow`).
        start: Offset of the site's slice in :math:`x_j`.
        size: Length of the slice.
    """

    name: str
    support: constraints.Constraint
    event_dim: int
    shape: torch.Size
    start: int
    size: int


def _plate_frame(name: str, site: dict, plate: str):
    frames = [frame for frame in site["cond_indep_stack"] if frame.vectorized]
    if [frame.name for frame in frames] != [plate]:
        others = [frame.name for frame in frames if frame.name != plate]
        raise ValueError(
            f"latent site '{name}' is inside plate '{plate}' and also inside {others}: "
            f"local_plates serves sites whose only plate is the named one"
        )
    return frames[0]


class PlateFlow(nn.Module):
    r"""The amortized conditional flow of one plate's members (see the module docstring).

    Arguments:
        plate: The plate's name.
        sites: The plate's latent sites as traced in the prototype (values from
            ``init_loc_fn``, at the minibatch size where the plate is subsampled).
        global_dim: Length of the packed global latent :math:`z_g` (0 for none).
        init_scale: Initial scale :math:`e^{s_j}` in unconstrained space.
        num_flows: IAF layers of :math:`g`.
        hidden_dims: Hidden widths of :math:`g`'s conditioners.
        embedding_dim: Length :math:`E` of each member's embedding.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     tau = pyro.sample("tau", dist.HalfNormal(1.0))
        ...     with pyro.plate("groups", 50):
        ...         pyro.sample("theta", dist.Normal(0.0, tau))
        >>> trace = pyro.poutine.trace(model).get_trace()
        >>> flow = PlateFlow("groups", {"theta": trace.nodes["theta"]}, global_dim=1, init_scale=0.1)
        >>> flow.size, flow.member_dim, flow.context_dim
        (50, 1, 5)
    """

    def __init__(
        self,
        plate: str,
        sites: Mapping[str, dict],
        global_dim: int,
        init_scale: float,
        num_flows: int = 2,
        hidden_dims: tuple[int, ...] = (32, 32),
        embedding_dim: int = EMBEDDING_DIM,
    ) -> None:
        super().__init__()
        if not sites:
            raise ValueError(f"plate '{plate}' named in local_plates holds no latent site")
        self.plate = plate
        frames = {name: _plate_frame(name, site, plate) for name, site in sites.items()}
        frame = next(iter(frames.values()))
        self.size = frame.full_size if frame.full_size is not None else frame.size
        self.plate_dim = frame.dim
        self.members: list[MemberSite] = []
        locs = []
        for name, site in sites.items():
            member, loc = self._member(name, site, sum(m.size for m in self.members))
            self.members.append(member)
            locs.append(loc)
        self.member_dim = sum(member.size for member in self.members)
        self.global_dim = global_dim
        self.project = nn.Linear(global_dim, CONTEXT_GLOBALS) if global_dim > CONTEXT_GLOBALS else None
        self.context_dim = min(global_dim, CONTEXT_GLOBALS) + embedding_dim
        loc = torch.cat(locs, -1)
        self.loc = nn.Parameter(loc)
        self.log_scale = nn.Parameter(torch.full_like(loc, float(init_scale)).log())
        generator = torch.Generator().manual_seed(0)
        self.embedding = nn.Parameter(
            0.1 * torch.randn(self.size, embedding_dim, generator=generator).to(loc)
        )
        self.conditional: Flow = iaf(self.member_dim, num_flows, hidden_dims, context_dim=self.context_dim)

    def _member(self, name: str, site: dict, start: int) -> tuple[MemberSite, Tensor]:
        """A site's layout in :math:`x_j` and its members' initial unconstrained values ``(N, d)``."""
        fn = site["fn"]
        unconstrained = biject_to(fn.support).inv(site["value"].detach()).detach()
        event_dim = fn.event_dim + unconstrained.dim() - site["value"].dim()
        position = unconstrained.dim() - event_dim + self.plate_dim
        if position != 0:
            raise ValueError(
                f"latent site '{name}' has batch shape {tuple(site['value'].shape[: position + 1])} "
                f"with dimensions left of plate '{self.plate}' (dim {self.plate_dim}); local_plates "
                "serves sites whose batch shape is the plate's"
            )
        unconstrained = periodic_repeat(unconstrained, self.size, 0).contiguous()
        shape = unconstrained.shape[1:]
        member = MemberSite(name, fn.support, fn.event_dim, shape, start, shape.numel())
        return member, unconstrained.reshape(self.size, -1)

    # ------------------------------------------------------------------ the density
    def _context(self, global_latent: Tensor | None, rows: Tensor | None) -> Tensor:
        """Context rows :math:`c_j = (P z_g, e_j)`, ``(*batch, B, 1.., C)``, from a global
        latent whose batch shape is aligned with the plates (as a Pyro site's is)."""
        embedding = self.embedding if rows is None else self.embedding[rows]
        embedding = self._at_plate(embedding)
        if global_latent is None or not self.global_dim:
            return embedding
        glob = global_latent if self.project is None else self.project(global_latent)
        batch = torch.broadcast_shapes(glob.shape[:-1], embedding.shape[:-1])
        return torch.cat([glob.expand(*batch, -1), embedding.expand(*batch, -1)], -1)

    def align(self, global_latent: Tensor | None) -> Tensor | None:
        """Global latents ``(*batch, D_g)`` with a singleton for the plate and each dimension
        right of it, so that they broadcast against the members (``None`` stays ``None``)."""
        if global_latent is None:
            return None
        return global_latent.reshape(
            global_latent.shape[:-1] + (1,) * (-self.plate_dim) + global_latent.shape[-1:]
        )

    def _at_plate(self, rows: Tensor) -> Tensor:
        """``(B, k)`` per-member rows with the plate's singleton dimensions: ``(B, 1.., k)``."""
        return rows.reshape(rows.shape[:1] + (1,) * (-self.plate_dim - 1) + rows.shape[1:])

    def _transform(self, context: Tensor, rows: Tensor | None) -> ComposeFlowTransform:
        loc = self.loc if rows is None else self.loc[rows]
        log_scale = self.log_scale if rows is None else self.log_scale[rows]
        head = AffineTransform(self._at_plate(loc), self._at_plate(log_scale), event_dim=1)
        return ComposeFlowTransform([self.conditional.transform(context), head])

    def distribution(
        self, global_latent: Tensor | None, rows: Tensor | None = None, stl: bool = False
    ) -> FlowDistribution:
        r""":math:`q(x_j \mid z_g)` of the members ``rows`` (all where ``None``), batch shape
        ``(*batch, B, 1..)``, event shape ``(d,)``. With ``stl`` scoring its own draw
        holds this module's parameters fixed (the draw's path through :math:`z_g` and the
        parameters keeps its gradient)."""
        context = self._context(global_latent, rows)
        path = None
        if stl:
            path = functools.partial(self._detached_log_prob, global_latent, rows)
        base = self.conditional.base(context.shape[:-1])
        return FlowDistribution(base, self._transform(context, rows), path_log_prob=path)

    def _detached_log_prob(
        self, global_latent: Tensor | None, rows: Tensor | None, value: Tensor, noise: Tensor
    ) -> Tensor:
        with detached_parameters(self):
            context = self._context(global_latent, rows)
            u, ladj = self._transform(context, rows).inv_and_ladj(value)
            return self.conditional.base(context.shape[:-1]).log_prob(u) + ladj

    # ------------------------------------------------------------------ sites
    def sample(
        self, name: str, global_latent: Tensor | None, rows: Tensor | None, stl: bool
    ) -> dict[str, Tensor]:
        """Draw the members ``rows`` inside the plate (entered by the caller) and record
        each site; returns the constrained values by site name.

        The members' unconstrained vector is an auxiliary site ``name`` scored by the exact
        :math:`\\log q(x_j \\mid z_g)`; each site is a ``Delta`` carrying its constraint's
        log-Jacobian, as Pyro's ``AutoContinuous`` records its sites.
        """
        q = self.distribution(global_latent, rows, stl)
        x = pyro.sample(name, q, infer={"is_auxiliary": True})
        result = {}
        for member, value in self.split(x).items():
            transform = biject_to(member.support)
            constrained = transform(value)
            log_density = 0.0
            if poutine.get_mask() is not False:
                ladj = transform.inv.log_abs_det_jacobian(constrained, value)
                log_density = sum_rightmost(ladj, ladj.dim() - constrained.dim() + member.event_dim)
            delta = dist.Delta(constrained, log_density=log_density, event_dim=member.event_dim)
            result[member.name] = pyro.sample(member.name, delta)
        return result

    def split(self, x: Tensor) -> dict[MemberSite, Tensor]:
        """Cut members' vectors ``(*batch, B, 1.., d)`` into each site's unconstrained values."""
        batch = x.shape[: x.dim() + self.plate_dim]  # up to and including the plate's dimension
        return {
            member: x[..., member.start : member.start + member.size].reshape(batch + member.shape)
            for member in self.members
        }

    def join(self, values: Mapping[str, Tensor], batch_dims: int) -> tuple[Tensor, Tensor]:
        """Members' unconstrained vectors ``(*batch, N, 1.., d)`` from constrained full-size
        values, with the constraints' inverse log-Jacobians summed per batch entry."""
        parts, log_jacobian = [], 0.0
        for member in self.members:
            value = values[member.name]
            transform = biject_to(member.support)
            unconstrained = transform.inv(value)
            ladj = transform.inv.log_abs_det_jacobian(value, unconstrained)
            log_jacobian = log_jacobian + sum_rightmost(ladj, ladj.dim() - batch_dims)
            per_member = unconstrained.reshape(
                value.shape[:batch_dims] + (self.size,) + (1,) * (-self.plate_dim - 1) + (-1,)
            )
            parts.append(per_member)
        return torch.cat(parts, -1), log_jacobian

    def log_density(
        self, values: Mapping[str, Tensor], global_latent: Tensor | None, batch_dims: int
    ) -> Tensor:
        r""":math:`\sum_j \log q(x_j \mid z_g)` of full-size constrained values (global
        latents ``(*batch, D_g)``), with the constraints' log-Jacobians, summed over all but
        the leading ``batch_dims``."""
        x, log_jacobian = self.join(values, batch_dims)
        log_q = self.distribution(self.align(global_latent)).log_prob(x)
        return sum_rightmost(log_q, log_q.dim() - batch_dims) + log_jacobian

    @torch.no_grad()
    def draws(
        self,
        global_latent: Tensor | None,
        num_samples: int,
        antithetic: bool = False,
        seed: int | None = None,
    ) -> dict[str, Tensor]:
        """Constrained draws ``(S, *full_shape)`` of every member given global draws
        ``(S, D_g)`` (or ``None``); ``antithetic`` pairs each member draw :math:`u` with
        :math:`-u`, as the global draws of the summaries are paired."""
        context = self._context(self.align(global_latent), None)
        context = context.expand((num_samples, *context.shape[-(1 - self.plate_dim) :]))
        generator = None if seed is None else torch.Generator(device=self.loc.device).manual_seed(seed)
        count = -(-num_samples // 2) if antithetic else num_samples
        shape = (count, *context.shape[1:-1], self.member_dim)
        u = torch.randn(shape, generator=generator, device=self.loc.device, dtype=self.loc.dtype)
        u = torch.cat([u, -u])[:num_samples] if antithetic else u
        x = self._transform(context, None)(u)
        return {member.name: biject_to(member.support)(value) for member, value in self.split(x).items()}


#: The per-member tables of a :class:`PlateFlow`: each entry moves only when its member
#: is in the minibatch, so they keep the full learning rate under a recipe's decay.
MEMBER_TABLES = ("loc", "log_scale", "embedding")


class PlateFlowGuide:
    """Mixin: the plate flows of a flow autoguide's ``local_plates``.

    The guide supplies ``plan`` (a :class:`~flowguide.autoguide.sites.SitePlan` with
    ``members``), ``latent_dim``, ``init_scale``, ``local_plates``, ``plates`` (Pyro's,
    created per call), ``_pyro_name``, ``uses_stl`` and ``_sticks_the_landing``, and sets
    ``plate_flows = None`` in its constructor (one :class:`PlateFlow` per plate of
    ``local_plates`` after set-up).
    """

    def _setup_plate_flows(self) -> None:
        members = self.plan.members
        if members:
            dim, scale = self.latent_dim, self.init_scale
            flows = {plate: PlateFlow(plate, sites, dim, scale) for plate, sites in members.items()}
            self.plate_flows = nn.ModuleDict(flows)

    @property
    def plate_sites(self) -> dict[str, tuple[str, ...]]:
        """The latent sites each plate flow serves, by plate (empty without ``local_plates``)."""
        if self.plate_flows is None:
            return {}
        return {plate: tuple(m.name for m in flow.members) for plate, flow in self.plate_flows.items()}

    def _member_param_names(self) -> set[str]:
        prefix = f"{self._pyro_name}.plate_flows$$$" if self._pyro_name else "plate_flows$$$"
        flows = self.plate_flows or {}
        return {f"{prefix}{plate}.{table}" for plate in flows for table in MEMBER_TABLES}

    def _member_parameters(self) -> list[Tensor]:
        flows = self.plate_flows or {}
        return [getattr(flow, table) for flow in flows.values() for table in MEMBER_TABLES]

    def _sample_members(self, global_latent: Tensor | None) -> dict[str, Tensor]:
        """Draw every plate flow's members for this call, inside its plate."""
        result = {}
        for plate, flow in (self.plate_flows or {}).items():
            with self.plates[plate] as rows:
                subsampled = len(rows) != flow.size
                site = f"_{self._pyro_name}_{plate}_members"
                stl = self._sticks_the_landing(self.uses_stl)
                result.update(flow.sample(site, global_latent, rows if subsampled else None, stl))
        return result

    def _member_draws(
        self,
        global_latent: Tensor | None,
        num_samples: int,
        antithetic: bool = False,
        seed: int | None = None,
    ) -> dict[str, Tensor]:
        result = {}
        for flow in (self.plate_flows or {}).values():
            result.update(flow.draws(global_latent, num_samples, antithetic, seed))
        return result

    def _member_log_density(
        self, values: Mapping[str, Tensor], global_latent: Tensor | None, batch_dims: int
    ) -> Tensor | float:
        total: Tensor | float = 0.0
        for flow in (self.plate_flows or {}).values():
            total = total + flow.log_density(values, global_latent, batch_dims)
        return total
