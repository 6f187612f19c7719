"""Guides at scale: thousands to hundreds of thousands of latents; cost, memory and fit.

    python benchmarks/scale.py --out benchmarks/results/scale.json      # D = 1e3, 1e4, 1e5: hours
    python benchmarks/scale.py --models hierarchical_noncentered --dims 1000 --guides AutoNormal AutoIAF
    python benchmarks/scale.py --device cuda --steps 200 --seconds 20 --out benchmarks/results/scale_cuda.json
    python benchmarks/scale.py --one gp_classification 1000 AutoIAF --steps 50   # one child's rows, JSON
    python benchmarks/scale.py --quick                    # smoke run (the test suite does this)

Models (``benchmarks/scale_models.py``): the hierarchical Normal model, centered and
non-centered, with ``D - 2`` groups and an exact posterior by quadrature; a Bayesian
neural network on the diabetes data (about 9.3k weights, run once whatever ``--dims``);
GP classification with an Ornstein-Uhlenbeck prior on ``D`` latent function values and
a held-out fifth of the labels. Guides (:data:`GUIDES`): Pyro's ``AutoNormal`` and
``AutoLowRankMultivariateNormal`` (default rank), ``flowguide.AutoIAF`` and
``AutoNeuralSpline`` at their defaults, and ``AutoIAF+plates``
(``local_plates=case.plates``, on the models with group plates only; left out of the
default list while flowguide lacks the option).

Each (model, D, guide) runs in a fresh child process, forked from a server process that
has only imported torch, Pyro and flowguide (``--one MODEL D GUIDE`` runs one in this
process instead and prints its rows as JSON), so that its peak memory is its own:
``peak_rss_mb`` is ``ru_maxrss`` (imports, data, set-up and training, read before the
first scores; ``base_rss_mb`` after building the case, before the guide;
``scored_rss_mb`` after the row's scores) and ``cuda_peak_mb`` is
``torch.cuda.max_memory_allocated`` over set-up and training. ``--jobs`` children run at
once, each with ``--threads`` torch threads; on CUDA a child runs under torch's device
mode, as ``flowguide.training`` does. In the child the guide is set up (``setup(*args)``,
or one call), its parameters counted (Pyro's parameter store and the guide module's
own), then trained by ``SVI`` (Adam at a constant ``--lr`` with every gradient entry
clamped to 10, flowguide's ``RecipeAdam``, for every guide alike: under a plain Adam one
infinite gradient makes a parameter's second moment infinite and freezes it for good;
``Trace_ELBO`` with ``--particles`` vectorized particles) in one run scored at two
budgets: ``steps`` (at step ``--steps``) and ``seconds`` (once ``--seconds`` of training
have passed; the run goes on, it does not restart). It stops
at ``--max-steps-factor`` x ``--steps`` steps or after ``--max-train-s`` seconds; a
budget not reached by then is scored there and marked ``capped``. Only SVI steps count
on the training clock (the 5 warm-up steps included); ``s_per_step`` is the median over
the run's steps after the warm-up. Scores (off the clock): ``elbo``, the mean of
``-loss`` of ``Trace_ELBO(vectorize_particles=True)`` over ``--elbo-particles``
particles (in chunks, under ``no_grad``); from ``draws`` guide draws (``Predictive``;
``--draws``, or ``--draws-large`` from D = 50,000 on), where the posterior is known,
``mean_err_sd`` (mean over parameters of |mean error| / posterior sd), ``sd_ratio``
(mean guide sd / posterior sd), ``log_sd_err`` (mean |log sd ratio|) and the same per
site (constrained space; the non-centered model's deterministic ``theta`` included;
Monte Carlo noise alone gives about 0.8 / sqrt(draws) and 0.7 / sqrt(draws)), and where
labels are held out, ``heldout_lpd`` (mean log predictive density per held-out point).
An exception, a non-finite loss, an out-of-memory kill or ``--timeout`` becomes the
row's ``error``. With ``--out`` the file is rewritten after every configuration.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import inspect
import io
import json
import math
import multiprocessing
import resource
import signal
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch
from _results import save_rows
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal
from scale_models import BUILDERS, ScaleCase, make_case

import flowguide
from flowguide import AutoIAF, AutoNeuralSpline
from flowguide.autoguide.recipe import Recipe

GUIDES: dict[str, Callable[[ScaleCase], Any]] = {
    "AutoNormal": lambda case: AutoNormal(case.model),
    "AutoLowRankMultivariateNormal": lambda case: AutoLowRankMultivariateNormal(case.model),
    "AutoIAF": lambda case: AutoIAF(case.model),
    "AutoNeuralSpline": lambda case: AutoNeuralSpline(case.model),
    "AutoIAF+plates": lambda case: AutoIAF(case.model, local_plates=case.plates),
}
NEEDS_PLATES = {"AutoIAF+plates"}
BUDGETS = ("steps", "seconds")
WARMUP = 5
LARGE = 50_000  # from this D on, --draws-large guide draws
CHUNK_ELEMENTS = 20_000_000  # draws x D per chunk of the scores' draws
_CHILDREN: set[Any] = set()


def supports_local_plates() -> bool:
    """Whether flowguide's AutoIAF takes ``local_plates`` (being added)."""
    return any(
        "local_plates" in inspect.signature(c.__init__).parameters for c in (AutoIAF, flowguide.AutoFlow)
    )


