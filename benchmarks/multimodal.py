"""Posteriors with several modes: KL, mass per mode and set-up time, per target and guide.

    python benchmarks/multimodal.py --steps 1000 --jobs 2 --out benchmarks/results/multimodal.json
    python benchmarks/multimodal.py --part unimodal --out benchmarks/results/multimodal_unimodal.json
    python benchmarks/multimodal.py --targets ring --methods iaf iaf_single --seeds 0
    python benchmarks/multimodal.py --quick               # smoke run (the test suite does this)

Targets, each a Pyro model with an exact (or 2-D grid) log Z and a known split into modes:

- ``ring``: a ring of radius 3 with two bumps at angles 0 and pi (2-D, grid log Z);
- ``gmm3``: three equal, well-separated unit Gaussians in 2-D (log Z = 0);
- ``gmm10d``: a 10-D mixture of three unit Gaussians, weights 0.2, 0.3, 0.5 (log Z = 0);
- ``scales``: two equal modes in 2-D with standard deviations 0.3 and 1.5 (log Z = 0);
- ``sparse_regression``: a regression on two nearly collinear predictors with Cauchy(0, 0.05)
  priors, whose posterior puts the effect on one predictor or the other (2-D, grid log Z;
  its data are drawn once from a fixed seed).

Methods: each flowguide guide at its defaults (``iaf``, ``spline``: the mode search, a
mixture where it finds several modes, trained by ``flowguide.training.fit`` with the
recipe), the same guides as a single flow (``*_single``: ``components=1``, what the
defaults were before the mode search), both under the annealed ELBO (``*_annealed``:
beta from 0.1 to 1 over the first half), and zuko's neural spline flow trained by the same
reverse KL (Adam 1e-2, 8 particles) from its random initialization. Reported: KL = log Z -
ELBO from ``--samples`` draws (the guide's exact log q), the largest error of the mass per
mode (the share of the guide's draws in each mode's region against the target's), the
components, and set-up seconds. ``iaf_wide_search`` is ``iaf`` with a mode search of 64
starts. ``--part unimodal`` sets each default guide up on every target of
``benchmarks/fit_quality.py`` and reports the components and set-up time, and whether a
short fit is bit-identical to ``mode_search=None`` (the set-up before the search).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from _results import save_rows

from flowguide import AutoIAF, AutoNeuralSpline
from flowguide.apps.exact import EXACT_MODELS
from flowguide.autoguide.modes import ModeSearch
from flowguide.infer import AnnealedELBO, linear_schedule
from flowguide.training import fit

WIDE = 10.0  # the prior scale the density-defined targets are written against


@dataclass
class Target:
    """A multimodal target: its log-density, dimension, log Z and mode regions."""

    log_p: Callable[[torch.Tensor], torch.Tensor]
    dim: int
    log_z: float
    region: Callable[[torch.Tensor], torch.Tensor]  # (N, D) -> mode index
    masses: list[float]
    model: Callable | None = None

    def pyro_model(self) -> Callable:
        """The target as a Pyro model: a wide Normal prior plus a factor (log Z unchanged)."""
        if self.model is not None:
            return self.model
        wide = dist.Normal(torch.zeros(self.dim), WIDE).to_event(1)

        def model():
            z = pyro.sample("z", wide)
            pyro.factor("target", self.log_p(z) - wide.log_prob(z))

        return model


def _gaussian_mixture(locs: torch.Tensor, scales: torch.Tensor, weights: torch.Tensor) -> Target:
    def log_components(z):
        normal = dist.Normal(locs, scales.unsqueeze(-1)).to_event(1)
        return normal.log_prob(z.unsqueeze(-2)) + weights.log()

    def region(z):
        return log_components(z).argmax(-1)

    generator = torch.Generator().manual_seed(0)
    picks = torch.multinomial(weights, 200_000, replacement=True, generator=generator)
    draws = locs[picks] + scales[picks, None] * torch.randn(200_000, locs.shape[-1], generator=generator)
    truth = torch.bincount(region(draws), minlength=len(weights)).double() / len(draws)
    return Target(lambda z: log_components(z).logsumexp(-1), locs.shape[-1], 0.0, region, truth.tolist())


def _grid(log_p: Callable, box: float, region: Callable, points: int = 1201, center=(0.0, 0.0)) -> tuple:
    axes = [torch.linspace(c - box, c + box, points, dtype=torch.float64) for c in center]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
    log_values = log_p(grid)
    log_z = float(log_values.logsumexp(0) + cell.log())
    weights = (log_values - log_values.logsumexp(0)).exp()
    labels = region(grid)
    return log_z, [float(weights[labels == k].sum()) for k in range(int(labels.max()) + 1)]


def ring() -> Target:
    def log_p(z):
        radius, angle = z.norm(dim=-1), torch.atan2(z[..., 1], z[..., 0])
        return -0.5 * ((radius - 3.0) / 0.25) ** 2 + 2.0 * torch.cos(2 * angle)

    def region(z):
        return (z[..., 0] < 0).long()

    log_z, masses = _grid(log_p, 4.5, region)
    return Target(log_p, 2, log_z, region, masses)


def sparse_regression() -> Target:
    """y = X b + noise on two nearly collinear predictors, Cauchy(0, 0.05) priors on b."""
    generator = torch.Generator().manual_seed(1)
    t = torch.randn(20, generator=generator)
    x = torch.stack([t, t + 0.1 * torch.randn(20, generator=generator)], -1)
    y = x[:, 0] + 0.3 * torch.randn(20, generator=generator)
    prior = dist.Cauchy(torch.zeros(2), 0.05).to_event(1)

    def log_p(b):
        b = b.to(x.dtype) if b.dtype != torch.float64 else b
        xs, ys = x.to(b.dtype), y.to(b.dtype)
        likelihood = dist.Normal((b.unsqueeze(-2) * xs).sum(-1), 0.3).log_prob(ys).sum(-1)
        return dist.Cauchy(torch.zeros(2, dtype=b.dtype), 0.05).to_event(1).log_prob(b) + likelihood

    def model():
        b = pyro.sample("z", prior)
        with pyro.plate("data", 20):
            # b's batch ends in the data plate's dim: (..., 1, 2) * (20, 2) -> (..., 20, 2)
            pyro.sample("y", dist.Normal((b * x).sum(-1), 0.3), obs=y)

    def region(b):
        return (b[..., 1] > b[..., 0]).long()

    log_z, masses = _grid(log_p, 3.0, region, points=2001, center=(0.5, 0.5))
    return Target(log_p, 2, log_z, region, masses, model=model)


TARGETS: dict[str, Callable[[], Target]] = {
    "ring": ring,
    "gmm3": lambda: _gaussian_mixture(
        torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]]), torch.ones(3), torch.ones(3) / 3
    ),
    "gmm10d": lambda: _gaussian_mixture(
        4.0 * torch.eye(10)[[0, 0, 1]] * torch.tensor([[1.0], [-1.0], [1.0]]),
        torch.ones(3),
        torch.tensor([0.2, 0.3, 0.5]),
    ),
    "scales": lambda: _gaussian_mixture(
        torch.tensor([[-3.0, 0.0], [3.0, 0.0]]), torch.tensor([0.3, 1.5]), torch.ones(2) / 2
    ),
    "sparse_regression": sparse_regression,
}

GUIDES = {"iaf": AutoIAF, "spline": AutoNeuralSpline}
METHODS = [
    "iaf",
    "iaf_single",
    "iaf_annealed",
    "iaf_single_annealed",
    "iaf_wide_search",
    "spline",
    "spline_single",
    "zuko_nsf",
]


def train_guide(method: str, target: Target, args: argparse.Namespace) -> tuple:
    """Set up and fit one flowguide guide; returns (guide, set-up s, training s)."""
    family, *variant = method.split("_")
    model = target.pyro_model()
    options = {"components": 1} if "single" in variant else {}
    if "wide" in variant:
        options["mode_search"] = ModeSearch(starts=64)
    began = time.perf_counter()
    guide = GUIDES[family](model, **options).setup()
    setup = time.perf_counter() - began
    loss = None
    if "annealed" in variant:
        loss = AnnealedELBO(linear_schedule(args.steps // 2, start=0.1), guide.recommended_elbo())
    began = time.perf_counter()
    fit(model, guide, steps=args.steps, loss=loss, progress=False, device="cpu")
    return guide, setup, time.perf_counter() - began


def evaluate_guide(guide, target: Target, args: argparse.Namespace) -> dict:
    """KL = E_q[log q(z) - log p(x, z)] + log Z from the guide's draws and exact log q."""
    with torch.no_grad():
        z = guide.sample_posterior(args.samples)["z"]
        kl = float((guide.log_density({"z": z}) - target.log_p(z)).mean()) + target.log_z
    return {
        "kl": kl,
        **_masses(z, target),
        "components": guide.num_components,
        "modes_found": len(guide.modes),
    }


