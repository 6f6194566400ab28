"""`edgeseg service`: the systemd unit's text, install/uninstall into an overridden folder, the
printed systemctl commands, and `systemd-analyze verify` where it exists."""

from __future__ import annotations

import getpass
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import one_line_error
from typer.testing import CliRunner

import edgeseg.service
from edgeseg.cli.main import app
from edgeseg.errors import DataError
from edgeseg.service import MARKER, UnitSpec, check_unit_name, exec_quote, unit_text

runner = CliRunner()
ME = getpass.getuser()


def _section(text: str, name: str) -> list[str]:
    """The lines of one [Section] of a unit file."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("["):
            inside = line == f"[{name}]"
        elif inside and line:
            lines.append(line)
    return lines


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Unit folders and config folders in tmp_path; a config with a model in the system one."""
    found = {
        "system": tmp_path / "systemd" / "system",
        "user": tmp_path / "systemd" / "user",
        "etc": tmp_path / "etc",
        "cwd": tmp_path / "cwd",
    }
    monkeypatch.setenv("EDGESEG_SYSTEMD_DIR", str(found["system"]))
    monkeypatch.setenv("EDGESEG_SYSTEMD_USER_DIR", str(found["user"]))
    monkeypatch.setenv("EDGESEG_SYSTEM_CONFIG_DIR", str(found["etc"]))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SUDO_USER", raising=False)
    found["etc"].mkdir()
    found["cwd"].mkdir()
    monkeypatch.chdir(found["cwd"])
    (found["etc"] / "model.tflite").write_bytes(b"")
    (found["etc"] / "edgeseg.toml").write_text(
        'model = "model.tflite"\nsource = "csi://0"\nheadless = true\nstream = "0.0.0.0:8080"\n'
    )
    return found


def test_system_unit_text() -> None:
    config = Path("/etc/edgeseg/edgeseg.toml")
    text = unit_text(UnitSpec("edgeseg", config, sys.executable, run_as="pi"))
    assert text.startswith(MARKER)
    unit, service, install = (_section(text, s) for s in ("Unit", "Service", "Install"))
    assert "StartLimitIntervalSec=0" in unit  # in [Unit]: never give up restarting
    assert {"After=network-online.target", "Wants=network-online.target"} <= set(unit)
    run = f"{sys.executable} -m edgeseg.cli.main run --config {config} --wait-for-source"
    assert f"ExecStart={run}" in service
    assert {"Restart=on-failure", "RestartSec=5", "WorkingDirectory=/", "User=pi"} <= set(service)
    assert {"SupplementaryGroups=video", "StandardOutput=journal"} <= set(service)
    assert "StandardError=journal" in service
    assert install == ["WantedBy=multi-user.target"]
    assert not any(line.startswith("RestartSteps") for line in service)  # systemd 252
    # systemd is told when the run is ready and restarts one that stops moving.
    assert {"Type=notify", "NotifyAccess=main", "WatchdogSec=30", "TimeoutStartSec=300"} <= set(
        service
    )
    assert "Type=simple" not in service


def test_install_takes_the_watchdog_period(dirs: dict[str, Path]) -> None:
    result = runner.invoke(app, ["service", "install", "--dry-run", "--watchdog-sec", "90"])
    assert result.exit_code == 0, result.output
    assert "WatchdogSec=90" in result.stdout and "Type=notify" in result.stdout
    bad = runner.invoke(app, ["service", "install", "--dry-run", "--watchdog-sec", "0"])
    assert bad.exit_code == 2


def test_unit_watchdog_and_start_timeout_are_settable() -> None:
    config = Path("/etc/edgeseg/edgeseg.toml")
    spec = UnitSpec("e", config, "/py", run_as="pi", watchdog_seconds=120, start_seconds=900)
    service = _section(unit_text(spec), "Service")
    assert {"WatchdogSec=120", "TimeoutStartSec=900"} <= set(service)
    with pytest.raises(DataError, match="at least 1 second"):
        unit_text(UnitSpec("e", config, "/py", run_as="pi", watchdog_seconds=0))


def test_user_unit_text() -> None:
    config = Path("/home/pi/.config/edgeseg/edgeseg.toml")
    text = unit_text(UnitSpec("cam", config, "/venv/bin/python", user_unit=True, run_as="x"))
    service = _section(text, "Service")
    run = f"/venv/bin/python -m edgeseg.cli.main run --config {config} --wait-for-source"
    assert f"ExecStart={run}" in service
    assert not [ln for ln in service if ln.startswith(("User=", "SupplementaryGroups="))]
    assert "Restart=on-failure" in service
    assert _section(text, "Install") == ["WantedBy=default.target"]
    assert "Description=edgeseg live segmentation (cam)" in _section(text, "Unit")


def test_exec_arguments_and_names_are_escaped_or_refused() -> None:
    assert exec_quote("/a/b") == "/a/b"
    assert exec_quote("/my conf/x%y$z.toml") == '"/my conf/x%%y$$z.toml"'
    assert exec_quote('a"b\\c') == '"a\\"b\\\\c"'
    with pytest.raises(DataError, match="line break"):
        exec_quote("a\nb")
    assert check_unit_name("edgeseg.service") == "edgeseg"
    with pytest.raises(DataError, match="not a unit name"):
        check_unit_name("my cam")
    with pytest.raises(DataError, match="absolute"):
        unit_text(UnitSpec("e", Path("rel.toml"), "/py", run_as="pi"))


