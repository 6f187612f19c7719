"""The documentation's benchmark tables, rendered from the current result files.

    python benchmarks/tables.py           # write docs/_generated/<benchmark>.md and README.md's table
    python benchmarks/tables.py --check   # exit 1 where a rendered table differs from the file

Each fragment is a Markdown table and one line of provenance (commit, versions, device,
command), read from ``benchmarks/results/<benchmark>.json``; the pages include the
fragments, so no number in the documentation is copied by hand. The test suite runs
``--check``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GENERATED = ROOT / "docs" / "_generated"
README = ROOT / "README.md"
#: The main job's table, as ``docs/figures.sh`` writes it (a heading line, a blank line, the table).
COMPARE_TABLE = ROOT / "docs" / "_static" / "figures" / "compare_funnel.md"

#: Column order of the guides in quality tables: Pyro's guides first.
GUIDE_ORDER = [
    "AutoNormal",
    "AutoMultivariateNormal",
    "pyro.AutoIAFNormal",
    "pyro.spline_coupling",
    "AutoPlanarFlow",
    "AutoIAF",
    "AutoNeuralSpline",
    "AutoAffineCoupling",
]
OURS = GUIDE_ORDER[4:]


def load(benchmark: str, results: Path = RESULTS) -> dict:
    return json.loads((results / f"{benchmark}.json").read_text())


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(record: dict) -> str:
    """One line: where the numbers come from."""
    p = record["provenance"]
    versions = ", ".join(f"{k} {v}" for k, v in p["versions"].items())
    device = p["device"]
    where = device["cuda"] or f"{device['cpu']}, {device['cores']} cores, {device['threads']} thread(s)"
    dirty = " (with uncommitted changes)" if p["dirty"] else ""
    commits = list(dict.fromkeys(run["commit"][:10] for run in p.get("runs", []))) or [p["commit"][:10]]
    at = f"commit `{commits[0]}`" if len(commits) == 1 else "commits " + ", ".join(f"`{c}`" for c in commits)
    return f"*Measured at {at}{dirty} on {p['date'][:10]}; {versions}; {where}. Reproduce: `{p['command']}`.*"


def _ordered(names: set[str]) -> list[str]:
    return [g for g in GUIDE_ORDER if g in names] + sorted(names - set(GUIDE_ORDER))


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if len(finite) == len(values) else math.nan


def _kl(value: float) -> str:
    return "diverged" if math.isnan(value) else f"{value:.4f}"


def _kl_table(rows: list[dict], variant: str, guides: list[str]) -> str:
    targets = list(dict.fromkeys(r["target"] for r in rows))
    cells = []
    for target in targets:
        line = [f"`{target}`"]
        for guide in guides:
            kls = [
                r["kl"] for r in rows if (r["target"], r["guide"], r["variant"]) == (target, guide, variant)
            ]
            line.append(_kl(_mean(kls)) if kls else "")
        cells.append(line)
    return table(["target", *guides], cells)


def fit_quality(record: dict) -> str:
    rows, s = record["rows"], record["settings"]
    guides = _ordered({r["guide"] for r in rows})
    seeds = " ".join(map(str, s["seeds"]))
    defaults = _kl_table(rows, "defaults", guides)
    ours = [g for g in OURS if any(r["guide"] == g for r in rows)]
    recipe_rows = []
    for target in dict.fromkeys(r["target"] for r in rows):
        line = [f"`{target}`"]
        for guide in ours:
            pick = {
                v: _mean(
                    [r["kl"] for r in rows if (r["target"], r["guide"], r["variant"]) == (target, guide, v)]
                )
                for v in ("defaults", "recipe")
            }
            line.append(f"{_kl(pick['defaults'])} / {_kl(pick['recipe'])}")
        recipe_rows.append(line)
    return (
        f"KL(q‖p) = log Z - ELBO in nats (20,000 draws), mean over seeds {seeds}; {s['steps']} steps, "
        f"Adam at a constant {s['lr']}, {s['particles']} vectorized particles, every guide at its "
        "defaults.\n\n"
        f"{defaults}\n\nThe flow guides at the same constant rate / with their training recipe "
        f"(`flowguide.training.fit`'s default), same steps and seeds:\n\n"
        f"{table(['target', *ours], recipe_rows)}\n\n{provenance(record)}\n"
    )


def fit_quality_ablation(record: dict) -> str:
    rows, s = record["rows"], record["settings"]
    guides = [g for g in OURS if any(r["guide"] == g for r in rows)]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    cells = []
    for target in dict.fromkeys(r["target"] for r in rows):
        for variant in variants:
            line = [f"`{target}`", variant]
            for guide in guides:
                kls = [
                    r["kl"]
                    for r in rows
                    if (r["target"], r["guide"], r["variant"]) == (target, guide, variant)
                ]
                line.append(_kl(_mean(kls)) if kls else "")
            cells.append(line)
    return (
        f"KL(q‖p) in nats, seed {' '.join(map(str, s['seeds']))}, {s['steps']} steps at Adam {s['lr']}: the "
        "defaults, and the defaults with sticking the landing off (`no_stl`), without the "
        "triangular head (`diagonal`) and without the Laplace start (`cold`).\n\n"
        f"{table(['target', 'variant', *guides], cells)}\n\n{provenance(record)}\n"
    )


def large_rate(record: dict) -> str:
    rows, s = record["rows"], record["settings"]
    cells = []
    for guide in _ordered({r["guide"] for r in rows}):
        for lr in dict.fromkeys(r["lr"] for r in rows):
            mine = [r for r in rows if r["guide"] == guide and r["lr"] == lr]
            if not mine:
                continue
            held = sum(r["mean_error"] < 1.0 and r["log_width_ratio"] < 1.0 for r in mine)
            finite = [r for r in mine if math.isfinite(r["mean_error"])]
            diverged = len(mine) - len(finite)
            worst_mean = f"{max(r['mean_error'] for r in finite):.2f}" if finite else ""
            worst_width = f"{max(r['log_width_ratio'] for r in finite):.2f}" if finite else ""
            cells.append([guide, lr, f"{held} of {len(mine)}", diverged, worst_mean, worst_width])
    header = ["guide", "Adam rate", "held", "diverged", "worst mean error (widths)", "worst abs log width"]
    return (
        f"Five logit-Binomial coordinates (Pyro's `test_predictive.py`), one particle, {s['steps']} steps, "
        f"seeds {' '.join(map(str, s['seeds']))}; a run holds when its worst coordinate's mean is within one "
        "posterior width and its width within a factor e; the worst errors are over the runs that "
        "did not diverge.\n\n"
        f"{table(header, cells)}\n\n{provenance(record)}\n"
    )


def guides_vs_pyro_speed(record: dict) -> str:
    cells = [
        [
            r["flow"],
            r["dim"],
            r["hidden"],
            f"{r['ours']:.5f}",
            f"{r['ours_default']:.5f}",
            f"{r['pyro']:.5f}",
            f"{r['ratio']:.2f}",
            f"{r['ratio_default']:.2f}",
        ]
        for r in record["rows"]
    ]
    header = [
        "flow",
        "D",
        "hidden",
        "ours, plain",
        "ours, defaults",
        "Pyro",
        "plain / Pyro",
        "defaults / Pyro",
    ]
    s = record["settings"]
    return (
        f"Seconds per SVI step (one particle, depth 4, two hidden layers), median of {s['repeats']} "
        f"interleaved repeats of {s['speed_steps']} steps. *Plain*: `stl=False`, the computation Pyro's "
        "guides do; *defaults*: sticking the landing where the recipe turns it on. Under 1 is faster.\n\n"
        f"{table(header, cells)}\n\n{provenance(record)}\n"
    )


def guides_vs_pyro_size(record: dict) -> str:
    cells = [[r["guide"], f"{r['params']:,}"] for r in record["rows"]]
    dim = record["rows"][0]["dim"]
    body = table(["guide", "parameters"], cells)
    return f"Parameters at D = {dim}, defaults.\n\n{body}\n\n{provenance(record)}\n"


def equal_time(record: dict) -> str:
    s = record["settings"]
    cells = []
    for r in record["rows"]:
        if not r.get("finite", True):  # the fit went non-finite: no scores
            cells.append([r["model"], r["guide"], r["steps"], "diverged", "", "", ""])
            continue
        kl = "" if r.get("kl") is None else f"{r['kl']:.3f}"
        scores = [f"{r['elbo']:.3f}", f"{r['iwae']:.3f}", f"{r['khat']:.2f}", kl]
        cells.append([r["model"], r["guide"], r["steps"], *scores])
    return (
        f"Each guide trained by SVI (Adam {s['lr']}, {s['particles']} particles) for {s['seconds']} s, then "
        f"scored from {s['samples']} draws.\n\n"
        f"{table(['model', 'guide', 'steps', 'ELBO', 'IWAE', 'k-hat', 'KL'], cells)}\n\n"
        f"{provenance(record)}\n"
    )


def flows_vs_zuko(record: dict) -> str:
    cells = [
        [r["flow"], r["dim"], r["mode"], f"{r['ours_s']:.5f}", f"{r['zuko_s']:.5f}", f"{r['ratio']:.2f}"]
        for r in record["rows"]
    ]
    s = record["settings"]
    return (
        f"Seconds per `rsample_and_log_prob` call on a batch of {s['batch']} (*train*: with the backward), "
        f"median of {s['repeats']} repeats; ours / zuko, under 1 is faster.\n\n"
        f"{table(['flow', 'D', 'mode', 'ours (s)', 'zuko (s)', 'ours / zuko'], cells)}\n\n"
        f"{provenance(record)}\n"
    )


def multimodal(record: dict) -> str:
    rows, s = record["rows"], record["settings"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    targets = list(dict.fromkeys(r["target"] for r in rows))

    def cell(target: str, method: str, key: str, reduce: Callable) -> str:
        values = [r[key] for r in rows if r["target"] == target and r["method"] == method]
        return f"{reduce(values):.2f}" if values else ""

    kl = [[t] + [cell(t, m, "kl", statistics.fmean) for m in methods] for t in targets]
    mass = [[t] + [cell(t, m, "mass_error", max) for m in methods] for t in targets]
    found = []
    for t in targets:
        mine = [r for r in rows if r["target"] == t and r["method"] == "iaf"]
        truth = " / ".join(f"{m:.2f}" for m in mine[0]["true_masses"]) if mine else ""
        components = " ".join(str(r["components"]) for r in mine)
        setup = f"{statistics.fmean(r['setup_s'] for r in mine):.2f}" if mine else ""
        found.append([t, truth, components, setup])
    seeds = ", ".join(map(str, s["seeds"]))
    return (
        f"{s['steps']} steps of `flowguide.training.fit` per guide (zuko: Adam 1e-2, 8 particles), "
        f"seeds {seeds}. KL(q‖p), mean over the seeds:\n\n"
        f"{table(['target', *methods], kl)}\n\n"
        "Largest error of the mass per mode over the seeds (the guide's share of draws in each "
        "mode's region against the target's; 0.5 on two equal modes is one mode missed):\n\n"
        f"{table(['target', *methods], mass)}\n\n"
        "The default AutoIAF's mixture components per seed, the true masses, and its mean set-up "
        "seconds (the mode search included):\n\n"
        f"{table(['target', 'true masses', 'components', 'set-up (s)'], found)}\n\n"
        f"{provenance(record)}\n"
    )


def multimodal_unimodal(record: dict) -> str:
    cells = [
        [
            r["target"],
            r["guide"],
            r["components"],
            r["modes_found"],
            f"{r['setup_s']:.2f}",
            f"{r['setup_s_without_search']:.2f}",
            "yes" if r["identical_fit"] else "no",
        ]
        for r in record["rows"]
    ]
    header = ["target", "guide", "components", "modes", "set-up (s)", "without search (s)", "fit identical"]
    return (
        f"The default guides on `fit_quality.py`'s targets: mixture components, modes found, set-up "
        f"seconds with and without the mode search, and whether {record['settings']['identity_steps']} "
        "steps of `fit` give bit-identical parameters with and without it.\n\n"
        f"{table(header, cells)}\n\n{provenance(record)}\n"
    )


def training_speed(record: dict) -> str:
    cells = []
    for r in record["rows"]:
        svi = r.get("trainer_over_svi")
        cells.append(
            [
                r["guide"],
                r["device"],
                f"{r['seconds_per_step']:.4f}",
                f"{r['speedup_vs_cpu']:.2f}",
                "" if svi is None else f"{svi:.2f}",
            ]
        )
    header = ["guide", "device", "s/step", "speed-up over CPU", "trainer / SVI"]
    return f"{table(header, cells)}\n\n{provenance(record)}\n"


def packing(record: dict) -> str:
    cells = [
        [
            r["flow"],
            r["dim"],
            f"{r['largest_stack']:,}",
            f"{r['packed']:.5f}",
            f"{r['separate']:.5f}",
            f"{r['default']:.5f}",
        ]
        for r in record["rows"]
    ]
    header = ["flow", "D", "largest stack (weights)", "packed", "separate", "default"]
    return (
        "Seconds per SVI step with every conditioner packed in one parameter, every weight and bias a "
        "parameter of its own, and the default (packed up to `PACK_LIMIT` weights).\n\n"
        f"{table(header, cells)}\n\n{provenance(record)}\n"
    )


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def scale(record: dict) -> str:
    """Per model, D and guide: size, cost, memory, and the fit at equal steps and equal seconds."""
    rows = record["rows"]
    steps = {(r["model"], r["dim"], r["guide"]): r for r in rows if r["budget"] == "steps"}
    seconds = {(r["model"], r["dim"], r["guide"]): r for r in rows if r["budget"] == "seconds"}
    base = {(r["model"], r["dim"]): r for r in steps.values() if r["guide"] == "AutoNormal"}
    cells = []
    for key, r in steps.items():
        s = seconds.get(key, {})
        normal = base.get(key[:2])
        if r.get("error"):
            cells.append([*key, "-", "-", "-", "-", f"error: {r['error'][:40]}", "", "", ""])
            continue
        ratio = (
            "-"
            if normal is None or not normal.get("s_per_step")
            else f"{r['s_per_step'] / normal['s_per_step']:.1f}"
        )
        fit = "mean_err_sd" if r.get("mean_err_sd") is not None else "heldout_lpd"
        cells.append(
            [
                *key,
                f"{r['params']:,}",
                f"{r['s_per_step']:.4f}",
                ratio,
                _num(r.get("peak_rss_mb"), ".0f"),
                _num(r.get("elbo"), ".1f"),
                _num(s.get("elbo"), ".1f") + (f" ({s['steps']})" if s.get("steps") else ""),
                _num(r.get(fit), ".3f"),
                _num(s.get(fit), ".3f"),
            ]
        )
    header = [
        "model",
        "D",
        "guide",
        "params",
        "s/step",
        "x AutoNormal",
        "peak MB",
        "ELBO, equal steps",
        "ELBO, equal seconds (steps)",
        "err/sd or LPD, steps",
        "err/sd or LPD, seconds",
    ]
    settings = record["settings"]
    return (
        f"Equal steps: {settings['steps']}; equal seconds: {settings['seconds']} s of training. "
        "err/sd: mean |posterior mean error| in exact posterior sds (hierarchical models); LPD: "
        "held-out log predictive density per point (BNN, GP classification).\n\n"
        f"{table(header, cells)}\n\n{provenance(record)}\n"
    )


def plate_defaults(record: dict) -> str:
    """Mean ELBO over seeds at each checkpoint, per variant."""
    variants: dict[str, list[dict]] = {}
    for r in record["rows"]:
        variants.setdefault(r["variant"], []).append(r)
    checkpoints = [p["step"] for p in next(iter(variants.values()))[0]["curve"]]
    cells = []
    for name, runs in variants.items():
        means = [_mean([run["curve"][i]["elbo"] for run in runs]) for i in range(len(checkpoints))]
        ms = 1e3 * _mean([run["s_per_step"] for run in runs])
        cells.append([name, f"{ms:.1f}", *(f"{m:.1f}" for m in means)])
    header = ["variant", "ms/step", *(f"step {c}" for c in checkpoints)]
    seeds = len(next(iter(variants.values())))
    return f"Mean ELBO over {seeds} seeds.\n\n{table(header, cells)}\n\n{provenance(record)}\n"


def head_threshold(record: dict) -> str:
    """Per D: parameters and ms per step of each head, and the full head over the rank-16 one."""
    by_dim: dict[int, dict[str, dict]] = {}
    for r in record["rows"]:
        by_dim.setdefault(r["dim"], {})[r["variant"]] = r
    variants = list(next(iter(by_dim.values())))
    cells = []
    for dim, runs in by_dim.items():
        ratio = runs["full"]["s_per_step"] / runs["lowrank 16"]["s_per_step"]
        parts = [f"{runs[v]['params']:,} / {runs[v]['s_per_step'] * 1e3:.1f}" for v in variants]
        cells.append([dim, *parts, f"{ratio:.2f}"])
    header = ["D", *(f"{v}: params / ms" for v in variants), "full / lowrank 16"]
    return f"AutoIAF with each head (ms per SVI step).\n\n{table(header, cells)}\n\n{provenance(record)}\n"


#: Method order in the real-model tables: the flow guides, Pyro's guides, then NUTS.
REAL_METHODS = [
    "AutoIAF",
    "AutoNeuralSpline",
    "AutoAffineCoupling",
    "AutoPlanarFlow",
    "AutoNormal",
    "AutoMultivariateNormal",
    "AutoLowRankMultivariateNormal",
    "pyro.AutoIAFNormal",
    "NUTS",
]
_SHORT = {
    "AutoIAF": "IAF",
    "AutoNeuralSpline": "NSF",
    "AutoAffineCoupling": "Affine",
    "AutoPlanarFlow": "Planar",
    "AutoNormal": "Normal",
    "AutoMultivariateNormal": "MVN",
    "AutoLowRankMultivariateNormal": "LowRankMVN",
    "pyro.AutoIAFNormal": "pyro IAF",
    "NUTS": "NUTS",
}


def _by_model(rows: list[dict]) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for r in rows:
        out.setdefault(r["model"], {})[r["method"]] = r
    return out


def real_models_accuracy(record: dict) -> str:
    """Time to W1 <= target per model and method, then the scores where each run stopped."""
    target = record["settings"]["target"]
    models = _by_model(record["rows"])
    methods = [m for m in REAL_METHODS if any(m in runs for runs in models.values())]
    reach = []
    for model, runs in models.items():
        cells = []
        for m in methods:
            r = runs.get(m)
            if r is None:
                cells.append("")
            elif "error" in r:
                cells.append("failed")
            elif r["time_to_target"] is None:
                cells.append(f"— ({r['w1']:.2f})")
            else:
                cells.append(f"{r['time_to_target']:.1f}")
        reach.append([model, *cells])
    flows = [
        m
        for m in methods
        if m.startswith("Auto")
        and m in ("AutoIAF", "AutoNeuralSpline", "AutoAffineCoupling", "AutoPlanarFlow")
    ]
    faster = [
        model
        for model, runs in models.items()
        if "NUTS" in runs
        and any(
            runs[m].get("time_to_target") is not None
            and (
                runs["NUTS"].get("time_to_target") is None
                or runs[m]["time_to_target"] < runs["NUTS"]["time_to_target"]
            )
            for m in flows
            if m in runs
        )
    ]
    goals = [_goal_row(model, runs, flows) for model, runs in models.items()]
    scores = []
    for model, runs in models.items():
        for m in methods:
            r = runs.get(m)
            if r is None or "error" in r:
                continue
            guide = m != "NUTS"
            scores.append(
                [
                    model,
                    _SHORT[m],
                    r["steps"],
                    f"{r['seconds']:.1f}",
                    f"{r['w1']:.3f}",
                    f"{r['max_mean_error']:.2f}",
                    f"{r['worst_sd_ratio']:.2f}",
                    f"{r['elbo']:.1f}" if guide else "",
                    f"{r['iwae']:.1f}" if guide else "",
                    f"{r['khat']:.2f}" if guide else "",
                ]
            )
    header = ["model", *(_SHORT[m] for m in methods)]
    score_header = [
        "model",
        "method",
        "steps",
        "seconds",
        "W1",
        "max mean err",
        "worst sd ratio",
        "ELBO",
        "IWAE",
        "k-hat",
    ]
    return (
        f"Seconds until the mean marginal W1 is at most {target} reference sds (— : not within "
        f"{record['settings']['seconds']:g} s of training or the planned steps; the W1 reached in brackets). "
        f"A flow guide is sooner than NUTS on {len(faster)} of {len(models)} models.\n\n"
        f"{table(header, reach)}\n\n"
        + "".join(
            f"{_SHORT[r['method']]} failed on `{r['model']}`: {r['error']}\n\n"
            for r in record["rows"]
            if "error" in r
        )
        + "The goals per model: a default flow guide should reach the target on a unimodal model "
        "where AutoMultivariateNormal does not, and be no slower than the fastest of Pyro's guides "
        "where both reach it; and a flow guide should be sooner than NUTS.\n\n"
        f"{table(GOAL_HEADER, goals)}\n\n"
        "Where each run stopped: W1, the largest |mean error| and the sd ratio farthest from 1 "
        "(both in reference sds), and for the guides ELBO, IWAE and PSIS k-hat.\n\n"
        f"{table(score_header, scores)}\n\n{provenance(record)}\n"
    )


GOAL_HEADER = [
    "model",
    "unimodal",
    "MVN reaches",
    "flow guides short of the goal",
    "fastest flow / fastest Pyro",
    "flow sooner than NUTS",
]


def _goal_row(model: str, runs: dict[str, dict], flows: list[str]) -> list[object]:
    """One model's goals: which flow guides fall short, and the speed ratios."""

    def reached(m: str) -> float | None:
        return runs[m].get("time_to_target") if m in runs else None

    pyro_times = [reached(m) for m in runs if m not in flows and m != "NUTS" and reached(m) is not None]
    flow_times = [reached(m) for m in flows if reached(m) is not None]
    mvn = reached("AutoMultivariateNormal") is not None
    short = []
    for m in flows:
        if m not in runs:
            continue
        if reached(m) is None:
            short.append(f"{_SHORT[m]} (not reached)")
        elif reached(m) is not None and pyro_times and reached(m) > min(pyro_times):
            short.append(f"{_SHORT[m]} (slower)")
    ratio = f"{min(flow_times) / min(pyro_times):.2f}" if flow_times and pyro_times else "—"
    nuts = reached("NUTS")
    sooner = bool(flow_times) and (nuts is None or min(flow_times) < nuts)
    unimodal = next(iter(runs.values())).get("unimodal", True)
    return [
        model,
        "yes" if unimodal else "no",
        "yes" if mvn else "no",
        ", ".join(short) or "none",
        ratio,
        "yes" if sooner else "no",
    ]


