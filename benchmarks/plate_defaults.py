"""The plate flow's defaults: initialization and sticking the landing, by ELBO per step.

    python benchmarks/plate_defaults.py --out benchmarks/results/plate_defaults.json
    python benchmarks/plate_defaults.py --quick          # a smoke run

On the centered hierarchical model of ``benchmarks/scale_models.py`` (``--groups``
groups), ``flowguide.AutoIAF(local_plates=("groups",))`` is trained by SVI (Adam at a
constant 1e-2 with gradient entries clamped to 10, as ``benchmarks/scale.py`` trains; 8
vectorized particles; each of ``--seeds``) at its defaults (``init_to_median``, no
sticking the landing), with ``init_to_feasible``, with ``stl=True`` and with a plain
Adam, next to Pyro's ``AutoNormal``. The ELBO (the mean of ``-loss`` over 256 particles)
is recorded every ``--every`` steps; the table shows its mean over the seeds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyro
import torch
from _results import save_rows
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_feasible
from scale_models import make_case

from flowguide import AutoIAF
from flowguide.autoguide.recipe import Recipe

VARIANTS = {
    "AutoNormal": lambda case: AutoNormal(case.model),
    "plates (default)": lambda case: AutoIAF(case.model, local_plates=case.plates),
    "plates, init_to_feasible": lambda case: AutoIAF(
        case.model, local_plates=case.plates, init_loc_fn=init_to_feasible
    ),
    "plates, stl=True": lambda case: AutoIAF(case.model, local_plates=case.plates, stl=True),
    "plates, plain Adam (no clamp)": lambda case: AutoIAF(case.model, local_plates=case.plates),
}


def elbo_of(case, guide, particles: int = 256) -> float:
    loss = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        return -loss.loss(case.model, guide, *case.args)


def run(name: str, case, steps: int, every: int, seed: int) -> dict:
    pyro.clear_param_store()
    torch.manual_seed(seed)
    guide = VARIANTS[name](case)
    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    clamped = Recipe(lr_decay=None).pyro_optim(steps, 1e-2)  # Adam, every gradient entry clamped to 10
    optim = pyro.optim.Adam({"lr": 1e-2}) if "plain Adam" in name else clamped
    svi = SVI(case.model, guide, optim, elbo)
    curve, seconds = [], 0.0
    for step in range(steps + 1):
        if step % every == 0:
            curve.append({"step": step, "seconds": seconds, "elbo": elbo_of(case, guide)})
        start = time.perf_counter()
        svi.step(*case.args)
        seconds += time.perf_counter() - start
    return {
        "variant": name,
        "seed": seed,
        "groups": case.dim - 2,
        "curve": curve,
        "s_per_step": seconds / (steps + 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.groups, args.steps, args.every, args.seeds = 20, 20, 10, [0]
    torch.set_num_threads(1)
    case = make_case("hierarchical_centered", args.groups + 2)
    rows = []
    for name in VARIANTS:
        runs = [run(name, case, args.steps, args.every, seed) for seed in args.seeds]
        rows.extend(runs)
        mean = [sum(r["curve"][i]["elbo"] for r in runs) / len(runs) for i in range(len(runs[0]["curve"]))]
        ms = 1e3 * sum(r["s_per_step"] for r in runs) / len(runs)
        print(f"{name:32s} {ms:6.1f} ms/step  mean ELBO: " + "  ".join(f"{e:.1f}" for e in mean), flush=True)
    save_rows(args.out, args, rows, benchmark="plate_defaults")


if __name__ == "__main__":
    main()
