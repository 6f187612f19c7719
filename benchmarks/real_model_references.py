"""NUTS references for the real-model suite (``benchmarks/suite_models.py``).

    python benchmarks/real_model_references.py                     # every model
    python benchmarks/real_model_references.py --models iris_mixture --draws 3000

Each model gets ``--chains`` independent NUTS chains (Pyro's NUTS, float64, ``--warmup``
adaptation steps and ``--draws`` kept draws each, initialized at the prior median or the
model's start values for flat sites). Where a model names an equivalent
``reference_model`` (eight schools, centered: the same posterior drawn in the
non-centered form, where NUTS has no funnel), the chains run on that and the draws are
mapped back. A reference is accepted only if every coordinate passes split R-hat < 1.01
and bulk ESS > 1000 (ArviZ); otherwise the script says which coordinate failed and
exits non-zero, writing nothing for that model.

Each accepted reference is written to ``benchmarks/references/<model>.npz`` (compressed):
the column names of the flattened constrained coordinates, their means and standard
deviations over all draws, ``--keep`` draws thinned evenly across the chains, the
worst R-hat and ESS, and a JSON record of the settings, seconds and provenance.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import arviz as az
import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_median, init_to_value

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import provenance
from suite_models import SuiteModel, suite

REFERENCES = Path(__file__).resolve().parent / "references"
RHAT_MAX, ESS_MIN = 1.01, 1000.0


def flatten(samples: dict[str, torch.Tensor], shapes: dict[str, torch.Size]) -> tuple[list[str], np.ndarray]:
    """Draws ``(..., *shape)`` per site as one matrix ``(..., columns)`` and its column names,
    in the order of ``shapes``; a site of shape ``(3,)`` gives ``a[0], a[1], a[2]``."""
    names, columns = [], []
    for site, shape in shapes.items():
        value = samples[site]
        lead = value.shape[: value.dim() - len(shape)]
        columns.append(value.reshape(*lead, math.prod(shape)).double().cpu().numpy())
        names += [site] if len(shape) == 0 else [f"{site}[{i}]" for i in range(math.prod(shape))]
    return names, np.concatenate(columns, -1)


def init_strategy(case: SuiteModel):
    """The prior median, or the model's start values at its flat sites."""
    if not case.init:
        return init_to_median
    return init_to_value(values=case.start(), fallback=init_to_median)


def run_chains(case: SuiteModel, args: argparse.Namespace) -> tuple[dict[str, torch.Tensor], float]:
    """``args.chains`` NUTS chains one after another; draws ``(chains, draws, ...)`` per site."""
    model = case.reference_model or case.model
    per_chain: list[dict[str, torch.Tensor]] = []
    start = time.perf_counter()
    for chain in range(args.chains):
        pyro.set_rng_seed(args.seed + chain)
        kernel = NUTS(
            model,
            target_accept_prob=args.target_accept,
            init_strategy=init_strategy(case),
            max_plate_nesting=case.max_plate_nesting,  # no prior trace: flat sites cannot sample
        )
        mcmc = MCMC(kernel, num_samples=args.draws, warmup_steps=args.warmup, disable_progbar=True)
        mcmc.run(*case.args)
        per_chain.append({k: v.detach() for k, v in mcmc.get_samples().items()})
    seconds = time.perf_counter() - start
    draws = {k: torch.stack([c[k] for c in per_chain]) for k in per_chain[0]}
    if case.to_model is not None:
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in draws.items()}
        mapped = case.to_model(flat)
        draws = {k: v.reshape(args.chains, args.draws, *v.shape[1:]) for k, v in mapped.items()}
    return draws, seconds


def convergence(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split R-hat and bulk ESS of each column of ``(chains, draws, columns)``."""
    data = az.convert_to_dataset({"x": matrix})
    rhat = az.rhat(data)["x"].values
    ess = az.ess(data, method="bulk")["x"].values
    return rhat, ess


def reference(case: SuiteModel, args: argparse.Namespace, shapes: dict[str, torch.Size]) -> dict:
    """Run, check and summarize one model's reference."""
    draws, seconds = run_chains(case, args)
    names, matrix = flatten(draws, shapes)
    rhat, ess = convergence(matrix)
    flat = matrix.reshape(-1, matrix.shape[-1])
    keep = np.linspace(0, len(flat) - 1, min(args.keep, len(flat))).round().astype(int)
    return {
        "names": np.array(names),
        "mean": flat.mean(0),
        "sd": flat.std(0, ddof=1),
        "draws": flat[keep].astype(np.float32),
        "rhat": rhat,
        "ess_bulk": ess,
        "seconds": seconds,
    }


def write(case: SuiteModel, ref: dict, args: argparse.Namespace) -> Path:
    REFERENCES.mkdir(parents=True, exist_ok=True)
    path = REFERENCES / f"{case.name}.npz"
    record = {
        "model": case.name,
        "reference_model": None if case.reference_model is None else case.reference_model.__name__,
        "chains": args.chains,
        "warmup": args.warmup,
        "draws_per_chain": args.draws,
        "target_accept": args.target_accept,
        "seed": args.seed,
        "seconds": ref["seconds"],
        "max_rhat": float(ref["rhat"].max()),
        "min_ess_bulk": float(ref["ess_bulk"].min()),
        "provenance": provenance("cpu"),
    }
    arrays = {k: ref[k] for k in ("names", "mean", "sd", "draws", "rhat", "ess_bulk")}
    np.savez_compressed(path, **arrays, record=np.array(json.dumps(record)))
    return path


def load_reference(name: str, folder: Path = REFERENCES) -> dict:
    """A stored reference: ``names``, ``mean``, ``sd``, ``draws`` (``(n, columns)``),
    ``rhat``, ``ess_bulk`` and the ``record`` (a dict)."""
    with np.load(folder / f"{name}.npz") as data:
        out = {k: data[k] for k in data.files}
    out["record"] = json.loads(str(out["record"]))
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=None, help="model names (default: all)")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1500, help="kept draws per chain")
    parser.add_argument("--target-accept", type=float, default=0.9)
    parser.add_argument("--keep", type=int, default=4000, help="thinned draws stored")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    from suite_models import latent_shapes

    cases = suite()
    failed = []
    for name in args.models or list(cases):
        case = cases[name]
        ref = reference(case, args, latent_shapes(case))
        worst_rhat, worst_ess = int(ref["rhat"].argmax()), int(ref["ess_bulk"].argmin())
        line = (
            f"{name}: {ref['seconds']:.0f} s, "
            f"max R-hat {ref['rhat'].max():.4f} ({ref['names'][worst_rhat]}), "
            f"min bulk ESS {ref['ess_bulk'].min():.0f} ({ref['names'][worst_ess]})"
        )
        if ref["rhat"].max() >= RHAT_MAX or ref["ess_bulk"].min() <= ESS_MIN:
            print(f"REJECTED {line}", flush=True)
            failed.append(name)
            continue
        print(f"wrote {write(case, ref, args)}: {line}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
