"""Command line: ``flowguide compare`` (the main job) and ``flowguide demo``.

Also reachable as ``python -m flowguide``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import get_args

import torch

import flowguide
from flowguide._extras import require_extra
from flowguide.apps.bundled import BUNDLED_MODELS
from flowguide.apps.compare import GUIDES, Reference, Schedule, run_comparison
from flowguide.apps.demo import FLOWS, run_demo
from flowguide.apps.targets import TARGETS

__all__ = ["main"]

#: Where ``--smoke`` writes when no ``--out`` is given: never over a real run's outputs.
SMOKE_OUT = Path("outputs") / "smoke"


def _number(kind: type, zero: bool = False) -> Callable[[str], int | float]:
    """An argparse type: a finite ``int`` or ``float`` above zero (at least zero with ``zero``)."""
    what = f"{'non-negative' if zero else 'positive'} {kind.__name__}"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}") from None
        if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
            raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}")
        return value

    parse.__name__ = what
    return parse


def _device(text: str) -> str:
    """An argparse type: a torch device that this machine has."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (try cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r} was asked for but CUDA is not available here")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"device {text!r} is not supported (cpu or cuda)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"{text!r}: this machine has {torch.cuda.device_count()} CUDA devices"
        )
    return text


def _common(command: argparse.ArgumentParser, out_help: str) -> None:
    """The options both commands take."""
    seed = _number(int, zero=True)
    command.add_argument("--seed", type=seed, default=0, help="seed set before each guide or flow")
    command.add_argument("--device", type=_device, default="cpu", help="torch device, e.g. cpu or cuda")
    command.add_argument("--threads", type=_number(int), default=None, help="torch CPU threads")
    command.add_argument(
        "--out", type=Path, default=None, help=f"{out_help} (default: outputs, or {SMOKE_OUT} with --smoke)"
    )


def _command(commands, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows each option's default."""
    return commands.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowguide", description=__doc__)
    parser.add_argument("--version", action="version", version=f"flowguide {flowguide.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = _command(commands, "demo", "fit each flow family to a 2-D target and print the ELBO")
    demo.add_argument("--target", choices=sorted(TARGETS), default="banana", help="the 2-D target")
    demo.add_argument("--flows", nargs="+", choices=sorted(FLOWS), default=list(FLOWS), help="flows to fit")
    demo.add_argument("--steps", type=_number(int), default=1000, help="Adam steps per flow")
    _common(demo, "folder for the figure")
    demo.add_argument("--smoke", action="store_true", help="a few steps only, to check the pipeline")
    _add_compare(commands)
    return parser


def _add_compare(commands) -> None:
    compare = _command(commands, "compare", "train several guides on a bundled model and compare them")
    compare.add_argument("--model", choices=sorted(BUNDLED_MODELS), default="funnel", help="bundled model")
    compare.add_argument("--guides", nargs="+", choices=list(GUIDES), default=list(GUIDES), help="guides")
    compare.add_argument("--steps", type=_number(int), default=1500, help="training steps per guide")
    compare.add_argument("--lr", type=_number(float), default=1e-2, help="Adam's learning rate")
    compare.add_argument("--num-particles", type=_number(int), default=8, help="ELBO particles per step")
    compare.add_argument(
        "--schedule",
        choices=list(get_args(Schedule)),
        default="constant",
        help="learning rate: constant Adam for every guide, or each guide's recipe of rate decay "
        "and gradient clamp (a flow guide's own, the default recipe for Pyro's guides)",
    )
    compare.add_argument(
        "--num-samples", type=_number(int), default=4000, help="guide draws for the ELBO, IWAE, k-hat"
    )
    compare.add_argument(
        "--reference",
        choices=list(get_args(Reference)),
        default="auto",
        help="posterior draws to score against: NUTS, exact (models that observe nothing), auto, none",
    )
    compare.add_argument(
        "--reference-samples", type=_number(int), default=1000, help="NUTS draws (and warm-up steps)"
    )
    _common(compare, "folder for the table and figures")
    compare.add_argument("--no-progress", action="store_true", help="no progress bars")
    compare.add_argument("--smoke", action="store_true", help="a few steps and draws, to check the pipeline")


def _out(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return args.out
    return SMOKE_OUT if args.smoke else Path("outputs")


def _run_compare(args: argparse.Namespace) -> None:
    steps, samples, ref_samples = (
        (5, 200, 30) if args.smoke else (args.steps, args.num_samples, args.reference_samples)
    )
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
        out=_out(args),
        device=args.device,
        progress=not args.no_progress,
        schedule=args.schedule,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``). Bad options exit with
    argparse's status 2 and a message naming the option."""
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
    run_demo(args.target, tuple(args.flows), steps=steps, seed=args.seed, out=_out(args), device=args.device)
    return 0
