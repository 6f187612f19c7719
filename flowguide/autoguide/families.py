r"""The flow autoguides by family: one builder and one measured recipe each.

Each class is :class:`~flowguide.autoguide.AutoFlow` with a flow builder from
:mod:`flowguide.flows` and the :class:`~flowguide.autoguide.recipe.Recipe` measured for it
(``benchmarks/fit_quality.py`` for fit quality, ``benchmarks/guides_vs_pyro.py --part
speed`` for the cost of sticking the landing; the guides page of the docs has the
tables).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from flowguide.autoguide.guides import AutoFlow
from flowguide.autoguide.recipe import Recipe
from flowguide.flows import Mixing, Structure, affine_coupling_flow, iaf, neural_spline_flow, planar_flow

__all__ = ["AutoAffineCoupling", "AutoIAF", "AutoNeuralSpline", "AutoPlanarFlow"]

#: A latent dimension no model reaches: sticking the landing at every dimension.
UNBOUNDED = 2**62


class AutoPlanarFlow(AutoFlow):
    r"""Flow autoguide with ``num_flows`` planar layers (Rezende & Mohamed, 2015).

    Cheapest per layer (:math:`O(D)` parameters); each layer bends the density along one
    direction, so it suits low-dimensional or nearly Gaussian posteriors. Its recipe
    keeps the rate constant (a decay stopped the layers short of the posterior) and
    sticks the landing at every dimension (the planar inverse is a 1-D root find per
    layer). Keep Adam's rate at 0.02 or below, or pass ``stl=False``: at larger rates
    with one particle, the path gradient bends the layers away from the fit.

    Arguments:
        model: A Pyro model.
        num_flows: Number of flow layers.
        **options: ``init_loc_fn``, ``init_scale``, ``num_summary_samples``, ``affine``,
            ``warm_start``, ``stl``, ``subsampled_sites``, ``create_plates`` and
            ``recipe`` as in :class:`~flowguide.autoguide.AutoFlow`.

    References:
        D. J. Rezende, S. Mohamed. Variational Inference with Normalizing Flows. ICML 2015,
        arXiv:1505.05770.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        >>> guide = AutoPlanarFlow(model).setup()
        >>> guide()["z"].shape
        torch.Size([3])
    """

    recipe = Recipe(lr_decay=None, grad_clamp=None, stl_max_dim=UNBOUNDED)

    def __init__(self, model: Callable, *, num_flows: int = 8, **options: Any) -> None:
        super().__init__(model, functools.partial(planar_flow, num_flows=num_flows), **options)


class AutoIAF(AutoFlow):
    r"""Flow autoguide of inverse autoregressive layers (Kingma et al., 2016).

    Sampling (what training does) is one MADE pass per layer; :meth:`log_density` at
    arbitrary points takes :math:`D` passes, so its recipe sticks the landing only up to
    :math:`D = 32`, where the inverse pass costs little (``benchmarks/guides_vs_pyro.py
    --part speed``). Scales are soft-clamped.

    Arguments:
        model: A Pyro model.
        num_flows: Number of flow layers.
        hidden_dims: Hidden widths of each layer's conditioner; default (64, 64) up to
            512 latent coordinates and bounded above (:func:`~flowguide.flows.conditioner_widths`).
        mixing: Layer between flows (``"reverse"``, ``"random"``, ``"lu"``, ``"householder"``,
            ``"none"``).
        log_scale_bound: Bound :math:`b` of each layer's soft-clamped log-scale; the
            default :math:`\min(3, 12 / \text{num\_flows})` caps what the layers' scales
            can compound to at :math:`e^{12}`, so deep stacks stay finite on Neal's
            funnel (``test_eight_iaf_layers_train_on_the_funnel``).
        **options: ``init_loc_fn``, ``init_scale``, ``num_summary_samples``, ``affine``,
            ``warm_start``, ``stl``, ``subsampled_sites``, ``create_plates`` and
            ``recipe`` as in :class:`~flowguide.autoguide.AutoFlow`.

    References:
        D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever, M. Welling.
        Improving Variational Inference with Inverse Autoregressive Flow. NeurIPS 2016,
        arXiv:1606.04934.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
        >>> guide = AutoIAF(model, num_flows=2).setup()
        >>> bool(guide()["s"] > 0)
        True
    """

    recipe = Recipe(stl_max_dim=32)

    def __init__(
        self,
        model: Callable,
        *,
        num_flows: int = 4,
        hidden_dims: Sequence[int] | None = None,
        mixing: Mixing = "reverse",
        log_scale_bound: float | None = None,
        **options: Any,
    ) -> None:
        if log_scale_bound is None:
            log_scale_bound = min(3.0, 12.0 / max(num_flows, 1))
        flow = functools.partial(
            iaf,
            num_flows=num_flows,
            hidden_dims=None if hidden_dims is None else tuple(hidden_dims),
            mixing=mixing,
            log_scale_bound=log_scale_bound,
        )
        super().__init__(model, flow, **options)


class AutoNeuralSpline(AutoFlow):
    r"""Flow autoguide of rational-quadratic spline layers (Durkan et al., 2019).

    The most flexible elementwise map; the affine head after the splines puts the
    posterior where it belongs, so the splines only act on standardized coordinates. Its
    recipe sticks the landing exactly after a successful Laplace start (from a cold
    start the path gradient through the spline inverse is heavy-tailed and stalled the
    fit), stores the spline layers' parameters in unit 0.1 (at large constant rates
    their full-rate steps bent the splines off the fit) and decays the rate to 10%.

    Arguments:
        model: A Pyro model.
        num_flows: Number of flow layers.
        hidden_dims: Hidden widths of each layer's conditioner; default (64, 64) up to
            512 latent coordinates and bounded above (:func:`~flowguide.flows.conditioner_widths`).
        structure: ``"coupling"`` (both directions one pass) or ``"autoregressive"``.
        bins: Spline bins per coordinate.
        bound: Half-width of the spline interval in standardized coordinates.
        mixing: Layer between flows (``"reverse"``, ``"random"``, ``"lu"``, ``"householder"``,
            ``"none"``).
        min_bin: Smallest bin width and height, as a fraction of :math:`2B`.
        min_derivative: Smallest knot derivative. The defaults (0.01 and 0.1, against
            1e-3 for bare flows) bound the slopes, and so the path gradient through the
            inverse that sticking the landing needs.
        **options: ``init_loc_fn``, ``init_scale``, ``num_summary_samples``, ``affine``,
            ``warm_start``, ``stl``, ``subsampled_sites``, ``create_plates`` and
            ``recipe`` as in :class:`~flowguide.autoguide.AutoFlow`.

    References:
        C. Durkan, A. Bekasov, I. Murray, G. Papamakarios. Neural Spline Flows. NeurIPS
        2019, arXiv:1906.04032.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("p", dist.Beta(2.0, 3.0))
        >>> guide = AutoNeuralSpline(model).setup()
        >>> 0 < float(guide.median()["p"]) < 1
        True
    """

    recipe = Recipe(lr_decay=0.1, core_unit=0.1, stl_max_dim=0, stl_when_warm=True)

    def __init__(
        self,
        model: Callable,
        *,
        num_flows: int = 4,
        hidden_dims: Sequence[int] | None = None,
        structure: Structure = "coupling",
        bins: int = 8,
        bound: float = 5.0,
        mixing: Mixing = "reverse",
        min_bin: float = 0.01,
        min_derivative: float = 0.1,
        **options: Any,
    ) -> None:
        flow = functools.partial(
            neural_spline_flow,
            num_flows=num_flows,
            hidden_dims=None if hidden_dims is None else tuple(hidden_dims),
            structure=structure,
            bins=bins,
            bound=bound,
            mixing=mixing,
            min_bin=min_bin,
            min_derivative=min_derivative,
        )
        super().__init__(model, flow, **options)


class AutoAffineCoupling(AutoFlow):
    r"""Flow autoguide of RealNVP affine coupling layers (Dinh et al., 2017).

    Both sampling and scoring are one pass per layer, so its recipe sticks the landing
    at every dimension; scales are soft-clamped.

    Arguments:
        model: A Pyro model.
        num_flows: Number of flow layers.
        hidden_dims: Hidden widths of each layer's conditioner; default (64, 64) up to
            512 latent coordinates and bounded above (:func:`~flowguide.flows.conditioner_widths`).
        mixing: Layer between flows (``"reverse"``, ``"random"``, ``"lu"``, ``"householder"``,
            ``"none"``).
        log_scale_bound: Bound :math:`b` of each layer's soft-clamped log-scale. At the
            default 1.5 the layers' scales compound to at most
            :math:`e^{1.5\,\text{num\_flows}}`; larger bounds overflowed at large
            learning rates (``test_affine_coupling_defaults_survive_a_large_learning_rate``).
        **options: ``init_loc_fn``, ``init_scale``, ``num_summary_samples``, ``affine``,
            ``warm_start``, ``stl``, ``subsampled_sites``, ``create_plates`` and
            ``recipe`` as in :class:`~flowguide.autoguide.AutoFlow`.

    References:
        L. Dinh, J. Sohl-Dickstein, S. Bengio. Density Estimation using Real NVP. ICLR
        2017, arXiv:1605.08803.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0).expand([2, 2]).to_event(2))
        >>> guide = AutoAffineCoupling(model).setup()
        >>> guide.quantiles([0.1, 0.9])["z"].shape
        torch.Size([2, 2, 2])
    """

    recipe = Recipe(stl_max_dim=UNBOUNDED)

    def __init__(
        self,
        model: Callable,
        *,
        num_flows: int = 4,
        hidden_dims: Sequence[int] | None = None,
        mixing: Mixing = "reverse",
        log_scale_bound: float = 1.5,
        **options: Any,
    ) -> None:
        flow = functools.partial(
            affine_coupling_flow,
            num_flows=num_flows,
            hidden_dims=None if hidden_dims is None else tuple(hidden_dims),
            mixing=mixing,
            log_scale_bound=log_scale_bound,
        )
        super().__init__(model, flow, **options)
