"""The models of ``benchmarks/real_models.py``: ten Pyro models on real data.

    python benchmarks/suite_models.py          # prints each model's latent sizes and data

Benchmark-only code, not the library's. Every data set ships with a package that the
benchmarks already need (scikit-learn's iris, breast-cancer and diabetes tables,
matplotlib's monthly stock prices) or is written inline (eight schools). Each
:class:`SuiteModel` holds the Pyro model, its data, an independent hand-written log
joint (``log_joint``: formulas written out, no Pyro distributions, checked against the
model's trace in ``tests/test_real_models.py``) and, where NUTS mixes better on an
equivalent parametrization, the model its reference is drawn from and the map back.

Priors take torch's default dtype; run a model under the dtype of its data
(:meth:`SuiteModel.data`). Every model vectorizes over a particle plate left of its own plates, except
``diabetes_flat``, written for one draw as Stan users write it (``X @ beta``), which is
the case of a model that does not vectorize.

| name | latents | what it covers |
|---|---|---|
| ``eight_schools_centered`` | 10 | hierarchical, centered (a funnel) |
| ``eight_schools_noncentered`` | 10 | hierarchical, non-centered |
| ``iris_multilevel`` | 11 | multilevel regression, varying intercepts and slopes |
| ``cancer_logistic`` | 6 | logistic regression, predictors correlated at 0.99 |
| ``diabetes_student_t`` | 6 | robust regression, Student-t likelihood, latent degrees of freedom |
| ``sp500_volatility`` | 123 | stochastic volatility of monthly S&P 500 returns |
| ``cancer_gp_classification`` | 60 | latent GP classification with learned kernel |
| ``iris_mixture`` | 5 | two-component Gaussian mixture, ordered means |
| ``iris_gamma_mixture`` | 5 | simplex weights and positive-ordered means |
| ``diabetes_flat`` | 12 | flat (improper) priors, written for one draw |
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import OrderedTransform
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions.transforms import ExpTransform

Values = dict[str, Tensor]
LOG_2PI = math.log(2 * math.pi)


@dataclass
class SuiteModel:
    """One model of the suite.

    Attributes:
        name: Short name (the reference's file name).
        model: The Pyro model; called as ``model(*args)``.
        args: The data, float64 (:meth:`data` casts).
        log_joint: ``values -> log p(x, z)`` for constrained values with one leading batch
            dim, written out by hand.
        unimodal: Whether the posterior has one mode (the goals' denominator).
        init: Constrained start values for sites with flat priors (every guide and NUTS
            get them; Pyro's initializations cannot draw from an improper prior).
        reference_model: The model NUTS draws the reference from, where not ``model``.
        to_model: Maps the reference model's draws to this model's sites.
        max_plate_nesting: Deepest plate of the model.
        vectorizes: Whether the model broadcasts over a particle plate.
    """

    name: str
    model: Callable
    args: tuple
    log_joint: Callable[[Values], Tensor]
    unimodal: bool = True
    init: Values = field(default_factory=dict)
    reference_model: Callable | None = None
    to_model: Callable[[Values], Values] | None = None
    max_plate_nesting: int = 0
    vectorizes: bool = True

    def data(self, dtype: torch.dtype = torch.float32) -> tuple:
        """The model's arguments in ``dtype`` (integer tensors unchanged)."""
        return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in self.args)

    def start(self) -> Values:
        """The flat sites' start values in torch's default dtype (the priors')."""
        return {name: value.to(torch.get_default_dtype()) for name, value in self.init.items()}


# ------------------------------------------------------------------------------ formulas
def normal_lpdf(x: Tensor, loc, scale) -> Tensor:
    return -0.5 * ((x - loc) / scale) ** 2 - torch.log(torch.as_tensor(scale, dtype=x.dtype)) - 0.5 * LOG_2PI


def half_normal_lpdf(x: Tensor, scale) -> Tensor:
    return normal_lpdf(x, 0.0, scale) + math.log(2.0)


def half_cauchy_lpdf(x: Tensor, scale: float) -> Tensor:
    return math.log(2.0 / (math.pi * scale)) - torch.log1p((x / scale) ** 2)


def lognormal_lpdf(x: Tensor, loc, scale) -> Tensor:
    return normal_lpdf(torch.log(x), loc, scale) - torch.log(x)


def gamma_lpdf(x: Tensor, shape, rate) -> Tensor:
    return shape * torch.log(rate) + (shape - 1) * torch.log(x) - rate * x - torch.lgamma(shape)


def student_t_lpdf(x: Tensor, nu: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    z = (x - loc) / scale
    return (
        torch.lgamma((nu + 1) / 2)
        - torch.lgamma(nu / 2)
        - 0.5 * torch.log(nu * math.pi)
        - torch.log(scale)
        - (nu + 1) / 2 * torch.log1p(z**2 / nu)
    )


def bernoulli_logit_lpmf(y: Tensor, logits: Tensor) -> Tensor:
    return y * logits - torch.nn.functional.softplus(logits)


def _col(x: Tensor) -> Tensor:
    """A per-draw scalar ``(B,)`` as ``(B, 1)`` against data ``(N,)``."""
    return x.unsqueeze(-1)


def _standardize(x: Tensor) -> Tensor:
    return (x - x.mean(0)) / x.std(0)


# ------------------------------------------------------------------------------ eight schools
SCHOOLS_Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], dtype=torch.float64)
SCHOOLS_SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], dtype=torch.float64)