def test_install_writes_the_unit_and_prints_the_commands(dirs: dict[str, Path]) -> None:
    result = runner.invoke(app, ["service", "install"])
    assert result.exit_code == 0, result.output
    unit = dirs["system"] / "edgeseg.service"
    text = unit.read_text()
    config = dirs["etc"] / "edgeseg.toml"
    assert f"ExecStart={sys.executable} -m edgeseg.cli.main run --config {config}" in text
    assert f"User={ME}" in text and "SupplementaryGroups=video" in text
    assert f"wrote {unit}" in result.stdout
    assert "sudo systemctl daemon-reload && sudo systemctl enable --now edgeseg" in result.stdout
    assert "journalctl -u edgeseg -f" in result.stdout
    # Again: the unit is ours, so it is updated in place.
    result = runner.invoke(app, ["service", "install", "--run-as", ME])
    assert result.exit_code == 0 and f"updated {unit}" in result.stdout


def test_install_user_unit_names_linger(dirs: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "cam.toml"
    config.write_text('model = "/models/unet.tflite"\ncamera = 0\nheadless = true\n')
    result = runner.invoke(
        app, ["service", "install", "--user", "--config", str(config), "--name", "cam"]
    )
    assert result.exit_code == 0, result.output
    text = (dirs["user"] / "cam.service").read_text()
    assert f"--config {config}" in text and "WantedBy=default.target" in text
    assert "User=" not in text
    assert "systemctl --user daemon-reload && systemctl --user enable --now cam" in result.stdout
    assert f"loginctl enable-linger {ME}" in result.stdout
    assert "does not exist" in result.stderr  # the model is not there: said, not refused


def test_install_dry_run_writes_nothing(dirs: dict[str, Path]) -> None:
    result = runner.invoke(app, ["service", "install", "--dry-run", "--run-as", ME])
    assert result.exit_code == 0, result.output
    assert "Restart=on-failure" in result.stdout
    assert not dirs["system"].exists()


def test_install_refusals_are_one_line(dirs: dict[str, Path], tmp_path: Path) -> None:
    (dirs["etc"] / "edgeseg.toml").unlink()
    result = runner.invoke(app, ["service", "install"])
    one_line_error(result, "a service needs a config file", str(dirs["etc"] / "edgeseg.toml"))
    result = runner.invoke(app, ["service", "install", "--config", "missing.toml"])
    one_line_error(result, "config file not found")
    no_model = tmp_path / "no-model.toml"
    no_model.write_text("headless = true\n")
    result = runner.invoke(app, ["service", "install", "--config", str(no_model)])
    one_line_error(result, str(no_model), "needs a model")
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "m.tflite"\nrecrod = "x"\n')
    result = runner.invoke(app, ["service", "install", "--config", str(bad)])
    one_line_error(result, str(bad), "unknown key 'recrod'")
    good = ["--config", str(dirs["etc"] / "edgeseg.toml")]
    (dirs["etc"] / "edgeseg.toml").write_text('model = "m.tflite"\n')
    result = runner.invoke(app, ["service", "install", *good, "--run-as", "no-such-user-x"])
    one_line_error(result, "no user 'no-such-user-x'")
    result = runner.invoke(app, ["service", "install", *good, "--user", "--run-as", ME])
    one_line_error(result, "--run-as is for a system unit")
    dirs["system"].mkdir(parents=True)
    (dirs["system"] / "edgeseg.service").write_text("[Service]\nExecStart=/bin/true\n")
    result = runner.invoke(app, ["service", "install", *good])
    one_line_error(result, "was not written by `edgeseg service install`")
    assert (dirs["system"] / "edgeseg.service").read_text().startswith("[Service]")


def test_uninstall_removes_only_its_own_unit(dirs: dict[str, Path]) -> None:
    foreign = dirs["system"] / "other.service"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("[Service]\nExecStart=/bin/true\n")
    result = runner.invoke(app, ["service", "uninstall", "--name", "other"])
    one_line_error(result, str(foreign), "not written by `edgeseg service install`")
    assert foreign.exists()
    one_line_error(runner.invoke(app, ["service", "uninstall"]), "nothing to remove")

    assert runner.invoke(app, ["service", "install"]).exit_code == 0
    unit = dirs["system"] / "edgeseg.service"
    wants = dirs["system"] / "multi-user.target.wants"
    wants.mkdir()
    (wants / "edgeseg.service").symlink_to(unit)  # as `systemctl enable` makes it
    result = runner.invoke(app, ["service", "uninstall"])
    assert result.exit_code == 0, result.output
    assert not unit.exists() and not (wants / "edgeseg.service").is_symlink()
    assert f"removed {unit}" in result.stdout
    assert "sudo systemctl stop edgeseg; sudo systemctl daemon-reload" in result.stdout
    assert foreign.exists()


def test_status_without_systemctl(dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edgeseg.service.shutil, "which", lambda _name: None)
    result = runner.invoke(app, ["service", "status"])
    assert result.exit_code == 0, result.output
    assert "not installed" in result.stdout
    assert "systemctl is not available here" in result.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("user_unit", [False, True])
def test_systemd_analyze_verify_accepts_the_unit(dirs: dict[str, Path], user_unit: bool) -> None:
    argv = ["service", "install", *(["--user"] if user_unit else [])]
    if user_unit:
        argv += ["--config", str(dirs["etc"] / "edgeseg.toml")]
    assert runner.invoke(app, argv).exit_code == 0
    unit = dirs["user" if user_unit else "system"] / "edgeseg.service"
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    said = (done.stdout + done.stderr).strip()
    if "Failed to initialize manager" in said or "Failed to lookup" in said:
        pytest.skip(f"systemd-analyze cannot run here: {said.splitlines()[0]}")
    # Complaints about other units of this machine name those units; ours must have none.
    ours = [line for line in said.splitlines() if unit.name in line]
    assert done.returncode == 0 and not ours, said
