"""The affine head: the moments it reports, its parameters, and the flow it ends."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from autoguide_cases import DATA, GUIDES, SMALL, rich_model

from flowguide import AutoIAF
from flowguide.apps.exact import ConjugateRegression


@pytest.mark.parametrize("name", GUIDES)
def test_loc_scale_are_the_posterior_moments(name):
    """``_loc_scale`` (where Pyro's Gaussian guides return their parameters) gives the
    mean and standard deviation of q: those of its own draws; the exact conjugate ones
    after the Laplace start, where every flow starts at the identity; ``init_scale`` even
    when it is far below float32's epsilon."""
    case = ConjugateRegression(dim=4, num_data=12)
    guide = GUIDES[name](case.model, warm_start="laplace", num_summary_samples=200_000).setup(*case.args)
    loc, scale = guide._loc_scale()  # Monte Carlo: 0.2% standard error in the scale
    draws = guide.sample_posterior(200_000, *case.args)["w"]
    torch.testing.assert_close(loc, draws.mean(0), atol=0.01 * float(scale.min()), rtol=0)
    torch.testing.assert_close(scale, draws.std(0), atol=0, rtol=0.01)
    mean, cov = case._posterior()
    torch.testing.assert_close(loc.double(), mean, atol=0.02 * float(cov.diagonal().sqrt().min()), rtol=0)
    torch.testing.assert_close(scale.double(), cov.diagonal().sqrt(), atol=0, rtol=0.01)
    with torch.no_grad():  # a skewed q: its mean is no longer the head's location
        for parameter in guide.flow.layers[:-1].parameters():  # each value by N(0, 1)
            parameter.add_(torch.randn_like(parameter) / guide.recipe.core_unit)
    loc, scale = guide._loc_scale()
    draws = guide.sample_posterior(200_000, *case.args)["w"]
    assert (loc - guide.flow.head.location).abs().max() > 0.1 * float(scale.min())
    torch.testing.assert_close(loc, draws.mean(0), atol=0.01 * float(scale.min()), rtol=0)
    torch.testing.assert_close(scale, draws.std(0), atol=0, rtol=0.01)

    def wide():
        pyro.sample("x", dist.Normal(0.0, 1.0).expand([50]).to_event(1))

    for init_scale in (1e-1, 1e-8):
        _, scale = GUIDES[name](wide, init_scale=init_scale).setup()._loc_scale()
        assert abs(float(scale.pow(2).mean().sqrt()) / init_scale - 1) < 0.02


def test_full_affine_head_adds_a_triangle_of_parameters():
    counts = {
        affine: sum(p.numel() for p in AutoIAF(rich_model, **SMALL, affine=affine).setup(DATA).parameters())
        for affine in ("full", "diagonal")
    }
    dim = AutoIAF(rich_model, **SMALL).setup(DATA).latent_dim
    assert counts["full"] - counts["diagonal"] == dim * (dim - 1) // 2


def test_the_head_maps_standard_noise_to_its_gaussian_start(tol):
    """Started at N(loc, S S^T), the head pushes N(0, I) to that Gaussian: z = loc + S u,
    log|det J| = sum log diag S, with the full head; the diagonal head keeps diag S only."""
    from flowguide.autoguide.head import AffineHead

    torch.manual_seed(1)
    loc = torch.randn(3, dtype=torch.float64)
    scale_tril = torch.tensor([[0.5, 0.0, 0.0], [0.3, 2.0, 0.0], [-1.0, 0.2, 0.1]], dtype=torch.float64)
    u = torch.randn(5, 3, dtype=torch.float64)
    full = AffineHead(3).double()
    full.set_start(loc, scale_tril)
    z, ladj = full().call_and_ladj(u)
    torch.testing.assert_close(z, loc + u @ scale_tril.T, atol=tol, rtol=0)
    torch.testing.assert_close(ladj, scale_tril.diagonal().log().sum().expand(5), atol=tol, rtol=0)
    diagonal = AffineHead(3, "diagonal").double()
    diagonal.set_start(loc, scale_tril)
    assert diagonal.linear is None
    torch.testing.assert_close(diagonal()(u), loc + u * scale_tril.diagonal(), atol=tol, rtol=0)
    with pytest.raises(ValueError, match="affine must be one of"):
        AffineHead(3, "banded")


def test_a_low_rank_head_of_full_rank_maps_noise_to_its_gaussian_start(tol):
    """At rank D the low-rank head's fit of a start is exact: the head's Jacobian A has
    A A^T = S S^T and log|det A| = log det S, at any point."""
    from flowguide.autoguide.head import AffineHead

    torch.manual_seed(2)
    loc = torch.randn(3, dtype=torch.float64)
    scale_tril = torch.tensor([[0.5, 0.0, 0.0], [0.3, 2.0, 0.0], [-1.0, 0.2, 0.1]], dtype=torch.float64)
    head = AffineHead(3, "lowrank", rank=3).double()
    head.set_start(loc, scale_tril)
    u = torch.randn(3, dtype=torch.float64)
    z, ladj = head().call_and_ladj(u)
    jacobian = torch.autograd.functional.jacobian(lambda v: head()(v), u)
    torch.testing.assert_close(jacobian @ jacobian.T, scale_tril @ scale_tril.T, atol=tol, rtol=0)
    torch.testing.assert_close(ladj, scale_tril.diagonal().log().sum(), atol=tol, rtol=0)
    torch.testing.assert_close(head().inv(z), u, atol=tol, rtol=0)


def test_auto_head_is_full_up_to_its_threshold_and_low_rank_above():
    from flowguide.autoguide.head import FULL_HEAD_MAX_DIM, HEAD_RANK, AffineHead

    assert AffineHead(FULL_HEAD_MAX_DIM).affine == "full"
    above = AffineHead(FULL_HEAD_MAX_DIM + 1)
    assert above.affine == "lowrank" and above.linear.rank == HEAD_RANK
    with pytest.raises(ValueError, match="rank must be an integer"):
        AffineHead(4, "lowrank", rank=0)


def test_the_heads_moments_are_those_of_its_draws():
    from flowguide.autoguide.head import AffineHead, HeadedFlow
    from flowguide.flows import iaf

    torch.manual_seed(0)
    head = AffineHead(2)
    head.set_start(torch.tensor([1.0, -1.0]), torch.tensor([[1e-6, 0.0], [2e-6, 3e-6]]))
    flow = HeadedFlow(iaf(2, num_flows=1, hidden_dims=(8,)), head)
    assert flow.head is head and len(flow.core_transform().parts) == 1
    mean, std = flow.moments(100_000)
    draws = flow.transform()(flow.base_draws(100_000, seed=0, antithetic=True))
    torch.testing.assert_close(mean, draws.mean(0), atol=1e-9, rtol=0)
    # the standard deviation is scaled after the draws: exact to float32, at a scale of 1e-6
    torch.testing.assert_close(std, torch.tensor([1e-6, (4e-12 + 9e-12) ** 0.5]), atol=0, rtol=0.02)
