r"""Which latent sites a flow autoguide serves, which are local, their shapes, and every refusal.

A flow has a fixed dimension, so the guide splits the model's latent sites in two:

- the **flow's sites**, packed into one unconstrained vector of length ``latent_dim``
  through ``biject_to`` of each site's support (as Pyro's
  :class:`~pyro.infer.autoguide.AutoContinuous` packs them);
- the **local sites**, inside a plate subsampled at set-up, which follow the minibatch
  and get per-datum factors (:class:`~flowguide.autoguide.local.LocalNormal`).

:class:`SitePlan` records that split and the shapes, unpacks latent vectors into site
values, packs values back for scoring, and refuses what the guide cannot serve with a
message that names the site: discrete latents, local sites the user asked to refuse,
sites whose shape changed since set-up, plates whose rows the guide could not follow.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions.transforms import biject_to
from pyro.distributions.util import sum_rightmost
from pyro.infer.autoguide.guides import prototype_hide_fn
from pyro.infer.autoguide.initialization import init_to_median
from pyro.infer.autoguide.utils import helpful_support_errors
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import Tensor

__all__ = [
    "SitePlan",
    "SubsampledSites",
    "flat_start",
    "full_shape",
    "hide_enumerated",
    "init_to_median_or_flat",
    "is_flat",
    "is_local",
    "subsampled_plates",
]

#: What a flow autoguide does with latent sites inside a plate subsampled at set-up.
SubsampledSites = Literal["normal", "error"]


def subsampled_plates(site: dict) -> list:
    """The frames of a traced site's plates that are subsampled (size below full size).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     with pyro.plate("data", 100, subsample_size=10), pyro.plate("k", 3, dim=-2):
        ...         pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> [frame.name for frame in subsampled_plates(pyro.poutine.trace(model).get_trace().nodes["z"])]
        ['data']
    """
    return [f for f in site["cond_indep_stack"] if f.full_size is not None and f.full_size != f.size]


def is_local(site: dict) -> bool:
    """Whether a traced sample site lies inside a subsampled plate.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     with pyro.plate("data", 100, subsample_size=10):
        ...         pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> is_local(pyro.poutine.trace(model).get_trace().nodes["z"])
        True
    """
    return bool(subsampled_plates(site))


def full_shape(site: dict) -> torch.Size:
    """A traced site's value shape with each subsampled plate's dimension at its full size.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> def model():
        ...     with pyro.plate("data", 100, subsample_size=10):
        ...         pyro.sample("p", dist.Dirichlet(torch.ones(3)))
        >>> site = pyro.poutine.trace(model).get_trace().nodes["p"]
        >>> tuple(site["value"].shape), tuple(full_shape(site))
        ((10, 3), (100, 3))
    """
    shape = list(site["value"].shape)
    for frame in subsampled_plates(site):
        shape[len(shape) + frame.dim - site["fn"].event_dim] = frame.full_size
    return torch.Size(shape)


def hide_enumerated(msg: dict) -> bool:
    """Pyro's prototype filter, also hiding sites enumerated in parallel (left to ``TraceEnum_ELBO``)."""
    return prototype_hide_fn(msg) or msg["infer"].get("enumerate") == "parallel"


def signature(value: Any) -> Any:
    """A hashable summary of the model arguments that can change site shapes."""
    if isinstance(value, Tensor):
        return ("tensor", tuple(value.shape))
    if isinstance(value, (int, float, bool, str, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(signature(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, signature(v)) for k, v in value.items()))
    return type(value).__name__


def shape_text(site: dict | None) -> str:
    """A site's shape for messages: its full shape, and whether a subsampled plate holds it."""
    if site is None:
        return "missing"
    shape = tuple(full_shape(site))
    return f"{shape} (a minibatch of a subsampled plate)" if is_local(site) else str(shape)


class _SubsampleSources(Messenger):
    """Records, for each plate's subsample site, whether the model chose the rows
    (``subsample=``, the value is set before sampling) or the plate draws them."""

    def __init__(self) -> None:
        super().__init__()
        self.chosen: dict[str, bool] = {}

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and site_is_subsample(msg):
            self.chosen[msg["name"]] = msg["value"] is not None


def is_flat(fn: dist.Distribution) -> bool:
    """Whether ``fn`` is an improper flat prior (``ImproperUniform``, possibly wrapped by
    ``expand`` or ``to_event``), which has a density but no draws.

    Example:
        >>> import pyro.distributions as dist
        >>> from pyro.distributions import constraints
        >>> is_flat(dist.ImproperUniform(constraints.real, (3,), ()).to_event(1))
        True
        >>> is_flat(dist.Normal(0.0, 1.0))
        False
    """
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution)):
        fn = fn.base_dist
    return isinstance(fn, dist.ImproperUniform)


