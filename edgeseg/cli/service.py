"""`edgeseg service`: a systemd unit that runs `edgeseg run --config FILE` at boot.

It writes and removes unit files and prints the systemctl commands to run; it never runs sudo
or systemctl itself (but `service status`, which asks systemctl).
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

import typer

from edgeseg.cli.common import err, handle_errors, out
from edgeseg.cli.configured import EXCLUSIVE, run_params
from edgeseg.cli.run import run_command
from edgeseg.config import read_config_file
from edgeseg.errors import DataError
from edgeseg.service import (
    UnitSpec,
    check_unit_name,
    choose_config,
    disable_commands,
    enable_commands,
    install_unit,
    remove_unit,
    run_as_user,
    systemctl_status,
    unit_state,
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
    watchdog_sec: int = typer.Option(
        30,
        "--watchdog-sec",
        min=1,
        help="systemd restarts a run that shows no progress for this long (WatchdogSec); "
        "make it several times the slowest frame.",
    ),
) -> None:
    """Write a unit that runs `edgeseg run --config FILE` at boot with this Python.

    Restarts 5 s after any failure, forever; logs to the journal. Prints the systemctl
    commands to run; runs none of them.
    """
    name = check_unit_name(name)
    if user and run_as:
        raise DataError("--run-as is for a system unit; a --user unit runs as you")
    choice = choose_config(config, user)
    if choice.ignored:
        ignored = ", ".join(str(p) for p in choice.ignored)
        _note(f"note: the service reads {choice.path} only, not {ignored}")
    config_path = choice.path
    settings = read_config_file(config_path, run_params(run_command()), EXCLUSIVE)
    if "model" not in settings:
        raise DataError(f'{config_path}: a service needs a model: add model = "…" to it')
    model = settings["model"].value
    if not Path(model).exists():
        _note(f"warning: the model {model} does not exist (yet)")
    owner = None if user else run_as_user(run_as)
    python = str(Path(sys.executable).absolute())  # not resolved: a venv's python is a link
    spec = UnitSpec(
        name, config_path, python, user_unit=user, run_as=owner, watchdog_seconds=watchdog_sec
    )
    target, text, existed = install_unit(spec, dry_run=dry_run)
    if dry_run:
        _say(f"# would write {target}")
        out.print(text, highlight=False, markup=False, end="")
        return
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
    for path in remove_unit(name, user):
        _say(f"removed {path}")
    _say("stop the running service and forget the unit:")
    for command in disable_commands(name, user):
        _say(f"  {command}")


@service_app.command("status")
@handle_errors
def status(user: bool = UserOpt, name: str = NameOpt) -> None:
    """Say whether the unit is installed, and ask systemctl how it runs."""
    name = check_unit_name(name)
    _say(unit_state(name, user))
    code = systemctl_status(name, user)
    if code is None:
        _say("systemctl is not available here")
    elif code:
        raise typer.Exit(code)
