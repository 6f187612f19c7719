"""Time to an accurate posterior on real models: flow guides, Pyro's guides and NUTS.

    python benchmarks/real_models.py --out benchmarks/results/real_models.json
    python benchmarks/real_models.py --models eight_schools_noncentered --methods AutoIAF NUTS
    python benchmarks/real_models.py --part stl --out benchmarks/results/real_models_stl.json
    python benchmarks/real_models.py --merge a.json b.json --out benchmarks/results/real_models_accuracy.json
    python benchmarks/real_models.py --plot benchmarks/results/real_models_accuracy.json  # the figure
    python benchmarks/real_models.py --quick                 # a smoke run (the test suite does this)

The models are ``benchmarks/suite_models.py``; each is scored against its NUTS reference
(``benchmarks/references/<model>.npz``, made by ``benchmarks/real_model_references.py``).
Accuracy is the mean over the constrained coordinates of the marginal 1-Wasserstein
distance between the method's draws and the reference draws, in reference standard
deviations,

.. math::
    \\overline{W}_1 = \\frac1C \\sum_{c=1}^C W_1(\\hat q_c, \\hat p_c) / \\mathrm{sd}_p(z_c).

Each variational method trains in float32 on one thread, from its library's default
start, until its :math:`\\overline W_1` is at most ``--target`` or ``--seconds`` of
training have passed; every ``--eval-every`` steps it is scored from ``--eval-draws``
draws, off the clock. Set-up (a flow guide's mode search and warm start) is on the clock.
flowguide's guides train with ``flowguide.training.Trainer`` and their recipe (its
ELBO, rate decay over ``--steps`` and clamp); Pyro's ``AutoNormal``,
``AutoMultivariateNormal``, ``AutoLowRankMultivariateNormal`` and ``AutoIAFNormal`` with
``Trace_ELBO`` (one particle) and Adam at 1e-2, as Pyro's tutorials train them. NUTS
(Pyro's, defaults, one chain, ``--nuts-warmup`` + ``--nuts-draws`` iterations) is timed
per iteration with warm-up included; its :math:`\\overline W_1` after :math:`n` kept draws
is placed at the time of draw :math:`n`. At the end each method's mean error and sd ratio
per coordinate (in reference sds) and, for the guides, ELBO, IWAE and PSIS k-hat from
``--eval-draws`` draws with the hand-written log joint are recorded.

``--part stl`` times one training step of ``AutoIAF`` at D = 10 with and without
sticking the landing against Pyro's ``AutoIAFNormal`` (interleaved repeats), and the
particle paths for a model written for one draw (``diabetes_flat``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import MCMC, NUTS, Trace_ELBO
from pyro.infer.autoguide import (
    AutoIAFNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from scipy.stats import wasserstein_distance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import save_rows
from real_model_references import flatten, init_strategy, load_reference
from suite_models import SuiteModel, latent_shapes, suite

from flowguide import AutoAffineCoupling, AutoIAF, AutoNeuralSpline, AutoPlanarFlow
from flowguide.diagnostics import psis_diagnostic
from flowguide.infer.stratified import _per_particle
from flowguide.training import Trainer

FLOW_GUIDES: dict[str, Callable] = {
    "AutoIAF": AutoIAF,
    "AutoNeuralSpline": AutoNeuralSpline,
    "AutoAffineCoupling": AutoAffineCoupling,
    "AutoPlanarFlow": AutoPlanarFlow,
}
PYRO_GUIDES: dict[str, Callable] = {
    "AutoNormal": AutoNormal,
    "AutoMultivariateNormal": AutoMultivariateNormal,
    "AutoLowRankMultivariateNormal": AutoLowRankMultivariateNormal,
    "pyro.AutoIAFNormal": AutoIAFNormal,
}
METHODS = [*FLOW_GUIDES, *PYRO_GUIDES, "NUTS"]
FIGURE = Path(__file__).resolve().parents[1] / "docs" / "_static" / "figures" / "real_models_w1.png"


# ------------------------------------------------------------------------------ accuracy
def mean_w1(draws: np.ndarray, ref: dict) -> float:
    """Mean marginal 1-Wasserstein distance to the reference, in reference sds."""
    distances = [
        wasserstein_distance(draws[:, c], ref["draws"][:, c]) / ref["sd"][c] for c in range(draws.shape[1])
    ]
    return float(np.mean(distances))


def moments(draws: np.ndarray, ref: dict) -> dict:
    """Per-coordinate mean error and sd ratio, in reference sds."""
    error = (draws.mean(0) - ref["mean"]) / ref["sd"]
    ratio = draws.std(0, ddof=1) / ref["sd"]
    return {"mean_error": error, "sd_ratio": ratio}


# -------------------------------------------------------------------------------- guides
def guide_draws(guide: Callable, case: SuiteModel, shapes: dict, n: int) -> tuple[dict, torch.Tensor]:
    """``n`` draws of each latent, ``(n, *shape)``, and their log q, in one vectorized pass."""
    with torch.no_grad(), poutine.block():
        with pyro.plate("_eval_draws", n, dim=-(case.max_plate_nesting + 1)):
            trace = poutine.trace(guide).get_trace(*case.data(torch.get_default_dtype()))
        trace.compute_log_prob()
    log_q = _per_particle(trace, case.max_plate_nesting + 1)  # the guide's sites, per draw
    values = {name: trace.nodes[name]["value"].reshape(n, *shape) for name, shape in shapes.items()}
    return values, log_q


def make_guide(method: str, case: SuiteModel, **options) -> Callable:
    """A guide at its library's defaults; Pyro's ``init_to_median`` cannot start a flat
    prior, so Pyro's guides get the model's start values there."""
    if method in FLOW_GUIDES:
        return FLOW_GUIDES[method](case.model, **options)
    return PYRO_GUIDES[method](case.model, init_loc_fn=init_strategy(case), **options)


def make_trainer(method: str, case: SuiteModel, guide: Callable, callbacks: list, loss=None) -> Trainer:
    options = {"device": "cpu", "progress": False, "callbacks": callbacks}
    if method in FLOW_GUIDES:
        return Trainer(case.model, guide, loss=loss, **options)
    return Trainer(
        case.model,
        guide,
        loss=Trace_ELBO(num_particles=1, max_plate_nesting=case.max_plate_nesting),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
        recipe=None,
        **options,
    )


class Curve:
    """The training callback: scores the guide every ``every`` steps, off the clock, and
    stops at the target or the time limit."""

    def __init__(self, guide, case, shapes, ref, args) -> None:
        self.guide, self.case, self.shapes, self.ref, self.args = guide, case, shapes, ref, args
        self.start, self.off_clock = time.perf_counter(), 0.0
        self.points: list[tuple[int, float, float]] = []  # (step, seconds, W1)

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.off_clock

    def score(self, step: int) -> float:
        clock, begin = self.seconds(), time.perf_counter()
        values, _ = guide_draws(self.guide, self.case, self.shapes, self.args.eval_draws)
        w1 = mean_w1(flatten(values, self.shapes)[1], self.ref)
        self.points.append((step, clock, w1))
        self.off_clock += time.perf_counter() - begin
        return w1

    def __call__(self, step: int, loss: float, history) -> bool:
        if not math.isfinite(loss):
            return True
        if step % self.args.eval_every == 0 and self.score(step) <= self.args.target:
            return True
        return self.seconds() > self.args.seconds


def run_guide(method: str, case: SuiteModel, shapes: dict, ref: dict, args, loss=None, **options) -> dict:
    """Train one guide to the target or the limit; ``loss`` replaces a flow guide's ELBO,
    ``options`` go to the guide."""
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    curve = Curve(None, case, shapes, ref, args)
    guide = curve.guide = make_guide(method, case, **options)
    trainer = make_trainer(method, case, guide, [curve], loss)
    data = case.data(torch.float32)
    trainer.setup(*data)
    curve.score(0)
    # a recipe decays its rate over the planned steps; Pyro's guides run at a constant rate
    history = trainer.fit(*data, steps=args.steps if method in FLOW_GUIDES else 10**8)
    finite = all(math.isfinite(x) for x in history.losses)
    if curve.points[-1][0] != history.step and finite:
        curve.score(history.step)
    values, log_q = guide_draws(guide, case, shapes, args.eval_draws)
    with torch.no_grad():
        log_w = case.log_joint({k: v.double() for k, v in values.items()}) - log_q.double()  # float64 data
    draws = flatten(values, shapes)[1]
    psis = psis_diagnostic(log_w)
    return {
        "steps": history.step,
        "finite": finite,
        "elbo": float(log_w.mean()),
        "iwae": float(torch.logsumexp(log_w, 0) - math.log(len(log_w))),
        "khat": psis.khat,
        **moments(draws, ref),
        "curve": curve.points,
        "w1": curve.points[-1][2],
        "seconds": curve.points[-1][1],
    }


# ---------------------------------------------------------------------------------- NUTS
def run_nuts(case: SuiteModel, shapes: dict, ref: dict, args) -> dict:
    """One chain; its W1 after n kept draws, placed at the time of that draw."""
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    stamps: list[float] = []
    kernel = NUTS(case.model, init_strategy=init_strategy(case), max_plate_nesting=case.max_plate_nesting)
    mcmc = MCMC(
        kernel,
        num_samples=args.nuts_draws,
        warmup_steps=args.nuts_warmup,
        disable_progbar=True,
        hook_fn=lambda *_: stamps.append(time.perf_counter()),
    )
    start = time.perf_counter()
    mcmc.run(*case.data(torch.float32))
    draws = flatten({k: v.detach() for k, v in mcmc.get_samples().items()}, shapes)[1]
    counts = sorted({*np.unique(np.geomspace(25, len(draws), 12).astype(int)), len(draws)})
    kept = stamps[args.nuts_warmup :]
    curve = [(n, kept[n - 1] - start, mean_w1(draws[:n], ref)) for n in counts]
    return {
        "steps": args.nuts_warmup + len(draws),
        "finite": bool(np.isfinite(draws).all()),
        **moments(draws, ref),
        "curve": curve,
        "w1": curve[-1][2],
        "seconds": curve[-1][1],
    }


def time_to_target(curve: list, target: float) -> float | None:
    return next((seconds for _, seconds, w1 in curve if w1 <= target), None)


def run(args) -> list[dict]:
    """Every model and method; the rows so far are saved after each model."""
    rows = []
    cases = suite()
    for name in args.models or list(cases):
        case = cases[name]
        shapes, ref = latent_shapes(case), load_reference(name)
        for method in args.methods:
            began = time.perf_counter()
            try:
                result = (
                    run_nuts(case, shapes, ref, args)
                    if method == "NUTS"
                    else run_guide(method, case, shapes, ref, args)
                )
            except (NotImplementedError, RuntimeError, ValueError) as error:  # cannot start, or diverged
                message = (str(error).strip().splitlines() or [""])[0][:200]
                rows.append({"model": name, "method": method, "unimodal": case.unimodal, "error": message})
                print(f"{name:28s} {method:30s} failed: {type(error).__name__}: {message}", flush=True)
                continue
            row = {"model": name, "method": method, "unimodal": case.unimodal, **result}
            row["time_to_target"] = time_to_target(result["curve"], args.target)
            row["max_mean_error"] = float(np.abs(result["mean_error"]).max())
            row["worst_sd_ratio"] = float(result["sd_ratio"][np.abs(np.log(result["sd_ratio"])).argmax()])
            rows.append(row)
            reached = "-" if row["time_to_target"] is None else f"{row['time_to_target']:.1f} s"
            print(
                f"{name:28s} {method:30s} W1 {row['w1']:.3f}  to {args.target}: {reached:>8s}  "
                f"steps {row['steps']}  ({time.perf_counter() - began:.0f} s)",
                flush=True,
            )
        save_rows(args.out, args, rows, benchmark="real_models_accuracy", device="cpu")
    return rows


def merge(files: list[Path], args) -> list[dict]:
    """The rows of several runs of this script (models split over processes), in one file."""
    import json

    records = [json.loads(Path(f).read_text()) for f in files]
    if len({r["benchmark"] for r in records}) != 1:
        raise SystemExit("refusing to merge the results of different benchmarks")
    settings = {k: v for k, v in records[0]["settings"].items() if k not in ("models", "out")}
    for r in records[1:]:
        other = {k: v for k, v in r["settings"].items() if k not in ("models", "out")}
        if other != settings:
            raise SystemExit("refusing to merge runs with different settings")
    rows = [row for r in records for row in r["rows"]]
    merged = {**records[0], "rows": rows}
    models = list(dict.fromkeys(row["model"] for row in rows))
    merged["settings"] = {**records[0]["settings"], "models": models}
    merged["settings"]["out"] = str(args.out)
    merged["provenance"] = {  # the last run's, the one command of all rows, and each run's
        **records[-1]["provenance"],
        "command": f"python benchmarks/real_models.py --out {args.out}",
        "runs": [
            {
                "models": list(dict.fromkeys(row["model"] for row in r["rows"])),
                "commit": r["provenance"]["commit"],
                "command": r["provenance"]["command"],
            }
            for r in records
        ],
    }
    Path(args.out).write_text(json.dumps(merged, indent=1) + "\n")
    print(f"wrote {args.out}")
    return rows


# ----------------------------------------------------------------------------- --part stl
def _step_seconds(
    make: Callable, model: Callable, data: tuple, loss, repeats: int, steps: int
) -> list[float]:
    """Seconds per training step of each guide ``make()``, interleaved over ``repeats``."""
    trainers = []
    for build in make:
        pyro.clear_param_store()
        trainer = loss(build)
        trainer.setup(*data)
        trainer.fit(*data, steps=5)
        trainers.append(trainer)
    times = [[] for _ in trainers]
    for _ in range(repeats):
        for i, trainer in enumerate(trainers):
            begin = time.perf_counter()
            trainer.fit(*data, steps=trainer.history.step + steps)  # fit counts steps in all
            times[i].append((time.perf_counter() - begin) / steps)
    return [float(np.median(t)) for t in times]


def stl_part(args) -> list[dict]:
    """Step cost of the default AutoIAF (sticking the landing) at D = 10 against Pyro's
    AutoIAFNormal with the same particles, and the particle paths on ``diabetes_flat``."""
    from flowguide.infer import VmapParticlesELBO

    X = torch.randn(200, 9, generator=torch.Generator().manual_seed(0))
    y = X @ torch.linspace(-1, 1, 9) + 0.5 * torch.randn(200, generator=torch.Generator().manual_seed(1))

    def regression(X, y):  # D = 10: nine weights and a noise scale
        w = pyro.sample("w", pyro.distributions.Normal(0.0, 1.0).expand([9]).to_event(1))
        s = pyro.sample("s", pyro.distributions.HalfNormal(1.0))
        with pyro.plate("n", len(y)):
            pyro.sample("y", pyro.distributions.Normal((X * w.unsqueeze(-2)).sum(-1), s.unsqueeze(-1)), obs=y)

    def trainer(build):
        guide, elbo = build()
        return Trainer(regression, guide, loss=elbo, device="cpu", progress=False)

    particles = AutoIAF.recipe.particles
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)

    def inverse_path():
        guide = AutoIAF(regression)
        guide(X, y)
        guide.flow.jacobian_path_max_dim = 0  # the path term through the D-pass inverse
        return guide, elbo

    builds = {
        "AutoIAF (stl, Jacobian path)": lambda: (AutoIAF(regression), elbo),
        "AutoIAF (stl, inverse path)": inverse_path,
        "AutoIAF (no stl)": lambda: (AutoIAF(regression, stl=False), elbo),
        "pyro.AutoIAFNormal": lambda: (AutoIAFNormal(regression), elbo),
    }
    seconds = _step_seconds(list(builds.values()), regression, (X, y), trainer, args.repeats, 20)
    rows = [
        {
            "part": "stl",
            "guide": name,
            "dim": 10,
            "particles": particles,
            "step_seconds": s,
            "ratio": s / seconds[-1],
        }
        for name, s in zip(builds, seconds, strict=True)
    ]
    case = suite()["diabetes_flat"]
    data = case.data(torch.float32)

    def flat_trainer(build):
        guide, elbo = build()
        return Trainer(case.model, guide, loss=elbo, device="cpu", progress=False)

    def guide():
        return AutoIAF(case.model, init_loc_fn=init_strategy(case))

    paths = {
        f"vmap, {particles} particles": lambda: (guide(), VmapParticlesELBO(num_particles=particles)),
        f"sequential, {particles} particles": lambda: (guide(), Trace_ELBO(num_particles=particles)),
        "sequential, 1 particle": lambda: (guide(), Trace_ELBO(num_particles=1)),
    }
    seconds = _step_seconds(list(paths.values()), case.model, data, flat_trainer, args.repeats, 10)
    shapes, ref = latent_shapes(case), load_reference(case.name)
    for (name, build), s in zip(paths.items(), seconds, strict=True):
        reached = run_guide("AutoIAF", case, shapes, ref, args, loss=build()[1])
        rows.append(
            {
                "part": "particles",
                "model": case.name,
                "path": name,
                "step_seconds": s,
                "ratio": s / seconds[1],
                "time_to_target": time_to_target(reached["curve"], args.target),
                "w1": reached["w1"],
            }
        )
    for row in rows:
        print({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    return rows


def plot(results: Path, out: Path) -> None:
    """W1 against seconds, one panel per model and one line per method, from a result file."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    record = json.loads(Path(results).read_text())
    models: dict[str, list[dict]] = {}
    for row in record["rows"]:
        models.setdefault(row["model"], []).append(row)
    columns = min(5, len(models))
    rows = math.ceil(len(models) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False)
    for ax, (model, runs) in zip(axes.flat, models.items(), strict=False):
        for run in (r for r in runs if "curve" in r):  # not the runs that failed
            seconds = [max(point[1], 1e-2) for point in run["curve"]]
            style = {"color": "black", "lw": 2} if run["method"] == "NUTS" else {"lw": 1}
            ax.plot(seconds, [point[2] for point in run["curve"]], label=run["method"], **style)
        ax.axhline(record["settings"]["target"], color="grey", ls=":", lw=1)
        ax.set(xscale="log", yscale="log", title=model, xlabel="seconds", ylim=(0.02, 30))  # clipped
        ax.title.set_fontsize(9)
    for ax in axes.flat[len(models) :]:
        ax.axis("off")
    axes[0, 0].set_ylabel("mean marginal W1 / ref sd")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["accuracy", "stl"], default="accuracy")
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--target", type=float, default=0.1, help="W1 in reference sds")
    parser.add_argument("--seconds", type=float, default=40.0, help="training time limit per guide")
    parser.add_argument(
        "--steps", type=int, default=4000, help="flow guides' steps (their recipe's decay horizon)"
    )
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-draws", type=int, default=1000)
    parser.add_argument("--nuts-warmup", type=int, default=500)
    parser.add_argument("--nuts-draws", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7, help="--part stl: interleaved repeats")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one model, two methods, a few seconds")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="a result file: plot it (to --out) and stop")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, help="result files: merge into --out")
    args = parser.parse_args(argv)
    if args.quick:
        args.models = args.models or ["eight_schools_noncentered"]
        args.methods = ["AutoIAF", "AutoNormal", "NUTS"]
        args.seconds, args.steps, args.eval_every, args.eval_draws = 2.0, 200, 50, 200
        args.nuts_warmup, args.nuts_draws, args.repeats = 30, 30, 1
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    if args.plot is not None:
        plot(args.plot, args.out or FIGURE)
        return []
    if args.merge is not None:
        return merge(args.merge, args)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    try:
        if args.part == "stl":
            rows = stl_part(args)
            save_rows(args.out, args, rows, benchmark="real_models_stl", device="cpu")
        else:
            rows = run(args)
    finally:
        torch.set_num_threads(threads)
    return rows


if __name__ == "__main__":
    main()
