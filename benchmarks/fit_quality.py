"""Fit-quality features one at a time: KL(q||p) per target, guide and variant.

    python benchmarks/fit_quality.py                       # every guide, target and variant
    python benchmarks/fit_quality.py --guides AutoIAF --targets funnel --variants new old
    python benchmarks/fit_quality.py --variants new --sweep # one default changed at a time
    python benchmarks/fit_quality.py --quick               # smoke run (the test suite does this)

Variants (all at the same steps, learning rate, particles and seed unless they change them):

- ``new``: the guide's current defaults;
- ``old``: the first defaults (``affine="diagonal"``, ``stl=False``, no warm start, and
  for AutoAffineCoupling ``log_scale_bound=3``);
- ``stl``/``no_stl``: the defaults with sticking the landing forced on / off;
- ``diagonal``: the defaults without the triangular linear head;
- ``laplace``/``cold``: the defaults with the Laplace warm start forced on / off;
- ``recipe``: the defaults trained the way ``flowguide.training.fit`` trains them by
  default, with the guide's measured recipe (its ``recommended_elbo()`` particles, its
  learning-rate decay to ``lr_decay`` over the steps and its gradient clamp; torch Adam)
  instead of this script's Adam at a constant rate (equal steps only).

``--sweep`` adds the variants that justify the remaining defaults, each changing one
thing: ``flows_half``/``flows_double`` (depth), ``width_32``/``width_128`` (hidden
widths), ``bins_4``/``bins_16`` (spline bins), ``lr_x0.3``/``lr_x3`` (learning rate),
``cosine`` (the learning rate decayed to zero by a cosine over the steps), ``decay``
(``ClippedAdam`` with the rate decayed geometrically to 1% over the steps) and
``particles_1``/``particles_32``.

Every target also gets Pyro's ``AutoNormal`` and ``AutoMultivariateNormal`` as reference
rows (``--no-references`` drops them), so "no flow worse than AutoNormal" is checked in
the same run. Every row records seconds of training; ``--equal-time`` also trains each
variant for the wall-clock the ``old`` variant took (rows ``<variant>@time``), so one run
compares at equal steps and at equal wall-clock. KL = log Z -
ELBO, the ELBO estimated from 20,000 guide draws. A summary table per target ends the run.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from pyro.infer.importance import vectorized_importance_weights
from pyro.optim import Adam, ClippedAdam, CosineAnnealingLR

from flowguide import AutoAffineCoupling, AutoIAF, AutoNeuralSpline, AutoPlanarFlow
from flowguide.models.exact import EXACT_MODELS
from flowguide.training import fit as train

GUIDES = {
    "AutoPlanarFlow": AutoPlanarFlow,
    "AutoIAF": AutoIAF,
    "AutoNeuralSpline": AutoNeuralSpline,
    "AutoAffineCoupling": AutoAffineCoupling,
}
REFERENCES = {"AutoNormal": AutoNormal, "AutoMultivariateNormal": AutoMultivariateNormal}
#: Guide options of each variant.
VARIANTS = {
    "new": {},
    "old": {"affine": "diagonal", "stl": False, "warm_start": None},
    "stl": {"stl": True},
    "no_stl": {"stl": False},
    "diagonal": {"affine": "diagonal"},
    "laplace": {"warm_start": "laplace"},
    "cold": {"warm_start": None},
    "recipe": {},
}
#: Per-guide options of the ``old`` variant beyond ``VARIANTS["old"]``.
OLD_EXTRA = {"AutoAffineCoupling": {"log_scale_bound": 3.0}}
#: Training changes: (lr factor, particles or None for --particles, schedule or None).
TRAINING = {
    "lr_x0.3": (0.3, None, None),
    "lr_x3": (3.0, None, None),
    "cosine": (1.0, None, "cosine"),
    "decay": (1.0, None, "decay"),
    "particles_1": (1.0, 1, None),
    "particles_32": (1.0, 32, None),
}
SWEEP = ["flows_half", "flows_double", "width_32", "width_128", "bins_4", "bins_16", *TRAINING]


def guide_options(name: str, variant: str) -> dict | None:
    """Options of ``variant`` for guide ``name``; ``None`` where it does not apply."""
    if variant in VARIANTS:
        return {**VARIANTS[variant], **(OLD_EXTRA.get(name, {}) if variant == "old" else {})}
    if variant in TRAINING:
        return {}
    defaults = {k: v.default for k, v in inspect.signature(GUIDES[name]).parameters.items()}
    option, _, size = variant.partition("_")
    if option == "flows":
        return {
            "num_flows": max(1, defaults["num_flows"] // 2 if size == "half" else defaults["num_flows"] * 2)
        }
    key = {"width": "hidden_dims", "bins": "bins"}[option]
    if key not in defaults:
        return None
    value = int(size)
    return {key: (value,) * len(defaults[key]) if key == "hidden_dims" else value}


def fit(
    case, guide, steps: int, seconds: float | None, lr: float, particles: int, schedule: str | None = None
) -> tuple[int, float]:
    """Train for ``steps`` (or ``seconds`` of wall-clock); return steps taken (negative if the
    loss went non-finite: the fit diverged) and seconds. ``schedule="cosine"`` decays the
    learning rate to zero over ``steps`` by a half cosine; ``"decay"`` is
    ``ClippedAdam`` with the rate decayed geometrically to 1% over ``steps``."""
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    cosine = schedule == "cosine"
    if cosine:
        optim = CosineAnnealingLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": lr}, "T_max": steps})
    elif schedule == "decay":
        optim = ClippedAdam({"lr": lr, "lrd": 0.01 ** (1 / steps)})
    else:
        optim = Adam({"lr": lr})
    svi = SVI(case.model, guide, optim, elbo)
    start, done = time.perf_counter(), 0
    while (done < steps) if seconds is None else (time.perf_counter() - start < seconds):
        try:
            loss = svi.step(*case.args)
        except ValueError:  # a non-finite parameter caught by distribution validation
            loss = math.nan
        done += 1
        if cosine:
            optim.step()
        if not math.isfinite(loss):
            return -done, time.perf_counter() - start
    return done, time.perf_counter() - start


def fit_recipe(case, guide, steps: int) -> tuple[int, float]:
    """Train with ``flowguide.training.fit`` at its defaults (the guide's recipe); steps
    whose update the NaN guard refused count as a divergence (negative steps)."""
    start = time.perf_counter()
    history = train(case.model, guide, *case.args, steps=steps, device="cpu", progress=False)
    return (-steps if history.skipped else steps), time.perf_counter() - start


def kl(case, guide, num_samples: int) -> tuple[float, float]:
    with torch.no_grad():
        log_w = vectorized_importance_weights(
            case.model, guide, *case.args, num_samples=num_samples, max_plate_nesting=1
        )[0].double()
    return case.log_z - float(log_w.mean()), float(log_w.std()) / math.sqrt(num_samples)


def run_one(args, case, name: str, variant: str, seconds: float | None = None) -> dict | None:
    """Train and score one guide variant; ``seconds`` replaces the step budget by wall-clock."""
    options = {} if name in REFERENCES else guide_options(name, variant)
    if options is None:
        return None
    lr_factor, particles, schedule = TRAINING.get(variant, (1.0, None, None))
    if variant == "recipe" and seconds is not None:
        return None  # the recipe's schedule is planned in steps
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    guide = {**GUIDES, **REFERENCES}[name](case.model, **options)
    if variant == "recipe":
        steps, spent = fit_recipe(case, guide, args.steps)
    else:
        steps, spent = fit(
            case, guide, args.steps, seconds, args.lr * lr_factor, particles or args.particles, schedule
        )
    value, se = kl(case, guide, args.samples) if steps > 0 else (math.nan, math.nan)
    warm = getattr(guide, "warm_started", None)
    label = variant if seconds is None else f"{variant}@time"
    row = {"target": case.name, "guide": name, "variant": label, "kl": value, "se": se}
    row.update(steps=steps, seconds=spent, warm_started=warm)
    print(
        f"{case.name:<22} {name:<22} {label:<12} KL {value:9.4f} ± {se:.4f}"
        f"  {steps:5d} steps {spent:6.1f} s{'  (warm)' if warm else ''}",
        flush=True,
    )
    return row


def run(args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    for target in args.targets:
        case = EXACT_MODELS[target]()
        case.name = target
        for name in (list(REFERENCES) if args.references else []) + args.guides:
            budget = None
            for variant in ["reference"] if name in REFERENCES else args.variants:
                row = run_one(args, case, name, variant)
                if row is not None:
                    rows.append(row)
                    budget = row["seconds"] if variant == "old" else budget
                if row is not None and args.equal_time and variant != "old":
                    rows.append(run_one(args, case, name, variant, budget))
    return rows


def summary(rows: list[dict]) -> str:
    """One table per target: variants down, guides across, KL in each cell."""
    lines = []
    for target in dict.fromkeys(row["target"] for row in rows):
        mine = [row for row in rows if row["target"] == target]
        guides = list(dict.fromkeys(row["guide"] for row in mine))
        cells = {(row["variant"], row["guide"]): row for row in mine}
        lines += [f"\nKL(q||p) on {target}", f"{'variant':<18}" + "".join(f"{g:>24}" for g in guides)]
        for variant in dict.fromkeys(row["variant"] for row in mine):
            found = [cells.get((variant, g)) for g in guides]
            text = ["" if r is None else "diverged" if r["steps"] < 0 else f"{r['kl']:.4f}" for r in found]
            lines.append(f"{variant:<18}" + "".join(f"{t:>24}" for t in text))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--guides", nargs="+", default=list(GUIDES), choices=list(GUIDES))
    parser.add_argument("--targets", nargs="+", default=list(EXACT_MODELS), choices=list(EXACT_MODELS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=[*VARIANTS, *SWEEP])
    parser.add_argument("--sweep", action="store_true", help="add the one-change-at-a-time variants")
    parser.add_argument("--no-references", dest="references", action="store_false")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--samples", type=int, default=20_000, help="guide draws for the ELBO estimate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--equal-time", action="store_true", help="also give every variant the old variant's wall-clock"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.samples = 3, 200
        args.targets = args.targets[:2]
    torch.set_num_threads(args.threads)
    if args.sweep:
        args.variants = list(dict.fromkeys([*args.variants, *SWEEP]))
    if args.equal_time:  # the old variant sets the wall-clock budget, so it runs first
        args.variants = ["old"] + [v for v in args.variants if v != "old"]
    rows = run(args)
    print(summary(rows))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1)
        )
    return rows


if __name__ == "__main__":
    main()
