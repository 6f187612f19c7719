"""Train flow VAEs on real images and compare posteriors and decoders.

    python examples/vae.py                                         # Gaussian posterior, Bernoulli decoder
    python examples/vae.py --posterior gaussian planar iaf nsf affine_coupling  # 300 epochs
    python examples/vae.py --posterior gaussian --decoder gaussian flow --epochs 100
    python examples/vae.py --posterior iaf --objective dreg --particles 8  # importance-weighted training
    python examples/vae.py --posterior gaussian nsf --refine-steps 1000   # also the family's own gap
    python examples/vae.py --data mnist --data-dir ~/data --device cuda
    torchrun --nproc_per_node=2 examples/vae.py --epochs 50         # data parallel (gloo on CPU)

Every (posterior, decoder) pair is trained with the same widths, epochs, optimizer and
seed, then scored on the test split: ELBO and the importance-weighted bound with K draws
(an estimate of the log-likelihood), in nats per image, and bits per dimension for the
continuous decoders. Bernoulli decoders are compared with a mixture of 100 Bernoullis
fitted by EM to the same binarized split. With ``--refine-steps N`` every test posterior is
also scored after N Adam steps on its own encoder features (semi-amortized inference,
``FlowVAE.refine_features``): that removes the encoder's amortization gap, so the gap
left is the posterior family's. Writes a JSON of the metrics (``--out``) and figures of
test reconstructions and prior samples (``--figures``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch.utils.data import TensorDataset

from flowguide.infer import DReG_ELBO, TraceSTL_ELBO
from flowguide.models.images import ALPHA, binarize, bits_per_dim, dequantize, load_images
from flowguide.models.mixture import fit_bernoulli_mixture
from flowguide.models.vae import DECODERS, FAMILIES, FlowVAE
from flowguide.training import Trainer, init_from_env, is_main, shard_loader, world_size


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--posterior", nargs="+", choices=list(FAMILIES), default=["gaussian"])
    p.add_argument("--num-flows", type=int, default=4)
    p.add_argument("--decoder", nargs="+", choices=list(DECODERS), default=["bernoulli"])
    p.add_argument("--prior", choices=["normal", "flow"], default="normal")
    p.add_argument(
        "--standardized",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the posterior flow acts on standard noise, the encoder's Gaussian affine map last "
        "(--no-standardized: the flow acts on the Gaussian's draw)",
    )
    p.add_argument("--data", choices=["digits", "mnist"], default="digits")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (for --data mnist)")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=100, help="global batch, split over processes")
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--hidden-dim", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--objective",
        choices=list(OBJECTIVES),
        default="elbo",
        help="training loss: the ELBO, the ELBO with sticking-the-landing gradients, or the "
        "IWAE bound over --particles draws with doubly reparameterized (DReG) gradients",
    )
    p.add_argument("--particles", type=int, default=1, help="draws per data point in the training loss")
    p.add_argument("--iwae-samples", type=int, default=1000, help="K of the test IWAE bound")
    p.add_argument(
        "--refine-steps",
        type=int,
        default=0,
        help="also score each test posterior after this many Adam steps on its own encoder "
        "features (semi-amortized): the gap left is the posterior family's",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-dir", default=None, help="write one checkpoint per configuration here")
    p.add_argument("--out", default=None, help="write the metrics as JSON here")
    p.add_argument("--figures", default="outputs", help="folder for the PNG figures")
    p.add_argument("--smoke", action="store_true", help="one epoch on a slice, K = 10: checks the pipeline")
    return p.parse_args(argv)


def _particles(k: int) -> dict:
    return {"num_particles": k, "vectorize_particles": True, "max_plate_nesting": 1} if k > 1 else {}


OBJECTIVES = {
    "elbo": lambda k: Trace_ELBO(**_particles(k)),
    "stl": lambda k: TraceSTL_ELBO(**_particles(k)),
    "dreg": lambda k: DReG_ELBO(num_particles=k, max_plate_nesting=1),
}


def views(images, decoder: str, seed: int):
    """Train and test tensors the decoder sees, the test log|dy/dv|, and a batch transform."""
    if decoder == "bernoulli":
        return binarize(images.train, images.levels), binarize(images.test, images.levels), None, None
    test, test_log_det = dequantize(images.test, images.levels, torch.Generator().manual_seed(seed + 1))
    fresh = lambda batch: (dequantize(batch[0], images.levels)[0], batch[1])  # noqa: E731  new noise per batch
    return images.train, test, test_log_det, fresh


def train_one(args, images, posterior: str, decoder: str) -> tuple[FlowVAE, dict]:
    train, test, test_log_det, transform = views(images, decoder, args.seed)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    vae = FlowVAE(
        images.dim,
        args.latent_dim,
        args.hidden_dim,
        posterior,
        args.num_flows,
        decoder,
        prior=args.prior,
        standardized=args.standardized,
    )
    data = TensorDataset(train, torch.arange(len(train)))  # batches are (x, index): the model's arguments
    loader = shard_loader(
        data, args.batch_size // world_size(), seed=args.seed, collate_fn=_collate(transform)
    )
    checkpoint = Path(args.checkpoint_dir) / f"vae_{posterior}_{decoder}.pt" if args.checkpoint_dir else None
    trainer = Trainer(
        vae.model,
        vae.guide,
        optimizer=lambda p: torch.optim.Adam(p, lr=args.lr),
        loss=OBJECTIVES[args.objective](args.particles),
        device=args.device,
        checkpoint=checkpoint,
        checkpoint_every=len(loader) * 10 if checkpoint else 0,
    )
    start = time.perf_counter()
    history = trainer.fit_loader(loader, epochs=args.epochs, num_data=len(train))
    seconds = (time.perf_counter() - start) / max(args.epochs, 1)
    scores = vae.evaluate(test.to(trainer.device), num_samples=args.iwae_samples)
    row = {
        "posterior": posterior,
        "decoder": decoder,
        "objective": f"{args.objective} (K = {args.particles})",
        "test_elbo": scores["elbo"],
        "test_iwae": scores["iwae"],
        "gap": scores["iwae"] - scores["elbo"],
        "seconds_per_epoch": seconds,
        "steps": history.step,
        "skipped_steps": len(history.skipped),
    }
    if args.refine_steps:
        refined = vae.evaluate(test.to(trainer.device), args.iwae_samples, refine_steps=args.refine_steps)
        row.update(refined_elbo=refined["elbo"], refined_iwae=refined["iwae"])
        row["refined_gap"] = refined["iwae"] - refined["elbo"]
    if test_log_det is not None:
        row["bits_per_dim"] = float(
            bits_per_dim(torch.tensor(scores["iwae"]), test_log_det.mean(), images.dim, images.levels)
        )
    return vae, row


def _collate(transform):
    def collate(items):
        batch = tuple(torch.stack(column) for column in zip(*items, strict=True))
        return transform(batch) if transform else batch

    return collate


def em_reference(images) -> dict:
    """Test NLL of a mixture of 100 Bernoullis by EM, the best of four smoothing levels."""
    train, test = binarize(images.train, images.levels), binarize(images.test, images.levels).double()
    nll = {
        pc: -float(fit_bernoulli_mixture(train, 100, 200, pc).log_prob(test).mean())
        for pc in (0.1, 0.5, 1.0, 2.0)
    }
    best = min(nll, key=nll.get)
    return {"em_mixture_100_test_nll": nll[best], "em_pseudo_count": best, "em_all": nll}


def figures(vae: FlowVAE, images, decoder: str, folder: Path, tag: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = views(images, decoder, 0)[1][:10]
    with torch.no_grad():
        recon = _mean_image(vae, vae.q(test).sample(), decoder)
        samples = _mean_image(vae, vae.prior().sample((10,)), decoder)
    original = test if decoder == "bernoulli" else images.test[:10] / (images.levels - 1)
    fig, axes = plt.subplots(3, 10, figsize=(10, 3.3))
    for row, (title, imgs) in enumerate(
        [("test", original), ("reconstruction", recon), ("prior sample", samples)]
    ):
        for col in range(10):
            axes[row][col].imshow(imgs[col].reshape(images.side, images.side).cpu(), cmap="gray_r")
            axes[row][col].axis("off")
        axes[row][0].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(folder / f"vae_{tag}.png", dpi=100)
    plt.close(fig)


def _mean_image(vae, z, decoder):
    p = vae.likelihood(z)
    if decoder == "bernoulli":
        return p.base_dist.probs
    y = p.sample()
    return ((torch.sigmoid(y) - ALPHA) / (1 - 2 * ALPHA)).clamp(0, 1)  # undo dequantize's logit


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    init_from_env()
    images = load_images(args.data, args.data_dir)
    if args.smoke:
        images.train, images.test = images.train[:200], images.test[:50]
        args.epochs, args.iwae_samples, args.hidden_dim = 1, 10, 32
        args.refine_steps = min(args.refine_steps, 3)
    rows, folder = [], Path(args.figures)
    folder.mkdir(parents=True, exist_ok=True)
    for decoder in args.decoder:
        for posterior in args.posterior:
            vae, row = train_one(args, images, posterior, decoder)
            rows.append(row)
            if is_main():
                figures(vae, images, decoder, folder, f"{images.name}_{posterior}_{decoder}")
                print(_line(row), flush=True)
    result = {"settings": vars(args), "rows": rows}
    if "bernoulli" in args.decoder:
        result.update(em_reference(images))
    if is_main():
        report(result)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))
    return result


def _line(row: dict) -> str:
    bpd = f"{row['bits_per_dim']:.3f}" if "bits_per_dim" in row else "-"
    refined = [f"{row.get(k, math.nan):.2f}" for k in ("refined_elbo", "refined_iwae", "refined_gap")]
    return (
        f"| {row['posterior']} | {row['decoder']} | {row['test_elbo']:.2f} | {row['test_iwae']:.2f} | "
        f"{row['gap']:.2f} | {-row['test_iwae']:.2f} | {bpd} | {row['seconds_per_epoch']:.2f} | "
        + " | ".join(refined)
        + " |"
    )


def report(result: dict) -> None:
    print(
        "\n| posterior | decoder | test ELBO | test IWAE | gap | NLL (nats) | bits/dim | s/epoch "
        "| refined ELBO | refined IWAE | refined gap |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in result["rows"]:
        print(_line(row))
    if "em_mixture_100_test_nll" in result:
        print(
            f"\nmixture of 100 Bernoullis (EM), test NLL: {result['em_mixture_100_test_nll']:.2f} nats "
            f"(pseudo-count {result['em_pseudo_count']})"
        )


if __name__ == "__main__":
    main()