def eight_schools_centered(sigma: Tensor, y: Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", len(y)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def eight_schools_noncentered(sigma: Tensor, y: Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", len(y)):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu + tau * eta, sigma), obs=y)


def _schools_prior(v: Values) -> Tensor:
    return normal_lpdf(v["mu"], 0.0, 5.0) + half_cauchy_lpdf(v["tau"], 5.0)


def _schools_centered_joint(v: Values) -> Tensor:
    mu, tau, theta = _col(v["mu"]), _col(v["tau"]), v["theta"]
    return (
        _schools_prior(v)
        + normal_lpdf(theta, mu, tau).sum(-1)
        + normal_lpdf(SCHOOLS_Y.to(theta), theta, SCHOOLS_SIGMA.to(theta)).sum(-1)
    )


def _schools_noncentered_joint(v: Values) -> Tensor:
    mu, tau, eta = _col(v["mu"]), _col(v["tau"]), v["eta"]
    loc = mu + tau * eta
    return (
        _schools_prior(v)
        + normal_lpdf(eta, 0.0, 1.0).sum(-1)
        + normal_lpdf(SCHOOLS_Y.to(eta), loc, SCHOOLS_SIGMA.to(eta)).sum(-1)
    )


def _schools_centered_from_noncentered(v: Values) -> Values:
    return {"mu": v["mu"], "tau": v["tau"], "theta": _col(v["mu"]) + _col(v["tau"]) * v["eta"]}


# ------------------------------------------------------------------------------ iris
def _iris() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return torch.as_tensor(data.data, dtype=torch.float64), torch.as_tensor(data.target)


def iris_multilevel(x: Tensor, group: Tensor, y: Tensor) -> None:
    """Petal length on sepal length, both standardized, with an intercept and a slope per
    species drawn around population values (centered)."""
    mu_a = pyro.sample("mu_a", dist.Normal(0.0, 1.0))
    mu_b = pyro.sample("mu_b", dist.Normal(0.0, 1.0))
    sigma_a = pyro.sample("sigma_a", dist.HalfNormal(1.0))
    sigma_b = pyro.sample("sigma_b", dist.HalfNormal(1.0))
    a = pyro.sample("a", dist.Normal(_col(mu_a), _col(sigma_a)).expand((*mu_a.shape, 3)).to_event(1))
    b = pyro.sample("b", dist.Normal(_col(mu_b), _col(sigma_b)).expand((*mu_b.shape, 3)).to_event(1))
    sigma_y = pyro.sample("sigma_y", dist.HalfNormal(1.0))
    loc = a[..., group] + b[..., group] * x
    pyro.sample("y", dist.Normal(loc, _col(sigma_y)).to_event(1), obs=y)


def _iris_multilevel_joint(v: Values, x: Tensor, group: Tensor, y: Tensor) -> Tensor:
    a, b = v["a"], v["b"]
    loc = a[..., group] + b[..., group] * x
    return (
        normal_lpdf(v["mu_a"], 0.0, 1.0)
        + normal_lpdf(v["mu_b"], 0.0, 1.0)
        + half_normal_lpdf(v["sigma_a"], 1.0)
        + half_normal_lpdf(v["sigma_b"], 1.0)
        + normal_lpdf(a, _col(v["mu_a"]), _col(v["sigma_a"])).sum(-1)
        + normal_lpdf(b, _col(v["mu_b"]), _col(v["sigma_b"])).sum(-1)
        + half_normal_lpdf(v["sigma_y"], 1.0)
        + normal_lpdf(y, loc, _col(v["sigma_y"])).sum(-1)
    )


