"""Did it work? ELBO, importance-weighted bounds, PSIS k-hat, ArviZ export, NUTS references."""

from flowguide.diagnostics.export import posterior_errors, reference_posterior, site_dims, to_inference_data
from flowguide.diagnostics.importance import (
    Estimate,
    ImportanceSamples,
    elbo,
    importance_sample,
    iwae_bound,
    log_importance_weights,
    log_mean_exp_estimate,
    mean_estimate,
)
from flowguide.diagnostics.psis import K_GOOD, K_OK, PSISResult, psis_diagnostic, psis_mean

__all__ = [
    "K_GOOD",
    "K_OK",
    "Estimate",
    "ImportanceSamples",
    "PSISResult",
    "elbo",
    "importance_sample",
    "iwae_bound",
    "log_importance_weights",
    "log_mean_exp_estimate",
    "mean_estimate",
    "posterior_errors",
    "psis_diagnostic",
    "psis_mean",
    "reference_posterior",
    "site_dims",
    "to_inference_data",
]
