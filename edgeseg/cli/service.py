"""`edgeseg service`: a systemd unit that runs `edgeseg run --config FILE` at boot.

It writes and removes unit files and prints the systemctl commands to run; it never runs sudo
or systemctl itself (but `service status`, which asks systemctl).
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
from pathlib import Path

import typer

from edgeseg.cli.common import err, handle_errors, out
from edgeseg.cli.configured import EXCLUSIVE, run_params
from edgeseg.cli.run import run_command
from edgeseg.config import config_search_paths, read_config_file
from edgeseg.errors import DataError
from edgeseg.service import (
    UnitSpec,
    check_unit_name,
    disable_commands,
    enable_commands,
    enable_links,
    is_ours,
    unit_path,
    unit_text,
)

service_app = typer.Typer(
    help="A systemd service that starts `edgeseg run` at boot and restarts it on failure.",
    no_args_is_help=True,
)

UserOpt = typer.Option(
    False, "--user", help="A user unit (systemctl --user) instead of a system unit."
)
NameOpt = typer.Option("edgeseg", "--name", help="The unit's name (systemctl … NAME).")


def _say(line: str = "") -> None:
    out.print(line, highlight=False, markup=False)


def _note(line: str) -> None:
    err.print(line, highlight=False, markup=False)


def _choose_config(given: Path | None, user_unit: bool) -> Path:
    """The config file the service reads: ``given``, else the one the search finds (the
    system file for a system unit, the user's for a user unit, when several exist)."""
    if given is not None:
        path = Path(os.path.abspath(given.expanduser()))
        if not path.is_file():
            raise DataError(f"config file not found: {path}")
        return path
    searched = config_search_paths()
    found = [p for p in searched if p.is_file()]
    if not found:
        where = ", ".join(str(p) for p in searched)
        raise DataError(
            f"a service needs a config file and there is none (looked in {where}); write one "
            "(see README, Deploy on a Pi) or give --config FILE"
        )
    system, user, here = searched
    order = [user, here, system] if user_unit else [system, here, user]
    chosen = next(p for p in order if p in found)
    others = [str(p) for p in found if p != chosen]
    if others:
        _note(f"note: the service reads {chosen} only, not {', '.join(others)}")
    return chosen


def _run_as(given: str | None) -> str:
    """The user a system unit runs as: ``given``, else who ran sudo, else the current user."""
    name = given or os.environ.get("SUDO_USER") or getpass.getuser()
    try:
        import pwd

        pwd.getpwnam(name)
    except ImportError:  # pragma: no cover - not Unix: systemd is not there either
        pass
    except KeyError:
        raise DataError(f"--run-as: there is no user {name!r} on this system") from None
    return name


@service_app.command("install")
@handle_errors
def install(
    user: bool = UserOpt,
    config: Path | None = typer.Option(
        None,
        "--config",
        help="The edgeseg.toml the service reads (default: the one `edgeseg config path` "
        "finds, /etc/edgeseg/edgeseg.toml first for a system unit).",
    ),
    name: str = NameOpt,
    run_as: str | None = typer.Option(
        None, "--run-as", help="User of a system unit (default: who ran sudo, else you)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the unit; write nothing."),
) -> None:
    """Write a unit that runs `edgeseg run --config FILE` at boot with this Python.

    Restarts 5 s after any failure, forever; logs to the journal. Prints the systemctl
    commands to run; runs none of them.
    """
    name = check_unit_name(name)
    if user and run_as:
        raise DataError("--run-as is for a system unit; a --user unit runs as you")
    config_path = _choose_config(config, user)
    settings = read_config_file(config_path, run_params(run_command()), EXCLUSIVE)
    if "model" not in settings:
        raise DataError(f'{config_path}: a service needs a model: add model = "…" to it')
    model = settings["model"].value
    if not Path(model).exists():
        _note(f"warning: the model {model} does not exist (yet)")
    owner = None if user else _run_as(run_as)
    python = str(Path(sys.executable).absolute())  # not resolved: a venv's python is a link
    text = unit_text(UnitSpec(name, config_path, python, user_unit=user, run_as=owner))
    target = unit_path(name, user)
    existed = target.exists()
    if existed:
        try:
            ours = is_ours(target.read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            raise DataError(f"cannot read {target}: {exc.strerror or exc}") from None
        if not ours:
            raise DataError(
                f"{target} exists and was not written by `edgeseg service install`; "
                "remove it or choose another --name"
            )
    if dry_run:
        _say(f"# would write {target}")
        out.print(text, highlight=False, markup=False, end="")
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        target.chmod(0o644)
    except OSError as exc:
        hint = "" if user else " (run it with sudo, or install a --user unit)"
        raise DataError(f"cannot write {target}: {exc.strerror or exc}{hint}") from None
    _say(f"{'updated' if existed else 'wrote'} {target} (runs edgeseg run --config {config_path})")
    _say("start it now and at every boot, then check it and follow its log:")
    for command in enable_commands(name, user):
        _say(f"  {command}")
    if user:
        who = getpass.getuser()
        _say(
            f"a user service starts at boot only with lingering on: sudo loginctl "
            f"enable-linger {who}"
        )


@service_app.command("uninstall")
@handle_errors
def uninstall(user: bool = UserOpt, name: str = NameOpt) -> None:
    """Remove a unit written by `edgeseg service install` (and its enable links)."""
    name = check_unit_name(name)
    target = unit_path(name, user)
    if not target.exists():
        raise DataError(f"no unit {target}: nothing to remove")
    try:
        ours = is_ours(target.read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        raise DataError(f"cannot read {target}: {exc.strerror or exc}") from None
    if not ours:
        raise DataError(f"{target} was not written by `edgeseg service install`; not removing it")
    links = enable_links(name, user)
    try:
        for path in [*links, target]:
            path.unlink()
    except OSError as exc:
        hint = "" if user else " (run it with sudo)"
        raise DataError(f"cannot remove {exc.filename}: {exc.strerror or exc}{hint}") from None
    for path in links:
        _say(f"removed {path}")
    _say(f"removed {target}")
    _say("stop the running service and forget the unit:")
    for command in disable_commands(name, user):
        _say(f"  {command}")


@service_app.command("status")
@handle_errors
def status(user: bool = UserOpt, name: str = NameOpt) -> None:
    """Say whether the unit is installed, and ask systemctl how it runs."""
    name = check_unit_name(name)
    target = unit_path(name, user)
    if target.exists():
        try:
            ours = is_ours(target.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            ours = False
        whose = "written by edgeseg" if ours else "not written by edgeseg"
        _say(f"unit: {target} ({whose})")
    else:
        _say(f"unit: {target} (not installed)")
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        _say("systemctl is not available here")
        return
    argv = [systemctl, *(["--user"] if user else []), "status", name, "--no-pager"]
    try:
        done = subprocess.run(argv, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        raise DataError(f"`{' '.join(argv)}` did not answer within 30 s") from None
    if done.returncode:
        raise typer.Exit(done.returncode)
