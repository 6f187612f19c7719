"""The fit loop: exact resume, interruption, the NaN guard, atomic checkpoints, devices and
a real two-process gloo run."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from local_posterior import data_plate, hierarchical, local_errors
from pyro.infer.autoguide import AutoNormal
from torch.utils.data import TensorDataset

from flowguide import AutoIAF, AutoPlanarFlow
from flowguide.infer import VmapParticlesELBO
from flowguide.training import (
    EarlyStopping,
    NaNGuard,
    NonFiniteError,
    Trainer,
    TrainingInterrupted,
    fit,
    fit_loader,
    load_checkpoint,
    save_checkpoint,
    shard_loader,
)

ROOT = Path(__file__).parents[2]
X = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
Y = X @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(40, generator=torch.Generator().manual_seed(2))


def regression(x, y):
    """Bayesian linear regression with a learnable noise scale (a model parameter)."""
    w = pyro.sample("w", dist.Normal(torch.zeros(3, device=x.device), 1.0).to_event(1))
    noise = pyro.param("noise", torch.tensor(1.0, device=x.device), constraint=dist.constraints.positive)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x @ w.unsqueeze(-1)).squeeze(-1), noise), obs=y)  # particles broadcast


def fresh(seed: int = 0, guide_cls=AutoIAF, model=regression):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    return guide_cls(model, **({"num_flows": 2, "hidden_dims": (16,)} if guide_cls is AutoIAF else {}))


def trained(params):
    return {name: p.detach().clone() for name, p in params.items()}


def test_resume_continues_bit_for_bit(tmp_path, device):
    args = (X.to(device), Y.to(device))
    straight = Trainer(regression, fresh(), device=device, progress=False)
    straight.fit(*args, steps=40)
    expected = trained(straight.params)

    stop_at_17 = [lambda step, loss, history: step == 17]  # an interrupted run of 40 planned steps
    first = Trainer(
        regression,
        fresh(),
        device=device,
        progress=False,
        checkpoint=tmp_path / "ckpt.pt",
        callbacks=stop_at_17,
    )
    first.fit(*args, steps=40)
    assert load_checkpoint(tmp_path / "ckpt.pt")["history"].step == 17
    # a different seed and fresh parameters: everything must come from the checkpoint
    resumed = Trainer(regression, fresh(seed=99), device=device, progress=False).resume(
        tmp_path / "ckpt.pt", *args
    )
    resumed.fit(*args, steps=40)
    assert resumed.history.losses == straight.history.losses
    for name, value in expected.items():
        assert torch.equal(value, resumed.params[name].detach()), name
    again = fit(
        regression, fresh(seed=7), *args, steps=40, resume=tmp_path / "ckpt.pt", device=device, progress=False
    )
    assert again.losses == straight.history.losses  # the functional form does the same


def test_sigint_finishes_the_step_writes_a_checkpoint_and_resumes(tmp_path):
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    straight = Trainer(regression, fresh(), device="cpu", progress=False)
    straight.fit(X, Y, steps=30)

    def interrupt(step, loss, history):
        if step == 12:
            os.kill(os.getpid(), signal.SIGINT)

    trainer = Trainer(
        regression, fresh(), device="cpu", progress=False, checkpoint=tmp_path / "c.pt", callbacks=[interrupt]
    )
    with pytest.raises(TrainingInterrupted) as caught:
        trainer.fit(X, Y, steps=30)
    assert caught.value.history.step == 13  # the signal lands during step 12's callbacks; step 13 completes
    assert signal.getsignal(signal.SIGINT) is before  # the handler in place before fit is back
    again = Trainer(regression, fresh(seed=5), device="cpu", progress=False).resume(tmp_path / "c.pt", X, Y)
    again.fit(X, Y, steps=30)
    assert again.history.losses == straight.history.losses
    for name, value in trained(straight.params).items():
        assert torch.equal(value, again.params[name].detach()), name


def poisoned(bad_steps: range):
    """The regression plus a factor whose value is 0 but whose gradient is NaN during the
    given steps; returns the model and the callback that arms it before each step."""
    armed = {"on": False}

    def model(x, y):
        regression(x, y)
        w = pyro.sample("w2", dist.Normal(0.0, 1.0))
        if armed["on"]:
            pyro.factor("poison", (w * 0).abs().sqrt())  # d sqrt(|0|) = inf, times 0: NaN

    def arm(step, loss, history):
        armed["on"] = step + 1 in bad_steps

    return model, arm


def test_nan_steps_are_skipped_and_training_goes_on():
    model, arm = poisoned(range(10, 14))
    pyro.clear_param_store()
    trainer = Trainer(
        model,
        AutoNormal(model),
        optimizer=lambda p: torch.optim.Adam(p, lr=0.05),
        device="cpu",
        progress=False,
        guard=NaNGuard(lr_backoff=1.0),
        callbacks=[arm],
    )
    history = trainer.fit(X, Y, steps=400)
    assert history.skipped == [10, 11, 12, 13]
    assert all(torch.isfinite(p).all() for p in trainer.params.values())
    w = trainer.guide.median(X, Y)["w"]
    assert torch.allclose(w, torch.tensor([1.0, -2.0, 0.5]), atol=0.2)  # still learns


def test_persistent_nan_stops_with_the_site_named_and_a_clean_checkpoint(tmp_path):
    model, arm = poisoned(range(20, 10**6))
    pyro.clear_param_store()
    trainer = Trainer(
        model,
        AutoNormal(model),
        device="cpu",
        progress=False,
        guard=NaNGuard(max_bad_steps=3),
        checkpoint=tmp_path / "c.pt",
        checkpoint_every=1,
        callbacks=[arm],
    )
    with pytest.raises(NonFiniteError, match="'poison'") as caught:
        trainer.fit(X, Y, steps=100)
    assert "AutoNormal.locs.w2" in str(caught.value)  # the parameter whose gradient is NaN
    assert trainer.history.skipped == [20, 21, 22]
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**3)  # backed off
    saved = load_checkpoint(tmp_path / "c.pt")
    assert saved["history"].step == 21  # the last checkpoint before the error (step 22 raised)
    for name, value in trained(trainer.params).items():
        assert torch.isfinite(value).all()
        assert torch.equal(value, saved["params"][name])  # bad steps changed nothing since


def test_checkpoint_write_is_atomic(tmp_path):
    path = save_checkpoint({"step": 1}, tmp_path / "c.pt")
    with pytest.raises((pickle.PicklingError, AttributeError)):  # which one depends on the pickler
        save_checkpoint({"step": 2, "bad": lambda: None}, path)  # a lambda cannot be pickled
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temporary file left
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"step": 3}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a flowguide checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_callbacks_stop_early_and_schedules_run():
    stopper = EarlyStopping(patience=1, window=10, min_delta=1e9)  # never "improves" by 1e9
    trainer = Trainer(
        regression,
        fresh(),
        device="cpu",
        progress=False,
        callbacks=[stopper],
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5),
    )
    history = trainer.fit(X, Y, steps=100)
    assert history.stopped_early and history.step == 20  # first window sets the best, the second stops
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**4)


def test_the_guides_measured_recipe_is_the_default():
    """A flow guide trains with its recommended ELBO (8 vectorized particles) and its learning
    rate decays to ``lr_decay`` of the initial rate over the planned steps, then stays."""
    trainer = Trainer(regression, fresh(), device="cpu", progress=False)
    assert (trainer.elbo.num_particles, trainer.elbo.vectorize_particles) == (8, True)
    assert trainer.grad_clamp == AutoIAF.recipe.grad_clamp == 10.0
    trainer.fit(X, Y, steps=30)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * AutoIAF.recipe.lr_decay)
    assert trainer.optimizer.param_groups[0]["lr"] < 1e-2 * AutoIAF.recipe.lr_decay ** (29 / 30)
    trainer.planned_steps = 20  # past the horizon the rate stays at the floor
    trainer.fit(X, Y, steps=40)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * AutoIAF.recipe.lr_decay)

    constant = Trainer(regression, fresh(), device="cpu", progress=False, scheduler=None)
    constant.fit(X, Y, steps=30)
    assert constant.optimizer.param_groups[0]["lr"] == 1e-2
    planar = Trainer(regression, fresh(guide_cls=AutoPlanarFlow), device="cpu", progress=False)
    planar.fit(X, Y, steps=30)  # the planar recipe keeps the rate constant
    assert planar.optimizer.param_groups[0]["lr"] == 1e-2 and planar.elbo.num_particles == 8
    assert planar.grad_clamp is None
    plain = Trainer(regression, fresh(guide_cls=AutoNormal), device="cpu", progress=False)
    plain.fit(X, Y, steps=5)  # a guide without a recipe: one particle, constant rate
    assert plain.elbo.num_particles == 1 and plain.scheduler is None and plain.grad_clamp is None


def test_grad_clamp_bounds_every_gradient_entry():
    """With SGD at rate 1, a step moves each parameter entry by its (clamped) gradient."""
    guide = fresh()
    sgd = lambda params: torch.optim.SGD(params, lr=1.0)  # noqa: E731
    trainer = Trainer(regression, guide, device="cpu", progress=False, optimizer=sgd, grad_clamp=1e-3)
    trainer.setup(X, Y)
    before = trained(trainer.params)
    trainer.fit(X, Y, steps=1)
    moves = torch.cat([(trainer.params[n].detach() - v).abs().reshape(-1) for n, v in before.items()])
    assert 0.99e-3 < moves.max() <= 1.001e-3  # clamped (float32 rounding of p - 1e-3), and an entry hit it


def unvectorized(x, y):
    """``x @ w`` does not broadcast over a particle dimension of ``w``."""
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w, 1.0), obs=y)


def branching(x, y):
    """Neither broadcasts (``x @ w``) nor maps under ``vmap`` (a Python float of a latent)."""
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    scale = 2.0 if float(w[0]) > 100.0 else 1.0
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w, scale), obs=y)


def test_a_model_that_does_not_vectorize_gets_vmapped_particles():
    trainer = Trainer(unvectorized, fresh(model=unvectorized), device="cpu", progress=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*sequential particles")
        history = trainer.fit(X, Y, steps=20)
    assert isinstance(trainer.elbo, VmapParticlesELBO) and trainer.elbo.num_particles == 8
    assert all(torch.isfinite(torch.tensor(history.losses)))
    assert history.losses[-1] < history.losses[0]


def test_a_model_that_vmap_cannot_run_gets_sequential_particles_and_a_warning():
    trainer = Trainer(branching, fresh(model=branching), device="cpu", progress=False)
    with pytest.warns(UserWarning, match=r"does not vectorize over particles.*vmap.*8 sequential particles"):
        history = trainer.fit(X, Y, steps=20)
    assert (trainer.elbo.num_particles, trainer.elbo.vectorize_particles) == (8, False)
    assert all(torch.isfinite(torch.tensor(history.losses)))
    with pytest.raises(RuntimeError):  # a loss the user chose is never swapped
        guide = fresh(model=unvectorized)
        Trainer(unvectorized, guide, device="cpu", loss=guide.recommended_elbo()).setup(X, Y)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="max_bad_steps"):
        NaNGuard(max_bad_steps=0)
    with pytest.raises(ValueError, match="lr_backoff"):
        NaNGuard(lr_backoff=1.5)
    with pytest.raises(ValueError, match="checkpoint_every"):
        Trainer(regression, fresh(), checkpoint_every=-1)
    with pytest.raises(ValueError, match="steps"):
        Trainer(regression, fresh(), device="cpu").fit(X, Y, steps=-1)
    with pytest.raises(ValueError, match="scheduler"):
        Trainer(regression, fresh(), scheduler="cosine")
    with pytest.raises(ValueError, match="grad_clamp"):
        Trainer(regression, fresh(), grad_clamp=-1.0)
    with pytest.raises(TypeError, match=r"RenyiELBO has none.*DReG_ELBO"):
        Trainer(regression, fresh(), loss=pyro.infer.RenyiELBO(alpha=0.0))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Trainer(regression, fresh(), device="cuda")


def test_device_option_places_parameters_and_data(device):
    trainer = Trainer(regression, fresh(), device=device, progress=False)
    trainer.fit(X, Y, steps=3)  # CPU tensors in, moved by the trainer
    assert all(p.device.type == device.type for p in trainer.params.values())


def torchrun_two(script: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``script`` under ``torchrun`` with two gloo processes; assert it succeeded."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run = subprocess.run(
        [*torchrun, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    script = ROOT / "examples" / "distributed_logistic.py"
    common = ["--epochs", "2", "--num-data", "256", "--batch-size", "64", "--features", "8"]
    one = subprocess.run(
        [sys.executable, str(script), *common, "--out", str(tmp_path / "one.pt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = torchrun_two(script, *common, "--out", str(tmp_path / "two.pt"))
    assert "2 process(es), 8 steps" in two.stdout
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5)
    assert max(float((a[n] - b[n]).abs().max()) for n in a) < 1e-5 < max(float(a[n].abs().max()) for n in a)


RANK_SEEDED = """
import pyro, pyro.distributions as dist, torch, torch.distributed as td
from flowguide import AutoIAF, AutoPlanarFlow
from flowguide.infer import VmapParticlesELBO
from flowguide.training import Trainer, init_from_env

