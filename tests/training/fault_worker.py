"""Training processes for the fault tests: run as ``python fault_worker.py MODE ...``.

- ``train CKPT STEPS API``: train (``API``: ``fit`` or ``loader``) with a checkpoint,
  printing ``step N`` after each step, until done or interrupted by a signal;
- ``result CKPT STEPS API``: resume from ``CKPT`` (or start, if it is absent), finish, and
  print the loss trace and a digest of the parameters as JSON;
- ``killloop DIR KILLS SEED``: a supervisor that forks a training child writing a
  checkpoint after every step, kills it with SIGKILL at a random moment ``KILLS`` times
  (resuming from the last checkpoint each time), checks after each kill that the last
  checkpoint loads, finishes the run and compares it with an uninterrupted one; prints the
  counts as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)  # before any parallel work: the supervisor forks

import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from flowguide import AutoIAF  # noqa: E402
from flowguide.training import Trainer, TrainingInterrupted, load_checkpoint, shard_loader  # noqa: E402

X = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
Y = X @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(40, generator=torch.Generator().manual_seed(2))
DATA = TensorDataset(torch.arange(40), X, Y)


def regression(index, x, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with pyro.plate("data", 40, subsample=index):
        pyro.sample("y", dist.Normal((x @ w.unsqueeze(-1)).squeeze(-1), 0.3), obs=y)


def trainer(checkpoint: Path | None, seed: int, every: int = 0, callbacks=()) -> Trainer:
    """A fresh trainer; the seed sets up the guide differently, so a resume must take all
    from the checkpoint."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    # no mode search: the kills are timed against the steps and the writes, not the set-up
    guide = AutoIAF(regression, num_flows=2, hidden_dims=(16,), mode_search=None)
    return Trainer(
        regression,
        guide,
        device="cpu",
        progress=False,
        checkpoint=checkpoint,
        checkpoint_every=every,
        callbacks=list(callbacks),
    )


def run(t: Trainer, steps: int, api: str, checkpoint: Path | None):
    everything = (torch.arange(40), X, Y)
    loader = shard_loader(DATA, 8, seed=3)
    if checkpoint is not None and checkpoint.exists():
        t.resume(checkpoint, *(next(iter(loader)) if api == "loader" else everything))
    if api == "loader":
        return t.fit_loader(loader, epochs=steps // 5)
    return t.fit(*everything, steps=steps)


def digest(t: Trainer) -> str:
    flat = torch.cat([p.detach().reshape(-1) for _, p in sorted(t.params.items())])
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()


def announce(step, loss, history):
    print(f"step {step}", flush=True)


def train(checkpoint: Path, steps: int, api: str) -> None:
    t = trainer(checkpoint, seed=0, callbacks=[announce])
    try:
        run(t, steps, api, checkpoint)
    except TrainingInterrupted as interrupted:
        print(f"interrupted {interrupted.history.step}", flush=True)
        sys.exit(3)


def result(checkpoint: Path | None, steps: int, api: str) -> None:
    t = trainer(checkpoint, seed=0 if checkpoint is None else 7)  # a resume must not depend on it
    history = run(t, steps, api, checkpoint)
    print(json.dumps({"losses": history.losses, "params": digest(t)}))


def killloop(folder: Path, kills: int, seed: int, steps: int = 800) -> None:
    rng = random.Random(seed)
    path = folder / "ckpt.pt"
    reference = trainer(None, seed=0)
    run(reference, steps, "fit", None)
    counts = {"injected": 0, "loaded": 0, "lost": 0, "temp_files_left": 0, "steps_at_kills": []}
    for _ in range(kills):
        pid = os.fork()
        if pid == 0:  # the child: resume from the last checkpoint and train, saving every step
            try:
                fresh_start = not path.exists()  # as the reference; later ones from the checkpoint
                run(trainer(path, seed=0 if fresh_start else 99, every=1), steps, "fit", path)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.03, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        counts["injected"] += 1
        if path.exists():
            try:
                counts["steps_at_kills"].append(load_checkpoint(path)["history"].step)
                counts["loaded"] += 1
            except Exception:
                counts["lost"] += 1
        counts["temp_files_left"] = len(list(folder.glob(".ckpt.pt.*.tmp")))
    finished = trainer(path, seed=99)
    run(finished, steps, "fit", path)
    counts["exact"] = finished.history.losses == reference.history.losses and digest(finished) == digest(
        reference
    )
    print(json.dumps(counts))


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "train":
        train(Path(rest[0]), int(rest[1]), rest[2])
    elif mode == "result":
        result(None if rest[0] == "-" else Path(rest[0]), int(rest[1]), rest[2])
    elif mode == "killloop":
        killloop(Path(rest[0]), int(rest[1]), int(rest[2]))
