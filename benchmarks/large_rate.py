"""Large constant learning rates: does a guide stay on an exact posterior it starts close to?

The setting of Pyro's own ``test_predictive.py``: five independent coordinates
``phi_i ~ Uniform(0, 1)`` with ``k_i ~ Binomial(1000, phi_i)`` observed, so the posterior
is ``Beta(1 + k_i, 1 + n - k_i)``, about 0.0145 wide. Each guide at its defaults is
trained by SVI with Adam at a constant rate and one particle; the row records the worst
coordinate's mean error in posterior widths and its ``|log|`` width ratio, from 20,000
draws (infinite where the loss went non-finite: the fit diverged). This is what each
recipe's ``core_unit`` was chosen against, and why ``AutoPlanarFlow`` advises rates of
0.02 and below.

    python benchmarks/large_rate.py --out benchmarks/results/large_rate.json
    python benchmarks/large_rate.py --guides AutoNeuralSpline --lrs 0.1 --seeds 0 1 2
    python benchmarks/large_rate.py --quick            # a smoke run (the test suite does this)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from _results import save_rows
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import Adam

from flowguide import AutoAffineCoupling, AutoIAF, AutoNeuralSpline, AutoPlanarFlow

GUIDES = {
    "AutoNormal": AutoNormal,
    "AutoPlanarFlow": AutoPlanarFlow,
    "AutoIAF": AutoIAF,
    "AutoNeuralSpline": AutoNeuralSpline,
    "AutoAffineCoupling": AutoAffineCoupling,
}


def model(num_trials: torch.Tensor) -> torch.Tensor:
    with pyro.plate("data", num_trials.size(0)):
        phi = pyro.sample("phi", dist.Uniform(0.0, 1.0))
        return pyro.sample("obs", dist.Binomial(num_trials, phi))


def one_run(name: str, lr: float, seed: int, steps: int, draws: int, core_unit: float | None = None) -> dict:
    """Train one guide from one seed; the worst coordinate's errors against the exact posterior."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    trials = torch.full((5,), 1000.0)
    successes = dist.Binomial(trials, 0.7).sample()
    conditioned = poutine.condition(model, data={"obs": successes})
    options = {}
    if core_unit is not None and name != "AutoNormal":
        options["recipe"] = dataclasses.replace(GUIDES[name].recipe, core_unit=core_unit)
    guide = GUIDES[name](conditioned, **options)
    svi = SVI(conditioned, guide, Adam({"lr": lr}), Trace_ELBO())
    row = {"guide": name, "lr": lr, "seed": seed, "steps": steps}
    row["core_unit"] = guide.recipe.core_unit if name != "AutoNormal" else None
    for _ in range(steps):
        try:
            loss = svi.step(trials)
        except ValueError:  # a distribution refused a non-finite parameter
            loss = math.nan
        if not math.isfinite(loss):  # diverged: nothing left to score
            return {**row, "diverged": True, "mean_error": math.inf, "log_width_ratio": math.inf}
    predictive = Predictive(conditioned, guide=guide, num_samples=draws, return_sites=["phi"], parallel=True)
    with torch.no_grad():
        phi = predictive(trials)["phi"].reshape(draws, -1)
    exact = dist.Beta(1 + successes, 1 + trials - successes)
    mean_error = ((phi.mean(0) - exact.mean) / exact.stddev).abs().max()
    width_ratio = (phi.std(0) / exact.stddev).log().abs().max()
    return {**row, "diverged": False, "mean_error": float(mean_error), "log_width_ratio": float(width_ratio)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--guides", nargs="+", choices=list(GUIDES), default=list(GUIDES))
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.1, 0.02])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(6)))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=20_000)
    parser.add_argument("--core-unit", type=float, default=None, help="override each recipe's core_unit")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the rows here as JSON")
    parser.add_argument("--quick", action="store_true", help="two guides, one seed, 5 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.guides, args.lrs, args.seeds, args.steps, args.draws = (
            ["AutoNormal", "AutoIAF"],
            [0.1],
            [0],
            5,
            500,
        )
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'guide':<20}{'lr':>6}{'seed':>6}{'mean err':>10}{'|log w|':>9}")
    for name in args.guides:
        for lr in args.lrs:
            for seed in args.seeds:
                row = one_run(name, lr, seed, args.steps, args.draws, args.core_unit)
                print(
                    f"{name:<20}{lr:>6}{seed:>6}{row['mean_error']:>10.3f}{row['log_width_ratio']:>9.3f}",
                    flush=True,
                )
                rows.append(row)
    save_rows(args.out, args, rows, benchmark="large_rate")
    return rows


if __name__ == "__main__":
    main()
