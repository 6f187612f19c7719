"""Our flows against zuko's equivalents: ``rsample_and_log_prob`` throughput.

    python benchmarks/flows_vs_zuko.py --out benchmarks/results/flows_vs_zuko.json  # D = 16, 128
    python benchmarks/flows_vs_zuko.py --quick                # a smoke run (the test suite does this)

Each pair has the same depth (4 layers), conditioner widths (two hidden layers of
``max(64, 2D)``) and bins. zuko's flows map data to noise, so its fast direction is
density evaluation; for reverse-KL use (what a guide does) its documentation inverts
the transform, ``zuko.flows.Flow(flow.transform.inv, flow.base)``, so that sampling is
the one-pass direction. Both sides are timed in that orientation, in one process:

- ``sample``: one call of ``rsample_and_log_prob((batch,))`` without gradients;
- ``train``: the same call plus the backward pass of a reverse-KL-like loss
  ``mean(log q(z) + |z|^2 / 2)``, which is the work of one training step.

Medians over ``--repeats`` runs of ``--calls`` calls; ratio = ours / zuko seconds, so
below 1 means we are faster. zuko is an optional benchmark dependency
(``pip install flowguide[bench]``), never needed at runtime.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import zuko
from _results import save_rows

from flowguide import affine_coupling_flow, iaf, neural_spline_flow


def _zuko_inverted(flow: zuko.flows.Flow) -> zuko.flows.Flow:
    """zuko's reverse-KL orientation: sampling runs the transform's one-pass direction."""
    return zuko.flows.Flow(flow.transform.inv, flow.base)


def pairs(dim: int, hidden: int, depth: int = 4) -> dict[str, tuple[Callable, Callable]]:
    """Name -> (ours, zuko) constructors with matched depth, widths and bins."""
    widths = (hidden, hidden)
    return {
        "NSF coupling": (
            lambda: neural_spline_flow(dim, depth, widths, structure="coupling"),
            lambda: _zuko_inverted(zuko.flows.NSF(dim, transforms=depth, hidden_features=widths, passes=2)),
        ),
        "NSF autoregressive": (
            lambda: neural_spline_flow(dim, depth, widths, structure="autoregressive"),
            lambda: _zuko_inverted(zuko.flows.NSF(dim, transforms=depth, hidden_features=widths)),
        ),
        "IAF (inverted MAF)": (
            lambda: iaf(dim, depth, widths),
            lambda: _zuko_inverted(zuko.flows.MAF(dim, transforms=depth, hidden_features=widths)),
        ),
        "RealNVP": (
            lambda: affine_coupling_flow(dim, depth, widths),
            lambda: _zuko_inverted(zuko.flows.RealNVP(dim, transforms=depth, hidden_features=widths)),
        ),
    }


def _seconds_per_call(flow: torch.nn.Module, batch: int, calls: int, repeats: int, train: bool) -> float:
    def call() -> None:
        with torch.set_grad_enabled(train):
            z, log_q = flow().rsample_and_log_prob((batch,))
            if train:
                (log_q + z.square().sum(-1) / 2).mean().backward()

    for _ in range(3):  # warm-up: lazy allocations, caches
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def run(dims, batch: int, calls: int, repeats: int, flows: list[str] | None = None) -> list[dict]:
    rows = []
    for dim in dims:
        hidden = max(64, 2 * dim)
        for name, (make_ours, make_zuko) in pairs(dim, hidden).items():
            if flows is not None and name not in flows:
                continue
            torch.manual_seed(0)
            ours, theirs = make_ours(), make_zuko()
            for mode in ("sample", "train"):
                t_ours = _seconds_per_call(ours, batch, calls, repeats, mode == "train")
                t_zuko = _seconds_per_call(theirs, batch, calls, repeats, mode == "train")
                row = {
                    "flow": name,
                    "dim": dim,
                    "hidden": hidden,
                    "mode": mode,
                    "ours_s": t_ours,
                    "zuko_s": t_zuko,
                    "ratio": t_ours / t_zuko,
                    "ours_params": sum(p.numel() for p in ours.parameters()),
                    "zuko_params": sum(p.numel() for p in theirs.parameters()),
                }
                rows.append(row)
                times = f"ours {t_ours * 1e3:8.2f} ms  zuko {t_zuko * 1e3:8.2f} ms"
                rates = f"({batch / t_ours:9.0f} vs {batch / t_zuko:9.0f} draws/s)"
                ratio = f"ours/zuko {row['ratio']:5.2f}"
                print(f"{name:<19} D={dim:<4} {mode:<6} {times}  {ratio}  {rates}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--calls", type=int, default=20, help="calls per timed repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (the median is reported)")
    parser.add_argument("--flows", nargs="+", default=None, choices=list(pairs(2, 8)), help="default: all")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.dims, args.batch, args.calls, args.repeats = [4], 16, 1, 1
    rows = run(args.dims, args.batch, args.calls, args.repeats, args.flows)
    save_rows(args.out, args, rows, benchmark="flows_vs_zuko")
    return rows


if __name__ == "__main__":
    main()
