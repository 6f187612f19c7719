"""The models of ``benchmarks/scale.py``: thousands to hundreds of thousands of latents.

    python benchmarks/scale_models.py          # builds each case at a small size, prints D

Benchmark-only code, not the library's. Each builder returns a :class:`ScaleCase`: the
model, its arguments, its latent dimension and, where it is known, an exact posterior
summary (``reference``) or a held-out log predictive density (``heldout``):

- ``hierarchical(J, centered)``: the eight-schools model with ``J`` groups (``D = J + 2``),
  centered or non-centered, on data simulated from a fixed seed; the exact posterior
  means and standard deviations come from quadrature over ``(mu, log tau)``;
- ``bnn(hidden)``: a Bayesian neural network regression (10 -> hidden -> hidden -> 1,
  tanh) on scikit-learn's bundled diabetes data; about 9.3k weights at ``hidden=90``;
  held-out log predictive density on a fixed 20% test split;
- ``gp_classification(N)``: ``N`` latent function values with an Ornstein-Uhlenbeck
  (Matern-1/2) GP prior written as an AR(1) process (:class:`OrnsteinUhlenbeck`, O(N)),
  Bernoulli labels on four points in five; held-out log predictive density on the fifth.

Every model vectorizes over a particle plate at ``dim=-(max_plate_nesting + 1)``. A
latent drawn outside the data plate then has batch shape ``(P, 1)``: the ``1`` is the
data plate's slot, which the models drop (:func:`_drop_plate_slot`) before indexing or
multiplying the data, so that the data plate stays the last batch dim.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor

Reference = dict[str, tuple[Tensor, Tensor]]


@dataclass
class ScaleCase:
    """A benchmark model with what its scores need.

    Attributes:
        name: The case's name (a key of :data:`BUILDERS`).
        model: The Pyro model.
        args: Its positional arguments.
        dim: Latent dimension ``D`` (unconstrained, the length a global guide packs).
        plates: Plates whose members are exchangeable group effects (for a structured guide).
        reference: Exact posterior ``site -> (mean, sd)`` in constrained space, or ``None``.
        heldout: ``samples -> float``: the mean held-out log predictive density per point
            from posterior draws (each ``(S, *site_shape)``), or ``None``.
        max_plate_nesting: The model's plate nesting.
        sites: The latent (and deterministic) sites the scores read.
        data: The case's data, by name (for tests).
    """

    name: str
    model: Callable
    args: tuple
    dim: int
    plates: tuple[str, ...] = ()
    reference: Reference | None = None
    heldout: Callable[[dict[str, Tensor]], float] | None = None
    max_plate_nesting: int = 1
    sites: tuple[str, ...] = ()
    data: dict[str, Tensor] = field(default_factory=dict)


def _drop_plate_slot(value: Tensor, event_dims: int) -> Tensor:
    """``value`` without the size-1 batch dim of the data plate (just left of the event dims)."""
    return value.squeeze(-event_dims - 1) if value.dim() > event_dims else value


def _move(tensors: dict[str, Tensor], device: torch.device | str | None) -> dict[str, Tensor]:
    return {k: v.to(device) for k, v in tensors.items()} if device is not None else tensors


# ---------------------------------------------------------------------- hierarchical
def hierarchical_data(J: int, seed: int = 0) -> dict[str, Tensor]:
    """Simulated groups: true mu = 1.0, tau = 0.6, known sigma_j ~ Uniform(0.5, 2.0)."""
    generator = torch.Generator().manual_seed(seed)
    sigma = 0.5 + 1.5 * torch.rand(J, generator=generator)
    theta = 1.0 + 0.6 * torch.randn(J, generator=generator)
    return {"y": theta + sigma * torch.randn(J, generator=generator), "sigma": sigma}


def hierarchical_model(centered: bool, subsample_size: int | None = None) -> Callable:
    """mu ~ N(0, 5), tau ~ HalfNormal(5), theta_j ~ N(mu, tau), y_j ~ N(theta_j, sigma_j)."""

    def model(y: Tensor, sigma: Tensor) -> None:
        mu = pyro.sample("mu", dist.Normal(y.new_zeros(()), 5.0))
        tau = pyro.sample("tau", dist.HalfNormal(y.new_tensor(5.0)))
        with pyro.plate("groups", len(y), subsample_size=subsample_size, device=y.device) as index:
            if centered:
                theta = pyro.sample("theta", dist.Normal(mu, tau))
            else:
                eta = pyro.sample("eta", dist.Normal(y.new_zeros(()), 1.0))
                theta = pyro.deterministic("theta", mu + tau * eta)
            pyro.sample("y", dist.Normal(theta, sigma[index]), obs=y[index])

    return model


def _tau_statistics(y: Tensor, sigma: Tensor, tau: Tensor, chunk: int = 8192) -> Tensor:
    """Per tau, with r_j = 1/(tau^2 + sigma_j^2): sum r y^2, sum r y, sum r and sum log r,
    shape (4, T), over the groups in chunks (T x chunk at a time)."""
    sums = torch.zeros(4, len(tau), dtype=tau.dtype)
    for start in range(0, len(y), chunk):
        yj, sj = y[start : start + chunk], sigma[start : start + chunk]
        r = 1.0 / (tau[:, None] ** 2 + sj**2)  # (T, chunk)
        sums[:3] += (r @ torch.stack([yj**2, yj, torch.ones_like(yj)], -1)).T
        sums[3] -= (tau[:, None] ** 2 + sj**2).log().sum(-1)
    return sums


def _grid_weights(y: Tensor, sigma: Tensor, mu: Tensor, log_tau: Tensor) -> Tensor:
    """Normalized posterior weights of the (mu, log tau) grid, shape (T, M), from the
    marginal likelihood prod_j N(y_j | mu, sqrt(tau^2 + sigma_j^2)) and the priors."""
    tau = log_tau.exp()
    a, b, c, log_r = _tau_statistics(y, sigma, tau)[:, :, None]
    log_likelihood = 0.5 * log_r - 0.5 * (a - 2 * mu * b + mu**2 * c)  # up to a constant
    log_prior = -(mu**2) / 50.0 - tau[:, None] ** 2 / 50.0 + log_tau[:, None]  # + log tau: Jacobian
    log_post = log_likelihood + log_prior
    return (log_post - log_post.logsumexp((0, 1))).exp()


def _grid_moments(values: Tensor, weights: Tensor) -> tuple[float, float]:
    mean = float((values * weights).sum())
    return mean, math.sqrt(max(float((values**2 * weights).sum()) - mean**2, 0.0))


def _refined_grid(
    y: Tensor, sigma: Tensor, points: int, rounds: int = 8, coarse: int = 64
) -> tuple[Tensor, Tensor, Tensor]:
    """A (mu, log tau) grid of ``points`` x ``points``, zoomed in from the prior's range by
    ``rounds`` coarser grids (``coarse`` points of tau), each to the posterior mean +- 10 sd
    (at least 4 cells of the grid before); returns (mu, log tau, weights)."""
    box = [(-25.0, 25.0), (-12.0, math.log(30.0))]
    for _ in range(rounds):
        axes = [
            torch.linspace(lo, hi, n, dtype=torch.float64)
            for (lo, hi), n in zip(box, (points, coarse), strict=True)
        ]
        weights = _grid_weights(y, sigma, axes[0], axes[1])
        new = []
        for axis, marginal, (lo, hi) in zip(axes, (weights.sum(0), weights.sum(1)), box, strict=True):
            mean, sd = _grid_moments(axis, marginal)
            half = max(10.0 * sd, 4.0 * float(axis[1] - axis[0]))
            new.append((max(lo, mean - half), min(hi, mean + half)))
        box = new
    axes = [torch.linspace(lo, hi, points, dtype=torch.float64) for lo, hi in box]
    return axes[0], axes[1], _grid_weights(y, sigma, axes[0], axes[1])


def _conditional_moments(yj: Tensor, sj: Tensor, tau: Tensor, m: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """Posterior mean and sd of theta_j and eta_j for groups ``yj``, ``sj``: with
    r = 1/(tau^2 + sigma_j^2), given (mu, tau) theta_j has mean sigma_j^2 r mu + y_j tau^2 r
    and variance tau^2 sigma_j^2 r; eta_j mean -tau r mu + y_j tau r and variance sigma_j^2 r.
    ``m`` (3, T) holds the grid's per-tau sums of weights times 1, mu, mu^2."""
    r = 1.0 / (tau[:, None] ** 2 + sj**2)  # (T, C)
    t1, t2 = tau, tau**2
    m0, m1, m2 = m
    r_sums = (r.T @ torch.stack([m0, m1, t2 * m0, t1 * m1, t1 * m0], -1)).T  # (5, C)
    r2_sums = (r.square().T @ torch.stack([m2, t2 * m1, t2**2 * m0, t2 * m2, t2 * m0], -1)).T
    s2 = sj**2
    theta_mean = s2 * r_sums[1] + yj * r_sums[2]
    theta_second = s2 * r_sums[2] + s2**2 * r2_sums[0] + 2 * s2 * yj * r2_sums[1] + yj**2 * r2_sums[2]
    eta_mean = -r_sums[3] + yj * r_sums[4]
    eta_second = s2 * r_sums[0] + r2_sums[3] - 2 * yj * r2_sums[1] + yj**2 * r2_sums[4]
    return {
        "theta": (theta_mean, (theta_second - theta_mean**2).clamp(min=0).sqrt()),
        "eta": (eta_mean, (eta_second - eta_mean**2).clamp(min=0).sqrt()),
    }


