"""Sphinx configuration: the flowguide documentation site.

Build with ``bash .ci/docs`` (warnings are errors); the pages are Markdown (MyST), the
API reference is generated from the docstrings by autosummary.
"""

from __future__ import annotations

import flowguide

project = "flowguide"
author = "the flowguide developers"
copyright = "2026, the flowguide developers"
release = version = flowguide.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "README.md"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_theme = "furo"
html_title = f"flowguide {version}"

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

autosummary_generate = True
autosummary_ignore_module_all = False  # document exactly each module's __all__
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
# Types go into the parameter list napoleon makes of each "Arguments:" section (one list,
# "Parameters"), and only for the parameters it documents.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_inherit_docstrings = False  # Pyro's inherited docstrings are reST of another dialect
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_param = True
napoleon_use_rtype = False
