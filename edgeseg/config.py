"""`edgeseg.toml`: settings for `edgeseg run` read from files, merged, checked, resolved.

A config file holds `run`'s options under their long names without the dashes (``save-masks =
"masks/"``; ``save_masks`` works too) and the model under ``model``::

    model = "models/unet_int8.tflite"   # relative paths are relative to this file's folder
    source = "csi://0"
    headless = true
    stream = "0.0.0.0:8080"
    save-masks = "/var/lib/edgeseg/masks/"

Files are merged in this order, later winning: the system folder (``/etc/edgeseg``, or
``$EDGESEG_SYSTEM_CONFIG_DIR``), the user folder (``$XDG_CONFIG_HOME/edgeseg``, by default
``~/.config/edgeseg``), then ``./edgeseg.toml``; the command line wins over all of them (the CLI
does that part). ``--config FILE`` replaces the search with that one file.

This module knows nothing of the command line: the caller describes the keys it accepts as
plain data (:class:`Param`: a kind and the name the value goes to), derived from its own
options, so an option added to `run` is configurable with no change here.
"""

from __future__ import annotations

import difflib
import glob
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.errors import DataError
from edgeseg.paths import TOMLDecodeError, parse_toml

__all__ = [
    "CONFIG_NAME",
    "KINDS",
    "TABLES",
    "Config",
    "Param",
    "Setting",
    "config_search_paths",
    "format_value",
    "load_config",
    "load_table",
    "read_config_file",
    "system_config_dir",
    "user_config_dir",
]

CONFIG_NAME = "edgeseg.toml"
SYSTEM_DIR = Path("/etc/edgeseg")
KINDS = ("path", "int", "float", "bool", "str", "choice", "source")


@dataclass(frozen=True)
class Param:
    """What one config key accepts.

    Attributes:
        kind: ``path`` (relative to the file's folder), ``int``, ``float``, ``bool``, ``str``,
            ``choice`` (one of ``choices``) or ``source`` (a stream URI or path: a relative
            path that exists beside the file is made absolute, anything else kept as written).
        dest: where the value goes (the command's parameter name), e.g. ``save_masks``.
        choices: the allowed values of a ``choice``.
        min, max: bounds of an ``int`` or ``float``.
        multiple: the value is a TOML array of such items.
    """

    kind: str
    dest: str
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    multiple: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown parameter kind {self.kind!r}; one of {KINDS}")


#: TOML tables an ``edgeseg.toml`` may hold beside `run`'s keys, each with the keys it takes:
#: read by the commands that use them (:func:`load_table`), checked by every reader.
#: ``[dicomweb]``: credentials of a DICOMweb server (HTTP basic ``user``/``password``, or a
#: bearer ``token``) for `segment dicomweb://…`.
TABLES: dict[str, dict[str, Param]] = {
    "dicomweb": {
        "user": Param("str", "user"),
        "password": Param("str", "password"),
        "token": Param("str", "token"),
    },
}


@dataclass(frozen=True)
class Setting:
    """One merged value: what it is, under which key it was written, in which file."""

    value: Any
    key: str
    source: Path


@dataclass
class Config:
    """The merged settings (dest → Setting), the files searched and the files read."""

    settings: dict[str, Setting] = field(default_factory=dict)
    searched: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def values(self) -> dict[str, Any]:
        return {dest: s.value for dest, s in self.settings.items()}

    def where(self) -> str:
        """The files searched, for an error that says where it looked."""
        return ", ".join(str(p) for p in self.searched) or "nowhere"


def system_config_dir() -> Path:
    return Path(os.environ.get("EDGESEG_SYSTEM_CONFIG_DIR") or SYSTEM_DIR)


def user_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgeseg"


def config_search_paths(cwd: Path | None = None) -> list[Path]:
    """Where config files are looked for, lowest precedence first."""
    here = (cwd or Path.cwd()) / CONFIG_NAME
    return [
        _absolute(system_config_dir() / CONFIG_NAME),
        _absolute(user_config_dir() / CONFIG_NAME),
        _absolute(here),
    ]


def _absolute(path: Path) -> Path:
    """``path`` absolute and normalized (``a/../b`` → ``b``), links left as they are."""
    return Path(os.path.abspath(path.expanduser()))


