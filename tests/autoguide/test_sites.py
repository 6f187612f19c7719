"""The site plan: discrete, enumerated and local sites, shape changes, models without latents."""

from __future__ import annotations

import math
import pickle

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from autoguide_cases import ELBOS, GUIDES, LOCAL_DATA, SMALL, data_plate, local_model
from pyro.distributions import constraints
from pyro.infer import (
    SVI,
    Predictive,
    Trace_ELBO,
    TraceEnum_ELBO,
    config_enumerate,
)
from pyro.optim import Adam, ClippedAdam

from flowguide import AutoAffineCoupling, AutoIAF, AutoNeuralSpline, AutoPlanarFlow


def test_enumerated_discrete_sites_are_left_to_enumeration():
    @config_enumerate
    def model(data):
        locs = pyro.sample("locs", dist.Normal(torch.tensor([-2.0, 2.0]), 1.0).to_event(1))
        with pyro.plate("data", len(data)):
            k = pyro.sample("k", dist.Categorical(torch.ones(2) / 2))
            pyro.sample("x", dist.Normal(locs[k], 1.0), obs=data)

    data = torch.tensor([-2.1, -1.9, 2.2, 1.8])
    guide = AutoIAF(model, **SMALL)
    svi = SVI(model, guide, Adam({"lr": 1e-2}), TraceEnum_ELBO(max_plate_nesting=1))
    assert math.isfinite(svi.step(data))
    assert set(guide.median(data)) == {"locs"}
    assert not guide.warm_started and "site 'k' is not one of them" in guide.warm_start_fallback


def test_discrete_latent_without_enumeration_is_refused():
    def model():
        pyro.sample("coin", dist.Bernoulli(0.5))
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"discrete latent site .coin.*enumeration\.html"):
        AutoIAF(model).setup()


def test_local_latent_in_subsampled_plate_is_refused_on_request():
    def model(data):
        with pyro.plate("data", 100, subsample_size=10) as idx:
            z = pyro.sample("z_local", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=data[idx])

    match = r"'z_local' inside plate 'data', which is subsampled \(10 of 100\)"
    with pytest.raises(ValueError, match=match):
        AutoNeuralSpline(model, subsampled_sites="error").setup(torch.randn(100))
    assert AutoNeuralSpline(model).setup(torch.randn(100)).local_sites == ("z_local",)


@pytest.mark.parametrize("name", GUIDES)
def test_local_sites_in_subsampled_plates_get_per_datum_factors_with_exact_log_q(name):
    guide = GUIDES[name](local_model, create_plates=data_plate).setup(LOCAL_DATA, torch.arange(4))
    assert guide.local_sites == ("probs", "rate") and guide.latent_dim == 1
    assert guide.local_guide.locs.probs.shape == (12, 2)  # the full plate, unconstrained
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.1 * torch.randn_like(p))
    everyone = torch.arange(12)
    for index in (torch.tensor([1, 5, 6, 11]), everyone):
        trace = poutine.trace(guide).get_trace(LOCAL_DATA, index)
        trace.compute_log_prob()
        assert trace.nodes["probs"]["value"].shape == (len(index), 3)
        assert trace.nodes["rate"]["value"].shape == (len(index),)
    # With the whole plate as the minibatch, the ELBO's log q (sampling pass, plate scale 1)
    # is the exact density of every datum's latents, computed through the inverse.
    log_q = sum(site["log_prob_sum"] for site in trace.nodes.values() if site["type"] == "sample")
    values = {k: trace.nodes[k]["value"] for k in ("mu", "probs", "rate")}
    torch.testing.assert_close(guide.log_density(values, LOCAL_DATA, everyone), log_q, atol=2e-3, rtol=1e-5)
    draws = guide.sample_posterior(5, LOCAL_DATA, everyone)
    assert draws["probs"].shape == (5, 12, 3) and draws["rate"].shape == (5, 12)
    assert constraints.simplex.check(draws["probs"]).all() and (draws["rate"] > 0).all()
    assert guide.log_density(draws).shape == (5,)
    quantiles = guide.quantiles([0.25, 0.5, 0.75])
    assert quantiles["probs"].shape == (3, 12, 3) and quantiles["mu"].shape == (3,)
    torch.testing.assert_close(guide.median()["rate"], guide.local_guide.locs.rate.exp())


