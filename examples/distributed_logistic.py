"""Data-parallel training of a flow guide with torch.distributed, one or many processes.

    python examples/distributed_logistic.py --epochs 20                          # one process
    torchrun --nproc_per_node=2 examples/distributed_logistic.py --epochs 20     # two (gloo on CPU)

Bayesian logistic regression on scikit-learn's breast-cancer data (569 patients, 30
standardized features) with a subsampled data plate. ``--batch-size`` is the global
batch: each of N processes gets a 1/N shard of it, computes its loss and gradients, and
the trainer averages the gradients over processes before every update, so N processes
follow the same trajectory as one process with the same global batch (up to float
rounding). Rank 0 prints the history and writes the parameters to ``--out``.
"""

from __future__ import annotations

import argparse

import pyro
import pyro.distributions as dist
import torch
from torch.utils.data import TensorDataset

from flowguide import AutoIAF
from flowguide.apps.bundled import bundled_model
from flowguide.training import Trainer, init_from_env, is_main, shard_loader, world_size


def model(index: torch.Tensor, x: torch.Tensor, y: torch.Tensor, num_data: int) -> None:
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[-1]), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    with pyro.plate("data", num_data, subsample=index):
        # w @ x per row, written to broadcast over a leading particle dimension of w, so the
        # trainer's recipe (8 vectorized particles) runs in one pass
        logits = (x @ w.unsqueeze(-1)).squeeze(-1) + b
        pyro.sample("y", dist.Bernoulli(logits=logits), obs=y)


def main(argv: list[str] | None = None) -> dict[str, torch.Tensor]:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch, split over processes")
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--num-data", type=int, default=569, help="use the first rows only")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the trained parameters here (rank 0)")
    parser.add_argument("--smoke", action="store_true", help="one epoch, to check the script runs")
    args = parser.parse_args(argv)

    init_from_env()  # joins the process group under torchrun; a no-op otherwise
    if args.batch_size % world_size():
        raise SystemExit(f"--batch-size {args.batch_size} is not divisible by {world_size()} processes")
    case = bundled_model("logistic")
    x, y = case.args
    x, y = x[: args.num_data, : args.features], y[: args.num_data]
    data = TensorDataset(torch.arange(len(y)), x, y)
    loader = shard_loader(data, args.batch_size // world_size(), seed=args.seed)

    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)  # the same seed everywhere: every process draws the same global latents
    guide = AutoIAF(model, num_flows=2, hidden_dims=(32,))
    make = torch.optim.Adam if args.optimizer == "adam" else torch.optim.SGD
    optimizer = lambda params: make(params, lr=args.lr)  # noqa: E731
    trainer = Trainer(model, guide, optimizer=optimizer, device=args.device, progress=False)
    history = trainer.fit_loader(loader, epochs=1 if args.smoke else args.epochs, num_data=len(y))
    params = {name: p.detach().cpu().clone() for name, p in trainer.params.items()}
    if is_main():
        tail = history.losses[-len(loader) :]
        mean = sum(tail) / len(tail)
        print(f"{world_size()} process(es), {history.step} steps, mean loss of the last epoch {mean:.3f}")
        if args.out:
            torch.save(params, args.out)
    return params


if __name__ == "__main__":
    main()
