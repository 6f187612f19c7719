r"""The Laplace start of a flow autoguide, as plain functions.

The start of the guide's affine head is a Gaussian :math:`N(\mu, S S^\top)` in the
unconstrained space of the flow's sites. The cold start is the ``init_loc_fn`` point with
``init_scale``; the Laplace start is the MAP :math:`\hat z` of the log joint (L-BFGS) with
:math:`S` the Cholesky factor of the inverse Hessian there,

.. math::
    \hat z = \arg\max_z \log p(x, z), \qquad
    S S^\top = \big(-\nabla^2 \log p(x, z)\big|_{\hat z}\big)^{-1},

where the log joint includes each constraint's log-Jacobian. :func:`choose_start`
returns the start to use and, where the Laplace start was not taken, why.

References:
    L. Tierney, J. B. Kadane. Accurate Approximations for Posterior Moments and Marginal
    Densities. JASA 81 (1986).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pyro.poutine as poutine
import torch
from pyro.distributions.transforms import biject_to
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from flowguide.autoguide.sites import SitePlan

__all__ = [
    "NoJointDensity",
    "REJECTED_BY_ELBO",
    "Start",
    "WarmStart",
    "choose_start",
    "conditional_scale",
    "gaussian_elbo",
    "inverse_cholesky",
    "laplace_approximation",
    "laplace_map",
    "log_joint",
]

#: How a flow autoguide starts: the Laplace fit (warning where it falls back), the Laplace
#: fit where its ELBO beats the cold start's (``"auto"``), or the cold start (``None``).
WarmStart = Literal["laplace", "auto"] | None

LogJoint = Callable[[Tensor], Tensor]

#: How :func:`choose_start` begins its reason where the Laplace fit exists but its ELBO lost
#: to the cold start's (rather than there being no Laplace fit).
REJECTED_BY_ELBO = "the Laplace start's ELBO"


class NoJointDensity(ValueError):
    """The model samples sites the guide does not cover (enumerated ones): no log joint."""


@dataclass(frozen=True)
class Start:
    r"""A Gaussian start :math:`N(\text{loc}, S S^\top)` of the affine head.

    Attributes:
        loc: Location, shape ``(D,)``.
        scale_tril: Lower-triangular :math:`S`, shape ``(D, D)``.
        laplace: Whether it is the Laplace approximation (else the cold start).
    """

    loc: Tensor
    scale_tril: Tensor
    laplace: bool = False

    @property
    def loc_unit(self) -> Tensor | None:
        """The unit the head stores its location in: each coordinate's conditional
        standard deviation after a Laplace start (:func:`conditional_scale`), else ``None``."""
        return conditional_scale(self.scale_tril) if self.laplace else None


def log_joint(model: Callable, plan: SitePlan, latent: Tensor, args: tuple, kwargs: dict) -> Tensor:
    r"""The model's log joint at an unconstrained vector of the flow's sites, with each
    constraint's log-Jacobian; raises :class:`NoJointDensity` where the model would sample
    a site that is not one of them."""
    values, log_jacobian = {}, 0.0
    pos = 0
    for name, site in plan.flow_sites():
        shape = plan.unconstrained_shapes[name]
        unconstrained = latent[pos : pos + shape.numel()].reshape(shape)
        pos += shape.numel()
        transform = biject_to(site["fn"].support)
        values[name] = value = transform(unconstrained)
        log_jacobian = log_jacobian + transform.log_abs_det_jacobian(unconstrained, value).sum()
    conditioned = poutine.condition(model, values)
    trace = poutine.block(poutine.trace(conditioned).get_trace)(*args, **kwargs)
    for name, site in trace.iter_stochastic_nodes():
        if name not in values and not site_is_subsample(site):  # it would be sampled: a noisy MAP
            raise NoJointDensity(
                f"{plan.owner}: warm_start='laplace' needs a density over the guide's latents "
                f"only; site '{name}' is not one of them (an enumerated site?)"
            )
    return trace.log_prob_sum() + log_jacobian


def laplace_map(
    log_p: LogJoint, init: Tensor, max_iter: int = 1000, tolerance_grad: float = 1e-7
) -> Tensor | None:
    """Maximize ``log_p`` over a vector by L-BFGS from ``init``; ``None`` if it diverges or
    the model rejects a point on the way (as for an unbounded density). ``max_iter`` and
    ``tolerance_grad`` are L-BFGS's (a coarse search takes fewer and looser).

    Only the vector is differentiated: parameters the model reads are left untouched.

    Example:
        >>> import torch
        >>> laplace_map(lambda x: -((x - 2.0) ** 2).sum(), torch.zeros(3))
        tensor([2., 2., 2.])
    """
    x = init.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [x], max_iter=max_iter, tolerance_grad=tolerance_grad, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        loss = -log_p(x)
        (x.grad,) = torch.autograd.grad(loss, [x])
        return loss.detach()

    try:
        loss = optimizer.step(closure)
        finite = torch.isfinite(x).all() and torch.isfinite(-log_p(x.detach())).all()
    except (ValueError, RuntimeError):  # the model rejected a point, or the line search overflowed
        return None
    return x.detach() if finite and torch.isfinite(loss) else None


def gaussian_elbo(log_p: LogJoint, start: Start, num_draws: int = 64) -> float:
    r"""ELBO of :math:`N(\mu, SS^\top)` by Monte Carlo over antithetic draws of a fixed seed
    (so two candidates are compared on common random numbers) plus the exact entropy.
    ``-inf`` where the model rejects a draw or scores it non-finite."""
    loc, scale_tril = start.loc, start.scale_tril
    generator = torch.Generator().manual_seed(0)
    eps = torch.randn(num_draws // 2, loc.numel(), generator=generator).to(loc)
    entropy = scale_tril.diagonal().log().sum() + 0.5 * loc.numel() * (1 + math.log(2 * math.pi))
    try:
        with torch.no_grad():
            energy = torch.stack([log_p(loc + scale_tril @ e) for e in torch.cat([eps, -eps])])
    except ValueError:  # a distribution rejected a parameter: the draw is outside the support
        return -math.inf
    value = float(energy.mean() + entropy)
    return value if math.isfinite(value) else -math.inf


def inverse_cholesky(precision: Tensor) -> Tensor | None:
    """Cholesky factor of ``precision``'s inverse, or ``None`` if it is not positive definite.

    Example:
        >>> import torch
        >>> inverse_cholesky(torch.tensor([[4.0, 0.0], [0.0, 0.25]])).diagonal()
        tensor([0.5000, 2.0000])
    """
    root, info = torch.linalg.cholesky_ex(precision)
    if info or not torch.isfinite(root).all() or not (root.diagonal() > 0).all():
        return None
    scale_tril, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(root))
    return None if info or not torch.isfinite(scale_tril).all() else scale_tril


def conditional_scale(scale_tril: Tensor) -> Tensor:
    r"""Each coordinate's standard deviation given all the others, :math:`1 / \sqrt{(\Sigma^{-1})_{ii}}`,
    for :math:`\Sigma = S S^\top` with ``scale_tril`` :math:`S`."""
    eye = torch.eye(scale_tril.shape[-1], dtype=scale_tril.dtype, device=scale_tril.device)
    return torch.linalg.solve_triangular(scale_tril, eye, upper=False).square().sum(0).rsqrt()


def laplace_approximation(log_p: LogJoint, init: Tensor, diagonal: bool = False) -> Start | str:
    """The Laplace start (MAP and Cholesky factor of the inverse Hessian there; its
    diagonal only with ``diagonal``), or why there is none."""
    log_p(init)  # refuses models it cannot serve before the search hides why
    latent = laplace_map(log_p, init)
    if latent is None:
        return "it found no finite MAP (an unbounded density?)"
    hessian = torch.autograd.functional.hessian(lambda x: -log_p(x), latent)
    scale_tril = inverse_cholesky(hessian)
    if scale_tril is None:
        return (
            "the Hessian of the negative log joint at the MAP is not positive definite "
            "(a flat or improper direction)"
        )
    if diagonal:
        scale_tril = torch.diag(hessian.diagonal().rsqrt())
    return Start(latent, scale_tril, laplace=True)


def choose_start(
    log_p: LogJoint, cold: Start, mode: Literal["laplace", "auto"], diagonal: bool = False
) -> tuple[Start, str | None]:
    """The start to use and, where it is the cold one, why the Laplace start was not.

    ``"laplace"`` takes the Laplace start wherever there is one, and raises
    :class:`NoJointDensity` for a model without a joint density over the flow's sites.
    ``"auto"`` takes it only where its ELBO (:func:`gaussian_elbo`) is at least the cold
    start's, so that a sharp spurious mode cannot capture the guide.
    """
    try:
        with warnings.catch_warnings():  # a diverging search visits NaN points: expected, and handled
            warnings.filterwarnings("ignore", message="Encountered NaN")
            laplace = laplace_approximation(log_p, cold.loc, diagonal)
    except NoJointDensity as error:
        if mode == "laplace":
            raise
        laplace = str(error)
    if isinstance(laplace, Start) and mode == "auto":
        cold_elbo, warm_elbo = gaussian_elbo(log_p, cold), gaussian_elbo(log_p, laplace)
        if not warm_elbo >= cold_elbo:
            laplace = f"{REJECTED_BY_ELBO} ({warm_elbo:.4g}) is below the cold start's ({cold_elbo:.4g})"
    if isinstance(laplace, str):
        return cold, laplace
    return laplace, None
