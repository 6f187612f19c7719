r"""Posterior summaries of a flow autoguide: draws, quantiles, medians, moments and log q.

Summaries come from draws of the flow, pushed through each site's constraint; the draws
for :meth:`~PosteriorSummaries.quantiles`, :meth:`~PosteriorSummaries.median` and the
moments are antithetic (each base draw :math:`u` with :math:`-u`) from a fixed seed, so
repeated calls agree and a symmetric posterior's median is exact. The per-datum factors
of local sites contribute exact summaries at their plates' full size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["MEMBER_SUMMARY_VALUES", "PosteriorSummaries"]

#: Most draws times members that the summaries of plate flows hold at once.
MEMBER_SUMMARY_VALUES = 2**24


class PosteriorSummaries:
    """Mixin of the summaries for a flow autoguide.

    The guide supplies ``setup(*args, **kwargs)``, ``prototype_trace``, ``latent_dim``,
    ``num_summary_samples``, ``plan`` (a :class:`~flowguide.autoguide.sites.SitePlan`),
    ``flow`` (a :class:`~flowguide.autoguide.head.HeadedFlow`, or a
    :class:`~flowguide.autoguide.mixture.FlowMixture` of them), ``local_guide`` and the
    plate flows' ``plate_flows``, ``_member_draws`` and ``_member_log_density``
    (:class:`~flowguide.autoguide.plate_flow.PlateFlowGuide`).
    """

    def _require_setup(self) -> None:
        if self.prototype_trace is None:
            raise RuntimeError(f"{type(self).__name__} has no parameters yet: call guide.setup(*args) first")

    @torch.no_grad()
    def sample_posterior(self, num_samples: int, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Draw ``num_samples`` joint posterior samples of every site (constrained).

        Returns:
            Dict from site name to a tensor of shape ``(num_samples, *site_shape)``;
            :attr:`local_sites` at their plates' full size.
        """
        self.setup(*args, **kwargs)
        result, latent = {}, None
        if self.latent_dim:
            latent = self.flow.draws(num_samples)
            result = self.plan.constrain(latent)
        if self.local_guide is not None:
            result.update(self.local_guide.sample_full(num_samples))
        result.update(self._member_draws(latent, num_samples))
        return result

    @torch.no_grad()
    def quantiles(self, quantiles: Sequence[float] | Tensor, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Marginal posterior quantiles of each site, by Monte Carlo.

        Quantiles of each unconstrained coordinate are estimated from
        ``num_summary_samples`` antithetic draws (each base draw :math:`u` with
        :math:`-u`, fixed seed: repeated calls agree) and pushed through the site's
        constraint, so for elementwise monotone constraints they are the constrained
        marginal quantiles, and for others (simplex, ordered, ...) valid points of the
        support, as in :class:`~pyro.infer.autoguide.AutoNormal`. Where the posterior
        is symmetric, as a Gaussian guide or a flow at initialization is, the median is
        exact. :attr:`local_sites` have exact quantiles, at their plates' full size.

        Returns:
            Dict from site name to a tensor of shape ``(len(quantiles), *site_shape)``.
        """
        self.setup(*args, **kwargs)
        qs = torch.as_tensor(quantiles, dtype=torch.float64)
        if qs.dim() != 1 or not ((qs >= 0) & (qs <= 1)).all():
            raise ValueError(f"quantiles must be a 1-D sequence of numbers in [0, 1], got {quantiles!r}")
        result, latent = {}, None
        if self.latent_dim:
            latent = self.flow.draws(self.num_summary_samples, seed=0, antithetic=True)
            result = self.plan.constrain(torch.quantile(latent, qs.to(latent), dim=0))  # (Q, D)
        if self.local_guide is not None:
            result.update(self.local_guide.quantiles(qs))
        if self.plate_flows is not None:
            result.update(self._member_quantiles(qs))
        return result

    def _member_quantiles(self, qs: Tensor) -> dict[str, Tensor]:
        """Quantiles of the plate flows' sites from joint antithetic draws; at most
        :data:`MEMBER_SUMMARY_VALUES` values are held, so a plate of :math:`10^5` members
        gets fewer draws than ``num_summary_samples`` (at least 256)."""
        members = sum(flow.size * flow.member_dim for flow in self.plate_flows.values())
        count = min(self.num_summary_samples, max(256, MEMBER_SUMMARY_VALUES // members))
        latent = self.flow.draws(count, seed=0, antithetic=True) if self.latent_dim else None
        draws = self._member_draws(latent, count, antithetic=True, seed=1)
        return {name: torch.quantile(value, qs.to(value), dim=0) for name, value in draws.items()}

    @torch.no_grad()
    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        r"""Posterior mean and standard deviation of the packed unconstrained latent.

        Pyro's Gaussian :class:`~pyro.infer.autoguide.AutoContinuous` guides return their
        location and scale parameters here; for a flow these are the moments of its
        draws (the same antithetic draws as :meth:`quantiles`, see
        :meth:`~flowguide.autoguide.head.AffineHead.moments`).

        Returns:
            ``(loc, scale)``, each of shape ``(latent_dim,)`` (the flow's sites; empty
            where every latent site is local).
        """
        self.setup(*args, **kwargs)
        if not self.latent_dim:
            local = None if self.local_guide is None else next(self.local_guide.parameters())
            empty = torch.zeros(0) if local is None else local.new_zeros(0)
            return empty, empty
        return self.flow.moments(self.num_summary_samples, seed=0)

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Marginal posterior medians of each site (Monte Carlo, see :meth:`quantiles`)."""
        return {name: value[0] for name, value in self.quantiles([0.5], *args, **kwargs).items()}

    def log_density(self, values: dict[str, Tensor], *args: Any, **kwargs: Any) -> Tensor:
        r"""Exact :math:`\log q(z)` of constrained site values, at any point.

        Each value is mapped to unconstrained space, the packed vector is scored by the
        flow (through its inverse) and the log-Jacobian of each constraint is added.

        Arguments:
            values: Dict from every latent site name to its value, with optional
                leading batch dimensions shared by all sites; :attr:`local_sites` at
                their plates' full size (the density of every datum's latents).
            *args: The model's positional arguments (used to set the guide up).
            **kwargs: The model's keyword arguments.

        Returns:
            The log-density, with the shared batch shape.
        """
        self.setup(*args, **kwargs)
        batch = self.plan.value_batch(values)
        latent, log_q = self.plan.unconstrain(values, batch)
        if latent is not None:
            log_q = log_q + self.flow.log_prob(latent)
        for name in self.plan.local:
            log_q = log_q + self.local_guide.log_density(name, values[name], len(batch))
        log_q = log_q + self._member_log_density(values, latent, len(batch))
        return torch.as_tensor(log_q)  # 0 for a model without latent sites
