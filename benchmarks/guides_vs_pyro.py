"""Flow autoguides against Pyro's: seconds per SVI step and parameter counts.

    python benchmarks/guides_vs_pyro.py --part speed --out benchmarks/results/guides_vs_pyro_speed.json
    python benchmarks/guides_vs_pyro.py --part size --out benchmarks/results/guides_vs_pyro_size.json
    python benchmarks/guides_vs_pyro.py --quick         # a smoke run (with --part size: of that part)

Speed: seconds per SVI step, ours over Pyro's counterpart at the same depth and width, on
Pyro's own loop and optimizer (``SVI`` with ``pyro.optim.Adam``), median of repeats
interleaved in one process. Size: parameter counts at D = 1000. Quality against Pyro's
guides is ``benchmarks/fit_quality.py``.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from _results import save_rows
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoNormalizingFlow
from pyro.optim import Adam

from flowguide import AutoAffineCoupling, AutoIAF, AutoNeuralSpline, AutoPlanarFlow


def _pyro_flow(model, depth: int, layer: Callable, **options) -> AutoNormalizingFlow:
    """Pyro's ``AutoNormalizingFlow`` with ``depth`` iterated layers of one family."""
    return AutoNormalizingFlow(model, functools.partial(T.iterated, depth, layer, **options))


def _pairs(depth: int, hidden: int) -> dict[str, tuple[Callable, Callable]]:
    """Ours (``make(model, **options)``) and Pyro's counterpart at the same depth and widths."""
    h = [hidden, hidden]

    def pyro_flow(layer, **options):
        return lambda m: _pyro_flow(m, depth, layer, **options)

    return {
        "planar": (lambda m, **o: AutoPlanarFlow(m, num_flows=depth, **o), pyro_flow(T.planar)),
        "iaf": (
            lambda m, **o: AutoIAF(m, num_flows=depth, hidden_dims=h, **o),
            lambda m: AutoIAFNormal(m, num_transforms=depth, hidden_dim=h),
        ),
        "spline_coupling": (
            lambda m, **o: AutoNeuralSpline(m, num_flows=depth, hidden_dims=h, **o),
            pyro_flow(T.spline_coupling, hidden_dims=h, count_bins=8),
        ),
        "affine_coupling": (
            lambda m, **o: AutoAffineCoupling(m, num_flows=depth, hidden_dims=h, **o),
            pyro_flow(T.affine_coupling, hidden_dims=h),
        ),
    }


def train(model, guide, args, steps: int, lr: float, particles: int, seed: int) -> float:
    """Train with SVI; return seconds per step."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)
    svi = SVI(model, guide, Adam({"lr": lr}), elbo)
    svi.step(*args)  # set-up outside the clock
    start = time.perf_counter()
    for _ in range(steps - 1):
        svi.step(*args)
    return (time.perf_counter() - start) / max(steps - 1, 1)


def isotropic(dim: int):
    def model(x):
        z = pyro.sample("z", dist.Normal(x.new_zeros(dim), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    return model, (torch.randn(20, dim),)


def speed(dims, depth, hidden, steps, repeats, particles) -> list[dict]:
    """Seconds per step: ours with the plain estimator (``stl=False``, the same computation
    as Pyro's), ours at our defaults (sticking the landing where it is on), and Pyro's."""
    rows = []
    print(f"\nSeconds per SVI step (median of {repeats} x {steps} steps), depth {depth}, two hidden layers")
    header = ["flow", "D", "hidden", "ours", "ours(default)", "pyro", "ours/pyro", "default/pyro"]
    print(f"{header[0]:<18}" + "".join(f"{h:>14}" for h in header[1:]))
    for dim in dims:
        model, args = isotropic(dim)
        width = max(hidden, 2 * dim)  # Pyro's MADE refuses hidden layers narrower than D
        for family, (ours, theirs) in _pairs(depth, width).items():
            makers = {"ours": lambda m, ours=ours: ours(m, stl=False), "ours_default": ours, "pyro": theirs}
            runs: dict[str, list[float]] = {side: [] for side in makers}
            for seed in range(repeats):  # sides interleaved, so drifting machine load hits all alike
                for side, make in makers.items():
                    runs[side].append(train(model, make(model), args, steps, 1e-3, particles, seed))
            times = {side: statistics.median(values) for side, values in runs.items()}
            ratio, ratio_default = times["ours"] / times["pyro"], times["ours_default"] / times["pyro"]
            row = {"flow": family, "dim": dim, "hidden": width, **times}
            rows.append({**row, "ratio": ratio, "ratio_default": ratio_default})
            cells = [dim, width, *(f"{times[k]:.5f}" for k in makers), f"{ratio:.2f}", f"{ratio_default:.2f}"]
            print(f"{family:<18}" + "".join(f"{c:>14}" for c in cells), flush=True)
    return rows


def size(dim: int) -> list[dict]:
    model, args = isotropic(dim)
    makers = {
        "pyro.AutoIAFNormal (default)": AutoIAFNormal,
        "AutoIAF (default)": AutoIAF,
        "AutoNeuralSpline (default)": AutoNeuralSpline,
        "AutoAffineCoupling (default)": AutoAffineCoupling,
        "AutoPlanarFlow (default)": AutoPlanarFlow,
    }
    rows = []
    print(f"\nParameter count at D = {dim}")
    for name, make in makers.items():
        pyro.clear_param_store()
        guide = make(model)
        guide(*args)
        count = sum(p.numel() for p in guide.parameters())
        rows.append({"guide": name, "dim": dim, "params": count})
        print(f"{name:<32}{count:>12,d}")
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["speed", "size"], default="speed")
    parser.add_argument("--dims", type=int, nargs="+", default=[10, 200], help="speed: latent dimensions")
    parser.add_argument("--speed-steps", type=int, default=200, help="timed SVI steps per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (the median is reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the script runs")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part == "speed":
        rows = speed(args.dims, 4, 64, *((5, 1) if args.quick else (args.speed_steps, args.repeats)), 1)
    else:
        rows = size(50 if args.quick else 1000)
    save_rows(args.out, args, rows, benchmark=f"guides_vs_pyro_{args.part}")
    return rows


if __name__ == "__main__":
    main()
