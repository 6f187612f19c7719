"""The flow VAE, its data and its reference: shapes and a step for every combination,
exact conditional densities, IWAE ordering, and the amortized guide on an exact posterior."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import runpy
import struct
import sys
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.optim import Adam
from torch import nn

from flowguide import AutoIAF
from flowguide.flows import FlowDistribution
from flowguide.models.images import binarize, bits_per_dim, dequantize, load_digits, load_images, read_idx
from flowguide.models.mixture import fit_bernoulli_mixture
from flowguide.models.vae import DECODERS, FAMILIES, AmortizedLocalGuide, ConditionalDensity, FlowVAE
from flowguide.training import Trainer

DIGITS = load_digits()


def small_vae(posterior="iaf", decoder="bernoulli", device="cpu", **kw):
    return FlowVAE(
        64, latent_dim=4, hidden_dim=32, posterior=posterior, num_flows=2, decoder=decoder, **kw
    ).to(device)


def batch(decoder, n=12, device="cpu"):
    x = DIGITS.train[:n]
    x = binarize(x, 17) if decoder == "bernoulli" else dequantize(x, 17)[0]
    return x.to(device)


@pytest.mark.parametrize(("posterior", "decoder"), list(itertools.product(FAMILIES, DECODERS)))
def test_every_posterior_and_decoder_takes_an_svi_step(posterior, decoder, device):
    pyro.clear_param_store()
    vae, x = small_vae(posterior, decoder, device), batch(decoder, device=device)
    before = [p.detach().clone() for p in vae.parameters()]
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), Trace_ELBO())
    loss = svi.step(x, torch.arange(12, device=device), 1438)
    assert math.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, vae.parameters(), strict=True))
    q = vae.q(x)
    assert q.batch_shape == (12,) and q.event_shape == (4,)
    assert vae.likelihood(q.sample((3,))).batch_shape == (3, 12)
    assert vae.log_weights(x, num_samples=5).shape == (5, 12)


@pytest.mark.parametrize("standardized", [False, True], ids=["flow_after_gaussian", "standardized"])
@pytest.mark.parametrize("posterior", [f for f in FAMILIES if f != "gaussian"])
def test_conditional_log_q_equals_the_inverse_density_per_data_point(posterior, dtype, standardized):
    torch.manual_seed(0)
    vae = small_vae(posterior, standardized=standardized).to(dtype)
    x = batch("bernoulli").to(dtype)
    q = vae.q(x)
    z, log_q = q.rsample_and_log_prob((3,))
    by_inverse = q.log_prob(z.detach().clone())  # a new tensor: scored through the inverse
    per_row = torch.stack(
        [vae.q(x[i : i + 1]).log_prob(z[:, i : i + 1].detach().clone())[:, 0] for i in range(12)], 1
    )
    tol = 1e-8 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(by_inverse, log_q.detach(), atol=tol, rtol=tol)
    torch.testing.assert_close(per_row, log_q.detach(), atol=tol, rtol=tol)


@pytest.mark.parametrize("posterior", ["nsf", "iaf"])
def test_standardized_posterior_applies_the_gaussian_after_the_flow(posterior):
    """With loc 0 and scale 1 both orders are the same map; otherwise the standardized one
    is z = loc + scale * f(u), so its density is the flow's at (z - loc) / scale, over scale."""
    torch.manual_seed(0)
    vae = small_vae(posterior, standardized=True).double()
    x = batch("bernoulli").double()
    q, h = vae.q(x), vae.q.features(x)
    loc, raw = vae.q.gaussian(h).chunk(2, -1)
    scale = torch.nn.functional.softplus(raw) + 1e-3
    z = q.sample((3,))
    flow_only = FlowDistribution(vae.q.flow.base((12,)), vae.q.flow.transform(h))
    expected = flow_only.log_prob((z - loc) / scale) - scale.log().sum(-1)
    torch.testing.assert_close(q.log_prob(z.clone()), expected)
    with torch.no_grad():  # loc 0, scale 1: the two orders coincide
        vae.q.gaussian.weight.zero_()
        vae.q.gaussian.bias[:4] = 0.0
        vae.q.gaussian.bias[4:] = math.log(math.expm1(1.0 - 1e-3))  # softplus(b) + 1e-3 = 1
    plain = small_vae(posterior, standardized=False).double()
    plain.load_state_dict(vae.state_dict())
    torch.testing.assert_close(plain.q(x).log_prob(z.clone()), vae.q(x).log_prob(z.clone()))


