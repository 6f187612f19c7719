"""Quality at equal wall-clock: what each guide reaches after the same number of seconds.

    python benchmarks/equal_time.py --out benchmarks/results/equal_time.json  # funnel, logistic
    python benchmarks/equal_time.py --models funnel --seconds 30 --guides AutoNormal AutoIAF
    python benchmarks/equal_time.py --quick                      # a smoke run (the test suite does this)

Every guide (Pyro's AutoNormal, AutoMultivariateNormal, AutoIAFNormal and
AutoNormalizingFlow with 4 spline-coupling layers, and our four flow guides at their
defaults) is trained by SVI (Adam lr 1e-2, 8 vectorized particles, same seed) until
``--seconds`` of wall-clock have passed, then scored from 4000 of its own draws with
``flowguide.diagnostics``: ELBO ± standard error, the importance-weighted bound, PSIS
k-hat, and KL(q||p) = log Z - ELBO where log Z is known (the funnel). A guide that is
cheap per step gets more steps; the table shows whether that beats a better family.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import pyro.distributions.transforms as T
import torch
from _results import save_rows
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoNormalizingFlow
from pyro.optim import Adam

from flowguide.apps.bundled import bundled_model
from flowguide.apps.compare import GUIDES as OUR_GUIDES
from flowguide.apps.compare import evaluate_guide
from flowguide.diagnostics.importance import max_plate_nesting

GUIDES: dict[str, Callable] = {
    "AutoNormal": OUR_GUIDES["AutoNormal"],
    "AutoMultivariateNormal": OUR_GUIDES["AutoMultivariateNormal"],
    "pyro.AutoIAFNormal": AutoIAFNormal,
    "pyro.spline_coupling": lambda m: AutoNormalizingFlow(
        m, functools.partial(T.iterated, 4, T.spline_coupling)
    ),
    **{
        name: OUR_GUIDES[name]
        for name in ("AutoPlanarFlow", "AutoIAF", "AutoNeuralSpline", "AutoAffineCoupling")
    },
}


def train_for(case, guide, seconds: float, lr: float, particles: int) -> tuple[int, bool]:
    """SVI steps until ``seconds`` have passed; returns (steps, finite)."""
    nesting = max_plate_nesting(case.model, *case.args)
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=nesting)
    svi = SVI(case.model, guide, Adam({"lr": lr}), elbo)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        try:
            loss = svi.step(*case.args)
        except ValueError:  # a non-finite parameter caught by distribution validation
            return steps, False
        steps += 1
        if not math.isfinite(loss):
            return steps, False
    return steps, True


def run(models, guides, seconds: float, lr: float, particles: int, samples: int, seed: int) -> list[dict]:
    rows = []
    for model_name in models:
        case = bundled_model(model_name)
        for name in guides:
            pyro.clear_param_store()
            pyro.set_rng_seed(seed)
            guide = GUIDES[name](case.model)
            steps, finite = train_for(case, guide, seconds, lr, particles)
            row = {"model": model_name, "guide": name, "seconds": seconds, "steps": steps, "finite": finite}
            if finite:
                report, _ = evaluate_guide(name, case.model, guide, case.args, samples, case.log_z)
                row |= {
                    k: getattr(report, k) for k in ("elbo", "elbo_se", "iwae", "khat", "kl", "num_params")
                }
            rows.append(row)
            text = "diverged" if not finite else f"ELBO {row['elbo']:9.3f} ± {row['elbo_se']:.3f}"
            kl = f"  KL {row['kl']:.3f}" if finite and row["kl"] is not None else ""
            khat = f"  k-hat {row['khat']:.2f}" if finite else ""
            print(f"{model_name:<10} {name:<23} {steps:6d} steps  {text}{kl}{khat}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["funnel", "logistic"])
    parser.add_argument("--guides", nargs="+", default=list(GUIDES), choices=list(GUIDES))
    parser.add_argument("--seconds", type=float, default=60.0, help="training wall-clock per guide")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4000, help="guide draws for the scores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the script runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.seconds, args.samples = 0.5, 50
    rows = run(args.models, args.guides, args.seconds, args.lr, args.particles, args.samples, args.seed)
    save_rows(args.out, args, rows, benchmark="equal_time")
    return rows


if __name__ == "__main__":
    main()
