"""The plate flow's defaults: initialization and sticking the landing, by ELBO per step.

    python benchmarks/plate_defaults.py --out benchmarks/results/plate_defaults.json
    python benchmarks/plate_defaults.py --quick          # a smoke run

On the centered hierarchical model of ``benchmarks/scale_models.py`` (``--groups``
groups), ``flowguide.AutoIAF(local_plates=("groups",))`` is trained by SVI (Adam 1e-2,
8 vectorized particles, seed 0) with ``init_to_median`` or ``init_to_feasible`` and with
the recipe's sticking the landing or ``stl=False``, next to Pyro's ``AutoNormal``; the
ELBO (the mean of ``-loss`` over 256 particles) is recorded every ``--every`` steps.
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
from pyro.infer.autoguide.initialization import init_to_median
from scale_models import make_case

from flowguide import AutoIAF

VARIANTS = {
    "AutoNormal": lambda case: AutoNormal(case.model),
    "plates, init_to_median": lambda case: AutoIAF(
        case.model, local_plates=case.plates, init_loc_fn=init_to_median
    ),
    "plates, init_to_median, stl=False": lambda case: AutoIAF(
        case.model, local_plates=case.plates, init_loc_fn=init_to_median, stl=False
    ),
    "plates, init_to_feasible (default)": lambda case: AutoIAF(case.model, local_plates=case.plates),
    "plates, init_to_feasible, members stl=True": lambda case: AutoIAF(
        case.model, local_plates=case.plates, stl=True
    ),
}


def elbo_of(case, guide, particles: int = 256) -> float:
    loss = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        return -loss.loss(case.model, guide, *case.args)


def run(name: str, case, steps: int, every: int) -> dict:
    pyro.clear_param_store()
    torch.manual_seed(0)
    guide = VARIANTS[name](case)
    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(case.model, guide, pyro.optim.Adam({"lr": 1e-2}), elbo)
    curve, seconds = [], 0.0
    for step in range(steps + 1):
        if step % every == 0:
            curve.append({"step": step, "seconds": seconds, "elbo": elbo_of(case, guide)})
        start = time.perf_counter()
        svi.step(*case.args)
        seconds += time.perf_counter() - start
    return {"variant": name, "groups": case.dim - 2, "curve": curve, "s_per_step": seconds / (steps + 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.groups, args.steps, args.every = 20, 20, 10
    torch.set_num_threads(1)
    case = make_case("hierarchical_centered", args.groups + 2)
    rows = []
    for name in VARIANTS:
        row = run(name, case, args.steps, args.every)
        rows.append(row)
        curve = "  ".join(f"{point['elbo']:.1f}" for point in row["curve"])
        print(f"{name:45s} {row['s_per_step'] * 1e3:6.1f} ms/step  ELBO: {curve}", flush=True)
    save_rows(args.out, args, rows, benchmark="plate_defaults")


if __name__ == "__main__":
    main()