def default_guides() -> list[str]:
    return [g for g in GUIDES if g != "AutoIAF+plates" or supports_local_plates()]


@functools.cache
def case_plates(model: str) -> tuple[str, ...]:
    """The model's group plates, read from a small instance."""
    return make_case(model, 12, **({"hidden": 2} if model == "bnn" else {})).plates


# ---------------------------------------------------------------------- child
def rss_mb() -> float:
    """Peak resident memory of this process so far, MB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def set_up(guide: Any, case: ScaleCase) -> None:
    """``guide.setup(*args)`` where the guide has it, else one call."""
    if hasattr(guide, "setup"):
        guide.setup(*case.args)
    else:
        guide(*case.args)


def count_parameters(guide: Any) -> int:
    """Entries of the guide's parameters: Pyro's parameter store, and the guide's own
    (a flowguide guide's flow is a module whose parameters join the store when used)."""
    tensors = {id(p): p for _, p in pyro.get_param_store().named_parameters()}  # unconstrained
    if isinstance(guide, torch.nn.Module):
        tensors |= {id(p): p for p in guide.parameters()}
    return sum(p.numel() for p in tensors.values())


def site_shapes(case: ScaleCase) -> dict[str, torch.Size]:
    """Each scored site's shape in one unbatched run of the model."""
    trace = pyro.poutine.trace(case.model).get_trace(*case.args)
    return {name: trace.nodes[name]["value"].shape for name in case.sites}


def draw(case: ScaleCase, guide: Any, num: int, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """``num`` posterior draws of the scored sites, ``(num, *shape)`` on the CPU, in chunks."""
    chunk = max(1, min(num, CHUNK_ELEMENTS // max(case.dim, 1)))
    pieces: dict[str, list[torch.Tensor]] = {name: [] for name in shapes}
    with torch.no_grad():
        for start in range(0, num, chunk):
            size = min(chunk, num - start)
            predictive = Predictive(
                case.model, guide=guide, num_samples=size, return_sites=list(shapes), parallel=True
            )
            for name, value in predictive(*case.args).items():
                pieces[name].append(value.reshape(size, *shapes[name]).cpu())
    return {name: torch.cat(values) for name, values in pieces.items()}


def elbo_estimate(case: ScaleCase, guide: Any, particles: int) -> float:
    """Mean of ``-loss`` of vectorized ``Trace_ELBO`` over ``particles`` particles, in chunks."""
    chunk = max(1, min(particles, CHUNK_ELEMENTS // 8 // max(case.dim, 1)))
    total = 0.0
    with torch.no_grad():
        for start in range(0, particles, chunk):
            size = min(chunk, particles - start)
            loss = Trace_ELBO(
                num_particles=size, vectorize_particles=True, max_plate_nesting=case.max_plate_nesting
            )
            total -= size * loss.loss(case.model, guide, *case.args)
    return total / particles


def reference_scores(samples: dict[str, torch.Tensor], reference: dict) -> dict[str, Any]:
    """Mean |mean error| / sd, mean sd ratio and mean |log sd ratio| over every parameter."""
    errors, ratios, per_site = [], [], {}
    for name, (mean, sd) in reference.items():
        values = samples[name].reshape(len(samples[name]), -1).double()
        error = ((values.mean(0) - mean.flatten().double()) / sd.flatten().double()).abs()
        ratio = values.std(0) / sd.flatten().double()
        errors.append(error)
        ratios.append(ratio)
        per_site[name] = {"mean_err_sd": float(error.mean()), "sd_ratio": float(ratio.mean())}
    error, ratio = torch.cat(errors), torch.cat(ratios)
    return {
        "mean_err_sd": float(error.mean()),
        "sd_ratio": float(ratio.mean()),
        "log_sd_err": float(ratio.log().abs().mean()),
        "site_scores": per_site,
    }


def score(case: ScaleCase, guide: Any, args: argparse.Namespace, shapes: dict) -> dict[str, Any]:
    """The ELBO and, where the case has them, the reference and held-out scores."""
    out: dict[str, Any] = {"elbo": elbo_estimate(case, guide, args.elbo_particles)}
    out["elbo_particles"] = args.elbo_particles
    if case.reference is None and case.heldout is None:
        return out
    num = args.draws_large if case.dim >= LARGE else args.draws
    samples = draw(case, guide, num, shapes)
    out["draws"] = num
    if case.reference is not None:
        out |= reference_scores(samples, case.reference)
    if case.heldout is not None:
        out["heldout_lpd"] = case.heldout(samples)
    return out


class Run:
    """One child's SVI run, scored at each budget as it is reached (see the module docstring)."""

    def __init__(self, case: ScaleCase, guide: Any, args: argparse.Namespace, info: dict) -> None:
        self.case, self.guide, self.args, self.info = case, guide, args, info
        loss = Trace_ELBO(
            num_particles=args.particles, vectorize_particles=True, max_plate_nesting=case.max_plate_nesting
        )
        self.svi = SVI(case.model, guide, Recipe(lr_decay=None).pyro_optim(args.steps, args.lr), loss)
        self.step, self.clock, self.times = 0, 0.0, []
        self.rows: list[dict] = []
        self.left = list(BUDGETS)
        self.shapes = site_shapes(case)

    def reached(self, budget: str) -> bool:
        return self.step >= self.args.steps if budget == "steps" else self.clock >= self.args.seconds

    def capped(self) -> bool:
        limit = self.args.max_train_s
        return self.step >= self.args.max_steps_factor * self.args.steps or (
            limit is not None and self.clock >= limit
        )

    def one_step(self) -> None:
        began = time.perf_counter()
        loss = self.svi.step(*self.case.args)  # a float: waits for CUDA
        took = time.perf_counter() - began
        self.step, self.clock = self.step + 1, self.clock + took
        if self.step > WARMUP:
            self.times.append(took)
        if not math.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss} at step {self.step}")

    def record(self, budgets: list[str]) -> None:
        if self.info["peak_rss_mb"] is None:  # training's peak: before the first scores
            self.info["peak_rss_mb"] = rss_mb()
            if self.args.device.startswith("cuda"):
                self.info["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        training = {"steps": self.step, "train_s": self.clock, "s_per_step": self.s_per_step()}
        scores = score(self.case, self.guide, self.args, self.shapes)
        scores["scored_rss_mb"] = rss_mb()
        for budget in budgets:
            capped = not self.reached(budget)
            self.rows.append({**self.info, "budget": budget, **training, "capped": capped, **scores})
            self.left.remove(budget)

    def s_per_step(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def __call__(self) -> list[dict]:
        while self.left:
            capped = self.capped()
            due = [b for b in self.left if self.reached(b) or capped]
            if due:
                self.record(due)
                continue
            self.one_step()
        for row in self.rows:  # the whole run's median, in both budgets' rows
            row["s_per_step"] = self.s_per_step()
        return sorted(self.rows, key=lambda row: BUDGETS.index(row["budget"]))


def blank_row(model: str, dim: int | None, guide: str, device: str) -> dict[str, Any]:
    """Every key of a row, unset."""
    keys = (
        *("params", "setup_s", "s_per_step", "peak_rss_mb", "base_rss_mb", "cuda_peak_mb", "steps"),
        *("train_s", "capped", "elbo", "elbo_particles", "draws", "mean_err_sd", "sd_ratio", "log_sd_err"),
        *("site_scores", "heldout_lpd", "scored_rss_mb", "error"),
    )
    return {"model": model, "dim": dim, "guide": guide, "device": device, **dict.fromkeys(keys)}


def run_one(args: argparse.Namespace) -> list[dict]:
    """The child's work: one (model, D, guide), both budgets; failures become ``error``."""
    model, dim, name = args.one[0], int(args.one[1]) or None, args.one[2]
    torch.set_num_threads(args.threads)
    info = blank_row(model, dim, name, args.device)
    run = None
    context = torch.device(args.device) if args.device != "cpu" else contextlib.nullcontext()
    try:
        with context:
            case = make_case(model, dim, device=args.device, seed=args.seed, **case_options(model, args))
            info |= {"dim": case.dim, "base_rss_mb": rss_mb()}
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            pyro.clear_param_store()
            pyro.set_rng_seed(args.seed)
            guide = GUIDES[name](case)
            began = time.perf_counter()
            set_up(guide, case)
            info["setup_s"] = time.perf_counter() - began
            info["params"] = count_parameters(guide)
            torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch's first optimizer imports
            run = Run(case, guide, args, info)  # its compiler stack (~1 s): not on any guide's clock
            return run()
    except Exception as error:  # CUDA's out-of-memory error included
        done = run.rows if run is not None else []
        partial = (
            {} if run is None else {"steps": run.step, "train_s": run.clock, "s_per_step": run.s_per_step()}
        )
        message = f"{type(error).__name__}: {error}"[:2000]
        traceback.print_exc()
        left = run.left if run is not None else list(BUDGETS)
        return done + [{**info, **partial, "budget": b, "error": message} for b in left]


def case_options(model: str, args: argparse.Namespace) -> dict[str, Any]:
    return {"hidden": args.bnn_hidden} if model == "bnn" else {}


def finite(rows: list[dict]) -> list[dict]:
    """Rows with NaN and infinities as ``None`` (strict JSON)."""

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return {k: clean(v) for k, v in value.items()} if isinstance(value, dict) else value

    return [clean(row) for row in rows]


# ---------------------------------------------------------------------- parent
CHILD_OPTIONS = (
    *("steps", "seconds", "lr", "particles", "elbo_particles", "draws", "draws_large"),
    *("max_steps_factor", "max_train_s", "device", "threads", "seed", "bnn_hidden"),
)


def child_argv(args: argparse.Namespace, model: str, dim: int | None, guide: str) -> list[str]:
    """The command-line options of one configuration's child (``--one`` and the budgets)."""
    options = ["--one", model, str(dim or 0), guide]
    for key in CHILD_OPTIONS:
        value = getattr(args, key)
        if value is not None:
            options += [f"--{key.replace('_', '-')}", str(value)]
    return options


def _child(argv: list[str], connection: Any) -> None:
    """A child's entry point: its rows go back through ``connection``."""
    connection.send(finite(run_one(parse(argv))))
    connection.close()


@functools.cache
def _context() -> Any:
    """Fresh processes forked from a server that has imported torch, Pyro and flowguide
    (nothing else has run there: no threads, no CUDA), so that a child starts in
    milliseconds, not seconds, and its memory and state are its own."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        ["torch", "torch._dynamo", "pyro", "flowguide", "scale_models", "_results"]
    )
    return context


def run_child(args: argparse.Namespace, model: str, dim: int | None, guide: str) -> list[dict]:
    """One configuration in a fresh process; its rows, or error rows if it died."""
    reader, writer = _context().Pipe(duplex=False)
    process = _context().Process(
        target=_child, args=(child_argv(args, model, dim, guide), writer), daemon=True
    )
    process.start()
    writer.close()
    _CHILDREN.add(process)
    try:
        rows = reader.recv() if reader.poll(args.timeout) else None
        problem = f"timeout after {args.timeout} s"
    except EOFError:
        rows, problem = None, "child died"
    finally:
        process.join(None if rows is not None else 1)
        if process.is_alive():
            process.kill()
            process.join()
        _CHILDREN.discard(process)
        reader.close()
    if rows is not None:
        return rows
    if process.exitcode is not None and process.exitcode < 0 and problem == "child died":
        problem = f"child killed by signal {-process.exitcode} (out of memory?)"
    return [{**blank_row(model, dim, guide, args.device), "budget": b, "error": problem} for b in BUDGETS]


def configurations(args: argparse.Namespace) -> list[tuple[str, int | None, str]]:
    """Every (model, D, guide) to run, in order (``bnn`` once, plate guides on plated models)."""
    out = []
    for model in args.models:
        for dim in [None] if model == "bnn" else args.dims:
            out += [(model, dim, g) for g in args.guides if g not in NEEDS_PLATES or case_plates(model)]
    return out


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def print_row(row: dict, normal: dict | None) -> None:
    """One line of the table; ratios against AutoNormal's row (same model, D, budget)."""
    ratio = {}
    for key in ("s_per_step", "params"):
        ok = normal is not None and row.get(key) and normal.get(key)
        ratio[key] = row[key] / normal[key] if ok else None
    print(
        f"{row['model']:<24} {_fmt(row['dim'], 'd'):>7} {row['guide']:<29} {row['budget']:<7} "
        f"{_fmt(row['params'], 'd'):>10} {_fmt(ratio['params'], '.1f'):>6} {_fmt(row['setup_s'], '.2f'):>7} "
        f"{_fmt(row['s_per_step'], '.4f'):>8} {_fmt(ratio['s_per_step'], '.1f'):>6} "
        f"{_fmt(row['peak_rss_mb'], '.0f'):>7} {_fmt(row['cuda_peak_mb'], '.0f'):>7} "
        f"{_fmt(row['steps'], 'd'):>6} {_fmt(row['elbo'], '.1f'):>11} {_fmt(row['mean_err_sd'], '.3f'):>7} "
        f"{_fmt(row['sd_ratio'], '.3f'):>6} {_fmt(row['heldout_lpd'], '.4f'):>8}"
        + (f"  error: {row['error'][:120]}" if row.get("error") else ""),
        flush=True,
    )


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'model':<24} {'D':>7} {'guide':<29} {'budget':<7} {'params':>10} {'x AN':>6} {'setup s':>7} "
        f"{'s/step':>8} {'x AN':>6} {'RSS MB':>7} {'CUDA MB':>7} {'steps':>6} {'ELBO':>11} {'err/sd':>7} "
        f"{'sd rat':>6} {'LPD':>8}"
    )
    print(header)
    normal = {(r["model"], r["dim"], r["budget"]): r for r in rows if r["guide"] == "AutoNormal"}
    for row in rows:
        print_row(row, normal.get((row["model"], row["dim"], row["budget"])))


def run(args: argparse.Namespace) -> list[dict]:
    """Every configuration in its own child, ``--jobs`` at a time; rows in configuration order."""
    configs = configurations(args)
    results: dict[int, list[dict]] = {}
    lock = threading.Lock()

    def one(index: int) -> None:
        rows = finite(run_child(args, *configs[index]))
        with lock:
            results[index] = rows
            for row in rows:
                status = f"error: {row['error'][:100]}" if row.get("error") else f"{row['steps']} steps"
                print(
                    f"done {row['model']} D={row['dim']} {row['guide']} [{row['budget']}] {status}",
                    flush=True,
                )
            if args.out is not None:
                with contextlib.redirect_stdout(io.StringIO()):
                    save_rows(args.out, args, _ordered(results), benchmark="scale", device=args.device)

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, range(len(configs))))
    return _ordered(results)


def _ordered(results: dict[int, list[dict]]) -> list[dict]:
    return [row for index in sorted(results) for row in results[index]]


def _stop_children(signum: int, frame: Any) -> None:
    """On SIGTERM (e.g. ``timeout``), end the children this process started, then exit."""
    for process in list(_CHILDREN):
        process.kill()
    sys.exit(128 + signum)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=list(BUILDERS), default=list(BUILDERS))
    parser.add_argument("--dims", nargs="+", type=int, default=[1000, 10_000, 100_000])
    parser.add_argument("--guides", nargs="+", choices=list(GUIDES), default=None, help="default: all usable")
    parser.add_argument("--steps", type=int, default=1000, help="the equal-steps budget")
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="the equal-wall-clock budget (training s)"
    )
    parser.add_argument("--max-steps-factor", type=int, default=20, help="stop at this many x --steps")
    parser.add_argument("--max-train-s", type=float, default=None, help="stop training after this many s")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--elbo-particles", type=int, default=256)
    parser.add_argument("--draws", type=int, default=1000, help="guide draws for the scores")
    parser.add_argument("--draws-large", type=int, default=200, help="guide draws at D >= 50,000")
    parser.add_argument("--bnn-hidden", type=int, default=90)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per child")
    parser.add_argument("--jobs", type=int, default=1, help="children at once")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before a child is killed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and budgets: checks the script runs")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "DIM", "GUIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda was requested but CUDA is not available")
    if args.quick:
        args.dims, args.bnn_hidden, args.steps, args.seconds = [40], 4, 10, 0.5
        args.elbo_particles, args.draws, args.draws_large, args.jobs = 32, 100, 100, max(args.jobs, 2)
        args.guides = args.guides or ["AutoNormal", "AutoIAF"]
    args.guides = args.guides or default_guides()
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    if args.one is not None:
        print(json.dumps(finite(run_one(args))), flush=True)
        return []
    signal.signal(signal.SIGTERM, _stop_children)
    rows = run(args)
    print_table(rows)
    save_rows(args.out, args, rows, benchmark="scale", device=args.device)
    return rows


if __name__ == "__main__":
    main()
