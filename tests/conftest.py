"""Shared options: every numeric test runs on ``--device`` in ``--dtype``."""

from __future__ import annotations

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device for numeric tests (cpu, cuda, ...)")
    parser.addoption("--dtype", default="float64", choices=["float32", "float64"], help="test dtype")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.fail("--device cuda was requested but CUDA is not available")
    return dev


@pytest.fixture(scope="session")
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return getattr(torch, request.config.getoption("--dtype"))


@pytest.fixture
def tol(dtype: torch.dtype) -> float:
    """Absolute tolerance for exact identities: 1e-6 in float64 as required, looser in float32."""
    return 1e-6 if dtype == torch.float64 else 2e-3
