"""Faults with real processes, signals, file systems and files: nothing lost, nothing silent.

The counts of injected faults, survived and lost are printed (``pytest -s``) and asserted.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flowguide.training import CheckpointError, fit, load_checkpoint, save_checkpoint

HERE = Path(__file__).parent
WORKER = HERE / "fault_worker.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}


def worker(*args: str | Path, **options) -> subprocess.CompletedProcess:
    command = [sys.executable, str(WORKER), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600, **options)


def test_fifty_kills_during_checkpoint_writes_lose_nothing(tmp_path):
    """SIGKILL at random moments of a run that checkpoints after every step (most kills land
    in a write: the writes dominate the step): the last complete checkpoint always loads,
    and resuming through all of them reproduces the uninterrupted run bit for bit."""
    done = worker("killloop", tmp_path, 50, 0)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\nkill -9: {counts['injected']} injected, {counts['loaded']} survived, {counts['lost']} lost")
    assert counts["injected"] == 50 and counts["loaded"] == 50 and counts["lost"] == 0
    assert counts["exact"]  # losses and parameters equal to the uninterrupted run's
    steps = counts["steps_at_kills"]
    assert steps == sorted(steps) and steps[-1] > steps[0]  # every kill left progress behind
    assert counts["temp_files_left"] <= 1  # a killed write's temporary file is removed at the next start


STEPS = 30


@pytest.fixture(scope="module")
def uninterrupted() -> dict[str, dict]:
    """Each API's run without a fault, as JSON (losses and a digest of the parameters)."""
    runs = {api: worker("result", "-", STEPS, api) for api in ("fit", "loader")}
    for run in runs.values():
        assert run.returncode == 0, run.stderr[-2000:]
    return {api: json.loads(run.stdout) for api, run in runs.items()}


@pytest.mark.parametrize("api", ["fit", "loader"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_run_writes_a_checkpoint_and_the_resume_is_exact(tmp_path, signum, api, uninterrupted):
    """The signal lands mid-run (mid-epoch for ``fit_loader``); the step in progress ends,
    a checkpoint is written, the process exits; resuming in a new process finishes the run
    exactly as the uninterrupted one."""
    path, steps = tmp_path / "ckpt.pt", STEPS
    command = [sys.executable, str(WORKER), "train", str(path), str(steps), api]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    for line in process.stdout:
        if line.startswith("step 7"):  # epoch 2 of the loader's 5 batches an epoch
            process.send_signal(signum)
            break
    out, err = process.communicate(timeout=120)
    assert process.returncode == 3 and "interrupted" in out, err[-3000:]
    assert 7 <= load_checkpoint(path)["history"].step < steps
    resumed = worker("result", path, steps, api)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout) == uninterrupted[api]


def _small_disk(folder: Path, size_kb: int) -> bool:
    """Mount a tmpfs of ``size_kb`` at ``folder``; False where mounting is not permitted."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)])
    return mounted.returncode == 0


def test_a_full_disk_fails_the_write_clearly_and_leaves_the_previous_checkpoint(tmp_path):
    """A real full file system (a small tmpfs, where this machine allows mounting one; else a
    file-size limit, which fails the write the same way): the atomic write needs room for the
    old and the new file, the new one does not fit, and the old one still loads."""
    state = {"weights": torch.randn(40_000), "step": 1}  # about 160 kB
    disk = tmp_path / "disk"
    if _small_disk(disk, 240):
        try:
            path = save_checkpoint(state, disk / "ckpt.pt")
            with pytest.raises(
                CheckpointError, match=r"could not write checkpoint .*ckpt\.pt: No space left"
            ):
                save_checkpoint({**state, "step": 2}, path)
            assert load_checkpoint(path)["step"] == 1
            assert sorted(p.name for p in disk.iterdir()) == ["ckpt.pt"]
        finally:
            subprocess.run(["umount", str(disk)])
        return
    path = save_checkpoint(state, tmp_path / "ckpt.pt")
    code = (
        "import resource, signal, sys, torch\n"
        "from flowguide.training import CheckpointError, save_checkpoint\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({100_000}, {resource.RLIM_INFINITY}))\n"
        "try:\n"
        f"    save_checkpoint({{'weights': torch.randn(40_000), 'step': 2}}, {str(path)!r})\n"
        "except CheckpointError as error:\n"
        "    print(error); sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    limited = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert limited.returncode == 0 and "could not write checkpoint" in limited.stdout, limited.stderr
    assert load_checkpoint(path)["step"] == 1


def test_an_unwritable_checkpoint_folder_fails_before_training(tmp_path):
    from flowguide import AutoIAF

    (tmp_path / "a_file").write_text("")

    def model():
        import pyro
        import pyro.distributions as dist

        pyro.sample("z", dist.Normal(0.0, 1.0))

    for target in ("/proc/flowguide/ckpt.pt", tmp_path / "a_file" / "ckpt.pt"):  # read-only fs; not a folder
        with pytest.raises(CheckpointError, match="cannot write checkpoints to"):
            fit(model, AutoIAF(model), steps=5, checkpoint=target, device="cpu", progress=False)


def test_a_truncated_or_corrupted_checkpoint_is_refused_naming_the_file(tmp_path):
    path = worker_checkpoint(tmp_path)
    data = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    corrupted = bytearray(data)
    corrupted[len(data) // 3 : len(data) // 3 + 64] = os.urandom(64)
    (tmp_path / "corrupted.pt").write_bytes(bytes(corrupted))
    for name in ("truncated.pt", "corrupted.pt"):
        with pytest.raises((CheckpointError, ValueError), match=name.replace(".", r"\.")):
            load_checkpoint(tmp_path / name)
        resumed = worker("result", tmp_path / name, 30, "fit")  # never a silent fresh start
        assert resumed.returncode != 0 and name in resumed.stderr


def worker_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "ckpt.pt"
    command = [sys.executable, str(WORKER), "train", str(path), "12", "fit"]
    assert subprocess.run(command, capture_output=True, env=ENV, timeout=300).returncode == 0
    return path


RANK_DIES = """
import os, signal, torch
torch.set_num_threads(1)
import pyro, pyro.distributions as dist
from flowguide import AutoIAF
from flowguide.training import Trainer, init_from_env
from flowguide.training.distributed import rank

def model():
    pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))

def die(step, loss, history):
    if step == 10 and rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)

init_from_env()
pyro.set_rng_seed(0)
guide = AutoIAF(model, num_flows=1, hidden_dims=(8,))
trainer = Trainer(model, guide, progress=False, checkpoint=CHECKPOINT, checkpoint_every=1, callbacks=[die])
trainer.fit(steps=100000)
"""


def test_a_killed_rank_stops_the_other_within_bounded_time_and_the_checkpoint_holds(tmp_path):
    path = tmp_path / "ckpt.pt"
    script = tmp_path / "rank_dies.py"
    script.write_text(f"CHECKPOINT = {str(path)!r}\n" + RANK_DIES)
    torchrun = Path(sys.executable).parent / "torchrun"
    start = time.monotonic()
    run = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "--max-restarts=0", str(script)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=240,
    )
    elapsed = time.monotonic() - start
    print(f"\na rank killed: torchrun exited {run.returncode} after {elapsed:.1f} s")
    assert run.returncode != 0 and elapsed < 120
    assert 9 <= load_checkpoint(path)["history"].step <= 11  # rank 0's last write, intact