def iris_mixture(y: Tensor) -> None:
    """Petal lengths (cm) as a two-component Gaussian mixture with ordered means: the first
    mean ~ Normal(3, 2), the gap to the second ~ LogNormal(0, 1).

    The lengths are rounded to 0.1 cm (13 flowers share 1.5 cm), and a component collapsing
    onto tied values would have unbounded likelihood. Each component's standard deviation
    therefore carries the rounding variance h²/12, h = 0.1 (Sheppard's correction):
    sd = sqrt(scale² + h²/12)."""
    base = dist.Normal(torch.tensor([3.0, 0.0]).to(y), torch.tensor([2.0, 1.0]).to(y)).to_event(1)
    means = pyro.sample("means", dist.TransformedDistribution(base, OrderedTransform()))
    weight = pyro.sample("weight", dist.Beta(2.0, 2.0))
    scales = pyro.sample("scales", dist.HalfNormal(2.0).expand([2]).to_event(1))
    probs = torch.stack([weight, 1 - weight], -1)
    mixture = dist.MixtureSameFamily(
        dist.Categorical(probs=probs.unsqueeze(-2)),
        dist.Normal(means.unsqueeze(-2), _rounded_sd(scales).unsqueeze(-2)),
    )
    pyro.sample("y", mixture.to_event(1), obs=y)


def _rounded_sd(scale: Tensor, step: float = 0.1) -> Tensor:
    """Standard deviation of a Normal observed after rounding to ``step``: sqrt(σ² + step²/12)."""
    return torch.sqrt(scale**2 + step**2 / 12.0)


def _iris_mixture_joint(v: Values, y: Tensor) -> Tensor:
    m, w, s = v["means"], v["weight"], v["scales"]
    sd = _rounded_sd(s)
    gap = m[..., 1] - m[..., 0]
    prior = normal_lpdf(m[..., 0], 3.0, 2.0) + lognormal_lpdf(gap, 0.0, 1.0)
    prior = prior + math.log(6.0) + torch.log(w) + torch.log1p(-w)  # Beta(2, 2) = 6 w (1 - w)
    prior = prior + half_normal_lpdf(s, 2.0).sum(-1)
    first = torch.log(_col(w)) + normal_lpdf(y, m[..., :1], sd[..., :1])
    second = torch.log1p(-_col(w)) + normal_lpdf(y, m[..., 1:], sd[..., 1:])
    return prior + torch.logaddexp(first, second).sum(-1)


class PositiveOrdered(dist.TransformedDistribution):
    """A base vector pushed through the ordered transform and then ``exp``; its support is
    the positive-ordered vectors (the composed transform's codomain reads only
    "positive", under which guides would not keep the order)."""

    support = constraints.positive_ordered_vector

    def __init__(self, base: dist.TorchDistribution, validate_args: bool | None = None) -> None:
        super().__init__(base, [OrderedTransform(), ExpTransform()], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):  # a custom __init__ needs its own expand
        new = self._get_checked_instance(PositiveOrdered, _instance)
        return super().expand(batch_shape, _instance=new)