def hierarchical_reference(
    y: Tensor, sigma: Tensor, points: int = 400, chunk: int = 8192
) -> dict[str, tuple[Tensor, Tensor]]:
    """Exact posterior means and sds of mu, tau, theta_j and eta_j (constrained space).

    The marginal posterior of (mu, tau) is summed on a refined grid over (mu, log tau)
    in float64; given (mu, tau), theta_j and eta_j = (theta_j - mu)/tau are Gaussian in
    closed form (:func:`_conditional_moments`), done in chunks of ``chunk`` groups.
    """
    y, sigma = y.double().cpu(), sigma.double().cpu()
    mu, log_tau, weights = _refined_grid(y, sigma, points)
    tau = log_tau.exp()
    m = torch.stack([weights.sum(1), weights @ mu, weights @ mu**2])
    out = {"mu": _grid_moments(mu, weights.sum(0)), "tau": _grid_moments(tau, weights.sum(1))}
    out = {k: (torch.tensor([mean]), torch.tensor([sd])) for k, (mean, sd) in out.items()}
    parts = [
        _conditional_moments(y[i : i + chunk], sigma[i : i + chunk], tau, m) for i in range(0, len(y), chunk)
    ]
    for name in ("theta", "eta"):
        out[name] = (torch.cat([p[name][0] for p in parts]), torch.cat([p[name][1] for p in parts]))
    dtype = torch.get_default_dtype()
    return {k: (mean.to(dtype), sd.to(dtype)) for k, (mean, sd) in out.items()}


