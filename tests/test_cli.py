"""The command line runs end to end in smoke mode and rejects bad options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flowguide.apps.cli import main
from flowguide.apps.demo import run_demo


def test_demo_smoke_prints_a_table_and_saves_a_figure(tmp_path, capsys):
    assert main(["demo", "--smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("planar", "iaf", "neural_spline", "affine_coupling", "KL(q||p)"):
        assert name in out
    assert (tmp_path / "demo_banana.png").stat().st_size > 10_000


def test_demo_learns_the_banana():
    """A short fit already closes most of the KL gap left by the initial flow."""
    (before,) = run_demo("banana", ("affine_coupling",), steps=1)
    (after,) = run_demo("banana", ("affine_coupling",), steps=300)
    assert after.kl < 0.1 < before.kl


def test_module_entry_point_runs(tmp_path):
    args = ["demo", "--smoke", "--flows", "planar", "--target", "ring", "--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "flowguide", *args], capture_output=True, text=True, check=True, timeout=300
    )
    assert "ring" in result.stdout and (tmp_path / "demo_ring.png").exists()


def test_unknown_choices_raise():
    with pytest.raises(ValueError, match="target"):
        run_demo("donut")
    with pytest.raises(ValueError, match="unknown flows"):
        run_demo("banana", ("maf",))


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["compare", "--device", "nosuch"], "--device"),
        (["compare", "--device", "cuda:7"], "--device"),
        (["compare", "--lr", "-1"], "--lr"),
        (["compare", "--lr", "0"], "--lr"),
        (["compare", "--lr", "nan"], "--lr"),
        (["compare", "--threads", "-2"], "--threads"),
        (["compare", "--steps", "-5"], "--steps"),
        (["compare", "--num-particles", "0"], "--num-particles"),
        (["compare", "--num-samples", "1.5"], "--num-samples"),
        (["compare", "--reference-samples", "0"], "--reference-samples"),
        (["compare", "--seed", "-1"], "--seed"),
        (["demo", "--steps", "0"], "--steps"),
        (["demo", "--device", "gpu"], "--device"),
    ],
)
def test_a_bad_option_exits_2_naming_it(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {option}:" in error and "Traceback" not in error


def test_version_and_defaults_in_help(capsys):
    import flowguide

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"flowguide {flowguide.__version__}"
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "(default: 1500)" in " ".join(capsys.readouterr().out.split())


def test_smoke_runs_do_not_overwrite_real_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real = tmp_path / "outputs" / "demo_banana.png"
    real.parent.mkdir()
    real.write_bytes(b"a real figure")
    assert main(["demo", "--smoke", "--flows", "planar"]) == 0
    assert real.read_bytes() == b"a real figure"
    assert (tmp_path / "outputs" / "smoke" / "demo_banana.png").stat().st_size > 10_000