def flat_start(fn: dist.Distribution) -> Tensor:
    """A flat prior's start: the image of zero under ``biject_to(support)`` (Pyro's
    ``init_to_feasible`` point, which it finds by drawing, and a flat prior has no draws).

    Example:
        >>> import pyro.distributions as dist
        >>> from pyro.distributions import constraints
        >>> flat_start(dist.ImproperUniform(constraints.positive, (2,), ()))
        tensor([1., 1.])
    """
    to_support = biject_to(fn.support)
    return to_support(torch.zeros(to_support.inverse_shape(fn.batch_shape + fn.event_shape)))


def init_to_median_or_flat(site: dict) -> Tensor:
    """The guides' default start: Pyro's ``init_to_median``, and at a flat-prior site
    (no draws to take a median of) :func:`flat_start`.

    Example:
        >>> import pyro.distributions as dist
        >>> from pyro.distributions import constraints
        >>> init_to_median_or_flat({"name": "beta", "fn": dist.ImproperUniform(constraints.real, (), (2,))})
        tensor([0., 0.])
    """
    return flat_start(site["fn"]) if is_flat(site["fn"]) else init_to_median(site)


class _FlatStarts(Messenger):
    """Gives each unobserved flat-prior site its :func:`flat_start` where it would be drawn
    (a flat prior cannot be sampled; the survey needs only the site's shape and support)."""

    def _pyro_sample(self, msg: dict) -> None:
        if msg["value"] is None and not msg["is_observed"] and is_flat(msg["fn"]):
            msg["value"] = flat_start(msg["fn"])


class ModelSurvey:
    """The model traced once with nothing hidden (observed and subsample sites too), and
    which plates' rows the model chose; traced on first use, leaving the user's random
    stream as a cold start would. Lives only during set-up (the guide is pickled and
    moved without it)."""

    def __init__(self, model: Callable, args: tuple, kwargs: dict) -> None:
        self._call = (model, args, kwargs)
        self._result: tuple[poutine.Trace, dict[str, bool]] | None = None

    def _traced(self) -> tuple[poutine.Trace, dict[str, bool]]:
        if self._result is None:
            model, args, kwargs = self._call
            sources = _SubsampleSources()
            with torch.random.fork_rng(devices=[]), poutine.block(), sources, _FlatStarts():
                trace = poutine.trace(model).get_trace(*args, **kwargs)
            self._result = (trace, sources.chosen)
        return self._result

    @property
    def trace(self) -> poutine.Trace:
        """The whole model's trace."""
        return self._traced()[0]

    @property
    def chosen(self) -> dict[str, bool]:
        """Subsample site name to whether the model chose its rows (``subsample=``)."""
        return self._traced()[1]

    def has_sites(self) -> bool:
        """Whether the model has any sample or param site."""
        return any(site["type"] in ("sample", "param") for site in self.trace.nodes.values())

    def subsamples(self) -> bool:
        """Whether the model subsamples a plate (of latent or of observed sites)."""
        return any(is_local(site) for site in self.trace.nodes.values() if site["type"] == "sample")


def check_sites(
    trace: poutine.Trace, owner: str, subsampled_sites: SubsampledSites, member_plates: Collection[str] = ()
) -> None:
    """Refuse discrete latent sites, and local ones outside ``member_plates`` where
    ``subsampled_sites="error"``."""
    for name, site in trace.iter_stochastic_nodes():
        if site["fn"].support.is_discrete:
            raise ValueError(
                f"{owner} cannot serve discrete latent site '{name}': enumerate it "
                f"(infer={{'enumerate': 'parallel'}} with TraceEnum_ELBO, see "
                "https://pyro.ai/examples/enumeration.html) or hide it with "
                f"poutine.block(model, hide=['{name}'])"
            )
        if subsampled_sites != "error" or any(f.name in member_plates for f in site["cond_indep_stack"]):
            continue
        for frame in subsampled_plates(site):
            raise ValueError(
                f"{owner} cannot serve latent site '{name}' inside plate '{frame.name}', "
                f"which is subsampled ({frame.size} of {frame.full_size}): a joint flow would "
                "share one density across minibatches, and subsampled_sites='error'. Pass "
                "subsampled_sites='normal' for per-datum factors, or guide local latents with "
                "an amortized guide (flowguide.models.AmortizedLocalGuide) and keep global latents here."
            )


