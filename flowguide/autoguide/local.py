r"""Per-datum factors for the latent sites inside subsampled plates.

A joint flow has a fixed dimension, so it cannot follow a minibatch: each step the
latents of a different set of data are drawn. :class:`LocalNormal` gives each datum of
such a site its own Gaussian in unconstrained space, as Pyro's
:class:`~pyro.infer.autoguide.AutoNormal` does. The parameters are stored at the
plate's full size and indexed by the minibatch the plate draws, so the guide is

.. math::
    q(z_g, z_{1:N}) = q_{\text{flow}}(z_g) \prod_{n=1}^{N}
    N\big(T^{-1}(z_n) \mid m_n, \operatorname{diag} s_n^2\big)\,
    \big|\det J_{T^{-1}}(z_n)\big|,

with :math:`T` the site's ``biject_to`` of its support. Log q of a minibatch is exact,
and with the plate's scale :math:`N/B` the minibatch ELBO is an unbiased estimate of
the full data's.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import attrgetter

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.transforms import biject_to
from pyro.distributions.util import sum_rightmost
from pyro.infer.autoguide.utils import deep_setattr
from pyro.nn import PyroModule, PyroParam
from pyro.ops.tensor_utils import periodic_repeat
from torch import Tensor

from flowguide.autoguide.sites import subsampled_plates

__all__ = ["LocalNormal"]


class _PathNormal(dist.Normal):
    """A normal whose ``log_prob`` holds its parameters fixed: draws still carry the
    gradient, so an ELBO over them sticks the landing (Roeder, Wu & Duvenaud, 2017)."""

    def log_prob(self, value: Tensor) -> Tensor:
        return dist.Normal(self.loc.detach(), self.scale.detach()).log_prob(value)


class LocalNormal(PyroModule):
    r"""Independent per-datum Gaussians, in unconstrained space, for local latent sites.

    Built by the flow autoguides for the latent sites inside subsampled plates (see
    :class:`~flowguide.autoguide.AutoFlow`'s ``subsampled_sites``); each site's
    location and scale have the site's full shape, and :meth:`sample`, called inside
    the site's plates, reads the minibatch's rows.

    Arguments:
        sites: Traced sample sites (from the guide's prototype trace, whose values are
            the ``init_loc_fn`` values) by name.
        init_scale: Initial scale of every factor in unconstrained space.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> def model():
        ...     with pyro.plate("data", 100, subsample_size=10):
        ...         pyro.sample("z", dist.LogNormal(0.0, 1.0))
        >>> trace = pyro.poutine.trace(model).get_trace()
        >>> local = LocalNormal({"z": trace.nodes["z"]}, init_scale=0.1)
        >>> local.quantiles(torch.tensor([0.5]))["z"].shape
        torch.Size([1, 100])
    """

    def __init__(self, sites: Mapping[str, dict], init_scale: float) -> None:
        super().__init__()
        self.locs = PyroModule()
        self.scales = PyroModule()
        self._supports = {name: site["fn"].support for name, site in sites.items()}
        self._event_dims: dict[str, tuple[int, int]] = {}  # (unconstrained, constrained)
        for name, site in sites.items():
            init = biject_to(site["fn"].support).inv(site["value"].detach()).detach()
            event_dim = site["fn"].event_dim + init.dim() - site["value"].dim()
            self._event_dims[name] = (event_dim, site["fn"].event_dim)
            for frame in subsampled_plates(site):
                init = periodic_repeat(init, frame.full_size, frame.dim - event_dim).contiguous()
            deep_setattr(self.locs, name, PyroParam(init, constraints.real, event_dim))
            scale = torch.full_like(init, init_scale)
            deep_setattr(self.scales, name, PyroParam(scale, constraints.softplus_positive, event_dim))

    def _loc_scale(self, name: str) -> tuple[Tensor, Tensor]:
        return attrgetter(name)(self.locs), attrgetter(name)(self.scales)

    def sample(self, name: str, stl: bool = False) -> Tensor:
        """Sample site ``name`` for the current minibatch; call it inside the site's plates.

        Records the unconstrained draw as an auxiliary site and the constrained value as
        a ``Delta`` carrying the constraint's log-Jacobian, as Pyro's ``AutoNormal`` does.
        With ``stl`` the auxiliary site's log-density holds the parameters fixed (same
        values, path-only gradients), as the flow's sites do under ``stl``.
        """
        loc, scale = self._loc_scale(name)  # read inside the plates: the minibatch's rows
        transform = biject_to(self._supports[name])
        latent_event_dim, event_dim = self._event_dims[name]
        base = (_PathNormal if stl else dist.Normal)(loc, scale).to_event(latent_event_dim)
        unconstrained = pyro.sample(f"{name}_unconstrained", base, infer={"is_auxiliary": True})
        value = transform(unconstrained)
        log_density = 0.0
        if poutine.get_mask() is not False:
            ladj = transform.inv.log_abs_det_jacobian(value, unconstrained)
            log_density = sum_rightmost(ladj, ladj.dim() - value.dim() + event_dim)
        return pyro.sample(name, dist.Delta(value, log_density=log_density, event_dim=event_dim))

    @torch.no_grad()
    def quantiles(self, quantiles: Tensor) -> dict[str, Tensor]:
        """Exact marginal quantiles of every datum, ``(Q, *full_shape)`` per site."""
        result = {}
        for name, support in self._supports.items():
            loc, scale = self._loc_scale(name)
            qs = quantiles.to(loc).reshape((-1,) + (1,) * loc.dim())
            result[name] = biject_to(support)(dist.Normal(loc, scale).icdf(qs))
        return result

    @torch.no_grad()
    def sample_full(self, num_samples: int) -> dict[str, Tensor]:
        """``num_samples`` draws of every datum, ``(num_samples, *full_shape)`` per site."""
        result = {}
        for name, support in self._supports.items():
            loc, scale = self._loc_scale(name)
            result[name] = biject_to(support)(dist.Normal(loc, scale).sample((num_samples,)))
        return result

    def log_density(self, name: str, value: Tensor, batch_dim: int) -> Tensor:
        """Log q of full-size ``value`` of site ``name``, summed over all but its leading
        ``batch_dim`` dimensions."""
        loc, scale = self._loc_scale(name)
        transform = biject_to(self._supports[name])
        unconstrained = transform.inv(value)
        log_q = dist.Normal(loc, scale).log_prob(unconstrained)
        ladj = transform.inv.log_abs_det_jacobian(value, unconstrained)
        return sum_rightmost(log_q, log_q.dim() - batch_dim) + sum_rightmost(ladj, ladj.dim() - batch_dim)