def real_models_stl(record: dict) -> str:
    """Seconds per training step: the STL paths of AutoIAF and the particle paths."""
    stl = [
        [r["guide"], r["dim"], r["particles"], f"{r['step_seconds'] * 1e3:.2f}", f"{r['ratio']:.2f}"]
        for r in record["rows"]
        if r["part"] == "stl"
    ]
    particles = [
        [
            r["path"],
            f"{r['step_seconds'] * 1e3:.2f}",
            f"{r['ratio']:.2f}",
            "—" if r["time_to_target"] is None else f"{r['time_to_target']:.1f}",
            f"{r['w1']:.3f}",
        ]
        for r in record["rows"]
        if r["part"] == "particles"
    ]
    return (
        "ms per training step, median of interleaved repeats; the ratio is over Pyro's "
        "AutoIAFNormal.\n\n"
        f"{table(['guide', 'D', 'particles', 'ms/step', 'ratio'], stl)}\n\n"
        "A model written for one draw (`diabetes_flat`, AutoIAF): ms per step of each particle path "
        "and its ratio over sequential particles, and the seconds until W1 is at most "
        f"{record['settings']['target']} reference sds (the W1 where the run stopped).\n\n"
        f"{table(['path', 'ms/step', 'ratio', 'seconds to target', 'W1'], particles)}\n\n"
        f"{provenance(record)}\n"
    )


