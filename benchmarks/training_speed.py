"""Seconds per training step and throughput of flowguide's fit loop, CPU against CUDA.

    python benchmarks/training_speed.py --out benchmarks/results/training_speed.json  # every device
    python benchmarks/training_speed.py --quick         # smoke run (the test suite does this)

A flow guide on a 200-dimensional model (Bayesian linear regression with 500
observations, Gaussian posterior) trained by ``flowguide.training.Trainer`` with
``Trace_ELBO`` and 8 vectorized particles: seconds per step (median over repeats, after
warm-up steps), steps per second and latent draws per second, for each guide on each
device, and the CUDA / CPU speed-up as a ratio when a GPU is present. The code never
assumes one. On the CPU each guide is also stepped by ``pyro.infer.SVI`` with the same
ELBO and the guide's ``recommended_optim``, interleaved with the trainer's repeats, and
the ``trainer / SVI`` ratio is printed: the trainer's own overhead (NaN guard, gradient
all-reduce, clamp, schedule). The digits VAE rows follow.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pyro
import torch
from _results import save_rows
from pyro.infer import SVI, Trace_ELBO

from flowguide import AutoAffineCoupling, AutoIAF, AutoNeuralSpline
from flowguide.apps.exact import ConjugateRegression
from flowguide.training import Trainer

GUIDES = {"AutoIAF": AutoIAF, "AutoAffineCoupling": AutoAffineCoupling, "AutoNeuralSpline": AutoNeuralSpline}


def _problem(name: str, dim: int, particles: int) -> tuple:
    """The 200-D regression, a fresh guide on it (seeded) and the ELBO both sides use."""
    case = ConjugateRegression(dim=dim, num_data=500)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    return case, GUIDES[name](case.model), elbo


def seconds_per_step(name: str, device: str, dim: int, steps: int, warmup: int, particles: int) -> float:
    case, guide, elbo = _problem(name, dim, particles)
    trainer = Trainer(case.model, guide, loss=elbo, device=device, progress=False)
    trainer.fit(*case.args, steps=warmup)
    _sync(device)
    start = time.perf_counter()
    trainer.fit(*case.args, steps=warmup + steps)
    _sync(device)
    return (time.perf_counter() - start) / steps


def svi_seconds_per_step(name: str, dim: int, steps: int, warmup: int, particles: int) -> float:
    """The same guide, model and ELBO stepped by ``pyro.infer.SVI`` (CPU)."""
    case, guide, elbo = _problem(name, dim, particles)
    svi = SVI(case.model, guide, guide.recommended_optim(warmup + steps), elbo)
    for _ in range(warmup):
        svi.step(*case.args)
    start = time.perf_counter()
    for _ in range(steps):
        svi.step(*case.args)
    return (time.perf_counter() - start) / steps


def vae_seconds_per_step(device: str, steps: int, warmup: int, batch: int = 100, hidden: int = 256) -> float:
    from flowguide.models.images import binarize, load_digits
    from flowguide.models.vae import FlowVAE

    x = binarize(load_digits().train[:batch], 17)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = FlowVAE(64, latent_dim=16, hidden_dim=hidden, posterior="iaf", num_flows=4)
    trainer = Trainer(vae.model, vae.guide, device=device, progress=False)
    for _ in range(warmup):
        trainer.step(x, torch.arange(batch), 1438)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(x, torch.arange(batch), 1438)
    _sync(device)
    return (time.perf_counter() - start) / steps


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.dim, args.steps, args.warmup, args.repeats = 8, 2, 1, 1
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    print(f"D = {args.dim}, {args.particles} particles; median of {args.repeats} runs of {args.steps} steps")
    print(
        f"{'guide':20s} {'device':6s} {'s/step':>9s} {'steps/s':>8s} {'draws/s':>9s} {'vs cpu':>7s}"
        f" {'SVI s/step':>11s} {'trainer/SVI':>12s}"
    )
    for name in GUIDES:
        cpu = None
        for device in devices:
            runs, svi_runs = [], []
            for repeat in range(args.repeats):  # interleaved, so drifts in machine load hit both
                warmup = args.warmup if repeat == 0 else 1
                runs.append(seconds_per_step(name, device, args.dim, args.steps, warmup, args.particles))
                if device == "cpu":
                    svi_runs.append(svi_seconds_per_step(name, args.dim, args.steps, warmup, args.particles))
            t = statistics.median(runs)
            svi = statistics.median(svi_runs) if svi_runs else None
            cpu = t if device == "cpu" else cpu
            row = {
                "guide": name,
                "device": device,
                "dim": args.dim,
                "seconds_per_step": t,
                "steps_per_second": 1 / t,
                "draws_per_second": args.particles / t,
                "speedup_vs_cpu": cpu / t,
                "svi_seconds_per_step": svi,
                "trainer_over_svi": t / svi if svi else None,
            }
            rows.append(row)
            tail = f" {svi:11.4f} {t / svi:12.2f}" if svi else ""
            print(
                f"{name:20s} {device:6s} {t:9.4f} {1 / t:8.1f} {args.particles / t:9.0f} {cpu / t:7.2f}{tail}"
            )
    cpu = None
    for device in devices:
        t = statistics.median(
            vae_seconds_per_step(device, args.steps, args.warmup) for _ in range(args.repeats)
        )
        cpu = t if device == "cpu" else cpu
        rows.append(
            {
                "guide": "FlowVAE(iaf, bernoulli), digits",
                "device": device,
                "seconds_per_step": t,
                "steps_per_second": 1 / t,
                "images_per_second": 100 / t,
                "speedup_vs_cpu": cpu / t,
            }
        )
        print(
            f"{'digits VAE (iaf)':20s} {device:6s} {t:9.4f} {1 / t:8.1f} {100 / t:9.0f} {cpu / t:7.2f}"
            "  (draws/s: images/s)"
        )
    if not torch.cuda.is_available():
        print("no CUDA device here: CPU rows only")
    save_rows(args.out, args, rows, benchmark="training_speed")
    return rows


if __name__ == "__main__":
    main()
