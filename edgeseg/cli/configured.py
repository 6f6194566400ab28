"""Commands whose options also come from `edgeseg.toml` files (today: `edgeseg run`).

The keys and their types are derived from the click command's own parameters
(:func:`run_params`; `cli/run.py` builds them from :class:`~edgeseg.run_options.RunOptions`,
where each option is declared once), and :class:`RunCommand` merges the files' values (see
`edgeseg/config.py`) into the parsed parameters before the command body runs, so an option
added to `run` is configurable with no other change. An option given on the command line wins
over every file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.core import TyperCommand

from edgeseg.cli.common import err, handle_errors
from edgeseg.config import Config, Param, load_config
from edgeseg.errors import DataError

# Parameters that are not settings of a run (the config file itself).
NOT_CONFIGURABLE = ("config",)
# Alternatives: a file (or the command line) that sets one drops the others set before it.
EXCLUSIVE = (("camera", "source"),)
# Stream URIs or paths: made absolute against the config file's folder when they name files.
SOURCE_PARAMS = ("source",)
# How a value came from the user rather than from a default (click's ParameterSource names).
GIVEN = ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def _kind(param: Any) -> tuple[str, tuple[str, ...], bool]:
    """(kind, choices, multiple) of a click/Typer parameter, from its declared type."""
    if param.name in SOURCE_PARAMS:
        return "source", (), False
    desc = getattr(param, "type_descriptor", None)
    if desc is not None:  # recent Typer coerces by annotation, with no click type
        if desc.is_choice:
            choices = tuple(str(getattr(c, "value", c)) for c in desc.choices or ())
            return "choice", choices, bool(desc.is_list)
        annotation = desc.annotation
        multiple = bool(desc.is_list)
        if multiple:
            args = getattr(annotation, "__args__", ()) or (str,)
            annotation = args[0]
        if desc.is_path or (isinstance(annotation, type) and issubclass(annotation, Path)):
            return "path", (), multiple
        for kind, py in (("bool", bool), ("int", int), ("float", float)):
            if annotation is py:
                return kind, (), multiple
        return "str", (), multiple
    # Click-based Typer: the parameter's click type names its kind.
    name = getattr(param.type, "name", "")
    kinds = {"path": "path", "integer": "int", "integer range": "int", "float": "float"}
    kinds |= {"float range": "float", "boolean": "bool", "choice": "choice"}
    choices = tuple(str(c) for c in getattr(param.type, "choices", ()) or ())
    return kinds.get(name, "str"), choices, bool(getattr(param, "multiple", False))


def run_params(command: Any) -> dict[str, Param]:
    """Config key → what it accepts, for every parameter of the `run` click command.

    The key is the long option name without the dashes (``--save-masks`` → ``save-masks``;
    ``--resize/--tile`` → ``resize``), the argument's name for MODEL (``model``).
    """
    params: dict[str, Param] = {}
    for p in command.params:
        if p.name in NOT_CONFIGURABLE or not getattr(p, "expose_value", True):
            continue
        longs = [o for o in p.opts if o.startswith("--")]
        key = longs[0][2:] if longs else p.name.replace("_", "-")
        kind, choices, multiple = _kind(p)
        bounds = (getattr(p, "min", None), getattr(p, "max", None))
        if kind not in ("int", "float"):
            bounds = (None, None)
        elif getattr(p, "type_descriptor", None) is None:  # click range types hold them
            bounds = (getattr(p.type, "min", None), getattr(p.type, "max", None))
        params[key] = Param(kind, p.name, choices, bounds[0], bounds[1], multiple)
    return params


def load_run_config(command: Any, explicit: Path | None = None) -> Config:
    """The merged config files for `run` (``explicit`` alone, else the search)."""
    return load_config(run_params(command), explicit, exclusive=EXCLUSIVE)


def apply_config(command: Any, ctx: Any) -> Config:
    """Put the config files' values into ``ctx.params`` wherever the command line gave none.

    Raises:
        DataError: a bad config file, or no model from the command line or any file.
    """
    config = load_run_config(command, ctx.params.get("config"))
    by_name = {p.name: p for p in command.params}

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name in GIVEN

    for dest, setting in config.settings.items():
        if given(dest) or any(dest in g and any(given(o) for o in g) for g in EXCLUSIVE):
            continue
        ctx.params[dest] = by_name[dest].process_value(ctx, setting.value)
    if config.files:
        err.print("config: " + ", ".join(map(str, config.files)), highlight=False, markup=False)
    if ctx.params.get("model") is None:
        raise DataError(
            f'no model: give MODEL or set model = "…" in a config file (looked in {config.where()})'
        )
    return config


class RunCommand(TyperCommand):
    """`run`, whose parameters are completed from the config files before the body runs."""

    def invoke(self, ctx: Any) -> Any:
        handle_errors(apply_config)(self, ctx)
        return super().invoke(ctx)
