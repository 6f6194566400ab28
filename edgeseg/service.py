"""A systemd unit that starts `edgeseg run --config FILE` at boot and restarts it on failure.

Nothing here runs systemctl or needs root (but :func:`systemctl_status`, which asks it).
:func:`install_unit` writes :func:`unit_text` to :func:`unit_path` for the config file
:func:`choose_config` picks; the CLI prints the systemctl commands from
:func:`enable_commands`. :func:`remove_unit` removes only a unit that carries :data:`MARKER`,
with the links ``systemctl enable`` made.

Folders: system units in ``/etc/systemd/system`` (``$EDGESEG_SYSTEMD_DIR`` overrides it),
user units in ``~/.config/systemd/user`` (``$XDG_CONFIG_HOME/systemd/user``;
``$EDGESEG_SYSTEMD_USER_DIR`` overrides it).
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgeseg.config import config_search_paths
from edgeseg.errors import DataError

__all__ = [
    "MARKER",
    "ConfigChoice",
    "UnitSpec",
    "check_unit_name",
    "choose_config",
    "disable_commands",
    "enable_commands",
    "enable_links",
    "exec_quote",
    "install_unit",
    "is_ours",
    "remove_unit",
    "run_as_user",
    "systemctl_status",
    "unit_dir",
    "unit_path",
    "unit_state",
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
        watchdog_seconds: ``WatchdogSec``: systemd restarts a run that has not shown
            progress (a frame rendered, or a lost camera being reopened) for this long; it
            must exceed the slowest frame (edgeseg pets every half period).
        start_seconds: ``TimeoutStartSec``: from the start to READY (the model loaded,
            ``--backend auto`` measured, the source open or being reopened).
    """

    name: str
    config: Path
    python: str
    user_unit: bool = False
    run_as: str | None = None
    groups: tuple[str, ...] = ("video",)
    watchdog_seconds: int = 30
    start_seconds: int = 300


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
    forever (5 s apart), logging to the journal, started at boot. ``Type=notify``: edgeseg
    says READY once the model is loaded and the source open (or being reopened), and pets
    ``WatchdogSec`` while frames flow (:mod:`edgeseg.runtime.notify`): a run that hangs is
    restarted."""
    if spec.watchdog_seconds < 1 or spec.start_seconds < 1:
        raise DataError("a service's watchdog and start timeout must be at least 1 second")
    if not spec.config.is_absolute():
        raise DataError(f"a service needs the absolute path of its config, got {spec.config}")
    # A camera absent at boot is waited for (the run is READY meanwhile), not a restart loop.
    command = [spec.python, "-m", "edgeseg.cli.main", "run", "--config", str(spec.config)]
    command.append("--wait-for-source")
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
        "Type=notify",
        # Only edgeseg's own process may notify (not a child it runs, such as a measurement).
        "NotifyAccess=main",
        f"TimeoutStartSec={spec.start_seconds}",
        f"WatchdogSec={spec.watchdog_seconds}",
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


# --------------------------------------------------------------------------------------------
# Installing, removing and asking about a unit


@dataclass(frozen=True)
class ConfigChoice:
    """The config file a service reads, and the others found that it will not read."""

    path: Path
    ignored: tuple[Path, ...] = ()


def choose_config(given: Path | None, user_unit: bool) -> ConfigChoice:
    """The config file the service reads: ``given``, else the one the search finds (the
    system file for a system unit, the user's for a user unit, when several exist)."""
    if given is not None:
        path = Path(os.path.abspath(given.expanduser()))
        if not path.is_file():
            raise DataError(f"config file not found: {path}")
        return ConfigChoice(path)
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
    return ConfigChoice(chosen, tuple(p for p in found if p != chosen))


def run_as_user(given: str | None) -> str:
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


def _ours(target: Path) -> bool:
    try:
        return is_ours(target.read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        raise DataError(f"cannot read {target}: {exc.strerror or exc}") from None


def install_unit(spec: UnitSpec, *, dry_run: bool = False) -> tuple[Path, str, bool]:
    """Write the unit of ``spec`` (mode 0644); (its path, its text, whether it replaced one).

    An existing file not written by edgeseg is never replaced. With ``dry_run`` nothing is
    written.
    """
    text = unit_text(spec)
    target = unit_path(spec.name, spec.user_unit)
    existed = target.exists()
    if existed and not _ours(target):
        raise DataError(
            f"{target} exists and was not written by `edgeseg service install`; "
            "remove it or choose another --name"
        )
    if dry_run:
        return target, text, existed
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        target.chmod(0o644)
    except OSError as exc:
        hint = "" if spec.user_unit else " (run it with sudo, or install a --user unit)"
        raise DataError(f"cannot write {target}: {exc.strerror or exc}{hint}") from None
    return target, text, existed


def remove_unit(name: str, user_unit: bool) -> list[Path]:
    """Remove a unit written by `edgeseg service install` and its enable links; the paths
    removed, the links first."""
    name = check_unit_name(name)
    target = unit_path(name, user_unit)
    if not target.exists():
        raise DataError(f"no unit {target}: nothing to remove")
    if not _ours(target):
        raise DataError(f"{target} was not written by `edgeseg service install`; not removing it")
    removed = [*enable_links(name, user_unit), target]
    try:
        for path in removed:
            path.unlink()
    except OSError as exc:
        hint = "" if user_unit else " (run it with sudo)"
        raise DataError(f"cannot remove {exc.filename}: {exc.strerror or exc}{hint}") from None
    return removed


def unit_state(name: str, user_unit: bool) -> str:
    """One line: whether the unit is installed, and whether edgeseg wrote it."""
    target = unit_path(name, user_unit)
    if not target.exists():
        return f"unit: {target} (not installed)"
    try:
        ours = is_ours(target.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        ours = False
    return f"unit: {target} ({'written by edgeseg' if ours else 'not written by edgeseg'})"


def systemctl_status(name: str, user_unit: bool) -> int | None:
    """Run ``systemctl status NAME`` (it prints to the terminal); its exit code, or None where
    there is no systemctl."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    argv = [systemctl, *(["--user"] if user_unit else []), "status", check_unit_name(name)]
    argv.append("--no-pager")
    try:
        return subprocess.run(argv, timeout=30, check=False).returncode
    except subprocess.TimeoutExpired:
        raise DataError(f"`{' '.join(argv)}` did not answer within 30 s") from None