@pytest.mark.parametrize("elbo", ELBOS)
def test_every_elbo_with_local_sites_and_vectorized_particles(elbo):
    guide = AutoNeuralSpline(local_model, create_plates=data_plate, **SMALL)
    svi = SVI(local_model, guide, Adam({"lr": 1e-2}), ELBOS[elbo](num_particles=3, vectorize_particles=True))
    for index in (torch.arange(4), torch.arange(4, 8)):
        assert math.isfinite(svi.step(LOCAL_DATA, index))
    samples = Predictive(local_model, guide=guide, num_samples=5)(LOCAL_DATA, torch.arange(4))
    assert samples["probs"].shape == (5, 4, 3) and samples["obs"].shape == (5, 4, 3)


def test_local_factors_stick_the_landing_unless_stl_is_false():
    def loss_and_scale_grad(stl):
        guide = AutoIAF(local_model, create_plates=data_plate, stl=stl, **SMALL)
        guide.setup(LOCAL_DATA, torch.arange(4))
        pyro.set_rng_seed(3)
        elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
        loss = elbo.differentiable_loss(local_model, guide, LOCAL_DATA, torch.arange(4))
        return loss, torch.autograd.grad(loss, [guide.local_guide.scales.rate_unconstrained])[0]

    pyro.set_rng_seed(0)
    loss_stl, grad_stl = loss_and_scale_grad(None)
    pyro.set_rng_seed(0)
    loss_plain, grad_plain = loss_and_scale_grad(False)
    torch.testing.assert_close(loss_stl, loss_plain)
    assert (grad_stl[:4] - grad_plain[:4]).abs().min() > 1e-3  # every datum of the minibatch
    assert not grad_stl[4:].any() and not grad_plain[4:].any()  # the others get no gradient


def test_a_minibatch_step_moves_exactly_its_rows_of_the_local_factors():
    guide = AutoIAF(local_model, create_plates=data_plate, **SMALL).setup(LOCAL_DATA, torch.arange(4))
    before = {k: v.detach().clone() for k, v in guide.local_guide.named_parameters()}
    svi = SVI(local_model, guide, Adam({"lr": 0.1}), Trace_ELBO())
    index = torch.tensor([2, 5, 7, 11])
    svi.step(LOCAL_DATA, index)
    for key, value in guide.local_guide.named_parameters():
        moved = (value.detach() != before[key]).any(-1) if value.dim() > 1 else value.detach() != before[key]
        assert moved.nonzero().flatten().tolist() == index.tolist(), key


@pytest.mark.parametrize("name", ["iaf", "affine_coupling"])
def test_minibatch_svi_recovers_a_posterior_that_factorizes_over_data(name):
    """mu | y ~ N(y/2, 1/2) and z_n | x_n ~ N(x_n/2, 1/2): the guide family holds the exact
    posterior, which minibatches of 10 of 30 data (drawn by the guide's plate) must reach."""

    def model(x, y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        with pyro.plate("data", len(x), subsample_size=10):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=pyro.subsample(x, event_dim=0))

    pyro.set_rng_seed(0)
    x, y = 3.0 * torch.randn(30), torch.tensor(1.5)
    guide = GUIDES[name](model)
    num_steps = 1500
    optim = ClippedAdam({"lr": 0.05, "lrd": 0.02 ** (1 / num_steps)})
    svi = SVI(model, guide, optim, Trace_ELBO(num_particles=8, vectorize_particles=True))
    for _ in range(num_steps):
        svi.step(x, y)
    lower, median, upper = guide.quantiles([0.158655, 0.5, 0.841345])["z"]
    # Sticking the landing (on by default for the local factors, and for these guides'
    # flow at this dimension) makes the gradient vanish at the exact posterior: with
    # stl=False the same run misses every datum's mean by up to 0.04-0.06.
    torch.testing.assert_close(median, x / 2, atol=1e-3, rtol=0)
    torch.testing.assert_close((upper - lower) / 2, torch.full((30,), 0.5**0.5), atol=1e-3, rtol=0)
    assert abs(float(guide.median()["mu"]) - 0.75) < 1e-3


def test_local_sites_survive_state_dict_pickle_and_moves(device):
    def build():
        guide = AutoAffineCoupling(local_model, create_plates=data_plate, **SMALL)
        return guide.setup(LOCAL_DATA, torch.arange(4))

    guide = build()
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.1 * torch.randn_like(p))
    draws = guide.sample_posterior(4)
    expected = guide.log_density(draws)
    fresh = build()
    fresh.load_state_dict(guide.state_dict())
    torch.testing.assert_close(fresh.log_density(draws), expected)
    torch.testing.assert_close(pickle.loads(pickle.dumps(guide)).log_density(draws), expected)
    moved = guide.to(device).double()
    assert all(t.dtype == torch.float64 and t.device.type == device.type for t in moved.parameters())
    assert moved.sample_posterior(2)["rate"].dtype == torch.float64


