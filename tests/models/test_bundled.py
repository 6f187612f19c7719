"""Bundled models: the real data, the stated site shapes and plates, and a wired likelihood."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.poutine.util import site_is_subsample
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression

from flowguide.apps.bundled import (
    BUNDLED_MODELS,
    BreastCancerLogistic,
    DiabetesHierarchical,
    EightSchools,
    bundled_model,
)

NAMES = list(BUNDLED_MODELS)

LATENT_SHAPES = {
    "funnel": {"v": (), "x": (9,)},
    "banana": {"z1": (), "z2": ()},
    "eight_schools": {"mu": (), "tau": (), "theta": (8,)},
    "logistic": {"w": (30,), "b": ()},
    "hierarchical": {"mu_beta": (8,), "tau": (), "sigma": (), "beta": (6, 8), "alpha": (6,)},
    "two_modes": {"z": (2,)},
}
"""Every latent site of every bundled model, with its shape in a single draw."""

PLATES = {
    "funnel": {},
    "banana": {},
    "eight_schools": {"theta": ("school",), "y": ("school",)},
    "logistic": {"y": ("data",)},
    "hierarchical": {"beta": ("group",), "alpha": ("group",), "y": ("data",)},
    "two_modes": {},
}
"""The named plates each sample site sits in; a site not listed sits in none."""

LOG_Z = {
    "funnel": 0.0,
    "banana": 0.0,
    "eight_schools": None,
    "logistic": None,
    "hierarchical": None,
    "two_modes": 0.0,
}


def _trace(case, device: torch.device, dtype: torch.dtype) -> poutine.Trace:
    args = [a.to(device, dtype) if a.is_floating_point() else a.to(device) for a in case.args]
    return poutine.trace(case.model).get_trace(*args)


def _latents(trace: poutine.Trace) -> list[str]:
    return [site for site in trace.stochastic_nodes if not site_is_subsample(trace.nodes[site])]


def _log_joint(case, values: dict[str, torch.Tensor]) -> torch.Tensor:
    return poutine.trace(poutine.condition(case.model, values)).get_trace(*case.args).log_prob_sum()


@pytest.mark.parametrize("name", NAMES)
def test_every_latent_site_is_finite_with_the_stated_shape(name, device, dtype):
    trace = _trace(bundled_model(name), device, dtype)
    latents = {site: trace.nodes[site]["value"] for site in _latents(trace)}
    assert {site: tuple(value.shape) for site, value in latents.items()} == LATENT_SHAPES[name]
    assert all(torch.isfinite(value).all() for value in latents.values())
    assert math.isfinite(trace.log_prob_sum())


@pytest.mark.parametrize("name", NAMES)
def test_plates_are_named(name, device, dtype):
    trace = _trace(bundled_model(name), device, dtype)
    plates = {
        site: tuple(frame.name for frame in trace.nodes[site]["cond_indep_stack"])
        for site in [*_latents(trace), *trace.observation_nodes]
    }
    assert {site: names for site, names in plates.items() if names} == PLATES[name]


@pytest.mark.parametrize("name", ["eight_schools", "logistic", "hierarchical"])
def test_latents_follow_the_dtype_of_args(name, dtype):
    case = BUNDLED_MODELS[name](dtype=dtype)
    trace = poutine.trace(case.model).get_trace(*case.args)
    assert {trace.nodes[site]["value"].dtype for site in _latents(trace)} == {dtype}
    assert {value.dtype for value in case.observed.values()} == {dtype}


@pytest.mark.parametrize("name", NAMES)
def test_pairs_name_latent_sites_and_indices_inside_them(name):
    case = bundled_model(name)
    shapes = LATENT_SHAPES[name]
    assert 1 <= len(case.pairs) <= 3
    for first, second in case.pairs:
        assert first != second
        for site, index in (first, second):
            assert site in shapes
            assert 0 <= index < math.prod(shapes[site])


@pytest.mark.parametrize("name", NAMES)
def test_observed_names_the_observed_sites_with_their_data(name):
    case = bundled_model(name)
    trace = poutine.trace(case.model).get_trace(*case.args)
    assert set(case.observed) == set(trace.observation_nodes)
    for site, value in case.observed.items():
        assert torch.equal(trace.nodes[site]["value"], value)


@pytest.mark.parametrize("name", NAMES)
def test_name_description_and_log_z(name):
    case = bundled_model(name)
    assert case.name == name
    assert case.description and "\n" not in case.description
    assert case.log_z == LOG_Z[name]


def test_unknown_name_raises_with_the_name_and_the_choices():
    with pytest.raises(ValueError, match=r"unknown bundled model 'eigth_schools'.*eight_schools.*logistic"):
        bundled_model("eigth_schools")


@pytest.mark.parametrize("name", NAMES)
def test_vectorized_elbo_is_finite(name):
    pyro.clear_param_store()
    case = bundled_model(name)
    loss = Trace_ELBO(num_particles=4, vectorize_particles=True).loss(
        case.model, AutoNormal(case.model), *case.args
    )
    assert math.isfinite(loss)


def test_eight_schools_has_the_classic_data():
    sigma, y = EightSchools().args
    assert y.tolist() == [28, 8, -3, 7, -1, 1, 18, 12]
    assert sigma.tolist() == [15, 10, 16, 11, 9, 11, 10, 18]
    assert sigma.dtype == y.dtype == torch.float32


def test_breast_cancer_data_are_sklearns_standardized():
    data = load_breast_cancer()
    x, y = BreastCancerLogistic(dtype=torch.float64).args
    assert x.shape == (569, 30)
    assert (int((y == 0).sum()), int((y == 1).sum())) == (212, 357)
    np.testing.assert_array_equal(y.numpy(), data.target)
    expected = (data.data - data.data.mean(0)) / data.data.std(0)
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(x.mean(0).numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(x.std(0, correction=0).numpy(), 1.0, atol=1e-12)


def test_breast_cancer_num_features_keeps_the_first_ones():
    case = BreastCancerLogistic(num_features=5)
    trace = poutine.trace(case.model).get_trace(*case.args)
    assert case.args[0].shape == (569, 5)
    assert trace.nodes["w"]["value"].shape == (5,)
    assert case.pairs == [(("w", 0), ("w", 1)), (("b", 0), ("w", 0))]
    assert BreastCancerLogistic(num_features=1).pairs == [(("b", 0), ("w", 0))]


@pytest.mark.parametrize("num_features", [0, 31])
def test_breast_cancer_rejects_a_bad_num_features(num_features):
    with pytest.raises(ValueError, match=rf"num_features must be in \[1, 30\], got {num_features}"):
        BreastCancerLogistic(num_features=num_features)


def test_logistic_log_joint_peaks_at_sklearns_map():
    """sklearn's L2 penalty ||w||^2 / 2 at C = 1 is exactly the N(0, I) prior on w.

    So its fit is the MAP up to the weak N(0, 5^2) prior on the intercept, which sklearn
    leaves out: there d log p / d w = 0 and d log p / d b = -b / 25.
    """
    case = BreastCancerLogistic(dtype=torch.float64)
    x, y = case.args
    fit = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(x.numpy(), y.numpy())
    w = torch.tensor(fit.coef_[0], requires_grad=True)
    b = torch.tensor(fit.intercept_[0], requires_grad=True)
    at_map = _log_joint(case, {"w": w, "b": b})
    at_zero = _log_joint(case, {"w": torch.zeros(30, dtype=torch.float64), "b": torch.tensor(0.0).double()})
    at_map.backward()
    assert at_map > at_zero + 300  # -67.9 against -424.5
    assert w.grad.abs().max() < 1e-4
    assert abs(b.grad + b.detach() / 25) < 1e-4


def test_diabetes_data_are_sklearns_standardized():
    data = load_diabetes()
    x, group, y = DiabetesHierarchical(dtype=torch.float64).args
    assert x.shape == (442, 8) and y.shape == (442,)
    np.testing.assert_allclose(
        x.numpy()[:, 0], (data.data[:, 2] - data.data[:, 2].mean()) / data.data[:, 2].std()
    )
    np.testing.assert_allclose(y.numpy(), (data.target - data.target.mean()) / data.target.std())
    np.testing.assert_allclose(x.mean(0).numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(x.std(0, correction=0).numpy(), 1.0, atol=1e-12)
    assert group.dtype == torch.int64


def test_diabetes_groups_cross_sex_with_age_terciles():
    data = load_diabetes()
    age, sex = data.data[:, 0], data.data[:, 1]
    tercile = (age >= np.quantile(age, 1 / 3)).astype(int) + (age >= np.quantile(age, 2 / 3))
    expected = 2 * tercile + (sex > 0)
    group = DiabetesHierarchical().args[1]
    np.testing.assert_array_equal(group.numpy(), expected)
    assert torch.bincount(group).tolist() == [90, 57, 84, 56, 61, 94]


def test_diabetes_likelihood_uses_each_rows_group():
    case = DiabetesHierarchical(dtype=torch.float64)
    x, group, y = case.args
    beta, alpha = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    sigma = torch.tensor(0.7, dtype=torch.float64)
    values = {"beta": beta, "alpha": alpha, "sigma": sigma}
    trace = poutine.trace(poutine.condition(case.model, values)).get_trace(*case.args)
    expected = sum(
        torch.distributions.Normal(alpha[g] + x[group == g] @ beta[g], sigma).log_prob(y[group == g]).sum()
        for g in range(6)
    )
    torch.testing.assert_close(trace.nodes["y"]["fn"].log_prob(y).sum(), expected)