def test_iwae_is_above_the_elbo_and_grows_with_k_on_a_trained_model():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = FlowVAE(64, latent_dim=4, hidden_dim=32, posterior="planar", num_flows=2)
    x = binarize(DIGITS.train[:256], 17)
    Trainer(
        vae.model, vae.guide, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3), device="cpu", progress=False
    ).fit(x, steps=300)
    test = binarize(DIGITS.test[:100], 17)
    torch.manual_seed(1)
    log_w = vae.log_weights(test, num_samples=2000).double()  # (2000, 100)
    elbo = float(log_w.mean())
    bounds = []
    for k in (1, 10, 100, 1000):
        groups = log_w[: (2000 // k) * k].reshape(-1, k, 100)
        bounds.append(float((torch.logsumexp(groups, 1) - math.log(k)).mean()))
    assert bounds[0] == pytest.approx(elbo, abs=0.05)
    assert all(b > a for a, b in itertools.pairwise(bounds))
    assert bounds[-1] - elbo > 0.1  # a real gap (0.3 nats measured) after 200 steps


def hierarchical_model(y):
    """theta_i ~ N(0, 2^2); y_ij ~ N(theta_i, 1), j = 1..5: conjugate per group."""
    with pyro.plate("groups", y.shape[0]):
        theta = pyro.sample("theta", dist.Normal(0.0, 2.0))
        pyro.sample("y", dist.Normal(theta.unsqueeze(-1), 1.0).to_event(1), obs=y)


def test_amortized_local_guide_recovers_the_exact_posterior():
    torch.manual_seed(0)
    y = 2.0 * torch.randn(200, 1) + torch.randn(200, 5)
    precision = 1 / 4 + 5
    mean, std = y.sum(-1) / precision, torch.full((200,), precision**-0.5)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    # linear features: the exact posterior (mean linear in y_i, constant sd) is in the family
    density = ConditionalDensity(nn.Linear(5, 8), 8, 1, family="gaussian")
    guide = AmortizedLocalGuide("theta", "groups", density, data=lambda y: y, event_squeeze=True)
    trainer = Trainer(
        hierarchical_model,
        guide,
        device="cpu",
        progress=False,
        loss=Trace_ELBO(num_particles=8, vectorize_particles=True),
    )
    trainer.fit(y, steps=1000)
    draws = Predictive(hierarchical_model, guide=guide, num_samples=2000, return_sites=["theta"])(y)["theta"]
    assert draws.shape == (2000, 200)
    assert ((draws.mean(0) - mean).abs() / std).max() < 0.2
    assert ((draws.std(0) / std) - 1).abs().max() < 0.1


def test_local_guide_combines_with_a_flow_autoguide_over_globals():
    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
        with pyro.plate("groups", y.shape[0]):
            theta = pyro.sample("theta", dist.Normal(mu, 2.0))
            pyro.sample("y", dist.Normal(theta.unsqueeze(-1), 1.0).to_event(1), obs=y)

    y = 1.5 + torch.randn(30, 5)
    pyro.clear_param_store()
    global_guide = AutoIAF(pyro.poutine.block(model, expose=["mu"]), num_flows=2, hidden_dims=(8,))
    density = ConditionalDensity(nn.Linear(5, 16), 16, 1, family="planar", num_flows=2)
    local_guide = AmortizedLocalGuide("theta", "groups", density, data=lambda y: y, event_squeeze=True)

    def guide(y):
        return {**global_guide(y), **local_guide(y)}

    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(y) for _ in range(400)]
    assert sum(losses[-50:]) / 50 < sum(losses[:50]) / 50 - 10
    draws = Predictive(model, guide=guide, num_samples=500, return_sites=["mu", "theta"])(y)
    assert draws["mu"].reshape(500).shape == (500,) and draws["theta"].shape == (500, 30)  # mu: (500, 1)
    assert abs(float(draws["mu"].mean()) - float(y.mean())) < 0.6


def test_data_views_and_bits_per_dim():
    assert (DIGITS.train.shape, DIGITS.test.shape, DIGITS.levels) == ((1438, 64), (359, 64), 17)
    assert DIGITS.train.min() == 0 and DIGITS.train.max() == 16
    assert torch.equal(load_digits().test, DIGITS.test)  # fixed split
    b = binarize(DIGITS.train, 17)
    assert set(b.unique().tolist()) == {0.0, 1.0}
    x = DIGITS.train[:5].double()
    y, log_det = dequantize(x, 17, torch.Generator().manual_seed(0))
    v_of_y = lambda y: (torch.sigmoid(y) - 0.05) / 0.9 * 17 - x  # noqa: E731  inverse: the noise u in [0, 1)
    assert ((v_of_y(y) >= 0) & (v_of_y(y) < 1)).all()
    jac = torch.autograd.functional.jacobian(lambda t: (torch.sigmoid(t) - 0.05) / 0.9, y[0])
    assert float(log_det[0]) == pytest.approx(-float(torch.log(jac.diagonal()).sum()), rel=1e-10)
    # a density uniform on the unit cube in v is log2(17) bits per dimension
    assert float(bits_per_dim(-log_det, log_det, 64, 17).mean()) == pytest.approx(math.log2(17))


def test_bernoulli_mixture_is_normalized_and_fits():
    torch.manual_seed(0)
    modes = torch.tensor([[1.0, 1, 0, 0], [0.0, 0, 1, 1]])
    x = modes[torch.randint(0, 2, (400,))]
    x = torch.where(torch.rand_like(x) < 0.05, 1 - x, x)
    mix = fit_bernoulli_mixture(x, components=2, iterations=50)
    every = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
    assert float(mix.log_prob(every).exp().sum()) == pytest.approx(1.0)
    assert float(mix.probs.max()) > 0.9 and float(mix.log_weights.exp().min()) > 0.4


def test_bad_options_raise(tmp_path):
    with pytest.raises(ValueError, match="decoder"):
        FlowVAE(64, decoder="poisson")
    with pytest.raises(ValueError, match="family"):
        FlowVAE(64, posterior="maf")
    with pytest.raises(ValueError, match="prior"):
        FlowVAE(64, prior="vampprior")
    with pytest.raises(TypeError, match="standardized"):
        FlowVAE(64, posterior="nsf", standardized="yes")
    with pytest.raises(ValueError, match="data-dir"):
        load_images("mnist")
    with pytest.raises((ImportError, FileNotFoundError), match="MNIST"):
        load_images("mnist", tmp_path)


def write_mnist_files(root, n_train: int = 40, n_test: int = 12) -> torch.Tensor:
    """Write MNIST's four IDX files (big-endian header, then uint8 rows) under
    ``root/MNIST/raw``, holding the bundled digits scaled to 28x28 and 0..255: real
    images in MNIST's real format, read back by torchvision as the MNIST files are."""
    digits = DIGITS.train[: n_train + n_test].reshape(-1, 1, 8, 8) / 16
    images = (nn.functional.interpolate(digits, size=(28, 28), mode="bilinear") * 255).round()
    images, labels = images.to(torch.uint8).reshape(-1, 28, 28), torch.arange(len(images)) % 10
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, rows in (("train", slice(0, n_train)), ("t10k", slice(n_train, None))):
        part = images[rows]
        header = struct.pack(">IIII", 0x803, len(part), 28, 28)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + part.numpy().tobytes())
        header = struct.pack(">II", 0x801, len(part))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            header + labels[rows].to(torch.uint8).numpy().tobytes()
        )
    return images


