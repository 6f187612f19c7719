"""200 random bad inputs: each gets a ValueError or TypeError naming the site or option, or
trains to the right answer. None gives a silent wrong answer or hangs."""

from __future__ import annotations

import math
import random
import signal
from collections import Counter

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from flowguide import AutoAffineCoupling, AutoIAF, AutoNeuralSpline, AutoPlanarFlow

FAMILIES = [AutoPlanarFlow, AutoIAF, AutoNeuralSpline, AutoAffineCoupling]
SMALL = {AutoPlanarFlow: {"num_flows": 2}}
PRIOR_SCALE, NOISE = 3.0, 1.0


def small(family, **options):
    return lambda model: family(
        model, **{**SMALL.get(family, {"num_flows": 1, "hidden_dims": (8,)}), **options}
    )


def normal_mean(x):
    """The conjugate normal mean: exact posterior N(m, v) (:func:`exact_mean`)."""
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(mu, NOISE), obs=x)


def exact_mean(x: torch.Tensor) -> tuple[float, float]:
    precision = 1 / PRIOR_SCALE**2 + len(x) / NOISE**2
    return float(x.double().sum()) / NOISE**2 / precision, precision**-0.5


def grouped(x):
    """A latent per datum in an unsubsampled plate: its shape follows the data."""
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("groups", len(x)):
        theta = pyro.sample("theta", dist.Normal(0.0, scale))
        pyro.sample("obs", dist.Normal(theta, 1.0), obs=x)


def local(x, size):
    """A local latent in a plate subsampled to ``size`` rows."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("rows", len(x), subsample_size=size) as index:
        z = pyro.sample("z_local", dist.Normal(mu, 1.0))
        pyro.sample("obs", dist.Normal(z, 1.0), obs=x[index])


def discrete(x):
    k = pyro.sample("k_switch", dist.Bernoulli(0.5))
    pyro.sample("obs", dist.Normal(k, 1.0).expand([len(x)]).to_event(1), obs=x)


def empty(x):
    return x.sum()


def steps(guide, model, *args, count: int = 3) -> list[float]:
    svi = SVI(model, guide, Adam({"lr": 1e-3}), Trace_ELBO())
    return [svi.step(*args) for _ in range(count)]


def case_wrong_shape(rng, family):
    n = rng.randint(2, 9)
    guide = small(family)(grouped)
    steps(guide, grouped, torch.randn(n))
    with pytest.raises(ValueError, match="latent site 'theta' changed shape"):
        steps(guide, grouped, torch.randn(n + rng.randint(1, 5)))
    return "refused"


def case_nan_data(rng, family):
    x = torch.randn(rng.randint(3, 12))
    x[rng.randrange(len(x))] = math.nan
    with pytest.raises(ValueError, match="site 'obs'"):
        steps(small(family)(normal_mean), normal_mean, x)
    return "refused"


def case_dtype(rng, family):
    """Integer or double data: trains, and the Laplace start finds the exact mean. Boolean
    data, which a normal likelihood cannot score: refused, naming the site."""
    base = torch.randn(rng.randint(3, 12)) * 2 + 1
    x = rng.choice([base.round().long(), base.double(), base > 0])
    guide = small(family)(normal_mean)
    if x.dtype == torch.bool:
        with pytest.raises(TypeError, match=r"observed site 'obs' holds a torch\.bool value"):
            steps(guide, normal_mean, x)
        return "refused"
    losses = steps(guide, normal_mean, x)
    assert all(math.isfinite(loss) for loss in losses)
    mean, sd = exact_mean(x.double())
    assert abs(float(guide.median(x)["mu"]) - mean) < 0.2 * sd
    return "trained"


def case_plate_sizes(rng, family):
    x = torch.randn(rng.randint(10, 30))
    guide = small(family)(local)
    steps(guide, local, x, 5)
    with pytest.raises(ValueError, match="subsample_size does not match"):  # the guide's plate draws 5
        steps(guide, local, x, rng.randint(6, len(x)))
    with pytest.raises(ValueError, match="latent site 'z_local' changed shape"):
        steps(guide, local, torch.randn(len(x) + rng.randint(1, 5)), 5)  # another plate size: refused
    return "refused"


def case_discrete(rng, family):
    with pytest.raises(ValueError, match="discrete latent site 'k_switch'"):
        steps(small(family)(discrete), discrete, torch.randn(rng.randint(1, 6)))
    return "refused"


def case_empty(rng, family):
    with pytest.raises(ValueError, match="found no sample or param site"):
        steps(small(family)(empty), empty, torch.randn(3))
    return "refused"


BAD_OPTIONS = [
    ({"num_flows": 0}, ValueError, "num_flows"),
    ({"num_flows": -2}, ValueError, "num_flows"),
    ({"init_scale": -0.5}, ValueError, "init_scale"),
    ({"init_scale": 0.0}, ValueError, "init_scale"),
    ({"affine": "banded"}, ValueError, "affine"),
    ({"head_rank": 0}, ValueError, "head_rank"),
    ({"local_plates": "groups"}, TypeError, "local_plates"),
    ({"warm_start": "map"}, ValueError, "warm_start"),
    ({"stl": "yes"}, TypeError, "stl"),
    ({"subsampled_sites": "share"}, ValueError, "subsampled_sites"),
    ({"num_summary_samples": 1}, ValueError, "num_summary_samples"),
    ({"create_plates": "rows"}, TypeError, "create_plates"),
    ({"recipe": {"particles": 2}}, TypeError, "recipe"),
]


def case_bad_option(rng, family):
    option, error, name = rng.choice(BAD_OPTIONS)
    with pytest.raises(error, match=name):
        family(normal_mean, **option)
    return "refused"


CASES = [
    case_wrong_shape,
    case_nan_data,
    case_dtype,
    case_plate_sizes,
    case_discrete,
    case_empty,
    case_bad_option,
]


def _timeout(signum, frame):
    raise TimeoutError("a fuzz case hung")


def test_two_hundred_random_bad_inputs_are_refused_by_name_or_trained_right():
    rng = random.Random(0)
    outcomes: Counter = Counter()
    previous = signal.signal(signal.SIGALRM, _timeout)
    try:
        for index in range(200):
            case, family = rng.choice(CASES), rng.choice(FAMILIES)
            pyro.clear_param_store()
            torch.manual_seed(index)
            signal.alarm(60)
            try:
                outcomes[case(rng, family)] += 1
            except BaseException as error:
                raise AssertionError(f"case {index}: {case.__name__} with {family.__name__}") from error
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    print(f"\nfuzzed 200 cases: {dict(outcomes)}")
    assert sum(outcomes.values()) == 200 and outcomes["refused"] > 100 and outcomes["trained"] > 10
