r"""Side-by-side comparison of guides on one model: the project's main job.

Every guide is trained by :func:`flowguide.training.fit` with the same optimizer (Adam at
a constant rate, or with ``schedule="recipe"`` each guide's own recipe: a flow guide's
:class:`~flowguide.autoguide.Recipe`, the default recipe for Pyro's guides), steps,
particles and seed, then scored from the same number of its own draws: the ELBO with its standard error, the
importance-weighted bound :math:`\mathcal{L}_K` over all draws (:math:`\log p(x)` when it
is known, so the gap :math:`\log p(x) - \mathrm{ELBO} = \mathrm{KL}(q \| p)`), Pareto
:math:`\hat k` and the importance-sampling ESS, seconds per SVI step, parameter count,
and, given NUTS reference draws, each guide's largest error in posterior mean and
standard deviation (in reference standard deviations).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import pyro
import torch
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from torch import Tensor

from flowguide._extras import require
from flowguide.apps.bundled import bundled_model
from flowguide.apps.plots import plot_elbo_traces, plot_pairs
from flowguide.autoguide import (
    AutoAffineCoupling,
    AutoFlow,
    AutoIAF,
    AutoNeuralSpline,
    AutoPlanarFlow,
    Recipe,
    RecipeGuide,
)
from flowguide.diagnostics import (
    importance_sample,
    log_mean_exp_estimate,
    mean_estimate,
    posterior_errors,
    psis_diagnostic,
)
from flowguide.diagnostics.importance import max_plate_nesting
from flowguide.infer import StratifiedELBO
from flowguide.training import fit

__all__ = [
    "GUIDES",
    "GuideReport",
    "recipe_for",
    "train_guide",
    "evaluate_guide",
    "compare_guides",
    "markdown_table",
    "save_reports",
    "run_comparison",
]

#: Kinds of reference posterior the comparison can score against.
Reference = Literal["auto", "none", "nuts", "exact"]
#: How a comparison sets each guide's learning rate: constant Adam, or each guide's recipe.
Schedule = Literal["constant", "recipe"]

#: Guides the comparison knows, by name.
GUIDES: dict[str, Callable] = {
    "AutoNormal": AutoNormal,
    "AutoMultivariateNormal": AutoMultivariateNormal,
    "AutoPlanarFlow": AutoPlanarFlow,
    "AutoIAF": AutoIAF,
    "AutoNeuralSpline": AutoNeuralSpline,
    "AutoAffineCoupling": AutoAffineCoupling,
}


@dataclass
class GuideReport:
    """One row of the comparison; ``losses`` is the training trace (negative ELBO per step).
    ``modes`` says, for a flow guide whose mode search found several modes, how many and
    how many of them the trained guide misses (:meth:`~flowguide.AutoFlow.mode_coverage`)."""

    guide: str
    elbo: float
    elbo_se: float
    iwae: float
    iwae_se: float
    khat: float
    ess: float
    seconds_per_step: float
    num_params: int
    kl: float | None = None
    mean_error: float | None = None
    std_error: float | None = None
    modes: str | None = None
    losses: list[float] = field(default_factory=list, repr=False)


def train_guide(
    model: Callable,
    guide: Callable,
    args: tuple,
    steps: int,
    lr: float,
    num_particles: int,
    progress: bool = True,
    schedule: Schedule = "constant",
    device: str | torch.device = "cpu",
) -> tuple[list[float], float]:
    """Fit ``guide`` with :func:`flowguide.training.fit`: Adam at ``lr`` (with
    ``schedule="recipe"``, the guide's recipe of rate decay and gradient clamp, see
    :func:`recipe_for`) on :class:`~flowguide.infer.StratifiedELBO` (``Trace_ELBO`` for
    every guide but a mixture of flows) with ``num_particles`` vectorized particles;
    return the losses and seconds per step. The progress bar is shown on a terminal only,
    and never when ``progress`` is false."""
    elbo = StratifiedELBO(
        num_particles=num_particles,
        vectorize_particles=True,
        max_plate_nesting=max_plate_nesting(model, *args),
    )
    start = time.perf_counter()
    history = fit(
        model,
        guide,
        *args,
        steps=steps,
        loss=elbo,
        optimizer=lambda params: torch.optim.Adam(params, lr=lr),
        recipe=recipe_for(guide, schedule),
        device=device,
        progress=None if progress else False,
    )
    return history.losses, (time.perf_counter() - start) / max(steps, 1)


def evaluate_guide(
    name: str,
    model: Callable,
    guide: Callable,
    args: tuple,
    num_samples: int,
    log_z: float | None = None,
    reference: dict[str, Tensor] | None = None,
) -> tuple[GuideReport, dict[str, Tensor]]:
    """Score a trained guide from ``num_samples`` of its draws; return the report row and the draws."""
    draws = importance_sample(model, guide, *args, num_samples=num_samples)
    log_w = draws.log_weights.double()
    finite = mean_estimate(log_w[torch.isfinite(log_w)])
    psis = psis_diagnostic(log_w)
    iwae = log_mean_exp_estimate(log_w)
    report = GuideReport(
        guide=name,
        elbo=float(log_w.mean()),
        elbo_se=finite.stderr,
        iwae=iwae.value,
        iwae_se=iwae.stderr,
        khat=psis.khat,
        ess=psis.ess,
        seconds_per_step=math.nan,
        num_params=sum(p.numel() for p in guide.parameters()),
        kl=None if log_z is None else log_z - float(log_w.mean()),
    )
    if isinstance(guide, AutoFlow) and len(guide.modes) > 1:
        coverage = guide.mode_coverage()
        report.modes = f"{len(coverage)} ({sum(row.missing for row in coverage)} missed)"
    if reference is not None:
        errors = posterior_errors(reference, draws.samples).values()
        report.mean_error = max(e[0] for e in errors)
        report.std_error = max(e[1] for e in errors)
    return report, draws.samples


def recipe_for(guide: Callable, schedule: Schedule) -> Recipe | None:
    """The recipe a comparison trains ``guide`` with: none for ``"constant"``; for
    ``"recipe"`` the guide's own (:class:`~flowguide.autoguide.RecipeGuide`), or the
    default :class:`~flowguide.autoguide.Recipe` for a guide without one (Pyro's)."""
    if schedule not in get_args(Schedule):
        raise ValueError(f"schedule must be one of {get_args(Schedule)}, got {schedule!r}")
    if schedule == "constant":
        return None
    return guide.recipe if isinstance(guide, RecipeGuide) else Recipe()


def compare_guides(
    model: Callable,
    args: tuple,
    guides: Sequence[str] = tuple(GUIDES),
    *,
    steps: int = 1500,
    lr: float = 1e-2,
    num_particles: int = 8,
    seed: int = 0,
    num_samples: int = 4000,
    log_z: float | None = None,
    reference: dict[str, Tensor] | None = None,
    progress: bool = True,
    schedule: Schedule = "constant",
    device: str | torch.device = "cpu",
) -> tuple[list[GuideReport], dict[str, dict[str, Tensor]]]:
    """Train each guide in ``guides`` on ``model`` under identical settings and score it.

    Arguments:
        model: A Pyro model.
        args: Its arguments (data).
        guides: Names from :data:`GUIDES`.
        steps: SVI steps per guide.
        lr: Adam learning rate.
        num_particles: ELBO particles per step (vectorized).
        seed: Seed set before each guide is built, so each starts from the same state.
        num_samples: Guide draws for the ELBO, IWAE bound, k-hat and ESS.
        log_z: The model's log evidence, when known: adds KL(q‖p) to each row.
        reference: Posterior draws (e.g. NUTS) to measure mean and std errors against.
        progress: Show progress bars (only on a terminal).
        schedule: ``"constant"`` (Adam at ``lr``) or ``"recipe"`` (each guide's recipe of
            rate decay and gradient clamp, :func:`recipe_for`).
        device: Torch device to train on.

    Returns:
        The report rows and each guide's draws (site name to tensor).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("x", dist.Normal(1.0, 2.0))
        >>> rows, _ = compare_guides(model, (), ["AutoNormal"], steps=2, num_samples=50, log_z=0.0)
        >>> rows[0].guide, rows[0].kl >= -0.1
        ('AutoNormal', True)
    """
    unknown = sorted(set(guides) - set(GUIDES))
    if unknown:
        raise ValueError(f"unknown guides {unknown}; choose from {sorted(GUIDES)}")
    recipe_for(None, schedule)  # a bad schedule fails before any training
    reports, samples = [], {}
    for name in guides:
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        guide = GUIDES[name](model)
        losses, per_step = train_guide(
            model, guide, args, steps, lr, num_particles, progress, schedule, device
        )
        report, samples[name] = evaluate_guide(name, model, guide, args, num_samples, log_z, reference)
        report.seconds_per_step, report.losses = per_step, losses
        reports.append(report)
    return reports, samples


COLUMNS = (
    ("guide", "guide", "{}"),
    ("elbo", "ELBO", "{:.3f}"),
    ("elbo_se", "± se", "{:.3f}"),
    ("iwae", "IWAE", "{:.3f}"),
    ("kl", "KL(q‖p)", "{:.3f}"),
    ("khat", "k-hat", "{:.2f}"),
    ("modes", "modes", "{}"),
    ("ess", "ESS", "{:.0f}"),
    ("mean_error", "mean err (sd)", "{:.2f}"),
    ("std_error", "std err (sd)", "{:.2f}"),
    ("seconds_per_step", "s/step", "{:.4f}"),
    ("num_params", "params", "{:,}"),
)


def markdown_table(reports: Sequence[GuideReport]) -> str:
    """The comparison as a Markdown table (columns without values are left out)."""
    columns = [c for c in COLUMNS if any(getattr(r, c[0]) is not None for r in reports)]
    lines = ["| " + " | ".join(c[1] for c in columns) + " |", "|" + "---|" * len(columns)]
    for r in reports:
        cells = [
            fmt.format(getattr(r, key)) if getattr(r, key) is not None else "" for key, _, fmt in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_reports(reports: Sequence[GuideReport], path: Path, settings: dict) -> None:
    """Write the rows (with loss traces) and the settings to ``path`` as JSON."""
    path.write_text(json.dumps({"settings": settings, "guides": [asdict(r) for r in reports]}, indent=1))


def run_comparison(
    model_name: str,
    guides: Sequence[str] = tuple(GUIDES),
    *,
    steps: int = 1500,
    lr: float = 1e-2,
    num_particles: int = 8,
    seed: int = 0,
    num_samples: int = 4000,
    reference: Reference = "auto",
    reference_samples: int = 1000,
    out: Path = Path("outputs"),
    device: str = "cpu",
    progress: bool = True,
    schedule: Schedule = "constant",
) -> list[GuideReport]:
    """The main job: compare ``guides`` on a bundled model, print the table and save it as
    JSON and Markdown with the figures (ELBO traces, pair plots) in ``out``.

    Arguments:
        model_name: A key of :data:`~flowguide.apps.bundled.BUNDLED_MODELS`.
        guides: Names from :data:`GUIDES`.
        steps: SVI steps per guide.
        lr: Adam learning rate.
        num_particles: ELBO particles per step.
        seed: Seed for every guide (and the reference chain).
        num_samples: Guide draws for scoring.
        reference: Posterior draws to report errors against and to plot under the guides:
            ``"nuts"`` (Pyro's NUTS), ``"exact"`` (for a model that observes nothing, whose
            posterior is its prior: draws of the model itself), ``"auto"`` (``"exact"`` where
            that holds, else none) or ``"none"``.
        reference_samples: Reference draws (for NUTS, also its warm-up steps).
        out: Output folder (created).
        device: Torch device for the data, guides and training (``"cpu"``, ``"cuda"``).
        progress: Show progress bars (only on a terminal).
        schedule: ``"constant"`` (Adam at ``lr``) or ``"recipe"`` (each guide's recipe of
            rate decay and gradient clamp, :func:`recipe_for`).

    Returns:
        The report rows.
    """
    if reference not in get_args(Reference):
        raise ValueError(f"reference must be one of {get_args(Reference)}, got {reference!r}")
    require("matplotlib", "the comparison's figures")
    case = bundled_model(model_name)
    args = tuple(a.to(device) if torch.is_tensor(a) else a for a in case.args)
    train = {
        "steps": steps,
        "lr": lr,
        "num_particles": num_particles,
        "seed": seed,
        "num_samples": num_samples,
        "schedule": schedule,
    }
    if reference == "auto":
        reference = "none" if case.observed else "exact"
    with torch.device(device):
        ref = _reference(case, args, reference, reference_samples, seed, progress)
        reports, samples = compare_guides(
            case.model,
            args,
            guides,
            log_z=case.log_z,
            reference=ref,
            progress=progress,
            device=device,
            **train,
        )
    settings = {"model": model_name, "description": case.description, "log_z": case.log_z, **train}
    _write(case, reports, samples, ref, out, {**settings, "reference": reference, "device": device})
    return reports


def _reference(case, args: tuple, kind: str, num_samples: int, seed: int, progress: bool):
    """Reference posterior draws of a bundled model, or ``None``."""
    from pyro.infer import Predictive

    from flowguide.diagnostics.export import reference_posterior

    if kind == "none":
        return None
    if kind == "exact":
        if case.observed:
            raise ValueError(
                f"reference 'exact' needs a model that observes nothing (its posterior is its prior); "
                f"{case.name} observes {sorted(case.observed)}"
            )
        pyro.set_rng_seed(seed)
        with torch.no_grad():
            return Predictive(case.model, num_samples=num_samples, parallel=False)(*args)
    print(f"NUTS reference for {case.name}: {num_samples} draws ...", flush=True)
    bar = progress and sys.stderr.isatty()
    return reference_posterior(case.model, *args, num_samples=num_samples, seed=seed, progress=bar)


def _write(case, reports, samples, reference, out: Path, settings: dict) -> None:
    """Print the table; save it as JSON and Markdown, and the figures."""
    name = settings["model"]
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(reports)
    save_reports(reports, out / f"compare_{name}.json", settings)
    (out / f"compare_{name}.md").write_text(f"# {name}: {case.description}\n\n{table}\n")
    plot_elbo_traces(reports, out / f"elbo_{name}.png", case.log_z, title=case.description)
    if case.pairs:
        plot_pairs(samples, case.pairs, out / f"pairs_{name}.png", reference=reference)
    print(f"\n{name}: {case.description}\n{table}\n\nwrote {out}/compare_{name}.{{json,md}} and figures")