def test_mnist_is_read_from_its_files_on_disk(tmp_path):
    images = write_mnist_files(tmp_path)
    data = load_images("mnist", tmp_path)
    assert (data.levels, data.side, data.dim, data.name) == (256, 28, 784, "mnist")
    torch.testing.assert_close(data.train, images[:40].reshape(40, 784).float())
    torch.testing.assert_close(data.test, images[40:].reshape(12, 784).float())
    assert data.train.max() == 255 and data.train.min() == 0
    test_file = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    test_file.with_name(test_file.name + ".gz").write_bytes(gzip.compress(test_file.read_bytes()))
    test_file.unlink()  # the gzipped copy is read instead
    torch.testing.assert_close(load_images("mnist", tmp_path).test, data.test)
    test_file.with_name(test_file.name + ".gz").unlink()
    with pytest.raises(FileNotFoundError, match="missing t10k-images-idx3-ubyte"):
        load_images("mnist", tmp_path)


@pytest.mark.parametrize(
    ("posterior", "decoder"), [("gaussian", "bernoulli"), ("nsf", "bernoulli"), ("iaf", "flow")]
)
def test_refined_features_raise_the_elbo_and_leave_the_parameters_alone(posterior, decoder, device):
    pyro.set_rng_seed(0)
    vae = small_vae(posterior, decoder, device=device)
    x = batch(decoder, n=20, device=device)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    amortized = vae.evaluate(x, num_samples=400)
    refined = vae.evaluate(x, num_samples=400, refine_steps=60)
    # an untrained encoder is far from each row's optimum; the Monte Carlo error is about 0.03
    assert refined["elbo"] > amortized["elbo"] + 0.2
    assert all(torch.equal(v, vae.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in vae.parameters())
    h = vae.refine_features(x, steps=0)
    torch.testing.assert_close(h, vae.q.features(x))
    with pytest.raises(ValueError, match="steps"):
        vae.refine_features(x, steps=-1)


def test_read_idx_rejects_wrong_headers_and_sizes(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(struct.pack(">II", 0x803, 2) + bytes(2))  # says 3 dimensions, has 1 size
    with pytest.raises(ValueError, match="the header needs 3 sizes"):
        read_idx(path)
    path.write_bytes(struct.pack(">II", 0x801, 3) + bytes(2))  # 3 bytes promised, 2 written
    with pytest.raises(ValueError, match="need 3 bytes, found 2"):
        read_idx(path)
    path.write_bytes(struct.pack(">II", 0x0D01, 1) + bytes(4))  # float data: not ubyte
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file"):
        read_idx(path)
    path.write_bytes(struct.pack(">II", 0x801, 3) + bytes([7, 8, 9]))
    assert read_idx(path).tolist() == [7, 8, 9]


def test_vae_example_trains_on_mnist_files(tmp_path, monkeypatch, capsys, device):
    write_mnist_files(tmp_path / "data")
    script = Path(__file__).parents[2] / "examples" / "vae.py"
    out = tmp_path / "result.json"
    argv = ["--smoke", "--data", "mnist", "--data-dir", str(tmp_path / "data"), "--device", str(device)]
    argv += ["--refine-steps", "2"]
    monkeypatch.setattr(sys, "argv", [str(script), *argv, "--figures", str(tmp_path), "--out", str(out)])
    runpy.run_path(str(script), run_name="__main__")
    result = json.loads(out.read_text())
    assert result["settings"]["data"] == "mnist" and len(result["rows"]) == 1
    assert math.isfinite(result["rows"][0]["test_iwae"]) and result["rows"][0]["test_iwae"] < 0
    assert math.isfinite(result["rows"][0]["refined_gap"])
    assert (tmp_path / "vae_mnist_gaussian_bernoulli.png").exists()
    assert "| gaussian | bernoulli |" in capsys.readouterr().out


@pytest.mark.parametrize("objective", ["stl", "dreg"])
def test_path_gradient_objectives_train_the_vae(objective, device):
    """FlowVAE.guide is a method of the module: the objectives hold its parameters fixed."""
    from flowguide.infer import DReG_ELBO, TraceSTL_ELBO

    pyro.clear_param_store()
    vae, x = small_vae("iaf", device=device), batch("bernoulli", device=device)
    elbo = TraceSTL_ELBO() if objective == "stl" else DReG_ELBO(num_particles=4)
    before = {name: p.detach().clone() for name, p in vae.named_parameters()}
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), elbo)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not registered in the param store" per parameter
        losses = [svi.step(x, torch.arange(12, device=device), 1438) for _ in range(2)]
    assert all(math.isfinite(v) for v in losses)
    moved = {name for name, p in vae.named_parameters() if not torch.equal(before[name], p)}
    assert any(name.startswith("q.") for name in moved), moved  # the amortized posterior
    assert any(name.startswith("p_x.") for name in moved), moved  # and the model's decoder
    assert all(isinstance(p, torch.nn.Parameter) for p in vae.parameters())  # restored after replay