def iris_gamma_mixture(y: Tensor) -> None:
    """Petal widths (cm) as a two-component Gamma mixture: simplex weights, positive-ordered
    component means (the log of the first ~ Normal(-1, 1), the log-gap of the logs ~
    Normal(0, 1)) and a shape per component."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.full((2,), 2.0).to(y)))
    base = dist.Normal(torch.tensor([-1.0, 0.0]).to(y), torch.ones(2).to(y)).to_event(1)
    means = pyro.sample("means", PositiveOrdered(base))
    shapes = pyro.sample("shapes", dist.LogNormal(2.0, 1.0).expand([2]).to_event(1))
    rates = shapes / means
    mixture = dist.MixtureSameFamily(
        dist.Categorical(probs=weights.unsqueeze(-2)),
        dist.Gamma(shapes.unsqueeze(-2), rates.unsqueeze(-2)),
    )
    pyro.sample("y", mixture.to_event(1), obs=y)


def _iris_gamma_mixture_joint(v: Values, y: Tensor) -> Tensor:
    w, m, a = v["weights"], v["means"], v["shapes"]
    # Dirichlet(2, 2) on (w, 1 - w): Gamma(4) / Gamma(2)^2 * w (1 - w), per unit length of w_1
    prior = math.log(6.0) + torch.log(w[..., 0]) + torch.log(w[..., 1])
    log_m = torch.log(m)
    gap = log_m[..., 1] - log_m[..., 0]  # positive; its log is the second base coordinate
    prior = prior + normal_lpdf(log_m[..., 0], -1.0, 1.0) + normal_lpdf(torch.log(gap), 0.0, 1.0)
    prior = prior - log_m.sum(-1) - torch.log(gap)  # the Jacobian of m -> (log m_1, log(log m_2 - log m_1))
    prior = prior + lognormal_lpdf(a, 2.0, 1.0).sum(-1)
    parts = [
        torch.log(w[..., k : k + 1]) + gamma_lpdf(y, a[..., k : k + 1], a[..., k : k + 1] / m[..., k : k + 1])
        for k in range(2)
    ]
    return prior + torch.logaddexp(*parts).sum(-1)


# ------------------------------------------------------------------------------ breast cancer
CANCER_FEATURES = (0, 1, 2, 3, 4)  # mean radius, texture, perimeter, area, smoothness


def _cancer() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return torch.as_tensor(data.data, dtype=torch.float64), torch.as_tensor(data.target, dtype=torch.float64)


def cancer_logistic(x: Tensor, y: Tensor) -> None:
    """Diagnosis on five standardized features; radius, perimeter and area correlate at 0.99."""
    alpha = pyro.sample("alpha", dist.Normal(0.0, 5.0))
    beta = pyro.sample("beta", dist.Normal(0.0, 2.5).expand([x.shape[-1]]).to_event(1))
    logits = _col(alpha) + (x * beta.unsqueeze(-2)).sum(-1)
    pyro.sample("y", dist.Bernoulli(logits=logits).to_event(1), obs=y)


def _cancer_logistic_joint(v: Values, x: Tensor, y: Tensor) -> Tensor:
    logits = _col(v["alpha"]) + (x * v["beta"].unsqueeze(-2)).sum(-1)
    prior = normal_lpdf(v["alpha"], 0.0, 5.0) + normal_lpdf(v["beta"], 0.0, 2.5).sum(-1)
    return prior + bernoulli_logit_lpmf(y, logits).sum(-1)


GP_EVERY = 10  # every tenth patient: 57 latent function values
GP_JITTER = 1e-3


def cancer_gp_classification(x: Tensor, y: Tensor) -> None:
    """Diagnosis against mean radius (standardized) through a latent GP, squared-exponential
    kernel with learned amplitude and lengthscale, whitened: f = b + L(amp, ls) eps."""
    amplitude = pyro.sample("amplitude", dist.LogNormal(0.0, 1.0))
    lengthscale = pyro.sample("lengthscale", dist.LogNormal(0.0, 1.0))
    offset = pyro.sample("offset", dist.Normal(0.0, 2.0))
    eps = pyro.sample("eps", dist.Normal(0.0, 1.0).expand([len(x)]).to_event(1))
    f = _col(offset) + _gp_whitened(x, amplitude, lengthscale, eps)
    pyro.sample("y", dist.Bernoulli(logits=f).to_event(1), obs=y)


def _gp_whitened(x: Tensor, amplitude: Tensor, lengthscale: Tensor, eps: Tensor) -> Tensor:
    ls, amp = lengthscale[..., None, None], amplitude[..., None, None]
    distance = (x.unsqueeze(-1) - x.unsqueeze(-2)) ** 2
    kernel = amp**2 * (torch.exp(-0.5 * distance / ls**2) + GP_JITTER * torch.eye(len(x), dtype=x.dtype))
    return (torch.linalg.cholesky(kernel) @ eps.unsqueeze(-1)).squeeze(-1)


def _cancer_gp_joint(v: Values, x: Tensor, y: Tensor) -> Tensor:
    f = _col(v["offset"]) + _gp_whitened(x, v["amplitude"], v["lengthscale"], v["eps"])
    prior = lognormal_lpdf(v["amplitude"], 0.0, 1.0) + lognormal_lpdf(v["lengthscale"], 0.0, 1.0)
    prior = prior + normal_lpdf(v["offset"], 0.0, 2.0) + normal_lpdf(v["eps"], 0.0, 1.0).sum(-1)
    return prior + bernoulli_logit_lpmf(y, f).sum(-1)


# ------------------------------------------------------------------------------ diabetes
STUDENT_FEATURES = (2, 3, 8)  # bmi, blood pressure, s5


def _diabetes() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    return torch.as_tensor(data.data, dtype=torch.float64), torch.as_tensor(data.target, dtype=torch.float64)


def diabetes_student_t(x: Tensor, y: Tensor) -> None:
    """Disease progression (standardized) on three standardized features, Student-t noise
    with latent degrees of freedom ~ Gamma(2, 0.1)."""
    alpha = pyro.sample("alpha", dist.Normal(0.0, 1.0))
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    nu = pyro.sample("nu", dist.Gamma(2.0, 0.1))
    loc = _col(alpha) + (x * beta.unsqueeze(-2)).sum(-1)
    pyro.sample("y", dist.StudentT(_col(nu), loc, _col(sigma)).to_event(1), obs=y)


def _diabetes_student_t_joint(v: Values, x: Tensor, y: Tensor) -> Tensor:
    loc = _col(v["alpha"]) + (x * v["beta"].unsqueeze(-2)).sum(-1)
    prior = normal_lpdf(v["alpha"], 0.0, 1.0) + normal_lpdf(v["beta"], 0.0, 1.0).sum(-1)
    two, tenth = torch.tensor(2.0).to(loc), torch.tensor(0.1).to(loc)
    prior = prior + half_normal_lpdf(v["sigma"], 1.0) + gamma_lpdf(v["nu"], two, tenth)
    return prior + student_t_lpdf(y, _col(v["nu"]), loc, _col(v["sigma"])).sum(-1)


def diabetes_flat(x: Tensor, y: Tensor) -> None:
    """Linear regression on all ten standardized features with flat priors on the
    coefficients and on the noise scale, as a Stan program without priors reads; written
    for a single draw (``x @ beta``)."""
    alpha = pyro.sample("alpha", dist.ImproperUniform(constraints.real, (), ()))
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), (x.shape[1],)))
    sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    pyro.sample("y", dist.Normal(alpha + x @ beta, sigma).to_event(1), obs=y)


def _diabetes_flat_joint(v: Values, x: Tensor, y: Tensor) -> Tensor:
    loc = _col(v["alpha"]) + (x * v["beta"].unsqueeze(-2)).sum(-1)
    return normal_lpdf(y, loc, _col(v["sigma"])).sum(-1)


# ------------------------------------------------------------------------------ S&P 500
def sp500_returns(start: str = "2000-01", end: str = "2010-01") -> Tensor:
    """Monthly log returns of the S&P 500 in percent, from matplotlib's bundled
    ``Stocks.csv`` (first trading day of each month; 120 returns by default)."""
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "Stocks.csv")
    with open(path) as file:
        rows = [row for row in csv.reader(file) if row and not row[0].startswith(("#", "Date"))]
    prices = [float(r[9]) for r in rows if r[0].endswith("-01") and r[9] and start <= r[0][:7] <= end]
    return 100 * torch.tensor(prices, dtype=torch.float64).log().diff()


def sp500_volatility(r: Tensor) -> None:
    """Stochastic volatility, non-centered: h_t - mu = phi (h_{t-1} - mu) + sigma eta_t with
    h_1 at the stationary spread, r_t ~ Normal(0, exp(h_t / 2))."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    phi = pyro.sample("phi", dist.Uniform(-1.0, 1.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    eta = pyro.sample("eta", dist.Normal(0.0, 1.0).expand([len(r)]).to_event(1))
    h = _col(mu) + _ar1(phi, sigma, eta)
    pyro.sample("r", dist.Normal(0.0, torch.exp(h / 2)).to_event(1), obs=r)


