"""Fit quality on posteriors with a known evidence: KL(q||p) per target, guide and variant.

    python benchmarks/fit_quality.py --out benchmarks/results/fit_quality.json
    python benchmarks/fit_quality.py --part ablation --out benchmarks/results/fit_quality_ablation.json
    python benchmarks/fit_quality.py --guides AutoIAF --targets funnel --seeds 0 1 2 3
    python benchmarks/fit_quality.py --quick               # smoke run (the test suite does this)

Every guide is trained by ``flowguide.training.fit`` on each target of
``flowguide.apps.exact`` for the same steps, then KL = log Z - ELBO is estimated from
20,000 of its draws (``flowguide.diagnostics.elbo``). Variants:

- ``defaults``: the guide at its defaults, Adam at a constant rate of 1e-2 with 8
  vectorized particles (what a user swapping ``AutoNormal`` out gets);
- ``recipe``: the same guide trained with its :class:`~flowguide.Recipe` (what
  ``flowguide.training.fit`` does by default: its particles, rate decay and clamp);
- ablation (``--part ablation``): the defaults with one feature removed, ``no_stl``
  (``stl=False``), ``diagonal`` (no triangular head) and ``cold`` (no Laplace start).

Pyro's ``AutoNormal``, ``AutoMultivariateNormal``, ``AutoIAFNormal`` and a guide of four
spline couplings (``AutoNormalizingFlow``) run as reference rows on the same loop and
seeds (``--part quality``; ``--no-references`` drops them). A row records the updates its
NaN guard refused in ``skipped`` (``None``: the guard stopped the fit).
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from pathlib import Path

import pyro
import pyro.distributions.transforms as T
import torch
from _results import save_rows
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoMultivariateNormal, AutoNormal, AutoNormalizingFlow

from flowguide import AutoAffineCoupling, AutoIAF, AutoNeuralSpline, AutoPlanarFlow
from flowguide.apps.exact import EXACT_MODELS
from flowguide.diagnostics import elbo
from flowguide.training import NonFiniteError, fit

GUIDES = {
    "AutoPlanarFlow": AutoPlanarFlow,
    "AutoIAF": AutoIAF,
    "AutoNeuralSpline": AutoNeuralSpline,
    "AutoAffineCoupling": AutoAffineCoupling,
}
REFERENCES = {
    "AutoNormal": AutoNormal,
    "AutoMultivariateNormal": AutoMultivariateNormal,
    "pyro.AutoIAFNormal": AutoIAFNormal,
    # Pyro's neural spline guide: four iterated spline couplings.
    "pyro.spline_coupling": lambda model: AutoNormalizingFlow(
        model, functools.partial(T.iterated, 4, T.spline_coupling)
    ),
}
#: Guide options of each variant.
VARIANTS = {
    "defaults": {},
    "recipe": {},
    "no_stl": {"stl": False},
    "diagonal": {"affine": "diagonal"},
    "cold": {"warm_start": None},
}
PARTS = {"quality": ["defaults", "recipe"], "ablation": ["defaults", "no_stl", "diagonal", "cold"]}


def train(case, guide, variant: str, args: argparse.Namespace) -> tuple[int | None, float]:
    """Train ``guide``; return the steps whose update the NaN guard refused (``None`` where
    the guard stopped the fit: it diverged), and seconds."""
    options = {"steps": args.steps, "device": "cpu", "progress": False}
    if variant != "recipe":  # Adam at a constant rate, the same ELBO for every guide
        loss = Trace_ELBO(num_particles=args.particles, vectorize_particles=True, max_plate_nesting=1)
        optimizer = lambda params: torch.optim.Adam(params, lr=args.lr)  # noqa: E731
        options.update(loss=loss, optimizer=optimizer, recipe=None)
    start = time.perf_counter()
    try:
        skipped = len(fit(case.model, guide, *case.args, **options).skipped)
    except NonFiniteError:
        skipped = None
    return skipped, time.perf_counter() - start


def run_one(args: argparse.Namespace, case, name: str, variant: str, seed: int) -> dict:
    """Train and score one guide variant from one seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    options = {} if name in REFERENCES else VARIANTS[variant]
    guide = {**GUIDES, **REFERENCES}[name](case.model, **options)
    skipped, seconds = train(case, guide, variant, args)
    estimate = elbo(case.model, guide, *case.args, num_samples=args.samples) if skipped is not None else None
    kl, se = (math.nan, math.nan) if estimate is None else (case.log_z - estimate.value, estimate.stderr)
    row = {
        "target": case.name,
        "guide": name,
        "variant": variant,
        "seed": seed,
        "kl": kl,
        "se": se,
        "skipped": skipped,
        "seconds": seconds,
        "warm_started": getattr(guide, "warm_started", None),
    }
    print(
        f"{case.name:<22} {name:<22} {variant:<9} seed {seed}  KL {row['kl']:9.4f} ± {row['se']:.4f}"
        f"  {seconds:6.1f} s{'  (warm)' if row['warm_started'] else ''}",
        flush=True,
    )
    return row


def run(args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    for seed in args.seeds:
        for target in args.targets:
            case = EXACT_MODELS[target]()
            case.name = target
            for name in args.guides:
                rows += [run_one(args, case, name, variant, seed) for variant in PARTS[args.part]]
            if args.references:
                rows += [run_one(args, case, name, "defaults", seed) for name in REFERENCES]
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=list(PARTS), default="quality")
    parser.add_argument("--guides", nargs="+", default=list(GUIDES), choices=list(GUIDES))
    parser.add_argument("--targets", nargs="+", default=list(EXACT_MODELS), choices=list(EXACT_MODELS))
    parser.add_argument("--no-references", dest="references", action="store_false")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--samples", type=int, default=20_000, help="guide draws for the ELBO estimate")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 (ablation: 0)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0, 1] if args.part == "quality" else [0]
    if args.part == "ablation":
        args.references = False
    if args.quick:
        args.steps, args.samples, args.targets, args.seeds = 3, 200, args.targets[:2], args.seeds[:1]
    torch.set_num_threads(args.threads)
    rows = run(args)
    save_rows(args.out, args, rows, benchmark=f"fit_quality{'_ablation' if args.part == 'ablation' else ''}")
    return rows


if __name__ == "__main__":
    main()
