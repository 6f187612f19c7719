r"""The demo job: fit each flow family to a 2-D target by reverse KL and report the ELBO.

For a target :math:`\tilde p` with normalizer :math:`Z`,
:math:`\mathrm{ELBO} = E_q[\log \tilde p(z) - \log q(z)] = \log Z - \mathrm{KL}(q \| p)`,
so with :math:`\log Z` known (closed form, checked on a grid) the ELBO gives the KL.
Each fit is an ordinary Pyro program (:class:`FlowOnTarget`), trained by
:func:`flowguide.training.fit` and scored by :func:`flowguide.diagnostics.elbo`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from torch import Tensor

from flowguide.apps.targets import TARGETS, Target, grid_log_normalizer
from flowguide.diagnostics import elbo
from flowguide.flows import Flow, affine_coupling_flow, iaf, neural_spline_flow, planar_flow
from flowguide.training import fit

__all__ = ["FLOWS", "FitResult", "FlowOnTarget", "fit_to_target", "estimate_elbo", "run_demo"]

#: The 2-D flows of the demo, by name: zero-argument constructors.
FLOWS: dict[str, Callable[[], Flow]] = {
    "planar": lambda: planar_flow(2, num_flows=16),
    "iaf": lambda: iaf(2, num_flows=4, hidden_dims=(64, 64)),
    "neural_spline": lambda: neural_spline_flow(2, num_flows=4, hidden_dims=(64, 64)),
    "affine_coupling": lambda: affine_coupling_flow(2, num_flows=6, hidden_dims=(64, 64)),
}


@dataclass
class FitResult:
    """Outcome of one fit: ELBO estimate with standard error, KL and timing."""

    name: str
    elbo: float
    elbo_se: float
    kl: float
    seconds: float
    num_params: int


class FlowOnTarget:
    r"""A bare flow fitted to an unnormalized density as a Pyro model and guide.

    The model's prior on :math:`z` is masked out (it adds nothing to the log joint) and
    :math:`\log \tilde p(z)` is a factor, so the log joint is the target; the guide
    samples :math:`z` from the flow.

    Arguments:
        flow: An unconditional flow.
        log_p: The target's unnormalized log-density, ``(..., D) -> (...)``.

    Run the program inside :meth:`scope`: the guide registers the flow in Pyro's
    parameter store, which would otherwise hand it the values another flow stored there.
    """

    def __init__(self, flow: Flow, log_p: Callable[[Tensor], Tensor]) -> None:
        self.flow, self.log_p = flow, log_p

    def model(self) -> None:
        """The target: a masked prior on ``z`` and the factor :math:`\\log \tilde p(z)`."""
        flat = dist.Normal(self.flow.base_loc, self.flow.base_scale).to_event(1).mask(False)
        z = pyro.sample("z", flat)
        pyro.factor("target", self.log_p(z))

    def scope(self) -> contextlib.AbstractContextManager:
        """A parameter store of its own for the program (Pyro's ``ParamStoreDict.scope``)."""
        return pyro.get_param_store().scope()

    def guide(self) -> None:
        """The flow."""
        pyro.module("flow", self.flow)
        pyro.sample("z", self.flow())


def estimate_elbo(flow: Flow, log_p: Callable[[Tensor], Tensor], num_samples: int) -> tuple[float, float]:
    """Monte Carlo ELBO of ``flow`` for ``log_p`` and its standard error.

    Example:
        >>> from flowguide.flows import planar_flow
        >>> elbo, se = estimate_elbo(planar_flow(2, 2), TARGETS["ring"], num_samples=100)
        >>> se > 0
        True
    """
    program = FlowOnTarget(flow, log_p)
    with program.scope():
        estimate = elbo(program.model, program.guide, num_samples=num_samples)
    return estimate.value, estimate.stderr


def fit_to_target(
    flow: Flow,
    log_p: Callable[[Tensor], Tensor],
    steps: int = 1000,
    num_samples: int = 256,
    lr: float = 1e-2,
) -> list[float]:
    """Maximize the ELBO of ``flow`` against ``log_p`` with Adam at a cosine-annealed rate and
    ``num_samples`` vectorized particles; return the loss trace.

    Example:
        >>> from flowguide.flows import iaf
        >>> trace = fit_to_target(iaf(2, 2, (16,)), TARGETS["banana"], steps=3, num_samples=8)
        >>> len(trace)
        3
    """
    program = FlowOnTarget(flow, log_p)
    with program.scope():
        history = fit(
            program.model,
            program.guide,
            steps=steps,
            loss=Trace_ELBO(num_particles=num_samples, vectorize_particles=True, max_plate_nesting=0),
            optimizer=lambda params: torch.optim.Adam(params, lr=lr),
            scheduler=lambda optimizer: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps),
            device=flow.base_loc.device,
            progress=False,
        )
    return history.losses


