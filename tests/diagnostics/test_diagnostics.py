"""Diagnostics against answers known in closed form: the conjugate regression's evidence
and posterior, and guides that are exact, slightly off, or badly mis-specified."""

from __future__ import annotations

import itertools
import math

import arviz as az
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal

from flowguide.apps.exact import BetaBinomial, ConjugateRegression
from flowguide.diagnostics import (
    elbo,
    importance_sample,
    iwae_bound,
    posterior_errors,
    psis_diagnostic,
    psis_mean,
    reference_posterior,
    to_inference_data,
)

CASE = ConjugateRegression(dim=3, num_data=20)


def gaussian_guide(scale: float = 1.0, shift: float = 0.0):
    """The exact posterior of CASE with its covariance scaled by ``scale**2`` and its mean
    moved by ``shift`` posterior standard deviations."""
    mean, cov = CASE._posterior()
    mean = (mean + shift * cov.diagonal().sqrt()).float()
    tril = (scale * torch.linalg.cholesky(cov)).float()

    def guide(x, y=None):
        pyro.sample("w", dist.MultivariateNormal(mean, scale_tril=tril))

    return guide


def test_exact_guide_gives_log_z_with_zero_spread():
    estimate = elbo(CASE.model, gaussian_guide(), *CASE.args, num_samples=500)
    assert estimate.value == pytest.approx(CASE.log_z, abs=1e-3)  # float32 model arithmetic
    assert estimate.stderr < 1e-4


def test_elbo_below_iwae_below_log_z_and_iwae_grows_with_k():
    guide = gaussian_guide(scale=0.7, shift=0.5)
    args = CASE.args
    plain = elbo(CASE.model, guide, *args, num_samples=20_000)
    assert plain.value < CASE.log_z - 0.1  # a visibly imperfect guide
    means = []
    for k in (1, 10, 100, 1000):
        repeats = [iwae_bound(CASE.model, guide, *args, num_samples=k).value for _ in range(40)]
        means.append((sum(repeats) / len(repeats), torch.tensor(repeats).std().item() / math.sqrt(40)))
    assert means[0][0] == pytest.approx(plain.value, abs=5 * (means[0][1] + plain.stderr))
    for (lo, lo_se), (hi, hi_se) in itertools.pairwise(means):
        assert hi > lo - 3 * math.hypot(lo_se, hi_se)
    assert means[-1][0] - means[0][0] > 0.1  # K = 1000 closes most of the gap
    assert means[-1][0] < CASE.log_z + 3 * means[-1][1]


def test_khat_small_for_a_good_guide_large_for_a_narrow_one():
    good = importance_sample(CASE.model, gaussian_guide(scale=1.1), *CASE.args, num_samples=4000)
    bad = importance_sample(CASE.model, gaussian_guide(scale=0.4, shift=1.0), *CASE.args, num_samples=4000)
    good_psis, bad_psis = psis_diagnostic(good.log_weights), psis_diagnostic(bad.log_weights)
    assert good_psis.khat < 0.5 and good_psis.verdict == "good"
    assert bad_psis.khat > 0.7 and bad_psis.verdict == "unreliable"
    assert good_psis.ess > 3000 > 400 > bad_psis.ess
    assert float(good_psis.log_weights.exp().sum()) == pytest.approx(1.0)


def test_psis_mean_corrects_a_shifted_guide():
    draws = importance_sample(CASE.model, gaussian_guide(scale=1.3, shift=0.5), *CASE.args, num_samples=8000)
    exact, std = CASE.posterior_mean["w"].float(), CASE.posterior_std["w"].float()
    naive = ((draws.samples["w"].mean(0) - exact) / std).abs().max()
    corrected = (
        ((psis_mean(draws.samples, psis_diagnostic(draws.log_weights))["w"] - exact) / std).abs().max()
    )
    assert naive > 0.4 and corrected < 0.1


def test_bad_log_weights_raise():
    with pytest.raises(ValueError, match="shape"):
        psis_diagnostic(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="no finite"):
        psis_diagnostic(torch.full((100,), -math.inf))
    with pytest.raises(ValueError, match="num_samples"):
        elbo(CASE.model, gaussian_guide(), *CASE.args, num_samples=0)


def schools_model(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfNormal(5.0))
    with pyro.plate("school", sigma.shape[0]):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def test_inference_data_has_named_plates_weights_and_observations():
    sigma, y = torch.tensor([15.0, 10.0, 16.0, 11.0]), torch.tensor([28.0, 8.0, -3.0, 7.0])
    guide = AutoNormal(schools_model)
    guide(sigma, y)
    data = to_inference_data(schools_model, guide, sigma, y, num_samples=300, batch_size=128)
    post = data.posterior
    assert dict(post["theta"].sizes) == {"chain": 1, "draw": 300, "school": 4}
    assert dict(post["tau"].sizes) == {"chain": 1, "draw": 300}
    assert float(post["tau"].min()) > 0  # constrained space
    assert data.sample_stats["log_importance_weight"].shape == (1, 300)
    assert data.observed_data["obs"].values.tolist() == y.tolist()
    summary = az.summary(data, kind="stats")
    assert len(summary) == 1 + 1 + 4 and "theta[0]" in summary.index
    import matplotlib

    matplotlib.use("Agg")
    if int(az.__version__.split(".")[0]) < 1:
        assert az.plot_posterior(data, var_names=["mu", "tau"]).shape == (2,)
        pair = az.plot_pair(data, var_names=["mu", "tau"])  # one panel for two scalars
        assert pair.get_xlabel() == "mu" and pair.get_ylabel() == "tau"
    else:  # ArviZ 1.x: plot_dist succeeds plot_posterior; plots return plot collections
        assert type(az.plot_dist(data, var_names=["mu", "tau"])).__name__ == "PlotCollection"
        assert type(az.plot_pair(data, var_names=["mu", "tau"])).__name__ == "PlotMatrix"
    matplotlib.pyplot.close("all")


def test_nuts_reference_and_errors_against_an_exact_posterior():
    case = BetaBinomial(a=2.0, b=3.0, n=20, k=6)
    reference = reference_posterior(case.model, *case.args, num_samples=400, warmup_steps=200)
    mean, std = float(case.posterior_mean["p"]), float(case.posterior_std["p"])
    assert reference["p"].shape == (400,)
    assert float(reference["p"].mean()) == pytest.approx(mean, abs=0.25 * std)
    exact = torch.distributions.Beta(case.a + case.k, case.b + case.n - case.k).sample((4000,))
    wrong = exact * 0.5
    good_err, bad_err = (
        posterior_errors(reference, {"p": exact})["p"],
        posterior_errors(reference, {"p": wrong})["p"],
    )
    assert good_err[0] < 0.25 and good_err[1] < 0.25
    assert bad_err[0] > 1.0 and bad_err[1] > 0.3
    with pytest.raises(ValueError, match="p"):
        posterior_errors(reference, {})
