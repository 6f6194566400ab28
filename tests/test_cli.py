"""The command line: light to start, and every bad input a one-line error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from edgeseg.cli.main import app

HEAVY = ("tensorflow", "keras", "cv2", "ai_edge_litert", "tflite_runtime", "tifffile", "h5py")

runner = CliRunner()


def _imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _imported_by_cli(argv: list[str]) -> set[str]:
    """Modules loaded after running ``edgeseg *argv`` in a fresh interpreter."""
    return _imported_after(
        "import sys\n"
        f"sys.argv = ['edgeseg', *{argv!r}]\n"
        "from edgeseg.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )


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
    loaded = _imported_by_cli(argv)
    assert "typer" in loaded  # the probe really ran the CLI
    heavy = [m for m in HEAVY if m in loaded]
    assert heavy == [], f"`edgeseg {' '.join(argv)}` imported {heavy}"


def test_import_edgeseg_is_light() -> None:
    loaded = _imported_after("import edgeseg, edgeseg.core.metadata, edgeseg.core.tiling")
    assert not [m for m in HEAVY if m in loaded]


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("edgeseg ")


def one_line_error(result, *needles: str) -> str:
    """Assert a clean failure: non-zero exit, no traceback, one error line naming the needles."""
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