def hierarchical(
    J: int,
    centered: bool,
    seed: int = 0,
    subsample_size: int | None = None,
    device: torch.device | str | None = None,
    reference: bool = True,
) -> ScaleCase:
    """The hierarchical Normal model with ``J`` groups (``D = J + 2``)."""
    data = hierarchical_data(J, seed)
    ref = hierarchical_reference(data["y"], data["sigma"]) if reference else None
    if ref is not None and centered:
        ref.pop("eta")
    data = _move(data, device)
    return ScaleCase(
        name=f"hierarchical_{'centered' if centered else 'noncentered'}",
        model=hierarchical_model(centered, subsample_size),
        args=(data["y"], data["sigma"]),
        dim=J + 2,
        plates=("groups",),
        reference=ref,
        max_plate_nesting=1,
        sites=("mu", "tau", "theta") if centered else ("mu", "tau", "eta", "theta"),
        data=data,
    )


# ---------------------------------------------------------------------- bnn
def diabetes_data(seed: int = 0) -> dict[str, Tensor]:
    """scikit-learn's bundled diabetes regression, standardized, split 80/20 by ``seed``."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x = torch.as_tensor(x, dtype=torch.get_default_dtype())
    y = torch.as_tensor(y, dtype=torch.get_default_dtype())
    x, y = (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    return {"x": x[train], "y": y[train], "x_test": x[test], "y_test": y[test]}


def bnn_layers(hidden: int) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of each layer: 10 -> hidden -> hidden -> 1."""
    sizes = [10, hidden, hidden, 1]
    return list(itertools.pairwise(sizes))


def bnn_forward(x: Tensor, weights: list[Tensor], biases: list[Tensor]) -> Tensor:
    """The network's output, shape ``(*B, N)``, for weights ``(*B, fan_in, fan_out)``
    and biases ``(*B, 1, fan_out)`` (``B`` broadcastable, possibly empty)."""
    h = x
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = h @ w + b
        h = torch.tanh(h) if i < len(weights) - 1 else h
    return h.squeeze(-1)


