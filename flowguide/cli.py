"""Command line: ``flowguide demo`` (also ``python -m flowguide demo``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from flowguide.demo import FLOWS, run_demo
from flowguide.models.targets import TARGETS

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``)."""
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = 5 if args.smoke else args.steps
    if steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {steps}")
    run_demo(args.target, tuple(args.flows), steps=steps, seed=args.seed, out=args.out, device=args.device)
    return 0
