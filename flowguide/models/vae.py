r"""The flow VAE: amortized flow posteriors :math:`q(z \mid x)`, flow decoders
:math:`p(x \mid z)` and an optional flow prior, as an ordinary Pyro model/guide pair.

Both the posterior and the continuous decoders are a :class:`ConditionalDensity`: a
network maps the conditioning input to features :math:`h`, a linear layer turns
:math:`h` into a diagonal Gaussian, and a conditional flow fed :math:`h` at every layer
pushes that Gaussian forward. Its log-density stays exact,
:math:`\log q(z \mid x) = \log N(u; \mu(x), \sigma(x)) - \log|\det \partial z / \partial u|`.
With ``family="planar"`` each planar layer's parameters are produced from :math:`h` per
data point (Rezende & Mohamed's amortized planar flow); IAF, spline and affine coupling
layers take :math:`h` as the context of their conditioners (Kingma et al., 2016).

:class:`AmortizedLocalGuide` is the posterior as a guide for the local latents of any
Pyro model whose data live in a (subsampled) plate; combine it with a flow autoguide over
the global latents (blocked to them) in a guide function that calls both.

References:
    Variational Inference with Normalizing Flows (Rezende and Mohamed, 2015), arXiv:1505.05770.
    Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016),
    arXiv:1606.04934.
    Importance Weighted Autoencoders (Burda, Grosse and Salakhutdinov, 2016), arXiv:1509.00519.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowguide.flows import FlowDistribution, affine_coupling_flow, iaf, neural_spline_flow, planar_flow
from flowguide.transforms import AffineTransform, ComposeFlowTransform

__all__ = ["FAMILIES", "DECODERS", "ConditionalDensity", "AmortizedLocalGuide", "FlowVAE"]

#: Posterior (and continuous decoder) families.
FAMILIES: dict[str, Callable | None] = {
    "gaussian": None,
    "planar": planar_flow,
    "iaf": iaf,
    "nsf": neural_spline_flow,
    "affine_coupling": affine_coupling_flow,
}
#: Decoders of :class:`FlowVAE`.
DECODERS = ("bernoulli", "gaussian", "flow")


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ELU()]
    return nn.Sequential(*layers)


class ConditionalDensity(nn.Module):
    r"""A diagonal Gaussian set by features of the input, pushed through a flow conditioned
    on the same features.

    Arguments:
        features: Network from the conditioning input to features of size ``feature_dim``.
        feature_dim: Size of the features.
        event_dim: Size of the variable the density is over.
        family: One of :data:`FAMILIES` (``"gaussian"``: no flow).
        num_flows: Flow layers.
        hidden_dims: Hidden widths of the flow's conditioners.
        standardized: Where the flow acts. ``False``: on the Gaussian's draw,
            :math:`z = f(\mu + \sigma \odot u; h)` (the order of Rezende & Mohamed and of
            Kingma et al.'s IAF). ``True``: on the standard noise, with the Gaussian's
            affine map last, :math:`z = \mu + \sigma \odot f(u; h)`, so the flow sees
            inputs of unit scale whatever the posterior's width (what a spline, whose
            bins cover a fixed interval, needs to act at the posterior's scale).

    Example:
        >>> density = ConditionalDensity(nn.Linear(5, 8), 8, 3, family="iaf", num_flows=2)
        >>> q = density(torch.randn(4, 5))
        >>> q.batch_shape, q.event_shape
        (torch.Size([4]), torch.Size([3]))
    """

    def __init__(
        self,
        features: nn.Module,
        feature_dim: int,
        event_dim: int,
        family: str = "gaussian",
        num_flows: int = 4,
        hidden_dims: Sequence[int] = (64,),
        standardized: bool = True,
    ) -> None:
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; choose from {sorted(FAMILIES)}")
        if not isinstance(standardized, bool):
            raise TypeError(f"standardized must be True or False, got {standardized!r}")
        self.features, self.family, self.standardized = features, family, standardized
        self.gaussian = nn.Linear(feature_dim, 2 * event_dim)
        build = FAMILIES[family]
        self.flow = (
            None
            if build is None
            else build(event_dim, num_flows, tuple(hidden_dims), context_dim=feature_dim)
        )

    def forward(self, inputs: Tensor) -> dist.TorchDistribution:
        return self.from_features(self.features(inputs))

    def from_features(self, h: Tensor) -> dist.TorchDistribution:
        """The density for features ``h`` given directly (e.g. refined per row, see
        :meth:`FlowVAE.refine_features`).

        Example:
            >>> density = ConditionalDensity(nn.Linear(5, 8), 8, 3, family="iaf", num_flows=2)
            >>> x = torch.randn(4, 5)
            >>> z = density(x).sample()
            >>> torch.allclose(density.from_features(density.features(x)).log_prob(z), density(x).log_prob(z))
            True
        """
        loc, raw_scale = self.gaussian(h).chunk(2, -1)
        scale = F.softplus(raw_scale) + 1e-3
        if self.flow is None:
            return dist.Normal(loc, scale).to_event(1)
        if not self.standardized:
            return FlowDistribution(dist.Normal(loc, scale).to_event(1), self.flow.transform(h))
        noise = dist.Normal(torch.zeros_like(loc), torch.ones_like(loc)).to_event(1)
        gaussian = AffineTransform(loc, scale.log(), event_dim=1)
        return FlowDistribution(noise, ComposeFlowTransform([self.flow.transform(h), gaussian]))


class AmortizedLocalGuide(nn.Module):
    """Guide for a model's local latent ``site`` inside the plate ``plate``: an amortized
    :class:`ConditionalDensity` of that plate's data slice.

    Arguments:
        site: Name of the local latent sample site.
        plate: Name of the plate it lives in (the model's plate).
        posterior: The amortized density ``q(z | x_i)``.
        data: Picks the plate's data slice from the model's arguments.
        plate_kwargs: Gives the plate's ``size``/``subsample`` from the model's arguments;
            default: a full plate over the slice's rows.

    Example:
        >>> import pyro.distributions as dist
        >>> def model(y):
        ...     with pyro.plate("groups", len(y)):
        ...         theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        ...         pyro.sample("y", dist.Normal(theta.unsqueeze(-1), 1.0).to_event(1), obs=y)
        >>> q = ConditionalDensity(nn.Linear(3, 8), 8, 1)
        >>> guide = AmortizedLocalGuide("theta", "groups", q, data=lambda y: y, event_squeeze=True)
        >>> guide(torch.randn(5, 3))["theta"].shape
        torch.Size([5])
    """

    def __init__(
        self,
        site: str,
        plate: str,
        posterior: ConditionalDensity,
        data: Callable[..., Tensor],
        plate_kwargs: Callable[..., dict] | None = None,
        event_squeeze: bool = False,
    ) -> None:
        super().__init__()
        self.site, self.plate, self.posterior = site, plate, posterior
        self.data, self.plate_kwargs, self.event_squeeze = data, plate_kwargs, event_squeeze

    def forward(self, *args, **kwargs) -> dict[str, Tensor]:
        pyro.module(f"amortized_{self.site}", self)
        x = self.data(*args, **kwargs)
        options = self.plate_kwargs(*args, **kwargs) if self.plate_kwargs else {"size": x.shape[0]}
        q = self.posterior(x)
        if self.event_squeeze:  # a scalar local latent: the density's one-element event
            q = dist.TransformedDistribution(q, [dist.transforms.ReshapeTransform((1,), ())])
        with pyro.plate(self.plate, **options):
            return {self.site: pyro.sample(self.site, q)}


class FlowVAE(nn.Module):
    """Variational autoencoder with flow posterior, optional flow decoder and flow prior.

    Arguments:
        data_dim: Pixels per image.
        latent_dim: Size of ``z``.
        hidden_dim: Width of the encoder's and decoder's two hidden layers.
        posterior: Posterior family, one of :data:`FAMILIES`.
        num_flows: Layers of the posterior flow.
        decoder: ``"bernoulli"`` (binarized pixels), ``"gaussian"`` or ``"flow"`` (a
            conditional affine coupling flow over dequantized logit pixels).
        decoder_flows: Layers of the flow decoder.
        prior: ``"normal"`` or ``"flow"`` (a learnable affine coupling flow).
        flow_hidden: Hidden widths of every flow conditioner.
        standardized: Whether the posterior flow acts on standard noise before the
            Gaussian's affine map (see :class:`ConditionalDensity`).

    Example:
        >>> vae = FlowVAE(data_dim=64, latent_dim=4, hidden_dim=32, posterior="planar")
        >>> x = torch.bernoulli(torch.full((10, 64), 0.3))
        >>> vae.log_weights(x, num_samples=20).shape
        torch.Size([20, 10])
        >>> sorted(vae.evaluate(x, num_samples=20))
        ['elbo', 'iwae']
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 16,
        hidden_dim: int = 256,
        posterior: str = "gaussian",
        num_flows: int = 4,
        decoder: str = "bernoulli",
        decoder_flows: int = 4,
        prior: str = "normal",
        flow_hidden: Sequence[int] = (64,),
        standardized: bool = True,
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; choose from {DECODERS}")
        if prior not in ("normal", "flow"):
            raise ValueError(f"unknown prior {prior!r}; choose 'normal' or 'flow'")
        self.data_dim, self.latent_dim, self.decoder_kind = data_dim, latent_dim, decoder
        encoder = _mlp([data_dim, hidden_dim, hidden_dim])
        self.q = ConditionalDensity(
            encoder, hidden_dim, latent_dim, posterior, num_flows, flow_hidden, standardized
        )
        decoder_net = _mlp([latent_dim, hidden_dim, hidden_dim])
        if decoder == "bernoulli":
            self.p_x = nn.Sequential(decoder_net, nn.Linear(hidden_dim, data_dim))
        else:
            family = "gaussian" if decoder == "gaussian" else "affine_coupling"
            # the decoder's flow acts after its Gaussian (``standardized=False``)
            self.p_x = ConditionalDensity(
                decoder_net, hidden_dim, data_dim, family, decoder_flows, flow_hidden, standardized=False
            )
        self.prior_flow = affine_coupling_flow(latent_dim, 4, tuple(flow_hidden)) if prior == "flow" else None
        self.register_buffer("zero", torch.zeros(latent_dim))

    # ---------------------------------------------------------------- distributions
    def prior(self) -> dist.TorchDistribution:
        """p(z)."""
        if self.prior_flow is not None:
            return self.prior_flow()
        return dist.Normal(self.zero, torch.ones_like(self.zero)).to_event(1)

    def likelihood(self, z: Tensor) -> dist.TorchDistribution:
        """p(x | z), batched over the leading dimensions of ``z``."""
        if self.decoder_kind == "bernoulli":
            return dist.Bernoulli(logits=self.p_x(z)).to_event(1)
        return self.p_x(z)

    # ------------------------------------------------------------------ Pyro pair
    def model(self, x: Tensor, index: Tensor | None = None, num_data: int | None = None) -> None:
        """The generative model over a minibatch ``x`` of a data set of ``num_data`` rows."""
        pyro.module("flow_vae", self)
        with self._data_plate(x, index, num_data):
            z = pyro.sample("z", self.prior().expand([len(x)]))
            pyro.sample("x", self.likelihood(z), obs=x)

    def guide(self, x: Tensor, index: Tensor | None = None, num_data: int | None = None) -> None:
        """The amortized flow posterior q(z | x) for the same minibatch."""
        pyro.module("flow_vae", self)
        with self._data_plate(x, index, num_data):
            pyro.sample("z", self.q(x))

    @staticmethod
    def _data_plate(x: Tensor, index: Tensor | None, num_data: int | None) -> pyro.plate:
        """The minibatch's ``data`` plate, the same in model and guide: rows ``index`` (all
        of ``x`` when omitted) of a data set of ``num_data`` rows, scaled accordingly."""
        subsample = index if index is not None else torch.arange(len(x), device=x.device)
        return pyro.plate("data", num_data or len(x), subsample=subsample)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def log_weights(
        self, x: Tensor, num_samples: int, chunk: int = 100, features: Tensor | None = None
    ) -> Tensor:
        r""":math:`\log p(x, z_k) - \log q(z_k \mid x)` for ``num_samples`` draws per row,
        shape ``(num_samples, len(x))``, drawn ``chunk`` at a time; ``features`` replace the
        encoder's (see :meth:`refine_features`)."""
        q, out = self.q(x) if features is None else self.q.from_features(features), []
        for start in range(0, num_samples, chunk):
            out.append(self._draw_log_weights(q, x, min(chunk, num_samples - start)))
        return torch.cat(out)

    def _draw_log_weights(self, q: dist.TorchDistribution, x: Tensor, n: int) -> Tensor:
        """``log p(x, z) - log q(z)`` for ``n`` draws ``z`` of ``q``, shape ``(n, len(x))``."""
        z, log_q = _draw(q, n)
        return self.prior().log_prob(z) + self.likelihood(z).log_prob(x.expand(n, *x.shape)) - log_q

    def refine_features(self, x: Tensor, steps: int, lr: float = 1e-2, particles: int = 16) -> Tensor:
        r"""Encoder features of each row of ``x``, refined by Adam on that row's ELBO.

        Semi-amortized inference (Kim et al., 2018, arXiv:1802.02550): the encoder's
        features :math:`h_i` start the search, then ``steps`` Adam steps over
        :math:`h_i` alone (``particles`` draws per step) maximize the ELBO of row
        :math:`i`, with the decoder, prior, posterior heads and flow held fixed. The gap
        :math:`\text{IWAE} - \text{ELBO}` left after refinement is the posterior
        family's (the approximation gap); what refinement removes is the amortization
        gap of the encoder (Cremer, Li & Duvenaud, 2018, arXiv:1801.03558). No module
        parameter changes: the gradients are taken with respect to the features only.

        Example:
            >>> vae = FlowVAE(data_dim=64, latent_dim=4, hidden_dim=32, posterior="iaf")
            >>> x = torch.bernoulli(torch.full((10, 64), 0.3))
            >>> vae.refine_features(x, steps=2).shape
            torch.Size([10, 32])
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        with torch.no_grad():
            h = self.q.features(x)
        h = h.clone().requires_grad_()
        optimizer = torch.optim.Adam([h], lr=lr)
        for _ in range(steps):
            elbo = self._draw_log_weights(self.q.from_features(h), x, particles).mean(0)
            (h.grad,) = torch.autograd.grad(-elbo.sum(), [h])
            optimizer.step()
        return h.detach()

    def evaluate(
        self,
        x: Tensor,
        num_samples: int = 1000,
        batch_size: int = 256,
        chunk: int = 100,
        refine_steps: int = 0,
    ) -> dict:
        """Mean ELBO and IWAE bound (``K = num_samples``) per row of ``x``, in nats.

        With ``refine_steps > 0`` each row's posterior is first refined
        (:meth:`refine_features`), so the scores are those of the semi-amortized posterior.
        """
        elbo, iwae = 0.0, 0.0
        for start in range(0, len(x), batch_size):
            rows = x[start : start + batch_size]
            features = self.refine_features(rows, refine_steps) if refine_steps else None
            log_w = self.log_weights(rows, num_samples, chunk, features).double()
            elbo += float(log_w.mean(0).sum())
            iwae += float((torch.logsumexp(log_w, 0) - math.log(num_samples)).sum())
        return {"elbo": elbo / len(x), "iwae": iwae / len(x)}


def _draw(q: dist.TorchDistribution, n: int) -> tuple[Tensor, Tensor]:
    """``n`` draws and their log-density (one fused pass for flows)."""
    if isinstance(q, FlowDistribution):
        return q.rsample_and_log_prob((n,))
    z = q.rsample((n,))
    return z, q.log_prob(z)
