"""The documentation site builds without a warning and documents every public name."""

from __future__ import annotations

import importlib
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sphinx.util.inventory import InventoryFile

import flowguide

DOCS = Path(__file__).parents[1] / "docs"


def _public_objects() -> dict[str, object]:
    """Every name in the ``__all__`` of every flowguide module, by its dotted path."""
    found = {}
    for info in pkgutil.walk_packages(flowguide.__path__, "flowguide."):
        if any(part.startswith("_") for part in info.name.split(".")):  # private, and __main__
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            if not name.startswith("__"):
                found[f"{info.name}.{name}"] = getattr(module, name)
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html")
    shutil.rmtree(DOCS / "generated", ignore_errors=True)
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stderr[-4000:]}"
    return out


def test_every_public_name_has_an_api_page(site):
    with open(site / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)
    public = _public_objects()
    kinds = ("py:class", "py:exception", "py:function", "py:data")
    names = {path for kind in kinds for path in inventory.get(kind, {})}
    documented = {id(public[path]) for path in names & public.keys()}  # one page per object suffices
    assert len(public) > 100
    missing = sorted(path for path, obj in public.items() if id(obj) not in documented)
    assert not missing, f"public names without an API page: {missing}"


def test_pages_embed_the_figures_the_code_writes(site):
    pages = {p.relative_to(site).as_posix(): p.read_text() for p in site.rglob("*.html")}
    for page in ("getting_started.html", "choosing.html", "math.html", "api.html", "benchmarks.html"):
        assert page in pages, page
    assert "pairs_funnel.png" in pages["tutorials/compare.html"]
    assert "vae_digits_nsf_bernoulli.png" in pages["tutorials/vae.html"]
    for figure in ("pairs_funnel.png", "elbo_funnel.png", "vae_digits_nsf_bernoulli.png"):
        assert (site / "_images" / figure).stat().st_size > 5_000, figure


ROOT = DOCS.parent
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *sorted((DOCS / "tutorials").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(page: Path) -> list[str]:
    """The fenced ``python`` blocks of a Markdown page, in order."""
    return BLOCK.findall(page.read_text())


@pytest.mark.parametrize(
    "page", [p for p in PAGES if python_blocks(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_python_block_of_a_page_runs(page, tmp_path, monkeypatch):
    """A page's code blocks run in order, in one namespace, as a reader would paste them."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__page__"}
    for index, block in enumerate(python_blocks(page)):
        exec(compile(block, f"{page.name}, python block {index + 1}", "exec"), namespace)


def test_the_block_finder_sees_the_readmes_swap():
    assert any("AutoNormal" in block for block in python_blocks(ROOT / "README.md"))


def test_the_benchmark_tables_are_rendered_from_the_current_result_files():
    """``benchmarks/tables.py --check``: every generated fragment and README block matches
    what the result files give (run ``python benchmarks/tables.py`` after a benchmark)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "tables.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
