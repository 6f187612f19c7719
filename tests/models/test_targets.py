"""2-D targets: the closed-form normalizers agree with quadrature."""

from __future__ import annotations

import pytest

from flowguide.apps.targets import TARGETS, Banana, Ring, grid_log_normalizer


@pytest.mark.parametrize(
    "target", [*TARGETS.values(), Banana(curvature=2.0, sigma=0.3), Ring(3.0, 0.5)], ids=repr
)
def test_closed_form_log_z_matches_the_grid(target):
    assert abs(grid_log_normalizer(target) - target.log_z) < 1e-5
