"""Figures of a comparison: ELBO traces, and pair plots of guide draws over a reference."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from flowguide._extras import require

__all__ = ["plot_elbo_traces", "plot_pairs"]

Slice = tuple[str, int]


def _pyplot():
    require("matplotlib", "plotting").use("Agg")
    return require("matplotlib.pyplot", "plotting")


def _smooth(values: Sequence[float], window: int) -> Tensor:
    x = torch.tensor(values, dtype=torch.float64)
    kernel = torch.ones(1, 1, window, dtype=torch.float64) / window
    return torch.nn.functional.conv1d(x.view(1, 1, -1), kernel).view(-1)


def plot_elbo_traces(reports, path: Path, log_z: float | None = None, title: str = "") -> None:
    """ELBO per step (moving average over 2% of the run) of every guide in ``reports``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lows = []
    for r in reports:
        window = max(1, len(r.losses) // 50)
        curve = -_smooth(r.losses, window)
        ax.plot(torch.arange(window, len(r.losses) + 1), curve, label=r.guide, lw=1.2)
        lows.append(
            float(torch.quantile(curve[len(curve) // 5 :], 0.05)) if len(curve) > 5 else float(curve.min())
        )
    if log_z is not None:
        ax.axhline(log_z, color="k", ls="--", lw=1, label="log p(x)")
    top = log_z if log_z is not None else max(float(-_smooth(r.losses, 1).max()) for r in reports)
    if lows:
        ax.set_ylim(min(lows) - 0.1 * abs(top - min(lows)) - 0.1, top + 0.1 * abs(top - min(lows)) + 0.1)
    ax.set(xlabel="SVI step", ylabel="ELBO (moving average)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _column(draws: dict[str, Tensor], entry: Slice) -> Tensor:
    site, index = entry
    return draws[site].reshape(draws[site].shape[0], -1)[:, index].detach().cpu().double()


def plot_pairs(
    samples: dict[str, dict[str, Tensor]],
    pairs: Sequence[tuple[Slice, Slice]],
    path: Path,
    reference: dict[str, Tensor] | None = None,
    max_points: int = 1500,
) -> None:
    """One row per 2-D slice in ``pairs``, one column per guide: the guide's draws (colour)
    over the reference draws (grey) when given."""
    plt = _pyplot()
    names = list(samples)
    fig, axes = plt.subplots(
        len(pairs), len(names), figsize=(2.6 * len(names), 2.6 * len(pairs)), squeeze=False
    )
    for row, (a, b) in enumerate(pairs):
        for col, name in enumerate(names):
            ax = axes[row][col]
            if reference is not None:
                ax.scatter(
                    _column(reference, a)[:max_points], _column(reference, b)[:max_points], s=2, c="0.7"
                )
            ax.scatter(
                _column(samples[name], a)[:max_points], _column(samples[name], b)[:max_points], s=2, alpha=0.5
            )
            ax.set_xlabel(f"{a[0]}[{a[1]}]", fontsize=8)
            ax.set_ylabel(f"{b[0]}[{b[1]}]", fontsize=8)
            if row == 0:
                ax.set_title(name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
