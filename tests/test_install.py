"""A bare ``pip install`` of the package: the core imports and trains, the apps name their extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

TRAIN = """
import importlib.util, pyro, pyro.distributions as dist, torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from flowguide import AutoIAF

assert importlib.util.find_spec("sklearn") is None  # the data extra is not installed
def model(x):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
x = torch.randn(20) + 3.0
guide = AutoIAF(model, num_flows=2, hidden_dims=(8,))
svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
losses = [svi.step(x) for _ in range(20)]
assert all(torch.isfinite(torch.tensor(losses)))
print("trained", round(float(guide.median(x)["loc"]), 2))
"""


def run(*command: str | Path, **options) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, **options)


@pytest.mark.slow
def test_a_bare_install_trains_and_the_comparison_names_its_missing_extra(tmp_path):
    """``pip install .`` (after the CPU torch this suite runs on, so that no other build is
    downloaded) pulls torch, pyro-ppl, arviz and tqdm only; ``flowguide compare`` needs the
    ``apps`` extra and says so instead of failing on an import."""
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    python = venv / "bin" / "python"
    torch_version = torch.__version__.split("+")[0]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for requirement in (f"torch=={torch_version}", str(ROOT)):
        installed = run(python, "-m", "pip", "install", "--quiet", requirement, env=env, timeout=900)
        assert installed.returncode == 0, installed.stderr[-3000:]
    trained = run(python, "-c", TRAIN, cwd=tmp_path, timeout=300)
    assert trained.returncode == 0 and "trained" in trained.stdout, trained.stderr[-3000:]
    compare = run(venv / "bin" / "flowguide", "compare", "--smoke", cwd=tmp_path, timeout=300)
    assert compare.returncode != 0
    assert "pip install 'flowguide[apps]'" in compare.stderr and "sklearn" in compare.stderr
    assert "Traceback" not in compare.stderr
    assert not (tmp_path / "outputs").exists()  # it stopped before training anything
