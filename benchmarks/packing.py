"""One conditioner stack packed in one parameter against one parameter per weight and bias.

    python benchmarks/packing.py --threads 1 --out benchmarks/results/packing.json
    python benchmarks/packing.py --quick          # smoke run (the test suite does this)

For stacks of growing size, one training step (forward, backward, and a
``pyro.optim.Adam`` step, which keeps one torch ``Adam`` per parameter tensor) of a
``flowguide.nn.LinearStack`` with ``pack=True`` and with ``pack=False``, same weights,
interleaved repeats, best of the repeats. Prints milliseconds per step and the ratio
packed / separate, and marks the stacks ``PACK_LIMIT`` packs by default. Packing saves
the optimizer's per-tensor overhead; its backward concatenates the layers' gradients,
one more copy of every gradient entry, which dominates once the stack is large.
"""

from __future__ import annotations

import argparse
import time
from itertools import pairwise
from pathlib import Path

import pyro
import torch
from _results import save_rows

from flowguide.nn import PACK_LIMIT, LinearStack

STACKS = [
    [10, 64, 64, 230],
    [30, 128, 128, 690],
    [100, 256, 256, 500],
    [100, 400, 400, 800],
    [200, 600, 600, 1000],
    [200, 1000, 1000, 2300],
    [500, 2000, 2000, 1000],
]


def _stepper(widths: list[int], pack: bool, batch: int):
    """A closure doing one forward, backward and Pyro Adam step of a fresh seeded stack."""
    torch.manual_seed(0)
    stack = LinearStack(widths, pack=pack)
    params, optim = list(stack.parameters()), pyro.optim.Adam({"lr": 1e-3})
    x = torch.randn(batch, widths[0])

    def step() -> None:
        stack(x).square().sum().backward()
        optim(params)
        for p in params:
            p.grad = None

    return step


def _seconds(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def measure(widths: list[int], steps: int, repeats: int, batch: int) -> dict:
    steppers = {pack: _stepper(widths, pack, batch) for pack in (True, False)}
    for step in steppers.values():
        _seconds(step, 3)  # warm-up: allocator, Adam state
    times = {True: [], False: []}
    for _ in range(repeats):  # interleaved, so drift on the machine hits both
        for pack, step in steppers.items():
            times[pack].append(_seconds(step, steps))
    numel = sum(a * b + b for a, b in pairwise(widths))
    packed, separate = min(times[True]), min(times[False])
    return {
        "widths": widths,
        "numel": numel,
        "packed_by_default": numel <= PACK_LIMIT,
        "packed_s": packed,
        "separate_s": separate,
        "ratio": packed / separate,
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--steps", type=int, default=60, help="steps per repeat (a tenth above 1e6 weights)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="two small stacks, few steps")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stacks = STACKS[:2] if args.quick else STACKS
    steps = 2 if args.quick else args.steps
    print(f"PACK_LIMIT = {PACK_LIMIT}; ms per step (forward, backward, Pyro Adam), best of {args.repeats}")
    print(f"{'widths':28s} {'weights':>9s} {'default':>8s} {'packed':>9s} {'separate':>9s} {'ratio':>6s}")
    rows = []
    for widths in stacks:
        n = sum(a * b + b for a, b in pairwise(widths))
        row = measure(widths, steps if n < 1e6 else max(steps // 10, 2), args.repeats, args.batch)
        rows.append(row)
        default = "packed" if row["packed_by_default"] else "separate"
        print(
            f"{widths!s:28s} {row['numel']:9d} {default:>8s} {row['packed_s'] * 1e3:9.3f} "
            f"{row['separate_s'] * 1e3:9.3f} {row['ratio']:6.2f}",
            flush=True,
        )
    save_rows(args.out, args, rows)


if __name__ == "__main__":
    main()
