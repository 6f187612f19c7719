"""A flow guide's state outside its calls: Pyro's parameter store, and state before set-up."""

from __future__ import annotations

import subprocess
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
from autoguide_cases import SMALL
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from flowguide import AutoIAF, AutoNeuralSpline

ROUND_TRIP = """
import sys, pyro, torch, pyro.distributions as dist
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from flowguide import AutoIAF

def model(x):
    loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 10.0).to_event(1))
    with pyro.plate("data", 40, subsample_size=10) as index:
        z = pyro.sample("z", dist.Normal(loc[0], 1.0))
        pyro.sample("x", dist.Normal(z + loc[1], 1.0), obs=x[index])

phase, path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
pyro.set_rng_seed(seed)
x = torch.linspace(-1.0, 3.0, 40)
guide = AutoIAF(model, num_flows=2, hidden_dims=(8,))
if phase == "save":
    svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(200):
        svi.step(x)
    pyro.get_param_store().save(path)
else:
    pyro.get_param_store().load(path)
point = {"loc": torch.tensor([1.0, 0.0]), "z": torch.zeros(40)}
print(repr(float(guide.log_density(point, x))), repr(guide.median(x)["loc"].tolist()))
"""


def test_a_param_store_saved_and_loaded_in_a_new_process_restores_the_guide(tmp_path):
    """Pyro's tutorial round trip: train, ``pyro.get_param_store().save``; in a fresh process
    build the guide (under another seed), ``load``, and use it: the trained guide comes back,
    the flow and the per-datum factors alike."""
    script, path = tmp_path / "round_trip.py", tmp_path / "store.pt"
    script.write_text(ROUND_TRIP)
    saved = subprocess.run([sys.executable, script, "save", path, "0"], capture_output=True, text=True)
    loaded = subprocess.run([sys.executable, script, "load", path, "1"], capture_output=True, text=True)
    assert saved.returncode == 0 and loaded.returncode == 0, saved.stderr[-2000:] + loaded.stderr[-2000:]
    assert loaded.stdout == saved.stdout


def model():
    pyro.sample("z", dist.Normal(torch.tensor([1.0, -1.0]), 0.5).to_event(1))


def trained_guide(seed: int = 0, **options):
    pyro.set_rng_seed(seed)
    guide = AutoIAF(model, **SMALL, **options)
    svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(50):
        svi.step()
    return guide


def test_a_store_loaded_after_set_up_is_taken_and_trained_not_left_aside():
    guide = trained_guide()
    point = {"z": torch.tensor([1.2, -0.7])}
    expected = float(guide.log_density(point))
    store = {name: value.detach().clone() for name, value in pyro.get_param_store().items()}
    pyro.clear_param_store()
    other = AutoIAF(model, **SMALL).setup()  # fresh parameters
    assert float(other.log_density(point)) != pytest.approx(expected)
    for name, value in store.items():
        pyro.get_param_store()[name] = value
    assert float(other.log_density(point)) == pytest.approx(expected, abs=1e-6)
    before = [p.detach().clone() for p in other.flow.parameters()]
    svi = SVI(model, other, Adam({"lr": 0.05}), Trace_ELBO())
    svi.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, other.flow.parameters(), strict=True))


def test_a_stored_value_of_another_shape_is_refused_naming_it():
    trained_guide()
    with pytest.raises(ValueError, match=r"parameter store holds 'AutoIAF\.flow\$\$\$.*' of shape"):
        AutoIAF(model, num_flows=2, hidden_dims=(12,)).setup()


def test_load_state_dict_before_set_up():
    """A model without arguments: the guide sets itself up and loads. One with arguments:
    the error says to call ``setup(*args)``."""
    state = trained_guide().state_dict()
    pyro.clear_param_store()
    pyro.set_rng_seed(5)
    loaded = AutoIAF(model, **SMALL)
    loaded.load_state_dict(state)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key

    def with_data(x):
        pyro.sample("z", dist.Normal(x.mean(), 1.0))

    with pytest.raises(RuntimeError, match=r"model takes arguments\. Call guide\.setup\(\*args\) first"):
        AutoNeuralSpline(with_data).load_state_dict(state)


def test_double_and_to_before_set_up_apply_at_set_up():
    guide = AutoIAF(model, **SMALL).double()
    svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
    svi.step()
    assert {p.dtype for p in guide.parameters()} == {torch.float64}
    assert guide.sample_posterior(3)["z"].dtype == torch.float64
    moved = AutoIAF(model, **SMALL).to("cpu").setup()  # a device move keeps each dtype
    assert {p.dtype for p in moved.parameters()} == {torch.float32}