def model():
    pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))

init_from_env()
pyro.set_rng_seed(td.get_rank())  # each process initializes its guide differently
guide = AutoIAF(model, num_flows=1, hidden_dims=(8,), init_loc_fn=pyro.infer.autoguide.init_to_sample)
trainer = Trainer(model, guide, progress=False).setup()
flat = torch.cat([p.detach().reshape(-1) for p in trainer.params.values()])
copies = [torch.empty_like(flat) for _ in range(td.get_world_size())]
td.all_gather(copies, flat)
if td.get_rank() == 0:
    print("spread", float((copies[0] - copies[1]).abs().max()))
"""


def test_processes_start_from_rank_zeros_parameters(tmp_path):
    """Guides initialized differently per process (seeds, data shards, warm starts) are
    made one model at set-up: the trainer broadcasts rank 0's parameters."""
    script = tmp_path / "rank_seeded.py"
    script.write_text(RANK_SEEDED)
    assert "spread 0.0" in torchrun_two(script).stdout


def batched_regression(index, x, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with pyro.plate("data", 40, subsample=index):
        pyro.sample("y", dist.Normal((x @ w.unsqueeze(-1)).squeeze(-1), 0.3), obs=y)


def test_minibatch_fit_resumes_mid_epoch(tmp_path):
    data = TensorDataset(torch.arange(40), X, Y)
    straight = Trainer(batched_regression, fresh(model=batched_regression), device="cpu", progress=False)
    straight.fit_loader(shard_loader(data, 8, seed=3), epochs=3)
    assert straight.history.step == 15 and straight.history.epoch == 3

    stop = lambda step, loss, history: step == 7  # noqa: E731  (mid-way through epoch 2)
    first = Trainer(
        batched_regression,
        fresh(model=batched_regression),
        device="cpu",
        progress=False,
        checkpoint=tmp_path / "c.pt",
        callbacks=[stop],
    )
    first.fit_loader(shard_loader(data, 8, seed=3), epochs=3)
    assert first.history.step == 7 and first.history.stopped_early
    resumed = fit_loader(
        batched_regression,
        fresh(seed=11, model=batched_regression),
        shard_loader(data, 8, seed=3),
        epochs=3,
        resume=tmp_path / "c.pt",
        device="cpu",
        progress=False,
    )
    assert resumed.losses == straight.history.losses


@pytest.mark.slow
def test_the_guides_schedule_leaves_per_datum_local_factors_at_the_full_rate():
    """Each local factor moves only when its datum is in the minibatch (a quarter of the
    steps here): under the recipe's decay to 1% this run stalled at standard deviations
    of 0.26 against 0.71, with means up to 2.2 posterior standard deviations off."""
    pyro.set_rng_seed(0)
    x = 3.0 * torch.randn(40)
    guide = AutoIAF(hierarchical, create_plates=data_plate)
    trainer = Trainer(hierarchical, guide, device="cpu", progress=False)
    trainer.fit_loader(shard_loader(TensorDataset(torch.arange(40), x), 10, seed=0), epochs=300)
    flow_rate, local_rate = (group["lr"] for group in trainer.optimizer.param_groups)
    assert local_rate == 1e-2 and flow_rate == pytest.approx(1e-4)
    mean_error, sd_error = local_errors(guide, x)
    assert mean_error < 0.1 and sd_error <= 0.02


LOCAL_DATA_PARALLEL = """
import sys
sys.path.insert(0, TESTS_DIR)  # prepended by the test: local_posterior.py lives there
import pyro, torch
from torch.utils.data import TensorDataset
from flowguide import AutoIAF
from flowguide.training import Trainer, init_from_env, is_main, shard_loader, world_size
from local_posterior import data_plate, hierarchical, local_errors

init_from_env()
torch.manual_seed(0)
x = 3.0 * torch.randn(40)
pyro.set_rng_seed(1)
guide = AutoIAF(hierarchical, create_plates=data_plate, num_flows=2, hidden_dims=(16,))
loader = shard_loader(TensorDataset(torch.arange(40), x), 10 // world_size(), seed=0)
trainer = Trainer(hierarchical, guide, progress=False)
trainer.fit_loader(loader, epochs=300)
err, sd = local_errors(guide, x)
flat = torch.cat([p.detach().reshape(-1) for p in trainer.params.values()])
if world_size() > 1:
    import torch.distributed as td
    copies = [torch.empty_like(flat) for _ in range(world_size())]
    td.all_gather(copies, flat)
    spread = float((copies[0] - copies[1]).abs().max())
else:
    spread = 0.0
if is_main():
    steps = trainer.history.step
    print(f"processes {world_size()} steps {steps} mean-err {err:.4f} sd-err {sd:.4f} spread {spread}")
"""


@pytest.mark.slow
def test_two_processes_train_per_datum_local_factors_to_the_posterior(tmp_path):
    """Each datum's factor lives on the process whose shard holds it; the averaged gradient
    is then the global-batch gradient, and both replicas stay equal."""
    script = tmp_path / "local_dp.py"
    script.write_text(f"TESTS_DIR = {str(Path(__file__).parent)!r}\n" + LOCAL_DATA_PARALLEL)
    line = torchrun_two(script).stdout.strip().splitlines()[-1]
    fields = dict(zip(line.split()[::2], line.split()[1::2], strict=True))
    assert fields["processes"] == "2" and fields["steps"] == "1200" and fields["spread"] == "0.0"
    assert float(fields["mean-err"]) < 0.1 and float(fields["sd-err"]) < 0.02


def test_all_finite_checks_every_entry_and_skips_empty_tensors():
    from flowguide.training.guard import all_finite

    assert all_finite([torch.ones(3), torch.empty(0)]) and all_finite([torch.empty(0)]) and all_finite([])
    assert not all_finite([torch.ones(3), torch.tensor([1.0, float("nan")])])
    assert not all_finite([torch.tensor([-float("inf")]), torch.empty(0)])
    assert all_finite([torch.full((2,), 3e38)])  # huge but finite: no overflow from a norm


def test_a_tensor_registered_under_two_names_is_stepped_once():
    """Pyro's ``AutoIAFNormal`` registers one tensor under two parameter names; the trainer's
    optimizer holds it once, so each update moves it once."""
    import warnings

    from pyro.infer.autoguide import AutoIAFNormal

    guide = AutoIAFNormal(regression, hidden_dim=[8])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns of duplicate parameters in a group
        trainer = Trainer(regression, guide, device="cpu", progress=False).setup(X, Y)
    names = {}
    for name, p in trainer.params.items():
        names.setdefault(id(p), []).append(name)
    assert any(len(shared) > 1 for shared in names.values())  # the case this test is about
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert len(params) == len({id(p) for p in params}) == len(names)


def test_a_checkpoint_follows_the_umask_unless_a_mode_is_given(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        save_checkpoint({"step": 1}, tmp_path / "plain.pt")
        save_checkpoint({"step": 1}, tmp_path / "private.pt", mode=0o600)
        torch.save({}, tmp_path / "torch.pt")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"plain.pt": 0o644, "private.pt": 0o600, "torch.pt": 0o644}


def test_the_guard_names_a_factor_that_is_non_finite_for_some_draws():
    """A factor that is -inf for half the draws: one re-traced draw may miss it, so the
    guard draws again until it finds it, and names it as a factor site."""

    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.factor("cliff", torch.where(z > 0, torch.tensor(-float("inf")), torch.zeros(())))

    pyro.set_rng_seed(0)
    with pytest.raises(NonFiniteError, match=r"model factor site 'cliff' \(non-finite log-density\)"):
        fit(model, AutoNormal(model), steps=50, device="cpu", progress=False, guard=NaNGuard(max_bad_steps=1))


def test_the_guard_names_the_parameter_behind_a_non_finite_gradient():
    def model():
        w = pyro.param("w", torch.tensor(1.0))
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.factor("root", torch.sqrt(w - 1.0) + 0 * z)  # finite value, infinite slope

    with pytest.raises(
        NonFiniteError, match=r"factor site 'root' \(non-finite gradient with respect to \['w'\]\)"
    ):
        fit(model, AutoNormal(model), steps=20, device="cpu", progress=False, guard=NaNGuard(max_bad_steps=3))


def test_resume_under_another_seed_keeps_the_laplace_starts_units(tmp_path):
    """The default ``warm_start="auto"`` sets the head's location unit from a Laplace fit,
    whose L-BFGS start (``init_to_median``) depends on the random state at construction.
    A guide built under another seed has another unit; the checkpoint's wins."""
    from flowguide.apps.exact import BetaBinomial

    case = BetaBinomial()
    straight = Trainer(case.model, fresh(model=case.model), device="cpu", progress=False)
    straight.fit(*case.args, steps=30)
    stop = [lambda step, loss, history: step == 12]
    path = tmp_path / "ckpt.pt"
    Trainer(
        case.model, fresh(model=case.model), device="cpu", progress=False, checkpoint=path, callbacks=stop
    ).fit(*case.args, steps=30)
    other = fresh(seed=99, model=case.model).setup(*case.args)
    unit = other.flow.head.elementwise.loc_unit
    assert other.warm_started and not torch.equal(unit, straight.guide.flow.head.elementwise.loc_unit)
    resumed = Trainer(case.model, other, device="cpu", progress=False).resume(path, *case.args)
    resumed.fit(*case.args, steps=30)
    assert resumed.history.losses == straight.history.losses