def _ar1(phi: Tensor, sigma: Tensor, eta: Tensor) -> Tensor:
    """The AR(1) path sum_{s <= t} phi^(t - s) e_s, with e_1 = sigma eta_1 / sqrt(1 - phi^2)
    and e_s = sigma eta_s, as one masked matrix product."""
    steps = eta.shape[-1]
    t = torch.arange(steps, dtype=eta.dtype)
    lag = t[:, None] - t[None, :]
    powers = torch.where(lag >= 0, phi[..., None, None] ** lag.clamp(min=0), torch.zeros((), dtype=eta.dtype))
    first = (1 / torch.sqrt(1 - phi**2)).unsqueeze(-1)
    scale = torch.cat([first, torch.ones_like(first).expand(*first.shape[:-1], steps - 1)], -1)
    shocks = _col(sigma) * scale * eta
    return (powers @ shocks.unsqueeze(-1)).squeeze(-1)


def _sp500_joint(v: Values, r: Tensor) -> Tensor:
    mu, phi, sigma, eta = v["mu"], v["phi"], v["sigma"], v["eta"]
    h = torch.empty_like(eta)
    h[..., 0] = mu + sigma * eta[..., 0] / torch.sqrt(1 - phi**2)
    for step in range(1, eta.shape[-1]):  # the recursion itself, step by step
        h[..., step] = mu + phi * (h[..., step - 1] - mu) + sigma * eta[..., step]
    prior = normal_lpdf(mu, 0.0, 5.0) + math.log(0.5) + half_normal_lpdf(sigma, 1.0)
    prior = prior + normal_lpdf(eta, 0.0, 1.0).sum(-1)
    return prior + normal_lpdf(r, 0.0, torch.exp(h / 2)).sum(-1)


