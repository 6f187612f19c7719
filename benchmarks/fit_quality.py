"""Fit-quality features one at a time: KL(q||p) per target, guide and variant.

    python benchmarks/fit_quality.py                       # every guide, target and variant
    python benchmarks/fit_quality.py --guides AutoIAF --targets funnel --variants new old
    python benchmarks/fit_quality.py --quick               # smoke run (the test suite does this)

Variants (all at the same steps, learning rate, particles and seed):

- ``new``: the guide's current defaults (``affine="full"``, class default ``stl``, and
  for AutoAffineCoupling ``log_scale_bound=1.5``);
- ``old``: the previous defaults (``affine="diagonal"``, ``stl=False``, bound 3);
- ``stl``/``no_stl``: the defaults with sticking the landing forced on / off;
- ``diagonal``: the defaults without the triangular linear head;
- ``laplace``: the defaults plus ``warm_start="laplace"``.

Every row also records seconds of training, so variants can be compared at equal
wall-clock as well as at equal steps (``--equal-time`` trains each variant for the
wall-clock the ``old`` variant took instead of a fixed number of steps).
KL = log Z - ELBO, the ELBO estimated from 20,000 guide draws.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.importance import vectorized_importance_weights
from pyro.optim import Adam

from flowguide import AutoAffineCoupling, AutoIAF, AutoNeuralSpline, AutoPlanarFlow
from flowguide.models.exact import EXACT_MODELS

GUIDES = {
    "AutoPlanarFlow": AutoPlanarFlow,
    "AutoIAF": AutoIAF,
    "AutoNeuralSpline": AutoNeuralSpline,
    "AutoAffineCoupling": AutoAffineCoupling,
}
VARIANTS = {
    "new": {},
    "old": {"affine": "diagonal", "stl": False},
    "stl": {"stl": True},
    "no_stl": {"stl": False},
    "diagonal": {"affine": "diagonal"},
    "laplace": {"warm_start": "laplace"},
}
#: Per-guide options of the ``old`` variant beyond ``VARIANTS["old"]``.
OLD_EXTRA = {"AutoAffineCoupling": {"log_scale_bound": 3.0}}


def fit(case, guide, steps: int, seconds: float | None, lr: float, particles: int) -> tuple[int, float]:
    """Train for ``steps`` (or ``seconds`` of wall-clock); return steps taken (negative if the
    loss went non-finite: the fit diverged) and seconds."""
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(case.model, guide, Adam({"lr": lr}), elbo)
    start, done = time.perf_counter(), 0
    while (done < steps) if seconds is None else (time.perf_counter() - start < seconds):
        try:
            loss = svi.step(*case.args)
        except ValueError:  # a non-finite parameter caught by distribution validation
            loss = math.nan
        done += 1
        if not math.isfinite(loss):
            return -done, time.perf_counter() - start
    return done, time.perf_counter() - start


def kl(case, guide, num_samples: int) -> tuple[float, float]:
    with torch.no_grad():
        log_w = vectorized_importance_weights(
            case.model, guide, *case.args, num_samples=num_samples, max_plate_nesting=1
        )[0].double()
    return case.log_z - float(log_w.mean()), float(log_w.std()) / math.sqrt(num_samples)


def run(args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    for target in args.targets:
        case = EXACT_MODELS[target]()
        for name in args.guides:
            budget = None
            for variant in args.variants:
                pyro.clear_param_store()
                pyro.set_rng_seed(args.seed)
                options = {**VARIANTS[variant], **(OLD_EXTRA.get(name, {}) if variant == "old" else {})}
                guide = GUIDES[name](case.model, **options)
                seconds = budget if args.equal_time and variant != "old" else None
                steps, spent = fit(case, guide, args.steps, seconds, args.lr, args.particles)
                if variant == "old":
                    budget = spent
                value, se = kl(case, guide, args.samples) if steps > 0 else (math.nan, math.nan)
                row = {
                    "target": target,
                    "guide": name,
                    "variant": variant,
                    "kl": value,
                    "se": se,
                    "steps": steps,
                    "seconds": spent,
                }
                rows.append(row)
                print(
                    f"{target:<22} {name:<19} {variant:<9} KL {value:9.4f} ± {se:.4f}"
                    f"  {steps:5d} steps {spent:6.1f} s",
                    flush=True,
                )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--guides", nargs="+", default=list(GUIDES), choices=list(GUIDES))
    parser.add_argument("--targets", nargs="+", default=list(EXACT_MODELS), choices=list(EXACT_MODELS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--samples", type=int, default=20_000, help="guide draws for the ELBO estimate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--equal-time", action="store_true", help="give every variant the old variant's time")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.samples = 3, 200
        args.targets = args.targets[:2]
    torch.set_num_threads(args.threads)
    if args.equal_time and "old" in args.variants:
        args.variants = ["old"] + [v for v in args.variants if v != "old"]
    rows = run(args)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1)
        )
    return rows


if __name__ == "__main__":
    main()
