"""The command line: light to start, and every bad input a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import HEAVY, imported_after, imported_by_cli
from typer.testing import CliRunner

import edgeseg
from edgeseg.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["train", "--help"],
        ["eval", "--help"],
        ["convert", "--help"],
        ["run", "--help"],
        [],
    ],
)
def test_help_imports_no_heavy_library(argv: list[str]) -> None:
    loaded = imported_by_cli(argv)
    assert "typer" in loaded  # the probe really ran the CLI
    heavy = [m for m in HEAVY if m in loaded]
    assert heavy == [], f"`edgeseg {' '.join(argv)}` imported {heavy}"


def test_import_edgeseg_is_light() -> None:
    """The package, its core (every module of edgeseg/core) and the low helpers."""
    core = sorted(p.stem for p in (Path(edgeseg.__file__).parent / "core").glob("[!_]*.py"))
    assert {"backend", "metadata", "tiling"} <= set(core)
    names = ["edgeseg.errors", "edgeseg.optional", "edgeseg.child"]
    names += [f"edgeseg.core.{name}" for name in core]
    loaded = imported_after("import edgeseg\n" + "".join(f"import {n}\n" for n in names))
    assert set(names) <= loaded
    assert not [m for m in HEAVY if m in loaded]


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("edgeseg ")