# ------------------------------------------------------------------------------ the suite
def suite() -> dict[str, SuiteModel]:
    """Every model of the suite, by name, with its data (float64)."""
    iris, species = _iris()
    sepal, petal = _standardize(iris[:, 0]), _standardize(iris[:, 2])
    cancer_x, cancer_y = _cancer()
    logistic_x = _standardize(cancer_x[:, list(CANCER_FEATURES)])
    gp_x, gp_y = _standardize(cancer_x[::GP_EVERY, 0]), cancer_y[::GP_EVERY]
    diabetes_x, diabetes_y = _diabetes()
    diabetes_x, diabetes_y = _standardize(diabetes_x), _standardize(diabetes_y)
    student_x = diabetes_x[:, list(STUDENT_FEATURES)]
    returns = sp500_returns()
    models = [
        SuiteModel(
            "eight_schools_centered",
            eight_schools_centered,
            (SCHOOLS_SIGMA, SCHOOLS_Y),
            _schools_centered_joint,
            reference_model=eight_schools_noncentered,
            to_model=_schools_centered_from_noncentered,
            max_plate_nesting=1,
        ),
        SuiteModel(
            "eight_schools_noncentered",
            eight_schools_noncentered,
            (SCHOOLS_SIGMA, SCHOOLS_Y),
            _schools_noncentered_joint,
            max_plate_nesting=1,
        ),
        SuiteModel(
            "iris_multilevel",
            iris_multilevel,
            (sepal, species, petal),
            lambda v: _iris_multilevel_joint(v, sepal, species, petal),
        ),
        SuiteModel(
            "cancer_logistic",
            cancer_logistic,
            (logistic_x, cancer_y),
            lambda v: _cancer_logistic_joint(v, logistic_x, cancer_y),
        ),
        SuiteModel(
            "diabetes_student_t",
            diabetes_student_t,
            (student_x, diabetes_y),
            lambda v: _diabetes_student_t_joint(v, student_x, diabetes_y),
        ),
        SuiteModel("sp500_volatility", sp500_volatility, (returns,), lambda v: _sp500_joint(v, returns)),
        SuiteModel(
            "cancer_gp_classification",
            cancer_gp_classification,
            (gp_x, gp_y),
            lambda v: _cancer_gp_joint(v, gp_x, gp_y),
        ),
        SuiteModel("iris_mixture", iris_mixture, (iris[:, 2],), lambda v: _iris_mixture_joint(v, iris[:, 2])),
        SuiteModel(
            "iris_gamma_mixture",
            iris_gamma_mixture,
            (iris[:, 3],),
            lambda v: _iris_gamma_mixture_joint(v, iris[:, 3]),
        ),
        SuiteModel(
            "diabetes_flat",
            diabetes_flat,
            (diabetes_x, diabetes_y),
            lambda v: _diabetes_flat_joint(v, diabetes_x, diabetes_y),
            init={
                "alpha": torch.zeros((), dtype=torch.float64),
                "beta": torch.zeros(diabetes_x.shape[1], dtype=torch.float64),
                "sigma": torch.ones((), dtype=torch.float64),
            },
            vectorizes=False,
        ),
    ]
    return {m.name: m for m in models}


def latent_shapes(case: SuiteModel) -> dict[str, torch.Size]:
    """Each latent site's shape in one run of the model (flat sites at their start values)."""
    init = pyro.infer.autoguide.initialization.init_to_value(values=case.start())
    with pyro.poutine.block():
        model = pyro.infer.autoguide.initialization.InitMessenger(init)(case.model)
        trace = pyro.poutine.trace(model).get_trace(*case.data(torch.get_default_dtype()))
    return {
        name: site["value"].shape
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)  # the data are float64; priors follow the default
    for name, case in suite().items():
        shapes = latent_shapes(case)
        size = sum(math.prod(s) for s in shapes.values())
        print(f"{name:28s} latents {size:4d}  {dict(shapes)}")
