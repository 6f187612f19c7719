"""The library's layers: a module imports only from its own package and the layers below it.

transforms -> nn -> flows -> infer / models -> autoguide -> diagnostics -> training -> apps
(the autoguides train with objectives of ``infer``: a mixture's recipe is its stratified ELBO),
with ``flowguide._extras`` (optional dependencies) below them all and the package's
``__init__`` and ``__main__`` above them all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "flowguide"
LAYERS = {
    "_extras": 0,
    "transforms": 1,
    "nn": 2,
    "flows": 3,
    "infer": 4,
    "models": 4,
    "autoguide": 5,
    "diagnostics": 6,
    "training": 7,
    "apps": 8,
}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem in LAYERS)


def imported_packages(path: Path) -> set[str]:
    """The ``flowguide`` subpackages a module imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "flowguide" and len(parts) > 1 and parts[1] in LAYERS:
                found.add(parts[1])
    return found


def package_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_from_its_layer_and_below(path):
    own = package_of(path)
    above = sorted(name for name in imported_packages(path) - {own} if LAYERS[name] >= LAYERS[own])
    assert not above, f"{path.relative_to(PACKAGE)} ({own}) imports from {above}, not below it"


def test_the_check_sees_a_violation(tmp_path):
    """A transform importing the autoguides is caught, also inside a function."""
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from flowguide.autoguide import AutoIAF\n")
    assert imported_packages(module) == {"autoguide"}