def format_value(value: Any) -> str:
    """A value as TOML writes it (strings quoted), for messages and `config show`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, Path)):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _keys(params: Mapping[str, Param]) -> dict[str, str]:
    """Every spelling a file may use → the canonical key (``save_masks`` → ``save-masks``)."""
    spellings: dict[str, str] = {}
    for key in params:
        spellings[key] = key
        spellings.setdefault(key.replace("-", "_"), key)
    return spellings


def _check(value: Any, param: Param, key: str, where: str, folder: Path) -> Any:
    """One value checked against its kind and made ready to use (paths absolute)."""
    if param.multiple:
        if not isinstance(value, list):
            raise DataError(f"{where}: '{key}' must be a list, got {format_value(value)}")
        single = Param(param.kind, param.dest, param.choices, param.min, param.max)
        return [_check(v, single, key, where, folder) for v in value]
    kind = param.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise DataError(f"{where}: '{key}' must be true or false, got {format_value(value)}")
        return value
    if kind in ("int", "float"):
        ok = isinstance(value, int) or (kind == "float" and isinstance(value, float))
        if isinstance(value, bool) or not ok:
            what = "an integer" if kind == "int" else "a number"
            raise DataError(f"{where}: '{key}' must be {what}, got {format_value(value)}")
        if param.min is not None and value < param.min:
            raise DataError(f"{where}: '{key}' must be at least {param.min:g}, got {value}")
        if param.max is not None and value > param.max:
            raise DataError(f"{where}: '{key}' must be at most {param.max:g}, got {value}")
        return float(value) if kind == "float" else value
    if not isinstance(value, str):
        raise DataError(f"{where}: '{key}' must be a string, got {format_value(value)}")
    if kind == "choice":
        if value not in param.choices:
            allowed = ", ".join(param.choices)
            raise DataError(f"{where}: '{key}' must be one of {allowed}, got {format_value(value)}")
        return value
    if kind == "path":
        if not value.strip():
            raise DataError(f"{where}: '{key}' must be a path, got an empty string")
        return _absolute(folder / Path(value).expanduser())
    if kind == "source":
        return _source(value, folder)
    return value


def _source(text: str, folder: Path) -> str:
    """A relative path or glob that names files beside the config file, made absolute."""
    if "://" in text or text.startswith("gst:") or not text.strip():
        return text
    path = Path(text).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = _absolute(folder / path)
    if candidate.exists() or (glob.has_magic(text) and glob.glob(str(candidate))):
        return str(candidate)
    return text


def read_config_file(
    path: Path,
    params: Mapping[str, Param],
    exclusive: Iterable[Iterable[str]] = (),
) -> dict[str, Setting]:
    """One file's settings (dest → Setting), every key and value checked.

    Raises:
        DataError: one line naming the file (and the key): unreadable, not TOML, an unknown
            key (with the nearest known one), a value of the wrong type, a key given twice,
            two keys of one ``exclusive`` group.
    """
    path = _absolute(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder; give a config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise DataError(f"cannot read config file {path}: {reason}") from None
    try:
        data = parse_toml(text)
    except TOMLDecodeError as exc:
        raise DataError(f"{path}: not valid TOML: {exc}") from None
    spellings = _keys(params)
    settings: dict[str, Setting] = {}
    for written, value in data.items():
        if written in TABLES and isinstance(value, dict):
            _read_table(path, written, value)  # checked here; read by load_table
            continue
        key = spellings.get(written)
        if key is None:
            close = difflib.get_close_matches(written, list(spellings), n=1, cutoff=0.6)
            hint = (
                f" (did you mean '{spellings[close[0]]}'?)"
                if close
                else " (the keys are `edgeseg run`'s options and 'model')"
            )
            raise DataError(f"{path}: unknown key '{written}'{hint}")
        param = params[key]
        if param.dest in settings:
            first = settings[param.dest].key
            raise DataError(f"{path}: '{key}' is given twice (as '{first}' and '{written}')")
        checked = _check(value, param, key, str(path), path.parent)
        settings[param.dest] = Setting(checked, key, path)
    for group in exclusive:
        given = [settings[d].key for d in group if d in settings]
        if len(given) > 1:
            raise DataError(f"{path}: set one of {' or '.join(repr(k) for k in given)}, not both")
    return settings


def load_config(
    params: Mapping[str, Param],
    explicit: Path | None = None,
    *,
    exclusive: Iterable[Iterable[str]] = (),
    cwd: Path | None = None,
) -> Config:
    """The merged settings of the config files: ``explicit`` alone, else the search.

    ``params`` maps each canonical key (``save-masks``) to what it accepts. ``exclusive``
    lists groups of dests that are alternatives (``camera`` and ``source``): a file that
    sets one clears the others set by earlier files.

    Raises:
        DataError: ``explicit`` does not exist, or any file fails :func:`read_config_file`.
    """
    groups = [tuple(g) for g in exclusive]
    if explicit is not None:
        searched = [_absolute(explicit)]
        if not searched[0].exists():
            raise DataError(f"config file not found: {searched[0]}")
    else:
        searched = config_search_paths(cwd)
    config = Config(searched=searched)
    for path in searched:
        if explicit is None and not path.is_file():
            continue
        settings = read_config_file(path, params, groups)
        config.files.append(path)
        for group in groups:
            if any(d in settings for d in group):
                for d in group:
                    config.settings.pop(d, None)
        config.settings.update(settings)
    return config


def _read_table(path: Path, name: str, data: Mapping[str, Any]) -> dict[str, Setting]:
    """The settings of table ``[name]`` of one file, checked against :data:`TABLES`."""
    params = TABLES[name]
    settings: dict[str, Setting] = {}
    for written, value in data.items():
        key = written.replace("_", "-")
        if key not in params:
            known = ", ".join(params)
            raise DataError(f"{path}: unknown key '{written}' in [{name}] (known: {known})")
        settings[params[key].dest] = Setting(
            _check(value, params[key], f"{name}.{key}", str(path), path.parent),
            f"{name}.{key}",
            path,
        )
    return settings


def load_table(name: str, explicit: Path | None = None, *, cwd: Path | None = None) -> Config:
    """Table ``[name]`` (one of :data:`TABLES`) of the config files, merged as
    :func:`load_config` merges (``explicit`` alone, else the search; later files win)."""
    if name not in TABLES:
        raise ValueError(f"unknown config table {name!r}")
    searched = [_absolute(explicit)] if explicit is not None else config_search_paths(cwd)
    if explicit is not None and not searched[0].exists():
        raise DataError(f"config file not found: {searched[0]}")
    config = Config(searched=searched)
    for path in searched:
        if not path.is_file():
            continue
        try:
            data = parse_toml(path.read_text(encoding="utf-8"))
        except TOMLDecodeError as exc:
            raise DataError(f"{path}: not valid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read config file {path}: {exc}") from None
        table = data.get(name)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise DataError(f"{path}: '{name}' must be a table ([{name}])")
        config.files.append(path)
        config.settings.update(_read_table(path, name, table))
    return config