def bnn_model(hidden: int) -> Callable:
    """Weights ~ N(0, 1/fan_in) and biases ~ N(0, 1), one site each; noise sd ~ HalfNormal(1)."""

    def model(x: Tensor, y: Tensor) -> None:
        weights, biases = [], []
        for i, (fan_in, fan_out) in enumerate(bnn_layers(hidden)):
            w_prior = dist.Normal(x.new_zeros(()), 1.0 / math.sqrt(fan_in)).expand([fan_in, fan_out])
            w = pyro.sample(f"w{i}", w_prior.to_event(2))
            b = pyro.sample(f"b{i}", dist.Normal(x.new_zeros(()), 1.0).expand([fan_out]).to_event(1))
            weights.append(_drop_plate_slot(w, 2))
            biases.append(_drop_plate_slot(b, 1).unsqueeze(-2))
        sd = pyro.sample("sd", dist.HalfNormal(x.new_tensor(1.0)))
        with pyro.plate("data", len(y), device=x.device):
            pyro.sample("y", dist.Normal(bnn_forward(x, weights, biases), sd), obs=y)

    return model


def bnn_heldout(x_test: Tensor, y_test: Tensor, hidden: int) -> Callable[[dict[str, Tensor]], float]:
    """Mean over test points of log mean over draws of N(y | net(x), sd)."""

    def heldout(samples: dict[str, Tensor]) -> float:
        layers = range(len(bnn_layers(hidden)))
        weights = [samples[f"w{i}"].to(x_test) for i in layers]
        biases = [samples[f"b{i}"].to(x_test).unsqueeze(-2) for i in layers]
        mean = bnn_forward(x_test, weights, biases)  # (S, N)
        log_p = dist.Normal(mean, samples["sd"].to(x_test).reshape(-1, 1)).log_prob(y_test)
        return float((log_p.logsumexp(0) - math.log(len(log_p))).mean())

    return heldout


def bnn(seed: int = 0, hidden: int = 90, device: torch.device | str | None = None) -> ScaleCase:
    """The Bayesian neural network on the diabetes data (``D`` about 9.3k at ``hidden=90``)."""
    data = _move(diabetes_data(seed), device)
    dim = sum(i * o + o for i, o in bnn_layers(hidden)) + 1
    layers = range(len(bnn_layers(hidden)))
    return ScaleCase(
        name="bnn",
        model=bnn_model(hidden),
        args=(data["x"], data["y"]),
        dim=dim,
        heldout=bnn_heldout(data["x_test"], data["y_test"], hidden),
        max_plate_nesting=1,
        sites=(*(f"w{i}" for i in layers), *(f"b{i}" for i in layers), "sd"),
        data=data,
    )