def check_observed(survey: ModelSurvey, owner: str) -> None:
    """Refuse observed values the site's distribution cannot score (a ``torch.bool`` tensor
    under a continuous or Bernoulli likelihood fails deep inside torch), naming the site."""
    for name, site in survey.trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"] or not isinstance(site["value"], Tensor):
            continue
        if site["value"].dtype != torch.bool:
            continue
        try:
            site["fn"].log_prob(site["value"])
        except (RuntimeError, TypeError) as error:
            raise TypeError(
                f"{owner}: observed site '{name}' holds a torch.bool value, which "
                f"{type(site['fn']).__name__} cannot score ({str(error).splitlines()[0][:80]}); "
                "cast the data, e.g. x.float()"
            ) from error


def check_local_plates(local: dict[str, dict], survey: ModelSurvey, given: set[str], owner: str) -> None:
    """Refuse a local site whose plate takes its minibatch from the model's arguments
    (``subsample=index``) when ``create_plates`` does not give the guide that plate
    (``given``): the guide's plate would draw other rows than the model scores, silently."""
    plates = {frame.name for site in local.values() for frame in subsampled_plates(site)}
    if not plates:
        return
    drawn = {name for name, model_chose in survey.chosen.items() if not model_chose}
    for name in sorted(plates - drawn - given):
        raise ValueError(
            f"{owner}: plate '{name}' of a local latent site takes its minibatch from the "
            "model's arguments (subsample=...), so the guide's own plate would draw other rows; pass "
            f"create_plates=, a function of the model's arguments returning pyro.plate('{name}', ..., "
            "subsample=...) with the same rows"
        )


