"""A systemd unit that starts `edgeseg run --config FILE` at boot and restarts it on failure.

Pure text and paths: nothing here runs systemctl or needs root. `edgeseg service install`
(the CLI) writes :func:`unit_text` to :func:`unit_path` and prints the systemctl commands
from :func:`enable_commands`; `edgeseg service uninstall` removes only a unit that carries
:data:`MARKER`.

Folders: system units in ``/etc/systemd/system`` (``$EDGESEG_SYSTEMD_DIR`` overrides it),
user units in ``~/.config/systemd/user`` (``$XDG_CONFIG_HOME/systemd/user``;
``$EDGESEG_SYSTEMD_USER_DIR`` overrides it).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgeseg.errors import DataError

__all__ = [
    "MARKER",
    "UnitSpec",
    "check_unit_name",
    "disable_commands",
    "enable_commands",
    "enable_links",
    "exec_quote",
    "is_ours",
    "unit_dir",
    "unit_path",
    "unit_text",
]

MARKER = "# written by edgeseg service install"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
_NAME = re.compile(r"^[A-Za-z0-9:_.@-]+$")


@dataclass(frozen=True)
class UnitSpec:
    """What the unit runs, and for whom.

    Attributes:
        name: the unit's name without ``.service`` (``systemctl start NAME``).
        config: the absolute path of the edgeseg.toml the service reads.
        python: the interpreter of the environment edgeseg is installed in.
        user_unit: a user unit (``systemctl --user``) rather than a system unit.
        run_as: the user a system unit runs as (ignored for a user unit).
        groups: supplementary groups of a system unit (``video`` for cameras).
    """

    name: str
    config: Path
    python: str
    user_unit: bool = False
    run_as: str | None = None
    groups: tuple[str, ...] = ("video",)


def check_unit_name(name: str) -> str:
    """``name`` without a ``.service`` suffix, or a one-line DataError."""
    if name.endswith(".service"):
        name = name[: -len(".service")]
    if not name or not _NAME.match(name):
        raise DataError(
            f"--name {name!r} is not a unit name: use letters, digits and : _ . @ - only"
        )
    return name


def exec_quote(arg: str) -> str:
    """One ExecStart argument as systemd reads it: specifiers and variables escaped, quoted
    when it holds spaces, quotes or backslashes."""
    if "\n" in arg or "\r" in arg:
        raise DataError(f"cannot put a line break in a unit's command line: {arg!r}")
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not re.search(r"[\s\"'\\;]", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_dir(user_unit: bool) -> Path:
    if user_unit:
        override = os.environ.get("EDGESEG_SYSTEMD_USER_DIR")
        if override:
            return Path(override)
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user"
    return Path(os.environ.get("EDGESEG_SYSTEMD_DIR") or SYSTEM_UNIT_DIR)


def unit_path(name: str, user_unit: bool) -> Path:
    return unit_dir(user_unit) / f"{check_unit_name(name)}.service"


def unit_text(spec: UnitSpec) -> str:
    """The unit file: `edgeseg run --config FILE` with this interpreter, restarted on failure
    forever (5 s apart), logging to the journal, started at boot."""
    if not spec.config.is_absolute():
        raise DataError(f"a service needs the absolute path of its config, got {spec.config}")
    command = [spec.python, "-m", "edgeseg.cli.main", "run", "--config", str(spec.config)]
    lines = [
        f"{MARKER}; `edgeseg service uninstall` removes it.",
        "# Settings live in the config file below; `edgeseg config show --config FILE`.",
        "[Unit]",
        f"Description=edgeseg live segmentation ({spec.name})",
        "After=network-online.target",
        "Wants=network-online.target",
        # Never give up restarting (systemd 252 has no RestartSteps= to back off).
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(exec_quote(a) for a in command),
        "WorkingDirectory=/",
    ]
    if not spec.user_unit:
        if not spec.run_as:
            raise DataError("a system service needs a user to run as (--run-as USER)")
        lines.append(f"User={spec.run_as}")
        if spec.groups:
            lines.append("SupplementaryGroups=" + " ".join(spec.groups))
    lines += [
        "Environment=PYTHONUNBUFFERED=1",
        "Restart=on-failure",
        "RestartSec=5",
        "StandardOutput=journal",
        "StandardError=journal",
        "",
        "[Install]",
        "WantedBy=" + ("default.target" if spec.user_unit else "multi-user.target"),
    ]
    return "\n".join(lines) + "\n"


def is_ours(text: str) -> bool:
    """Whether a unit file's text was written by `edgeseg service install`."""
    return text.startswith(MARKER)


def _systemctl(user_unit: bool) -> str:
    return "systemctl --user" if user_unit else "sudo systemctl"


def enable_commands(name: str, user_unit: bool) -> list[str]:
    """What to run after install: load the unit, start it now and at every boot, follow it."""
    ctl = _systemctl(user_unit)
    journal = "journalctl --user" if user_unit else "journalctl"
    return [
        f"{ctl} daemon-reload && {ctl} enable --now {name}",
        f"{ctl} status {name} --no-pager",
        f"{journal} -u {name} -f",
    ]


def disable_commands(name: str, user_unit: bool) -> list[str]:
    """What to run after uninstall: stop the running service and forget the unit."""
    ctl = _systemctl(user_unit)
    return [f"{ctl} stop {name}; {ctl} daemon-reload"]


def enable_links(name: str, user_unit: bool) -> list[Path]:
    """The links `systemctl enable` made for the unit (``*.wants/NAME.service`` beside it):
    uninstall removes them with the unit, as `systemctl disable` would."""
    folder = unit_dir(user_unit)
    if not folder.is_dir():
        return []
    unit = f"{check_unit_name(name)}.service"
    return sorted(p for p in folder.glob(f"*.wants/{unit}") if p.is_symlink())
