"""The annealed ELBO tempers the model term only, on a schedule that SVI steps advance."""

from __future__ import annotations

import pickle

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import Adam

from flowguide.infer import AnnealedELBO, linear_schedule
from flowguide.training import Trainer


def model():
    pyro.sample("z", dist.Normal(1.0, 2.0).expand([3]).to_event(1))


def half(step: int) -> float:
    return 0.5


def constant(beta: float):
    return lambda step: beta


@pytest.fixture
def guide():
    pyro.clear_param_store()
    guide = AutoNormal(model, init_scale=0.5)
    guide()
    return guide


def loss_at(beta: float, guide, seed: int = 3) -> float:
    pyro.set_rng_seed(seed)
    elbo = Trace_ELBO(num_particles=64, vectorize_particles=True, max_plate_nesting=0)
    return AnnealedELBO(constant(beta), elbo).loss(model, guide)


def test_loss_is_affine_in_beta_and_the_plain_elbo_at_one(guide):
    """Same draws: -(beta E log p - E log q) is affine in beta and equals Trace_ELBO at beta = 1."""
    losses = {beta: loss_at(beta, guide) for beta in (0.25, 0.5, 0.75, 1.0)}
    assert losses[0.5] == pytest.approx((losses[0.25] + losses[0.75]) / 2, abs=1e-4)
    pyro.set_rng_seed(3)
    plain = Trace_ELBO(num_particles=64, vectorize_particles=True, max_plate_nesting=0).loss(model, guide)
    assert losses[1.0] == pytest.approx(plain, abs=1e-5)
    log_p = (losses[0.5] - losses[1.0]) / 0.5  # E log p of these draws: about -3 * 2.1 = -6.4
    assert -8.0 < log_p < -5.0


def test_svi_steps_advance_the_schedule_and_reach_the_plain_elbo(guide):
    elbo = AnnealedELBO(linear_schedule(20, start=0.2))
    svi = SVI(model, guide, Adam({"lr": 0.05}), elbo)
    betas = []
    for _ in range(30):
        betas.append(elbo.beta)
        svi.step()
    assert betas[0] == 0.2 and betas[10] == pytest.approx(0.6) and betas[20:] == [1.0] * 10
    assert elbo.step == 30


def test_a_tempered_target_is_wider():
    """Fit at constant beta: q approaches p^beta, here N(1, 2^2 / beta)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(model, init_scale=1.0)
    elbo = AnnealedELBO(constant(0.25), Trace_ELBO(num_particles=16, vectorize_particles=True))
    svi = SVI(model, guide, Adam({"lr": 0.05}), elbo)
    for _ in range(1500):
        svi.step()
    scale = guide.quantiles([0.8413])["z"][0] - guide.median()["z"]
    torch.testing.assert_close(scale, torch.full((3,), 4.0), atol=0.4, rtol=0)


def test_bad_schedules_are_refused(guide):
    with pytest.raises(TypeError, match="schedule"):
        AnnealedELBO(0.5)
    with pytest.raises(ValueError, match=r"beta = 0\.0 at step 0"):
        AnnealedELBO(constant(0.0)).loss(model, guide)
    with pytest.raises(ValueError, match="steps"):
        linear_schedule(0)
    with pytest.raises(ValueError, match="start"):
        linear_schedule(10, start=1.5)


def test_the_trainer_advances_the_schedule_and_checkpoints_it(guide, tmp_path):
    """Trainer differentiates ``differentiable_loss``: it advances the schedule after each
    applied update, and a resumed run continues at the same beta."""
    schedule = linear_schedule(10, start=0.1)
    trainer = Trainer(
        model, guide, loss=AnnealedELBO(schedule), checkpoint=tmp_path / "ckpt.pt", progress=False
    )
    trainer.fit(steps=4)
    assert trainer.elbo.step == 4 and trainer.elbo.beta == pytest.approx(0.46)
    trainer.save()
    resumed = Trainer(model, guide, loss=AnnealedELBO(schedule), progress=False).resume(tmp_path / "ckpt.pt")
    assert resumed.elbo.step == 4
    resumed.fit(steps=12)
    assert resumed.elbo.step == 12 and resumed.elbo.beta == 1.0


def test_it_reads_what_it_lacks_from_the_wrapped_elbo():
    elbo = AnnealedELBO(half, Trace_ELBO(num_particles=7, max_plate_nesting=2))
    assert (elbo.num_particles, elbo.max_plate_nesting) == (7, 2)
    with pytest.raises(AttributeError):
        getattr(elbo, "no_such_option")  # noqa: B009
    restored = pickle.loads(pickle.dumps(elbo))
    assert restored.num_particles == 7 and restored.step == 0
