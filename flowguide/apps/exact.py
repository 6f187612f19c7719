r"""Pyro models whose log-evidence :math:`\log Z = \log p(x)` is known exactly.

They let a guide be scored by :math:`\mathrm{KL}(q \| p) = \log Z - \mathrm{ELBO}` and its
log-density be checked by importance sampling. Each model object has ``model(*args)``,
``args`` (the data to call it with), ``log_z`` and, where the posterior is known in
closed form, ``posterior_mean`` and ``posterior_std`` (dicts keyed by site name).

Example:
    >>> case = BetaBinomial(a=1.0, b=1.0, n=10, k=3)
    >>> round(case.log_z, 4)  # uniform prior: every k has evidence 1 / (n + 1)
    -2.3979
    >>> float(case.posterior_mean["p"])
    0.3333333333333333
    >>> from pyro import poutine
    >>> trace = poutine.trace(ConjugateRegression(dim=2, num_data=5).model).get_trace(
    ...     *ConjugateRegression(dim=2, num_data=5).args)
    >>> tuple(trace.nodes["w"]["value"].shape)
    (2,)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

__all__ = [
    "ConjugateRegression",
    "BetaBinomial",
    "DirichletMultinomial",
    "BananaModel",
    "Funnel",
    "EXACT_MODELS",
]


@dataclass
class ConjugateRegression:
    r"""Bayesian linear regression with known noise: :math:`w \sim N(0, \tau^2 I)`,
    :math:`y \mid w \sim N(X w, \sigma^2 I)`.

    The evidence is :math:`y \sim N(0, \sigma^2 I + \tau^2 X X^\top)` and the posterior
    is Gaussian with precision :math:`I/\tau^2 + X^\top X / \sigma^2`. Inputs are
    correlated (a shared factor), so the posterior is correlated too.

    Arguments:
        dim: Number of weights.
        num_data: Number of observations.
        noise: Observation standard deviation :math:`\sigma`.
        prior_scale: Prior standard deviation :math:`\tau`.
        seed: Seed of the generated data.
    """

    dim: int = 10
    num_data: int = 30
    noise: float = 1.0
    prior_scale: float = 2.0
    seed: int = 0
    x: Tensor = field(init=False, repr=False)
    y: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(self.seed)
        shared = torch.randn(self.num_data, 1, generator=g, dtype=torch.float64)
        self.x = 0.6 * shared + 0.8 * torch.randn(self.num_data, self.dim, generator=g, dtype=torch.float64)
        w = self.prior_scale * torch.randn(self.dim, generator=g, dtype=torch.float64)
        self.y = self.x @ w + self.noise * torch.randn(self.num_data, generator=g, dtype=torch.float64)

    @property
    def args(self) -> tuple[Tensor, Tensor]:
        return self.x.float(), self.y.float()

    def model(self, x: Tensor, y: Tensor | None = None) -> None:
        prior = dist.Normal(x.new_zeros(self.dim), self.prior_scale).to_event(1)
        w = pyro.sample("w", prior)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal((x * w).sum(-1), self.noise), obs=y)

    @property
    def log_z(self) -> float:
        cov = (
            self.noise**2 * torch.eye(self.num_data, dtype=torch.float64)
            + self.prior_scale**2 * self.x @ self.x.T
        )
        return float(
            dist.MultivariateNormal(torch.zeros(self.num_data, dtype=torch.float64), cov).log_prob(self.y)
        )

    def _posterior(self) -> tuple[Tensor, Tensor]:
        precision = (
            torch.eye(self.dim, dtype=torch.float64) / self.prior_scale**2 + self.x.T @ self.x / self.noise**2
        )
        cov = torch.linalg.inv(precision)
        return cov @ self.x.T @ self.y / self.noise**2, cov

    @property
    def posterior_mean(self) -> dict[str, Tensor]:
        return {"w": self._posterior()[0]}

    @property
    def posterior_std(self) -> dict[str, Tensor]:
        return {"w": self._posterior()[1].diagonal().sqrt()}


@dataclass
class BetaBinomial:
    r"""Success probability :math:`p \sim \mathrm{Beta}(a, b)`, :math:`k \sim \mathrm{Bin}(n, p)`.

    :math:`\log Z = \log\binom{n}{k} + \log B(a + k, b + n - k) - \log B(a, b)`; the
    posterior is :math:`\mathrm{Beta}(a + k, b + n - k)` (an interval-constrained site).

    Arguments:
        a: Prior concentration :math:`a`.
        b: Prior concentration :math:`b`.
        n: Number of trials.
        k: Number of successes.
    """

    a: float = 2.0
    b: float = 2.0
    n: int = 40
    k: int = 31

    @property
    def args(self) -> tuple[Tensor]:
        return (torch.tensor(float(self.k)),)

    def model(self, k: Tensor) -> None:
        p = pyro.sample("p", dist.Beta(k.new_tensor(self.a), k.new_tensor(self.b)))
        pyro.sample("k", dist.Binomial(self.n, p), obs=k)

    @property
    def log_z(self) -> float:
        a, b, n, k = self.a, self.b, self.n, self.k
        log_binom = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        return log_binom + _log_beta(a + k, b + n - k) - _log_beta(a, b)

    @property
    def posterior_mean(self) -> dict[str, Tensor]:
        return {"p": torch.tensor((self.a + self.k) / (self.a + self.b + self.n), dtype=torch.float64)}

    @property
    def posterior_std(self) -> dict[str, Tensor]:
        a, b = self.a + self.k, self.b + self.n - self.k
        return {"p": torch.tensor(math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))), dtype=torch.float64)}


@dataclass
class DirichletMultinomial:
    r"""Categorical probabilities with a Dirichlet prior and multinomial counts.

    :math:`\pi \sim \mathrm{Dir}(\alpha)` and :math:`c \sim \mathrm{Mult}(n, \pi)`.

    :math:`\log Z = \log \frac{n!}{\prod_j c_j!} + \log B(\alpha + c) - \log B(\alpha)` with
    the multivariate Beta function :math:`B`; the posterior is :math:`\mathrm{Dir}(\alpha + c)`
    (a simplex-constrained site).

    Arguments:
        alpha: Prior concentrations.
        counts: Observed counts per category.
    """

    alpha: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    counts: tuple[int, ...] = (12, 3, 0, 7)

    @property
    def args(self) -> tuple[Tensor]:
        return (torch.tensor(self.counts, dtype=torch.float32),)

    def model(self, counts: Tensor) -> None:
        probs = pyro.sample("probs", dist.Dirichlet(counts.new_tensor(self.alpha)))
        pyro.sample("counts", dist.Multinomial(int(sum(self.counts)), probs), obs=counts)

    @property
    def log_z(self) -> float:
        n = sum(self.counts)
        log_coef = math.lgamma(n + 1) - sum(math.lgamma(c + 1) for c in self.counts)
        posterior = [a + c for a, c in zip(self.alpha, self.counts, strict=True)]
        return log_coef + _log_mbeta(posterior) - _log_mbeta(self.alpha)

    @property
    def posterior_mean(self) -> dict[str, Tensor]:
        post = torch.tensor(self.alpha, dtype=torch.float64) + torch.tensor(self.counts, dtype=torch.float64)
        return {"probs": post / post.sum()}

    @property
    def posterior_std(self) -> dict[str, Tensor]:
        post = torch.tensor(self.alpha, dtype=torch.float64) + torch.tensor(self.counts, dtype=torch.float64)
        total, mean = post.sum(), post / post.sum()
        return {"probs": (mean * (1 - mean) / (total + 1)).sqrt()}


@dataclass
class BananaModel:
    r"""A normalized curved density as a Pyro model without data:
    :math:`z_1 \sim N(0, 1)`, :math:`z_2 \mid z_1 \sim N(c(z_1^2 - 1), \sigma^2)`; :math:`\log Z = 0`.

    Arguments:
        curvature: The bend :math:`c`.
        sigma: Conditional standard deviation of :math:`z_2`.
    """

    curvature: float = 1.0
    sigma: float = 0.5
    log_z: float = 0.0
    args: tuple = ()

    def model(self) -> None:
        z1 = pyro.sample("z1", dist.Normal(0.0, 1.0))
        pyro.sample("z2", dist.Normal(self.curvature * (z1**2 - 1), self.sigma))


@dataclass
class Funnel:
    r"""Neal's funnel in ``dim`` dimensions as a model without data; :math:`\log Z = 0`.

    :math:`v \sim N(0, 3^2)` and :math:`x_i \mid v \sim N(0, e^{v})` for
    :math:`i = 1, \dots, D - 1`: the scale of :math:`x` varies over orders of magnitude
    with :math:`v`, which no Gaussian can follow.

    Arguments:
        dim: Total dimension :math:`D \ge 2`.

    References:
        Slice sampling (Neal, 2003), Annals of Statistics 31(3).
    """

    dim: int = 10
    log_z: float = 0.0
    args: tuple = ()

    def model(self) -> None:
        v = pyro.sample("v", dist.Normal(0.0, 3.0))
        scale = (v / 2).exp().unsqueeze(-1)
        pyro.sample("x", dist.Normal(0.0, scale).expand((*scale.shape[:-1], self.dim - 1)).to_event(1))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _log_mbeta(alpha) -> float:
    return sum(math.lgamma(a) for a in alpha) - math.lgamma(sum(alpha))


#: Pyro models with exact log-evidence, by name: zero-argument constructors.
EXACT_MODELS = {
    "conjugate_regression": ConjugateRegression,
    "beta_binomial": BetaBinomial,
    "dirichlet_multinomial": DirichletMultinomial,
    "banana": BananaModel,
    "funnel": Funnel,
}
