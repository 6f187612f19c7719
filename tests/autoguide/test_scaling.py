"""Guides at scale: parameter counts linear in D, the plate flows' exact log q, unbiased
minibatch ELBOs, a conjugate hierarchical posterior, and the refusals."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

from flowguide import AutoAffineCoupling, AutoIAF, AutoNeuralSpline, AutoPlanarFlow
from flowguide.autoguide.head import FULL_HEAD_MAX_DIM
from flowguide.autoguide.plate_flow import EMBEDDING_DIM

DEFAULT_GUIDES = {
    "AutoIAF": AutoIAF,
    "AutoNeuralSpline": AutoNeuralSpline,
    "AutoAffineCoupling": AutoAffineCoupling,
    "AutoPlanarFlow": AutoPlanarFlow,
}


def _gaussian(dim: int):
    def model():
        pyro.sample("z", dist.Normal(torch.zeros(dim), 1.0).to_event(1))

    return model


def _count(guide) -> int:
    return sum(p.numel() for p in guide.setup().parameters())


@pytest.mark.parametrize("name", list(DEFAULT_GUIDES))
def test_default_parameter_counts_are_linear_in_d_above_the_threshold(name):
    """Above the full head's threshold every default guide adds the same number of
    parameters per coordinate: the second difference of the counts is exactly 0, and at
    D = 10^4 a default guide holds at most 5M parameters."""
    guide = DEFAULT_GUIDES[name]
    dims = [2 * FULL_HEAD_MAX_DIM, 4 * FULL_HEAD_MAX_DIM, 6 * FULL_HEAD_MAX_DIM]
    counts = [_count(guide(_gaussian(d))) for d in dims]
    assert counts[2] - counts[1] == counts[1] - counts[0] > 0
    assert _count(guide(_gaussian(10_000))) <= 5_000_000


@pytest.mark.parametrize("name", list(DEFAULT_GUIDES))
def test_below_the_threshold_the_defaults_are_the_full_head_and_wide_conditioners(name):
    """At D <= 512 the defaults build exactly the flow of ``affine="full"`` and (64, 64)
    conditioners, parameter by parameter (so fit_quality's results stand)."""
    explicit = {} if name == "AutoPlanarFlow" else {"hidden_dims": (64, 64)}
    torch.manual_seed(0)
    default = DEFAULT_GUIDES[name](_gaussian(40), mode_search=None).setup()
    torch.manual_seed(0)
    full = DEFAULT_GUIDES[name](_gaussian(40), mode_search=None, affine="full", **explicit).setup()
    assert default.head_kind == "full"
    mine, theirs = default.flow.state_dict(), full.flow.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[key], theirs[key]) for key in mine)


# ---------------------------------------------------------------------- plate flows
J = 6
Y = torch.tensor([0.3, -1.2, 2.0, 0.8, 1.5, -0.4])


def hierarchical(index=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    tau = pyro.sample("tau", dist.HalfNormal(1.0))
    with pyro.plate("groups", J, subsample=index) as rows:
        theta = pyro.sample("theta", dist.LogNormal(mu, tau).expand([2]).to_event(1))
        pyro.sample("y", dist.Normal(theta.log().sum(-1), 1.0), obs=Y[rows])


def _plate_guide(**options):
    return AutoIAF(
        hierarchical,
        num_flows=2,
        hidden_dims=(8,),
        local_plates=("groups",),
        create_plates=lambda index=None: pyro.plate("groups", J, subsample=index),
        **options,
    )


def _perturb(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator).to(p))


