"""Conditioner weights packed in one parameter, or one parameter per weight and bias.

    python benchmarks/packing.py --threads 1 --out benchmarks/results/packing.json  # D = 10, 200
    python benchmarks/packing.py --dims 1000 --steps 10 --threads 2
    python benchmarks/packing.py --quick          # smoke run (the test suite does this)

Seconds per SVI step of the flow guides of ``guides_vs_pyro.py`` (same model, depth,
widths and plain estimator), built three ways in one process: every conditioner packed
(``flowguide.nn.PACK_LIMIT`` set above any size), none packed (set to 0), and the
default limit. The three are interleaved within each repeat; medians are printed with
the ratios to "all packed". Packing saves ``pyro.optim``'s per-tensor optimizer steps;
its backward concatenates the layers' gradients, one more copy of every gradient entry,
which dominates once the conditioners are large. The ``weights`` column is the largest
conditioner's count.
"""

from __future__ import annotations

import argparse
import runpy
import statistics
from pathlib import Path

import torch
from _results import save_rows

import flowguide.nn.networks as networks

HERE = Path(__file__).parent
MODES = {"packed": 2**62, "separate": 0, "default": networks.PACK_LIMIT}


def _largest_stack(guide) -> int:
    stacks = [m for m in guide.modules() if isinstance(m, networks.LinearStack)]
    return max((sum(m.sizes) for m in stacks), default=0)


def measure(bench: dict, dim: int, steps: int, repeats: int) -> list[dict]:
    """Median seconds per step of each family's guide at ``dim``, in each packing mode."""
    model, args = bench["isotropic"](dim)
    rows = []
    for family, (ours, _) in bench["_pairs"](4, max(64, 2 * dim)).items():
        runs: dict[str, list[float]] = {mode: [] for mode in MODES}
        try:
            for seed in range(repeats):  # modes interleaved, so drifting machine load hits all alike
                for mode, limit in MODES.items():
                    networks.PACK_LIMIT = limit
                    guide = ours(model, stl=False)
                    runs[mode].append(bench["train"](model, guide, args, steps, 1e-3, 1, seed))
        finally:
            networks.PACK_LIMIT = MODES["default"]
        times = {mode: statistics.median(values) for mode, values in runs.items()}
        # the sizes do not depend on the packing: the last guide trained serves
        rows.append({"flow": family, "dim": dim, "largest_stack": _largest_stack(guide), **times})
    return rows


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[10, 200])
    parser.add_argument("--steps", type=int, default=200, help="SVI steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="D = 4, a few steps, one repeat")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dims, steps, repeats = ([4], 3, 1) if args.quick else (args.dims, args.steps, args.repeats)
    bench = runpy.run_path(str(HERE / "guides_vs_pyro.py"))
    print(f"PACK_LIMIT = {networks.PACK_LIMIT}; seconds per SVI step, median of {repeats} x {steps}")
    header = ["flow", "D", "weights", "packed", "separate", "default", "sep/packed", "default/packed"]
    print(f"{header[0]:<18}" + "".join(f"{h:>15}" for h in header[1:]))
    rows = []
    for dim in dims:
        for row in measure(bench, dim, steps, repeats):
            rows.append(row)
            packed = row["packed"]
            cells = [dim, row["largest_stack"], *(f"{row[m]:.5f}" for m in MODES)]
            cells += [f"{row['separate'] / packed:.2f}", f"{row['default'] / packed:.2f}"]
            print(f"{row['flow']:<18}" + "".join(f"{c:>15}" for c in cells), flush=True)
    save_rows(args.out, args, rows, benchmark="packing")


if __name__ == "__main__":
    main()
