"""The VAE hybrid: flow posteriors q(z|x), flow decoders p(x|z), and the image data they train on."""

from flowguide.models.vae import AmortizedLocalGuide, ConditionalDensity, FlowVAE

__all__ = ["AmortizedLocalGuide", "ConditionalDensity", "FlowVAE"]