def run_zuko(target: Target, args: argparse.Namespace) -> tuple[dict, float]:
    import zuko

    flow = zuko.flows.NSF(features=target.dim, transforms=3, hidden_features=(64, 64))
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    began = time.perf_counter()
    for _ in range(args.steps):
        z, log_q = flow().rsample_and_log_prob((8,))
        loss = (log_q - target.log_p(z)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - began
    with torch.no_grad():
        z, log_q = flow().rsample_and_log_prob((args.samples,))
        kl = float((log_q - target.log_p(z)).mean()) + target.log_z
    return {"kl": kl, **_masses(z, target), "components": 1, "modes_found": None}, seconds


def _masses(z: torch.Tensor, target: Target) -> dict:
    labels = target.region(z.double() if z.dtype != torch.float64 else z)
    shares = torch.bincount(labels, minlength=len(target.masses)).double() / len(z)
    error = max(abs(float(s) - m) for s, m in zip(shares, target.masses, strict=True))
    return {"masses": [round(float(s), 4) for s in shares], "mass_error": error}


def run_one(name: str, seed: int, args: argparse.Namespace) -> list[dict]:
    """Every method on one target and seed."""
    torch.set_num_threads(args.threads)
    target, rows = TARGETS[name](), []
    for method in args.methods:
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        if method == "zuko_nsf":
            result, train = run_zuko(target, args)
            setup = 0.0
        else:
            guide, setup, train = train_guide(method, target, args)
            result = evaluate_guide(guide, target, args)
        row = {"target": name, "method": method, "seed": seed, **result, "setup_s": setup, "train_s": train}
        row["true_masses"] = [round(m, 4) for m in target.masses]
        rows.append(row)
        print(
            f"{name:<18} {method:<20} seed {seed}  KL {row['kl']:.3f}  mass error {row['mass_error']:.3f}  "
            f"K {row['components']}  set-up {setup:.2f}s  train {train:.1f}s",
            flush=True,
        )
    return rows


def run(args: argparse.Namespace) -> list[dict]:
    """Every target, seed and method; ``--jobs`` processes share the (target, seed) pairs."""
    tasks = [(name, seed) for name in args.targets for seed in args.seeds]
    if args.jobs == 1:
        return [row for name, seed in tasks for row in run_one(name, seed, args)]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        results = list(pool.map(run_one, *zip(*tasks, strict=True), [args] * len(tasks)))
    return [row for rows in results for row in rows]


def run_unimodal(args: argparse.Namespace) -> list[dict]:
    """Components and set-up time on fit_quality's targets, and identity with no search."""
    # one untimed set-up first: the first L-BFGS of a process imports parts of torch
    AutoIAF(EXACT_MODELS["banana"]().model).setup()
    rows = []
    for name in args.unimodal_targets:
        case = EXACT_MODELS[name]()
        for family, guide_class in GUIDES.items():
            params = []
            for options in ({}, {"mode_search": None}):
                pyro.clear_param_store()
                pyro.set_rng_seed(0)
                began = time.perf_counter()
                guide = guide_class(case.model, **options).setup(*case.args)
                setup = time.perf_counter() - began
                fit(case.model, guide, *case.args, steps=args.identity_steps, progress=False, device="cpu")
                params.append(([p.detach().clone() for p in guide.parameters()], setup, guide))
            (searched, setup, guide), (plain, plain_setup, _) = params
            identical = len(searched) == len(plain) and all(
                torch.equal(a, b) for a, b in zip(searched, plain, strict=True)
            )
            row = {
                "target": name,
                "guide": family,
                "components": guide.num_components,
                "modes_found": len(guide.modes),
                "setup_s": setup,
                "setup_s_without_search": plain_setup,
                "identical_fit": identical,
            }
            rows.append(row)
            print(
                f"{name:<22} {family:<7} K {row['components']}  modes {row['modes_found']}"
                f"  set-up {setup:.2f}s "
                f"(without the search {plain_setup:.2f}s)  identical {identical}",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["multimodal", "unimodal"], default="multimodal")
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--identity-steps", type=int, default=200)
    parser.add_argument(
        "--unimodal-targets", nargs="+", choices=list(EXACT_MODELS), default=list(EXACT_MODELS)
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--jobs", type=int, default=1, help="processes sharing the (target, seed) pairs")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the script runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.targets, args.seeds, args.steps, args.samples, args.identity_steps = ["gmm3"], [0], 4, 200, 2
        args.methods = ["iaf", "iaf_single_annealed", "zuko_nsf"]
        args.unimodal_targets = ["beta_binomial", "banana"]
    rows = run_unimodal(args) if args.part == "unimodal" else run(args)
    save_rows(
        args.out, args, rows, benchmark="multimodal" if args.part == "multimodal" else "multimodal_unimodal"
    )
    return rows


if __name__ == "__main__":
    main()