# ---------------------------------------------------------------------- GP classification
class OrnsteinUhlenbeck(TorchDistribution):
    r"""An Ornstein-Uhlenbeck process at ``size`` equally spaced points: the AR(1)
    chain ``f_0 ~ N(0, scale)``, ``f_i | f_{i-1} ~ N(rho f_{i-1}, scale sqrt(1 - rho^2))``,
    i.e. a zero-mean Gaussian with covariance ``scale^2 rho^|i - j|``; O(N) ``log_prob``.

    Arguments:
        size: Number of points (the event shape is ``(size,)``).
        scale: Marginal standard deviation (tensor or float; its shape is the batch shape).
        rho: Correlation of neighbours, in (0, 1) (``exp(-dx / lengthscale)``).
    """

    arg_constraints: ClassVar[dict] = {
        "scale": constraints.positive,
        "rho": constraints.interval(0.0, 1.0),
    }
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, size: int, scale: Tensor | float, rho: Tensor | float, validate_args=None) -> None:
        self.size = int(size)
        self.scale, self.rho = dist.util.broadcast_all(scale, rho)
        super().__init__(self.scale.shape, torch.Size([self.size]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> OrnsteinUhlenbeck:
        new = self._get_checked_instance(OrnsteinUhlenbeck, _instance)
        batch_shape = torch.Size(batch_shape)
        new.size = self.size
        new.scale, new.rho = self.scale.expand(batch_shape), self.rho.expand(batch_shape)
        super(OrnsteinUhlenbeck, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _innovation(self) -> Tensor:
        return self.scale * (1.0 - self.rho**2).sqrt()

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        rho, innovation = self.rho[..., None], self._innovation()[..., None]
        first = dist.Normal(0.0, self.scale).log_prob(value[..., 0])
        rest = dist.Normal(rho * value[..., :-1], innovation).log_prob(value[..., 1:]).sum(-1)
        return first + rest

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        """Draws by the scan f_i = rho^i (f_0 + sum_k rho^-k c eps_k), in chunks over which
        rho^-k stays below e^10 (no overflow however long the chain)."""
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            eps = torch.randn(shape, dtype=self.scale.dtype, device=self.scale.device)
            rho, c = self.rho.expand(shape[:-1])[..., None], self._innovation().expand(shape[:-1])[..., None]
            step = max(1, int(10.0 / max(float(-self.rho.log().max()), 1e-12)))
            previous = self.scale.expand(shape[:-1]) * eps[..., 0]
            pieces = [previous[..., None]]
            for start in range(1, self.size, step):
                k = torch.arange(1, min(step, self.size - start) + 1, dtype=eps.dtype, device=eps.device)
                powers = rho**k  # (..., L)
                terms = c * eps[..., start : start + len(k)] / powers
                chunk = powers * (previous[..., None] + terms.cumsum(-1))
                pieces.append(chunk)
                previous = chunk[..., -1]
            return torch.cat(pieces, -1)


def gp_truth(x: Tensor) -> Tensor:
    """The latent function the labels are drawn from."""
    return 2.0 * torch.sin(1.5 * x) + 0.5 * x - 2.5


GP_SCALE, GP_LENGTHSCALE = 1.5, 1.0


def gp_data(N: int, seed: int = 0) -> dict[str, Tensor]:
    """``N`` points on [0, 10], labels ~ Bernoulli(sigmoid(f_true)); every 5th held out."""
    x = torch.linspace(0.0, 10.0, N)
    labels = torch.bernoulli(torch.sigmoid(gp_truth(x)), generator=torch.Generator().manual_seed(seed))
    index = torch.arange(N)
    train, test = index[index % 5 != 0], index[index % 5 == 0]
    return {"x": x, "train": train, "test": test, "y": labels[train], "y_test": labels[test]}


def gp_prior(x: Tensor) -> OrnsteinUhlenbeck:
    """The OU prior of f at the equally spaced inputs ``x`` (variance 2.25, lengthscale 1)."""
    rho = math.exp(-float(x[1] - x[0]) / GP_LENGTHSCALE)
    return OrnsteinUhlenbeck(len(x), x.new_tensor(GP_SCALE), x.new_tensor(rho))


def gp_model(x: Tensor, train: Tensor, y: Tensor) -> None:
    """f ~ OU prior; y_i ~ Bernoulli(logits=f_i) at the training indices."""
    f = pyro.sample("f", gp_prior(x))
    with pyro.plate("data", len(train), device=x.device):
        pyro.sample("y", dist.Bernoulli(logits=_drop_plate_slot(f, 1)[..., train]), obs=y)


def gp_heldout(test: Tensor, y_test: Tensor) -> Callable[[dict[str, Tensor]], float]:
    """Mean over held-out points of log mean over draws of Bernoulli(y | sigmoid(f))."""

    def heldout(samples: dict[str, Tensor]) -> float:
        f = samples["f"].to(y_test)
        log_p = dist.Bernoulli(logits=f.reshape(-1, f.shape[-1])[:, test]).log_prob(y_test)
        return float((log_p.logsumexp(0) - math.log(len(log_p))).mean())

    return heldout


def gp_classification(N: int, seed: int = 0, device: torch.device | str | None = None) -> ScaleCase:
    """GP classification with ``N`` latent function values (``D = N``)."""
    data = _move(gp_data(N, seed), device)
    return ScaleCase(
        name="gp_classification",
        model=gp_model,
        args=(data["x"], data["train"], data["y"]),
        dim=N,
        heldout=gp_heldout(data["test"], data["y_test"]),
        max_plate_nesting=1,
        sites=("f",),
        data=data,
    )


# ---------------------------------------------------------------------- by name
BUILDERS: dict[str, Callable[..., ScaleCase]] = {
    "hierarchical_centered": lambda dim, **kw: hierarchical(dim - 2, True, **kw),
    "hierarchical_noncentered": lambda dim, **kw: hierarchical(dim - 2, False, **kw),
    "bnn": lambda dim, **kw: bnn(**kw),
    "gp_classification": lambda dim, **kw: gp_classification(dim, **kw),
}


def make_case(name: str, dim: int | None = None, **kw) -> ScaleCase:
    """The case ``name`` at latent dimension ``dim`` (``bnn`` ignores it: its ``D`` is
    fixed by ``hidden``); ``kw`` go to the builder (``seed``, ``device``, ``subsample_size``, ...)."""
    if name not in BUILDERS:
        raise KeyError(f"unknown scale case {name!r}; choose from {sorted(BUILDERS)}")
    with torch.device("cpu"):  # the seeded data are drawn on the CPU, then moved to ``device``
        return BUILDERS[name](dim, **kw)


CASES = make_case


if __name__ == "__main__":
    for case_name in BUILDERS:
        built = make_case(case_name, 50, **({"hidden": 8} if case_name == "bnn" else {}))
        print(f"{case_name:<26} D = {built.dim}")