def run_demo(
    target: str = "banana",
    flows: tuple[str, ...] = tuple(FLOWS),
    steps: int = 1000,
    seed: int = 0,
    out: Path | None = None,
    device: str | torch.device = "cpu",
) -> list[FitResult]:
    """Fit every flow in ``flows`` to ``TARGETS[target]``, print a table, optionally plot.

    Arguments:
        target: Name of a target in :data:`~flowguide.apps.targets.TARGETS`.
        flows: Names of flows in :data:`FLOWS`.
        steps: Adam steps per flow (256 samples each, cosine-decayed learning rate).
        seed: Seed set before building each flow.
        out: Folder for the figure ``demo_<target>.png``; ``None`` for no figure.
        device: Device to train on.

    Returns:
        One :class:`FitResult` per flow, in order.

    Example:
        >>> results = run_demo("banana", flows=("planar",), steps=5)  # doctest: +ELLIPSIS
        target banana: log Z = 1.1447 ...
        >>> results[0].name
        'planar'
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}, got {target!r}")
    unknown = sorted(set(flows) - set(FLOWS))
    if unknown:
        raise ValueError(f"unknown flows {unknown}; choose from {sorted(FLOWS)}")
    log_p: Target = TARGETS[target]
    log_z = grid_log_normalizer(log_p)
    print(f"target {target}: log Z = {log_p.log_z:.4f} (closed form), {log_z:.4f} (grid)")
    print(f"{'flow':<16}{'ELBO':>10}{'± se':>8}{'KL(q||p)':>10}{'params':>9}{'seconds':>9}")
    results, fitted = [], {}
    for name in flows:
        torch.manual_seed(seed)
        flow = FLOWS[name]().to(device)
        start = time.perf_counter()
        fit_to_target(flow, log_p, steps=steps)
        elapsed = time.perf_counter() - start
        elbo, se = estimate_elbo(flow, log_p, num_samples=20_000)
        n = sum(p.numel() for p in flow.parameters())
        results.append(FitResult(name, elbo, se, log_p.log_z - elbo, elapsed, n))
        r = results[-1]
        print(f"{name:<16}{r.elbo:>10.4f}{r.elbo_se:>8.4f}{r.kl:>10.4f}{n:>9d}{elapsed:>9.1f}")
        fitted[name] = flow
    if out is not None:
        _plot(log_p, fitted, Path(out) / f"demo_{target}.png")
    return results


def _plot(log_p: Target, flows: dict[str, Flow], path: Path) -> None:
    from flowguide.apps.plots import _pyplot

    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    (x0, x1), (y0, y1) = log_p.box
    y1 = min(y1, y0 + (x1 - x0))
    xs, ys = torch.linspace(x0, x1, 200), torch.linspace(y0, y1, 200)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)
    fig, axes = plt.subplots(1, len(flows) + 1, figsize=(3.2 * (len(flows) + 1), 3.2), squeeze=False)
    axes[0, 0].contourf(xs, ys, log_p(grid).exp(), levels=20)
    axes[0, 0].set_title("target")
    for ax, (name, flow) in zip(axes[0, 1:], flows.items(), strict=True):
        with torch.no_grad():
            z = flow().sample((5000,)).cpu()
        ax.hist2d(z[:, 0].numpy(), z[:, 1].numpy(), bins=100, range=[[x0, x1], [y0, y1]])
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"saved {path}")
