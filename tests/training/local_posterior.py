"""A hierarchical model whose local latents sit in a subsampled plate, and its exact
posterior: shared by the trainer's in-process test and its two-process script."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

NUM_DATA = 40


def hierarchical(index: torch.Tensor, x: torch.Tensor) -> None:
    """mu ~ N(0, 1), z_n ~ N(mu, 1), x_n ~ N(z_n, 1) for 40 data: z is local to the plate."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", NUM_DATA, subsample=index):
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def data_plate(index: torch.Tensor, x: torch.Tensor) -> pyro.plate:
    return pyro.plate("data", NUM_DATA, subsample=index)


def local_errors(guide, x: torch.Tensor) -> tuple[float, float]:
    """Largest error of a datum's mean, in exact posterior standard deviations, and of its
    standard deviation against 1/sqrt(2), the optimum of Gaussian mean-field VI (which
    has the exact means)."""
    # Exact posterior: Gaussian with precision 41 on mu, 2 on each z_n, -1 between them.
    precision = torch.zeros(NUM_DATA + 1, NUM_DATA + 1, dtype=torch.float64)
    precision[0, 0], precision[0, 1:], precision[1:, 0] = NUM_DATA + 1.0, -1.0, -1.0
    precision[1:, 1:] = 2.0 * torch.eye(NUM_DATA, dtype=torch.float64)
    covariance = torch.linalg.inv(precision)
    mean = covariance @ torch.cat([torch.zeros(1), x]).double()
    lower, median, upper = guide.quantiles([0.158655, 0.5, 0.841345])["z"]
    mean_error = float((median.double() - mean[1:]).abs().max() / covariance[1, 1].sqrt())
    sd_error = float(((upper - lower) / 2 - 0.5**0.5).abs().max())
    return mean_error, sd_error