class SitePlan:
    r"""The split of a model's latent sites between the flow and the per-datum factors.

    Built at set-up from the guide's prototype trace, from which it removes the local
    sites, so the trace then holds the flow's sites only (what Pyro's ``AutoContinuous``
    template methods iterate over).

    Arguments:
        trace: The prototype trace (values from ``init_loc_fn``); modified in place.
        owner: The guide's class name, for messages.
        member_plates: Plates whose latent sites the plate flows serve
            (:class:`~flowguide.autoguide.plate_flow.PlateFlow`, ``local_plates``).

    Attributes:
        members: For each of ``member_plates``, its latent sites by name, as traced.
        local: Local sites (inside a plate subsampled at set-up, not in ``member_plates``)
            by name, as traced.
        unconstrained_shapes: Each flow site's shape in unconstrained space.
        cond_indep_stacks: Each flow site's plates.
        latent_dim: Length of the packed unconstrained vector of the flow's sites.
    """

    def __init__(self, trace: poutine.Trace, owner: str, member_plates: Collection[str] = ()) -> None:
        self.owner = owner
        self.members: dict[str, dict[str, dict]] = {plate: {} for plate in member_plates}
        for name, site in trace.iter_stochastic_nodes():
            for frame in site["cond_indep_stack"]:
                if frame.name in self.members:
                    self.members[frame.name][name] = site
        member_sites = {name for sites in self.members.values() for name in sites}
        self.local = {
            name: site
            for name, site in trace.iter_stochastic_nodes()
            if is_local(site) and name not in member_sites
        }
        for name in [*self.local, *member_sites]:
            trace.remove_node(name)
        self.trace = trace
        self.unconstrained_shapes: dict[str, torch.Size] = {}
        self.cond_indep_stacks: dict[str, tuple] = {}
        for name, site in trace.iter_stochastic_nodes():
            with helpful_support_errors(site):
                self.unconstrained_shapes[name] = biject_to(site["fn"].support).inv(site["value"]).shape
            self.cond_indep_stacks[name] = site["cond_indep_stack"]
        self.latent_dim = sum(shape.numel() for shape in self.unconstrained_shapes.values())
        self._known_signatures: set = set()

    def flow_sites(self) -> Iterator[tuple[str, dict]]:
        """The flow's sites as ``(name, prototype site)``, in packing order."""
        return self.trace.iter_stochastic_nodes()

    def all_sites(self) -> list[tuple[str, dict]]:
        """The flow's sites, then the local ones and the plate flows', as ``(name, prototype site)``."""
        members = [item for sites in self.members.values() for item in sites.items()]
        return [*self.flow_sites(), *self.local.items(), *members]

    def full_size_sites(self) -> dict[str, dict]:
        """The sites served at their plates' full size: the local ones and the plate flows'."""
        return {
            **self.local,
            **{name: site for sites in self.members.values() for name, site in sites.items()},
        }

    def init_latent(self) -> Tensor:
        """The packed unconstrained vector of the prototype's (``init_loc_fn``) values."""
        parts = [
            biject_to(site["fn"].support).inv(site["value"].detach()).reshape(-1)
            for _, site in self.flow_sites()
        ]
        return torch.cat(parts)

    def constrain(self, latent: Tensor) -> dict[str, Tensor]:
        """Unpack latents of shape ``(N, D)`` into constrained values ``(N, *site_shape)``."""
        result, pos = {}, 0
        for name, site in self.flow_sites():
            shape = self.unconstrained_shapes[name]
            value = latent[:, pos : pos + shape.numel()].reshape(latent.shape[:1] + shape)
            result[name] = biject_to(site["fn"].support)(value)
            pos += shape.numel()
        return result

    def unconstrain(
        self, values: dict[str, Tensor], batch: torch.Size
    ) -> tuple[Tensor | None, Tensor | float]:
        """Pack constrained values of the flow's sites (batch shape ``batch``) into
        unconstrained vectors ``(*batch, D)`` (``None`` without flow sites), with the sum of
        the constraints' inverse log-Jacobians."""
        log_jacobian: Tensor | float = 0.0
        parts = []
        for name, site in self.flow_sites():
            transform = biject_to(site["fn"].support)
            unconstrained = transform.inv(values[name])
            ladj = transform.inv.log_abs_det_jacobian(values[name], unconstrained)
            log_jacobian = log_jacobian + sum_rightmost(ladj, ladj.dim() - len(batch))
            parts.append(unconstrained.reshape(*batch, -1))
        return (torch.cat(parts, -1) if parts else None), log_jacobian

    def value_batch(self, values: dict[str, Tensor]) -> torch.Size:
        """The batch shape shared by ``values`` of every latent site (local ones at their
        plates' full size); refuses a missing value, a wrong or a mismatched shape."""
        batches = {name: _value_batch(values, name, site) for name, site in self.all_sites()}
        batch = next(iter(batches.values()), torch.Size())
        for name, site_batch in batches.items():
            if site_batch != batch:
                raise ValueError(f"site '{name}' has batch shape {tuple(site_batch)}, others {tuple(batch)}")
        return batch

    def remember(self, args: tuple, kwargs: dict) -> None:
        """Record model arguments whose shapes this plan serves."""
        self._known_signatures.add(signature((args, kwargs)))

    def check_shapes(self, model: Callable | None, args: tuple, kwargs: dict) -> None:
        """Re-trace the model when its arguments change shape; refuse changed sites."""
        key = signature((args, kwargs))
        if key in self._known_signatures or torch._C._get_tracing_state():
            return
        if model is None:
            raise RuntimeError(
                f"{self.owner} was unpickled without its model and got arguments of new shapes; "
                "build a new guide for the model to check them"
            )
        hidden = poutine.block(model, hide_enumerated)
        trace = poutine.block(poutine.trace(hidden).get_trace)(*args, **kwargs)
        for name, site in self.all_sites():
            now = trace.nodes.get(name)
            if now is None or not self._serves(name, site, now):
                raise ValueError(
                    f"{self.owner}: latent site '{name}' changed shape from "
                    f"{shape_text(site)} at setup to {shape_text(now)}; build a new guide for new shapes"
                )
        self._known_signatures.add(key)

    def _serves(self, name: str, setup: dict, now: dict) -> bool:
        """Whether site ``name`` as traced ``now`` is the one set up: a local site of any
        minibatch size (the whole plate included) with the same full shape, or a flow site
        of the same shape outside subsampled plates."""
        if name in self.full_size_sites():
            return full_shape(now) == full_shape(setup)
        return not is_local(now) and now["value"].shape == setup["value"].shape


def _value_batch(values: dict[str, Tensor], name: str, site: dict) -> torch.Size:
    """The batch shape of ``values[name]`` given the site's (full) shape."""
    if name not in values:
        raise ValueError(f"log_density needs a value for latent site '{name}'")
    value, shape = values[name], full_shape(site)
    if value.shape[value.dim() - len(shape) :] != shape:
        expected = ", ".join(map(str, shape))
        raise ValueError(f"site '{name}' must have shape (..., {expected}), got {tuple(value.shape)}")
    return value.shape[: value.dim() - len(shape)]


def given_plates(made: Any) -> set[str]:
    """Names of the plates a ``create_plates`` call returned (one plate or several)."""
    return {plate.name for plate in ([made] if isinstance(made, pyro.plate) else made)}
