"""`edgeseg doctor`: runs anywhere, exits 0, never a traceback, says what to install."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from edgeseg.cli.main import app

runner = CliRunner()


def test_doctor_runs_and_exits_zero() -> None:
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert result.exception is None and "Traceback" not in result.output
    for needle in ("system", "runtimes", "delegates", "video", "LiteRT", "CPU / XNNPACK"):
        assert needle in result.output, needle
    # LiteRT is installed in the test environment, and XNNPACK runs the probe model.
    assert "✓ CPU / XNNPACK" in result.output


def test_doctor_json_lists_every_finding() -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    checks = json.loads(result.stdout)
    assert {c["status"] for c in checks} <= {"ok", "missing", "warn", "info"}
    sections = {c["section"] for c in checks}
    assert {"system", "runtimes", "delegates", "video"} <= sections
    names = {c["name"] for c in checks}
    assert {"LiteRT (ai-edge-litert)", "Edge TPU devices", "GPU delegate", "display"} <= names
    for c in checks:
        assert "\n" not in c["detail"], c


def test_a_broken_check_is_reported_not_raised(monkeypatch) -> None:
    import edgeseg.devices.doctor as doctor

    def check_broken():
        yield doctor.Check("system", "first", "ok", "fine")
        raise RuntimeError("driver exploded\nwith a second line")

    monkeypatch.setattr(doctor, "CHECKS", (check_broken, *doctor.CHECKS[:1]))
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "check failed: RuntimeError: driver exploded with a second line" in result.output
    assert "machine" in result.output  # the checks after it still ran


def test_missing_pieces_come_with_what_to_install(monkeypatch) -> None:
    import edgeseg.devices.doctor as doctor

    monkeypatch.setattr(doctor, "_version", lambda dist: None)  # nothing installed
    checks = list(doctor.check_runtimes())
    litert = next(c for c in checks if c.name.startswith("LiteRT"))
    assert litert.status == "missing" and "pip install 'edgeseg[runtime]'" in litert.hint
    assert not any(c.name == "CPU / XNNPACK" for c in checks)  # no runtime: not probed
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0
    assert "to install or fix" in result.output and "edgeseg[runtime]" in result.output


def test_doctor_lists_openvino_and_its_devices(monkeypatch) -> None:
    import pytest

    import edgeseg.devices.doctor as doctor

    if doctor._version("openvino"):
        (found,) = [c for c in doctor.check_runtimes() if c.name == "OpenVINO"]
        assert found.status == "ok" and "devices: CPU" in found.detail
        assert found.detail.startswith(pytest.importorskip("openvino").get_version()[:6])
    monkeypatch.setattr(doctor, "_version", lambda dist: None)
    (missing,) = [c for c in doctor.check_runtimes() if c.name == "OpenVINO"]
    assert missing.status == "info" and "edgeseg[openvino]" in missing.hint


def test_probe_model_is_a_valid_image_model(tmp_path: Path) -> None:
    from edgeseg.devices.doctor import probe_model_bytes
    from edgeseg.runtime.backends import TFLiteBackend

    path = tmp_path / "probe.tflite"
    path.write_bytes(probe_model_bytes())
    backend = TFLiteBackend(path, threads=1)
    x = np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1) / 64
    np.testing.assert_allclose(backend.predict(x), 2 * x)


def test_help_of_bench_report_doctor_imports_no_heavy_library() -> None:
    from helpers import HEAVY, imported_by_cli

    for argv in (["bench", "--help"], ["report", "--help"], ["doctor", "--help"]):
        loaded = imported_by_cli(argv)
        assert "typer" in loaded
        assert not [m for m in HEAVY if m in loaded], argv
