"""What every test and every doctest (of ``flowguide/`` too) starts from."""

from __future__ import annotations

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Seed 0 and an empty Pyro parameter store: a guide whose parameter names are in the
    store takes the stored values (Pyro's rule), so a test would otherwise start from what
    an earlier one trained, or be refused for a stored value of another shape."""
    torch.manual_seed(0)
    pyro.clear_param_store()
