"""Command line: ``flowguide compare`` (the main job) and ``flowguide demo``.

Also reachable as ``python -m flowguide``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import torch

from flowguide._extras import require_extra
from flowguide.apps.bundled import BUNDLED_MODELS
from flowguide.apps.compare import GUIDES, Reference, Schedule, run_comparison
from flowguide.apps.demo import FLOWS, run_demo
from flowguide.apps.targets import TARGETS

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowguide", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="fit each flow family to a 2-D target and print the ELBO")
    demo.add_argument("--target", choices=sorted(TARGETS), default="banana")
    demo.add_argument("--flows", nargs="+", choices=sorted(FLOWS), default=list(FLOWS))
    demo.add_argument("--steps", type=int, default=1000)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    demo.add_argument("--out", type=Path, default=Path("outputs"), help="folder for the figure")
    demo.add_argument("--smoke", action="store_true", help="a few steps only, to check the pipeline")
    _add_compare(commands)
    return parser


def _add_compare(commands) -> None:
    compare = commands.add_parser("compare", help="train several guides on a bundled model and compare them")
    compare.add_argument("--model", choices=sorted(BUNDLED_MODELS), default="funnel")
    compare.add_argument("--guides", nargs="+", choices=list(GUIDES), default=list(GUIDES))
    compare.add_argument("--steps", type=int, default=1500)
    compare.add_argument("--lr", type=float, default=1e-2)
    compare.add_argument("--num-particles", type=int, default=8)
    compare.add_argument(
        "--schedule",
        choices=list(get_args(Schedule)),
        default="constant",
        help="learning rate: constant Adam for every guide, or each guide's recipe of rate decay "
        "and gradient clamp (a flow guide's own, the default recipe for Pyro's guides)",
    )
    compare.add_argument(
        "--num-samples", type=int, default=4000, help="guide draws for the ELBO, IWAE, k-hat"
    )
    compare.add_argument(
        "--reference",
        choices=list(get_args(Reference)),
        default="auto",
        help="posterior draws to score against: NUTS, exact (models that observe nothing), auto, none",
    )
    compare.add_argument("--reference-samples", type=int, default=1000, help="NUTS draws (and warm-up steps)")
    compare.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    compare.add_argument("--out", type=Path, default=Path("outputs"), help="folder for the table and figures")
    compare.add_argument("--no-progress", action="store_true", help="no progress bars")
    compare.add_argument("--smoke", action="store_true", help="a few steps and draws, to check the pipeline")


def _run_compare(args: argparse.Namespace) -> None:
    steps, samples, ref_samples = (
        (5, 200, 30) if args.smoke else (args.steps, args.num_samples, args.reference_samples)
    )
    if min(steps, samples, ref_samples, args.num_particles) < 1:
        raise SystemExit("--steps, --num-samples, --reference-samples and --num-particles must be >= 1")
    run_comparison(
        args.model,
        args.guides,
        steps=steps,
        lr=args.lr,
        num_particles=args.num_particles,
        seed=args.seed,
        num_samples=samples,
        reference=args.reference,
        reference_samples=ref_samples,
        out=args.out,
        device=args.device,
        progress=not args.no_progress,
        schedule=args.schedule,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``)."""
    args = _parser().parse_args(argv)
    try:
        require_extra("apps" if args.command == "compare" else "plots", f"flowguide {args.command}")
    except ImportError as error:
        raise SystemExit(f"flowguide: error: {error}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command == "compare":
        _run_compare(args)
        return 0
    steps = 5 if args.smoke else args.steps
    if steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {steps}")
    run_demo(args.target, tuple(args.flows), steps=steps, seed=args.seed, out=args.out, device=args.device)
    return 0
