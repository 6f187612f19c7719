"""From AutoNormal to a flow guide: the getting-started page of the docs, runnable.

    python examples/getting_started.py                  # both guides, 2000 steps each
    python examples/getting_started.py --smoke          # 20 steps: checks the script runs

A hierarchical model whose posterior is funnel-shaped (the group scale controls the
spread of the group effects) is fit with AutoNormal and with AutoIAF, the same
optimizer, steps and seed; each is scored by its ELBO, the importance-weighted bound and
PSIS k-hat from 4000 of its own draws.
"""

from __future__ import annotations

import argparse

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import Adam

from flowguide import AutoIAF
from flowguide.diagnostics import log_importance_weights, log_mean_exp_estimate, psis_diagnostic

Y = torch.tensor([2.0, -1.0, 0.5, 3.0, -2.0, 0.0, 1.0, -0.5])


def model(y: torch.Tensor) -> None:
    log_tau = pyro.sample("log_tau", dist.Normal(0.0, 1.5))
    with pyro.plate("groups", len(y)):
        theta = pyro.sample("theta", dist.Normal(0.0, log_tau.exp()))
        pyro.sample("y", dist.Normal(theta, 1.0), obs=y)


def fit(guide, y: torch.Tensor, steps: int) -> None:
    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, Adam({"lr": 1e-2}), elbo)
    for _ in range(steps):
        svi.step(y)


def report(name: str, guide, y: torch.Tensor) -> None:
    log_w = log_importance_weights(model, guide, y, num_samples=4000)
    psis = psis_diagnostic(log_w)
    draws = Predictive(model, guide=guide, num_samples=1000)(y)
    tau = draws["log_tau"].exp()
    print(
        f"{name:<10} ELBO {log_w.mean():8.3f}   IWAE {log_mean_exp_estimate(log_w).value:8.3f}   "
        f"k-hat {psis.khat:5.2f} ({psis.verdict})   tau median {tau.median():.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-steps", type=int, default=2000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="20 steps, to check the script runs")
    args = parser.parse_args(argv)
    steps = 20 if args.smoke else args.num_steps
    y = Y.to(args.device)
    for name, guide_class in [("AutoNormal", AutoNormal), ("AutoIAF", AutoIAF)]:
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        guide = guide_class(model)  # the only line that differs between the two
        fit(guide, y, steps)
        report(name, guide, y)


if __name__ == "__main__":
    main()
