"""Optional dependencies: import them where needed, or say which extra installs them.

``pip install flowguide`` pulls torch, pyro-ppl, arviz and tqdm only. The extras add
matplotlib (``plots``: the comparison's figures, the demo's plot) and scikit-learn
(``data``: the bundled real-data models and the digits images); ``apps`` is both.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["EXTRAS", "require", "require_extra"]

#: Each extra: the modules it installs, by import name.
EXTRAS = {"plots": ("matplotlib",), "data": ("sklearn",), "apps": ("matplotlib", "sklearn")}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (a module of an extra, or a submodule of one), or raise an
    ``ImportError`` that names the extra to install for ``purpose``.

    Example:
        >>> require("math", "arithmetic").sqrt(4.0)
        2.0
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        extra = next((name for name, modules in EXTRAS.items() if modules == (top,)), None)
        if extra is None:
            raise
        raise ImportError(
            f"{purpose} needs {top}, which flowguide installs only with an extra: "
            f"pip install 'flowguide[{extra}]'"
        ) from error


def require_extra(extra: str, purpose: str) -> None:
    """Check that every module of ``extra`` imports, or raise an ``ImportError`` naming it."""
    missing = [module for module in EXTRAS[extra] if importlib.util.find_spec(module) is None]
    if missing:
        raise ImportError(
            f"{purpose} needs {', '.join(missing)}, which flowguide installs only with an extra: "
            f"pip install 'flowguide[{extra}]'"
        )