RENDERERS: dict[str, Callable[[dict], str]] = {
    "fit_quality": fit_quality,
    "fit_quality_ablation": fit_quality_ablation,
    "large_rate": large_rate,
    "guides_vs_pyro_speed": guides_vs_pyro_speed,
    "guides_vs_pyro_size": guides_vs_pyro_size,
    "equal_time": equal_time,
    "flows_vs_zuko": flows_vs_zuko,
    "multimodal": multimodal,
    "multimodal_unimodal": multimodal_unimodal,
    "training_speed": training_speed,
    "packing": packing,
    "scale": scale,
    "plate_defaults": plate_defaults,
    "head_threshold": head_threshold,
    "real_models_accuracy": real_models_accuracy,
    "real_models_stl": real_models_stl,
}


def readme_summary(record: dict) -> str:
    """The README's one table: the flow guides' and Pyro's KL on each target, at the defaults."""
    return (
        fit_quality(record).split("\n\nThe flow guides at the same constant rate")[0]
        + "\n\n"
        + provenance(record)
    )


def replace_block(text: str, name: str, content: str) -> str:
    start, end = f"<!-- generated: {name} -->", "<!-- /generated -->"
    head, found, rest = text.partition(start)
    if not found:
        raise SystemExit(f"README.md has no '{start}' marker")
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{content.strip()}\n{end}{tail}"


def rendered(results: Path = RESULTS) -> dict[Path, str]:
    """Every generated file and its content."""
    files = {}
    for benchmark, render in RENDERERS.items():
        if (results / f"{benchmark}.json").exists():
            files[GENERATED / f"{benchmark}.md"] = render(load(benchmark, results))
    readme = README.read_text()
    if (results / "fit_quality.json").exists():
        readme = replace_block(readme, "fit_quality", readme_summary(load("fit_quality", results)))
    if COMPARE_TABLE.exists():
        readme = replace_block(readme, "compare_funnel", COMPARE_TABLE.read_text().split("\n", 2)[2])
    files[README] = readme
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare with the files instead of writing them")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the result files")
    args = parser.parse_args(argv)
    stale = []
    for path, content in rendered(args.results).items():
        if args.check:
            if not path.exists() or path.read_text() != content:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"stale, run python benchmarks/tables.py: {stale}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
