"""The head's threshold and rank: seconds per step and parameters of the full and the low-rank head.

    python benchmarks/head_threshold.py --out benchmarks/results/head_threshold.json
    python benchmarks/head_threshold.py --quick          # a smoke run

``flowguide.AutoIAF`` with ``affine="full"`` and with ``affine="lowrank"`` at ranks 8, 16
and 32 (conditioner widths at their default for the dimension) on a D-dimensional
standard normal model, each timed by SVI (Adam 1e-2, 8 vectorized particles, one
thread; median of ``--steps`` timed steps after 3 warm-up steps), one after the
other, next to Pyro's ``AutoNormal``. This chose
``FULL_HEAD_MAX_DIM`` (where the full head stops costing about what the low-rank one
does) and ``HEAD_RANK``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from _results import save_rows
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from flowguide import AutoIAF

VARIANTS = {
    "AutoNormal": lambda model: AutoNormal(model),
    "full": lambda model: AutoIAF(model, affine="full", mode_search=None),
    "lowrank 8": lambda model: AutoIAF(model, affine="lowrank", head_rank=8, mode_search=None),
    "lowrank 16": lambda model: AutoIAF(model, affine="lowrank", head_rank=16, mode_search=None),
    "lowrank 32": lambda model: AutoIAF(model, affine="lowrank", head_rank=32, mode_search=None),
}


def gaussian(dim: int):
    def model():
        pyro.sample("z", dist.Normal(torch.zeros(dim), 1.0).to_event(1))

    return model


def measure(dim: int, steps: int) -> list[dict]:
    model, rows = gaussian(dim), []
    for name, make in VARIANTS.items():
        pyro.clear_param_store()
        guide = make(model)
        guide()
        params = sum(p.numel() for p in pyro.get_param_store().values())
        elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=0)
        svi, times = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), elbo), []
        for step in range(steps + 3):
            start = time.perf_counter()
            svi.step()
            if step >= 3:
                times.append(time.perf_counter() - start)
        rows.append({"dim": dim, "variant": name, "params": params, "s_per_step": statistics.median(times)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.dims, args.steps = [16, 40], 2
    torch.set_num_threads(1)
    rows = []
    for dim in args.dims:
        for row in measure(dim, args.steps):
            rows.append(row)
            ms = row["s_per_step"] * 1e3
            print(f"D={dim:6d} {row['variant']:12s} {row['params']:>10,} params {ms:8.2f} ms", flush=True)
    save_rows(args.out, args, rows, benchmark="head_threshold")


if __name__ == "__main__":
    main()