def test_a_plate_indexed_by_the_models_arguments_needs_create_plates():
    """Without create_plates the guide's plate draws its own rows, which replace the
    model's index: ignored where the model slices its data with ``pyro.subsample``, and
    latents scored against other rows' data where its arguments are the minibatch. Both
    are refused at set-up."""
    match = r"plate 'data' of a local latent site takes its minibatch from the model's arg.*create_plates"
    with pytest.raises(ValueError, match=match):
        AutoIAF(local_model, **SMALL).setup(LOCAL_DATA, torch.arange(4))
    wrong = AutoIAF(local_model, create_plates=lambda data, index: pyro.plate("other", 3), **SMALL)
    with pytest.raises(ValueError, match=match):
        wrong.setup(LOCAL_DATA, torch.arange(4))

    # Under the guide's plate the model replays the guide's rows: the same rows.
    def drawn(data):
        with pyro.plate("data", len(data), subsample_size=4):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    assert AutoIAF(drawn, **SMALL).setup(LOCAL_DATA).local_sites == ("z",)


def test_only_local_sites_and_their_limits():
    def model(data):
        with pyro.plate("data", len(data), subsample_size=5):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    guide = AutoPlanarFlow(model)
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    assert math.isfinite(svi.step(torch.randn(20)))
    assert guide.latent_dim == 0 and guide.median()["z"].shape == (20,)
    assert guide._loc_scale()[0].shape == (0,)
    with pytest.raises(RuntimeError, match="has no flow: the model has only latent sites local"):
        guide.get_posterior()
    with pytest.raises(ValueError, match=r"warm_start='laplace'.*site 'z' is local to a subsampled plate"):
        AutoPlanarFlow(model, warm_start="laplace").setup(torch.randn(20))


@pytest.mark.parametrize("name", GUIDES)
def test_a_model_without_latent_sites_gets_an_empty_guide_and_one_without_sites_an_error(name):
    """As Pyro's ``AutoNormal``: SVI with the empty guide is maximum likelihood of the
    model's parameters (here the data mean, from minibatches). A model that samples
    nothing and reads no parameter is refused, as Pyro's ``AutoContinuous`` refuses it."""

    def model(data):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", len(data), subsample_size=10) as rows:
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=data[rows])

    data = torch.randn(40) + 3.0
    guide = GUIDES[name](model)
    svi = SVI(model, guide, ClippedAdam({"lr": 0.05, "lrd": 0.99}), Trace_ELBO())  # to 1% over 460 steps
    for _ in range(460):
        svi.step(data)
    assert abs(pyro.param("loc").item() - data.mean().item()) < 0.05  # measured 2e-4 to 0.012
    assert guide.latent_dim == 0 and guide.local_sites == () and dict(guide.state_dict()) == {}
    assert guide(data) == {} and guide.median(data) == {} and guide.sample_posterior(3, data) == {}
    assert float(guide.log_density({}, data)) == 0.0
    assert Predictive(model, guide=guide, num_samples=4)(data)["obs"].shape == (4, 10)
    assert pickle.loads(pickle.dumps(guide))(data) == {}
    for method in (guide.get_posterior, guide.get_transform, guide.get_base_dist):
        with pytest.raises(RuntimeError, match="has no flow: the model has no latent site"):
            method()
    with pytest.raises(RuntimeError, match=r"has no parameters yet: call guide\.setup"):
        GUIDES[name](model).get_posterior()
    with pytest.raises(RuntimeError, match="found no sample or param site in the model"):
        GUIDES[name](lambda: None).setup()


def test_a_site_that_enters_a_subsampled_plate_after_setup_is_refused():
    def model(data, size=None):
        with pyro.plate("data", len(data), subsample_size=size):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    guide = AutoIAF(model, **SMALL)
    guide(torch.randn(8))
    match = r"site 'z' changed shape from \(8,\) at setup to \(8,\) \(a minibatch"
    with pytest.raises(ValueError, match=match):
        guide(torch.randn(8), 4)


def test_site_whose_shape_changes_is_refused():
    def model(data):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(data)), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=data)

    guide = AutoAffineCoupling(model)
    guide(torch.randn(3))
    guide(torch.randn(3))  # same shapes: fine
    with pytest.raises(ValueError, match=r"site 'z' changed shape from \(3,\) at setup to \(5,\)"):
        guide(torch.randn(5))


def test_global_latents_accept_minibatches_of_new_sizes():
    def model(data):
        loc = pyro.sample("loc", dist.Normal(0.0, 5.0))
        with pyro.plate("data", len(data)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=data)

    guide = AutoIAF(model)
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    for size in (10, 7, 10, 3):
        assert math.isfinite(svi.step(torch.randn(size)))