def test_plate_flow_log_q_is_exact_against_autograd_and_the_inverse(device, dtype, tol):
    """log q of the plate guide at an arbitrary point equals the change of variables
    computed by hand: the flow's density of the globals plus, per member, log N(u_j)
    minus log|det| of the autograd Jacobian of u_j -> x_j (u_j found by the inverse,
    which maps back to x_j), plus each constraint's log-Jacobian."""
    pyro.clear_param_store()
    guide = _plate_guide().setup().to(device=device, dtype=dtype)
    _perturb(guide.plate_flows["groups"])
    generator = torch.Generator().manual_seed(1)
    values = {
        "mu": torch.randn((), generator=generator).to(device, dtype),
        "tau": torch.rand((), generator=generator).to(device, dtype) + 0.2,
        "theta": torch.rand(J, 2, generator=generator).to(device, dtype) + 0.1,
    }
    latent = torch.stack([values["mu"], values["tau"].log()])
    expected = guide.flow.log_prob(latent) - values["tau"].log()  # log|d log(tau)/d tau|
    flow = guide.plate_flows["groups"]
    context = flow._context(flow.align(latent), None)
    x = values["theta"].log()
    transform = flow._transform(context, None)
    u = transform.inv(x)
    torch.testing.assert_close(transform(u), x, atol=tol, rtol=tol)
    for j in range(J):
        member = flow._transform(context[j], torch.tensor([j], device=device))
        jacobian = torch.autograd.functional.jacobian(lambda v, m=member: m(v[None])[0], u[j])
        base = dist.Normal(torch.zeros_like(u[j]), 1.0).log_prob(u[j]).sum()
        expected = expected + base - torch.linalg.slogdet(jacobian).logabsdet - x[j].sum()
    torch.testing.assert_close(guide.log_density(values), expected, atol=50 * tol, rtol=tol)


def test_plate_flow_trace_scores_its_draws_with_the_exact_log_q():
    """A guide trace's log q (the sampling pass) equals log_density of its own values (the inverse)."""
    pyro.clear_param_store()
    guide = _plate_guide().setup()
    _perturb(guide.plate_flows["groups"])
    trace = poutine.trace(guide).get_trace()
    trace.compute_log_prob()
    log_q = sum(site["log_prob_sum"] for site in trace.nodes.values() if site["type"] == "sample")
    values = {name: trace.nodes[name]["value"] for name in ("mu", "tau", "theta")}
    torch.testing.assert_close(log_q, guide.log_density(values), atol=1e-4, rtol=1e-5)


def test_minibatch_elbo_averages_to_the_full_data_elbo_under_the_same_draws():
    """With the globals' and every member's unconstrained draw fixed, the minibatch ELBO
    (members scaled by N/B) averaged over a partition of the members into minibatches is
    the full-data ELBO: the estimate is unbiased under uniform minibatches."""
    pyro.clear_param_store()
    guide = _plate_guide().setup()
    _perturb(guide.plate_flows["groups"])
    latent = guide.flow.draws(1, seed=3)[0]
    members = torch.randn(J, 2, generator=torch.Generator().manual_seed(4))
    latent_site, member_site = "_AutoIAF_latent", "_AutoIAF_groups_members"

    def elbo(index):
        data = {latent_site: latent, member_site: members[index]}
        guide_trace = poutine.trace(poutine.condition(guide, data=data)).get_trace(index)
        model_trace = poutine.trace(poutine.replay(hierarchical, trace=guide_trace)).get_trace(index)
        return model_trace.log_prob_sum() - guide_trace.log_prob_sum()

    full = elbo(torch.arange(J))
    blocks = [elbo(index) for index in torch.arange(J).reshape(3, 2)]
    torch.testing.assert_close(torch.stack(blocks).mean(), full, atol=1e-4, rtol=1e-6)
    assert not torch.allclose(blocks[0], blocks[1])  # the blocks differ: the test has teeth


def test_plate_flow_parameters_do_not_grow_with_the_groups_but_per_member_tables():
    """Doubling the groups adds exactly (2d + E) numbers per new member: the conditional
    flow's network is shared."""

    def model(groups):
        def fn():
            tau = pyro.sample("tau", dist.HalfNormal(1.0))
            with pyro.plate("groups", groups):
                pyro.sample("theta", dist.Normal(0.0, tau))

        return fn

    small = _count(AutoIAF(model(100), local_plates=("groups",)))
    large = _count(AutoIAF(model(200), local_plates=("groups",)))
    assert large - small == 100 * (2 * 1 + EMBEDDING_DIM)


