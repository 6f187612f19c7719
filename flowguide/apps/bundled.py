r"""The models a guide comparison runs on: synthetic geometries and three real-data posteriors.

Every bundled model exposes the same interface (:class:`BundledModel`): ``model(*args)`` is a
Pyro model, ``args`` the data to call it with, ``name`` and a one-line ``description``,
``pairs`` the two-dimensional slices worth a pair plot (each a pair of ``(site, flat_index)``
tuples), ``observed`` the observed sites (for ArviZ ``observed_data``) and ``log_z`` the exact
log-evidence where it is known, else ``None``. Plates are named, so ArviZ dims follow from them.

:data:`BUNDLED_MODELS` maps a name to a constructor and :func:`bundled_model` builds one:

=================  =================================================================
name               model
=================  =================================================================
``funnel``         Neal's funnel in 10 dimensions (:class:`~.exact.Funnel`)
``banana``         a curved 2-D density (:class:`~.exact.BananaModel`)
``eight_schools``  :class:`EightSchools`, centered
``logistic``       :class:`BreastCancerLogistic`, on scikit-learn's breast cancer data
``hierarchical``   :class:`DiabetesHierarchical`, on scikit-learn's diabetes data
=================  =================================================================

Example:
    >>> from pyro import poutine
    >>> case = bundled_model("eight_schools")
    >>> trace = poutine.trace(case.model).get_trace(*case.args)
    >>> tuple(trace.nodes["theta"]["value"].shape), trace.nodes["theta"]["cond_indep_stack"][0].name
    ((8,), 'school')
    >>> case.pairs[1]
    (('mu', 0), ('tau', 0))
    >>> bundled_model("logistic").observed["y"].shape
    torch.Size([569])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from flowguide._extras import require
from flowguide.apps.exact import BananaModel, Funnel

_EMPTY = torch.Size()

__all__ = [
    "BUNDLED_MODELS",
    "BreastCancerLogistic",
    "BundledModel",
    "DiabetesHierarchical",
    "EightSchools",
    "ExactModelView",
    "GaussianMixture",
    "Pair",
    "TwoModes",
    "bundled_model",
]

Pair = tuple[tuple[str, int], tuple[str, int]]
"""Two ``(site_name, flat_index)`` coordinates to plot against each other."""


class BundledModel(Protocol):
    """The interface every entry of :data:`BUNDLED_MODELS` builds."""

    name: str
    description: str

    @property
    def args(self) -> tuple: ...

    @property
    def pairs(self) -> list[Pair]: ...

    @property
    def observed(self) -> dict[str, Tensor]: ...

    @property
    def log_z(self) -> float | None: ...

    def model(self, *args) -> None: ...


@dataclass
class ExactModelView:
    """A model from :mod:`flowguide.apps.exact` seen through the :class:`BundledModel` interface.

    ``model``, ``args`` and ``log_z`` are those of ``target``; it has no observed sites.

    Arguments:
        target: The wrapped model, e.g. :class:`~.exact.Funnel`.
        name: Registry name.
        description: One line for listings.
        pairs: Slices to show in pair plots.
    """

    target: BananaModel | Funnel
    name: str
    description: str
    pairs: list[Pair]

    @property
    def args(self) -> tuple:
        return self.target.args

    @property
    def log_z(self) -> float:
        return self.target.log_z

    @property
    def observed(self) -> dict[str, Tensor]:
        return {}

    def model(self, *args) -> None:
        self.target.model(*args)


@dataclass
class EightSchools:
    r"""The eight schools model in its centered parameterization.

    .. math::

        \mu \sim N(0, 5^2), \quad \tau \sim \mathrm{HalfCauchy}(5), \quad
        \theta_j \sim N(\mu, \tau^2), \quad y_j \sim N(\theta_j, \sigma_j^2), \quad j = 1, \dots, 8,

    with the effects :math:`y` and standard errors :math:`\sigma` of the coaching programmes in
    eight schools. Centered, :math:`\theta` must shrink towards :math:`\mu` as :math:`\tau \to 0`:
    the posterior is a funnel in :math:`(\theta, \log \tau)`, hard for Gaussian guides.

    Latent sites: ``mu`` ``()``, ``tau`` ``()`` (positive), ``theta`` ``(8,)`` in plate ``school``;
    observed: ``y`` ``(8,)``.

    Arguments:
        dtype: Floating type of ``args``.

    References:
        Estimation in parallel randomized experiments (Rubin, 1981), Journal of Educational
        Statistics 6(4).

        Bayesian Data Analysis, 3rd edition (Gelman et al., 2013), section 5.5.
    """

    dtype: torch.dtype = torch.float32
    name: str = field(default="eight_schools", init=False)
    description: str = field(default="Eight schools, centered: a funnel in (theta, tau)", init=False)
    log_z: float | None = field(default=None, init=False)

    y: tuple[float, ...] = field(default=(28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0), init=False)
    sigma: tuple[float, ...] = field(default=(15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0), init=False)

    @property
    def args(self) -> tuple[Tensor, Tensor]:
        return torch.tensor(self.sigma, dtype=self.dtype), torch.tensor(self.y, dtype=self.dtype)

    @property
    def pairs(self) -> list[Pair]:
        return [(("theta", 0), ("tau", 0)), (("mu", 0), ("tau", 0))]

    @property
    def observed(self) -> dict[str, Tensor]:
        return {"y": self.args[1]}

    def model(self, sigma: Tensor, y: Tensor | None = None) -> None:
        mu = pyro.sample("mu", dist.Normal(sigma.new_tensor(0.0), 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(sigma.new_tensor(5.0)))
        with pyro.plate("school", sigma.shape[-1]):
            theta = pyro.sample("theta", dist.Normal(mu, tau))
            pyro.sample("y", dist.Normal(theta, sigma), obs=y)


@dataclass
class BreastCancerLogistic:
    r"""Bayesian logistic regression on the Wisconsin diagnostic breast cancer data.

    .. math::

        w \sim N(0, I), \quad b \sim N(0, 5^2), \quad
        y_n \sim \mathrm{Bernoulli}(\mathrm{logit}^{-1}(x_n^\top w + b)), \quad n = 1, \dots, 569,

    where :math:`x_n` are the 30 features of scikit-learn's ``load_breast_cancer()``, each
    standardized to mean 0 and (population) standard deviation 1, and :math:`y_n = 1` for a
    benign tumour (357 of them), 0 for a malignant one (212). The features are strongly
    correlated, and so is the posterior of :math:`w`.

    Latent sites: ``w`` ``(num_features,)``, ``b`` ``()``; observed: ``y`` ``(569,)`` in plate
    ``data``.

    Arguments:
        num_features: Keep only the first ``num_features`` features (all 30 if ``None``).
        dtype: Floating type of ``args``.

    References:
        Nuclear feature extraction for breast tumor diagnosis (Street, Wolberg and Mangasarian,
        1993), Biomedical Image Processing and Biomedical Visualization, SPIE 1905.
    """

    num_features: int | None = None
    dtype: torch.dtype = torch.float32
    name: str = field(default="logistic", init=False)
    description: str = field(default="Logistic regression on breast cancer data (569 x 30)", init=False)
    log_z: float | None = field(default=None, init=False)
    x: Tensor = field(init=False, repr=False)
    y: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        data = require("sklearn.datasets", "the bundled breast cancer data").load_breast_cancer()
        x = torch.as_tensor(data.data, dtype=torch.float64)
        k = x.shape[-1] if self.num_features is None else self.num_features
        if not 1 <= k <= x.shape[-1]:
            raise ValueError(f"num_features must be in [1, {x.shape[-1]}], got {self.num_features}")
        self.x = _standardize(x[:, :k])
        self.y = torch.as_tensor(data.target, dtype=torch.float64)

    @property
    def args(self) -> tuple[Tensor, Tensor]:
        return self.x.to(self.dtype), self.y.to(self.dtype)

    @property
    def pairs(self) -> list[Pair]:
        pairs = [(("w", 0), ("w", 1)), (("b", 0), ("w", 0))]
        return pairs if self.x.shape[-1] > 1 else pairs[1:]

    @property
    def observed(self) -> dict[str, Tensor]:
        return {"y": self.y.to(self.dtype)}

    def model(self, x: Tensor, y: Tensor | None = None) -> None:
        w = pyro.sample("w", dist.Normal(x.new_zeros(x.shape[-1]), 1.0).to_event(1))
        b = pyro.sample("b", dist.Normal(x.new_tensor(0.0), 5.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=(x * w).sum(-1) + b), obs=y)


@dataclass
class DiabetesHierarchical:
    r"""Hierarchical linear regression of diabetes progression, partially pooled over six groups.

    Built from scikit-learn's ``load_diabetes()`` (442 patients, 10 features). The groups cross
    sex with age terciles: sex (column 1) takes two values, coded :math:`s = 0` where it is
    negative and 1 where positive; age (column 0) is cut at its 1/3 and 2/3 quantiles into
    :math:`a \in \{0, 1, 2\}` (a value on a cut goes up); the group is :math:`g = 2a + s`, giving
    90, 57, 84, 56, 61 and 94 patients. The other :math:`P = 8` features (columns 2 to 9) and the
    target are standardized to mean 0 and (population) standard deviation 1. Then

    .. math::

        \mu_\beta \sim N(0, I_P), \quad \tau \sim \mathrm{HalfNormal}(1), \quad
        \sigma \sim \mathrm{HalfNormal}(1), \\
        \beta_g \sim N(\mu_\beta, \tau^2 I_P), \quad \alpha_g \sim N(0, 1), \quad g = 1, \dots, 6, \\
        y_n \sim N(\alpha_{g_n} + x_n^\top \beta_{g_n}, \sigma^2), \quad n = 1, \dots, 442.

    Latent sites: ``mu_beta`` ``(8,)``, ``tau`` ``()``, ``sigma`` ``()``, ``beta`` ``(6, 8)`` and
    ``alpha`` ``(6,)`` in plate ``group``; observed: ``y`` ``(442,)`` in plate ``data``.

    Arguments:
        dtype: Floating type of the features and target in ``args`` (the groups are ``int64``).

    References:
        Least angle regression (Efron, Hastie, Johnstone and Tibshirani, 2004), Annals of
        Statistics 32(2).
    """

    dtype: torch.dtype = torch.float32
    name: str = field(default="hierarchical", init=False)
    description: str = field(
        default="Hierarchical regression on diabetes data, 6 sex x age groups", init=False
    )
    log_z: float | None = field(default=None, init=False)
    num_groups: int = field(default=6, init=False)
    x: Tensor = field(init=False, repr=False)
    group: Tensor = field(init=False, repr=False)
    y: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        data = require("sklearn.datasets", "the bundled diabetes data").load_diabetes()
        raw = torch.as_tensor(data.data, dtype=torch.float64)
        age, sex = raw[:, 0].contiguous(), raw[:, 1]
        cuts = torch.quantile(age, age.new_tensor([1 / 3, 2 / 3]))
        self.group = 2 * torch.bucketize(age, cuts, right=True) + (sex > 0).long()
        self.x = _standardize(raw[:, 2:])
        self.y = _standardize(torch.as_tensor(data.target, dtype=torch.float64))

    @property
    def args(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.x.to(self.dtype), self.group, self.y.to(self.dtype)

    @property
    def pairs(self) -> list[Pair]:
        return [(("tau", 0), ("beta", 0)), (("mu_beta", 0), ("sigma", 0))]

    @property
    def observed(self) -> dict[str, Tensor]:
        return {"y": self.y.to(self.dtype)}

    def model(self, x: Tensor, group: Tensor, y: Tensor | None = None) -> None:
        mu_beta = pyro.sample("mu_beta", dist.Normal(x.new_zeros(x.shape[-1]), 1.0).to_event(1))
        tau = pyro.sample("tau", dist.HalfNormal(x.new_tensor(1.0)))
        sigma = pyro.sample("sigma", dist.HalfNormal(x.new_tensor(1.0)))
        with pyro.plate("group", self.num_groups):
            beta = pyro.sample("beta", dist.Normal(mu_beta, tau.unsqueeze(-1)).to_event(1))
            alpha = pyro.sample("alpha", dist.Normal(x.new_tensor(0.0), 1.0))
        with pyro.plate("data", x.shape[0]):
            mean = alpha[..., group] + (x * beta[..., group, :]).sum(-1)
            pyro.sample("y", dist.Normal(mean, sigma), obs=y)


def _standardize(x: Tensor) -> Tensor:
    """Shift and scale each column to mean 0 and population standard deviation 1."""
    return (x - x.mean(0)) / x.std(0, correction=0)


def _funnel() -> ExactModelView:
    return ExactModelView(
        Funnel(dim=10),
        name="funnel",
        description="Neal's funnel in 10 dimensions: scales spanning orders of magnitude",
        pairs=[(("v", 0), ("x", 0)), (("x", 0), ("x", 1))],
    )


def _banana() -> ExactModelView:
    return ExactModelView(
        BananaModel(),
        name="banana",
        description="A banana-shaped 2-D density: a curved, non-Gaussian posterior",
        pairs=[(("z1", 0), ("z2", 0))],
    )


class GaussianMixture(dist.TorchDistribution):
    r""":math:`\sum_k w_k N(z; \mu_k, \sigma_k^2 I)` on :math:`\mathbb R^D`, with an
    unconstrained support (torch's ``MixtureSameFamily`` has a support Pyro's autoguides
    cannot transform).

    Arguments:
        weights: :math:`w`, shape ``(K,)``, summing to one.
        locs: :math:`\mu`, shape ``(K, D)``.
        scales: :math:`\sigma`, shape ``(K,)``.
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real_vector

    def __init__(self, weights: Tensor, locs: Tensor, scales: Tensor) -> None:
        self.weights, self.locs, self.scales = weights, locs, scales
        super().__init__(torch.Size(), locs.shape[-1:], validate_args=False)

    def sample(self, sample_shape: torch.Size = _EMPTY) -> Tensor:
        shape = torch.Size(sample_shape)
        picks = torch.multinomial(self.weights, max(shape.numel(), 1), replacement=True)
        noise = torch.randn(len(picks), self.locs.shape[-1], dtype=self.locs.dtype)
        return (self.locs[picks] + self.scales[picks, None] * noise).reshape(shape + self.event_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        normal = dist.Normal(self.locs, self.scales.unsqueeze(-1)).to_event(1)
        return (normal.log_prob(value.unsqueeze(-2)) + self.weights.log()).logsumexp(-1)


@dataclass
class TwoModes:
    r"""A 2-D posterior of two separated modes of unequal mass; :math:`\log Z = 0`.

    .. math::
        p(z) = 0.3\, N\big(z; (-3, 0), I\big) + 0.7\, N\big(z; (3, 1), 0.5^2 I\big),

    a model without data whose prior on ``z`` is this mixture (:class:`GaussianMixture`), as
    the funnel and the banana are. A guide fitted by reverse KL from one start covers one
    mode; the mode search of the flow guides finds both (``guide.modes``), and their mixture
    covers them.
    """

    name: str = "two_modes"
    description: str = "Two separated modes of mass 0.3 and 0.7 in 2-D: mode search and mixtures"
    args: tuple = ()
    log_z: float = 0.0
    pairs: list = field(default_factory=lambda: [(("z", 0), ("z", 1))])

    @property
    def observed(self) -> dict[str, Tensor]:
        return {}

    def model(self) -> None:
        locs, scales = torch.tensor([[-3.0, 0.0], [3.0, 1.0]]), torch.tensor([1.0, 0.5])
        pyro.sample("z", GaussianMixture(torch.tensor([0.3, 0.7]), locs, scales))


#: The models ``flowguide compare`` runs, by name: zero-argument constructors.
BUNDLED_MODELS: dict[str, Callable[[], BundledModel]] = {
    "funnel": _funnel,
    "banana": _banana,
    "eight_schools": EightSchools,
    "logistic": BreastCancerLogistic,
    "hierarchical": DiabetesHierarchical,
    "two_modes": TwoModes,
}
"""Constructors of the bundled models, keyed by name."""


def bundled_model(name: str) -> BundledModel:
    """Builds the bundled model called ``name``.

    Arguments:
        name: A key of :data:`BUNDLED_MODELS`.

    Returns:
        A fresh instance with the :class:`BundledModel` interface.

    Raises:
        ValueError: If ``name`` is not a bundled model; the message lists the available ones.
    """
    if name not in BUNDLED_MODELS:
        raise ValueError(f"unknown bundled model {name!r}; available: {', '.join(BUNDLED_MODELS)}")
    return BUNDLED_MODELS[name]()