def test_plate_guide_serves_predictive_summaries_and_a_subsampled_plate():
    pyro.clear_param_store()
    guide = _plate_guide().setup()
    assert guide.plate_sites == {"groups": ("theta",)}
    assert guide.median()["theta"].shape == (J, 2)
    assert guide.quantiles([0.1, 0.9])["theta"].shape == (2, J, 2)
    draws = pyro.infer.Predictive(hierarchical, guide=guide, num_samples=5)()
    assert draws["theta"].shape == (5, J, 2) and (draws["theta"] > 0).all()
    index = torch.tensor([1, 4])
    trace = poutine.trace(guide).get_trace(index)
    assert trace.nodes["theta"]["value"].shape == (2, 2)
    assert trace.nodes["_AutoIAF_groups_members"]["scale"] == J / 2


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (lambda: pyro.sample("a", dist.Normal(0.0, 1.0)), "plate 'groups' named in local_plates holds no"),
        (
            lambda: _two_plates(),
            "latent site 'theta' is inside plate 'groups' and also inside",
        ),
    ],
    ids=["no_member_site", "member_in_two_plates"],
)
def test_plate_guide_refuses_a_context_it_cannot_form(model, match):
    with pytest.raises(ValueError, match=match):
        AutoIAF(model, local_plates=("groups",)).setup()


def _two_plates():
    with pyro.plate("groups", 3), pyro.plate("k", 2, dim=-2):
        pyro.sample("theta", dist.Normal(0.0, 1.0))


def test_plate_guide_refuses_a_member_count_that_changes_between_calls():
    def model(groups):
        tau = pyro.sample("tau", dist.HalfNormal(1.0))
        with pyro.plate("groups", groups):
            pyro.sample("theta", dist.Normal(0.0, tau))

    guide = AutoIAF(model, local_plates=("groups",)).setup(5)
    guide(5)
    with pytest.raises(ValueError, match="latent site 'theta' changed shape"):
        guide(7)


def test_plate_guide_refuses_bad_options_by_name():
    with pytest.raises(TypeError, match="local_plates must be a sequence of plate names"):
        AutoIAF(hierarchical, local_plates="groups")
    with pytest.raises(ValueError, match="components=2 with local_plates"):
        AutoIAF(hierarchical, local_plates=("groups",), components=2)
    with pytest.raises(ValueError, match="warm_start='laplace'"):
        AutoIAF(hierarchical, local_plates=("groups",), warm_start="laplace").setup()


@pytest.mark.slow
def test_plate_flow_recovers_a_conjugate_hierarchical_posterior():
    """mu ~ N(0, 1), theta_j | mu ~ N(mu, 0.5), y_j ~ N(theta_j, 1): the posterior is
    Gaussian with known moments. The plate guide's means are within 0.1 posterior sd,
    its sds within 10%, and it captures the correlation of mu and each theta_j within
    0.1 (a mean-field guide has 0)."""
    groups = 10
    y = torch.linspace(-2.0, 3.0, groups)

    def model():
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("groups", groups):
            theta = pyro.sample("theta", dist.Normal(mu, 0.5))
            pyro.sample("y", dist.Normal(theta, 1.0), obs=y)

    precision = torch.zeros(groups + 1, groups + 1, dtype=torch.float64)
    precision[0, 0] = 1.0 + groups / 0.25
    precision[0, 1:] = precision[1:, 0] = -1 / 0.25
    precision[1:, 1:] = torch.eye(groups, dtype=torch.float64) * (1 / 0.25 + 1.0)
    cov = torch.linalg.inv(precision)
    mean = cov @ torch.cat([torch.zeros(1), y]).double()
    pyro.clear_param_store()
    torch.manual_seed(0)
    guide = AutoIAF(model, local_plates=("groups",))
    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True)
    svi = SVI(model, guide, guide.recommended_optim(3000), elbo)
    for _ in range(3000):
        svi.step()
    draws = guide.sample_posterior(20_000)
    joint = torch.cat([draws["mu"][:, None], draws["theta"]], -1).double()
    sd = cov.diagonal().sqrt()
    assert ((joint.mean(0) - mean).abs() / sd).max() < 0.1
    assert ((joint.std(0) / sd) - 1).abs().max() < 0.1
    corr = torch.corrcoef(joint.T)[0, 1:]
    exact = (cov / torch.outer(sd, sd))[0, 1:]
    assert (corr - exact).abs().max() < 0.1
