"""`edgeseg run`: segment a camera, microscope or file stream live, with overlay and outputs.

The command is built from :class:`~edgeseg.run_options.RunOptions`, where every option is
declared once (its flags, help and bounds in the field's metadata): one Typer parameter per
field, in field order, plus ``--config`` (the file itself, not a setting) after MODEL, and the
metadata flags every command shares (``cli/common.py``) where the ``flags`` field stands.
Every option can also come from `edgeseg.toml` files (`edgeseg/cli/configured.py`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from pathlib import Path
from typing import Any

import typer

from edgeseg.cli.common import (
    ChannelOrderOpt,
    InputMaxOpt,
    InputSizeOpt,
    NormalizationOpt,
    ThresholdOpt,
    err,
    handle_errors,
    metadata_flags,
    out,
)
from edgeseg.cli.configured import RunCommand
from edgeseg.errors import DataError
from edgeseg.run_options import (
    ARGUMENT,
    LIBRARY,
    METADATA_FLAGS,
    OptionSpec,
    RunOptions,
    option_specs,
)

# `run`'s own parameter, not a setting of a run: the config file to read.
CONFIG_OPTION = typer.Option(
    None,
    "--config",
    help="Read settings from this edgeseg.toml only (default: /etc/edgeseg, "
    "~/.config/edgeseg, then ./edgeseg.toml, later winning; the command line wins over "
    "all). See `edgeseg config show`.",
)
# The metadata flags (shared with every command that takes a model) that fill
# RunOptions.flags: parameter name (metadata_flags' keyword), type, Typer option.
FLAG_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("input_size", str | None, InputSizeOpt),
    ("normalization", str | None, NormalizationOpt),
    ("input_max", float | None, InputMaxOpt),
    ("threshold", float | None, ThresholdOpt),
    ("channel_order", str | None, ChannelOrderOpt),
)


def run_command() -> Any:
    """The `run` click command, built from this module alone (for `config` and `service`)."""
    solo = typer.Typer(add_completion=False)
    solo.command("run", cls=RunCommand)(run)
    return typer.main.get_command(solo)


def _typer_parameter(f: dataclasses.Field, spec: OptionSpec, hint: Any) -> inspect.Parameter:
    """One RunOptions field as the parameter of a Typer command."""
    default = None if f.default is dataclasses.MISSING else f.default  # MODEL: from a config
    annotation = spec.type or hint
    if default is None and type(None) not in typing.get_args(annotation):
        annotation = annotation | None
    if spec.kind == ARGUMENT:
        info = typer.Argument(
            default, help=spec.help, metavar=spec.metavar, show_default=spec.show_default
        )
    else:
        info = typer.Option(
            default,
            *spec.decls,
            help=spec.help,
            min=spec.min,
            metavar=spec.metavar,
            show_default=spec.show_default,
        )
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation
    )


def run_parameters() -> list[inspect.Parameter]:
    """The parameters of `edgeseg run`, in order: the arguments, ``--config``, then every
    other RunOptions field (the metadata flags where ``flags`` stands); library-only fields
    are left out."""
    hints = typing.get_type_hints(RunOptions)
    arguments: list[inspect.Parameter] = []
    options: list[inspect.Parameter] = []
    for f, spec in option_specs():
        if spec.kind == LIBRARY:
            continue
        if spec.kind == METADATA_FLAGS:
            options += [
                inspect.Parameter(
                    name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind
                )
                for name, kind, opt in FLAG_OPTIONS
            ]
            continue
        param = _typer_parameter(f, spec, hints[f.name])
        (arguments if spec.kind == ARGUMENT else options).append(param)
    config = inspect.Parameter(
        "config", inspect.Parameter.KEYWORD_ONLY, default=CONFIG_OPTION, annotation=Path | None
    )
    return [*arguments, config, *options]


def _run(**params: Any) -> None:
    """Run MODEL on a live or recorded stream and overlay the masks in real time.

    Outputs in any combination: a window (when a display exists), --record, --save-masks,
    --csv, --objects, --stream. Ctrl-C stops cleanly: the recording stays playable and the
    CSV complete. Every option can be set in edgeseg.toml (`edgeseg config show`).
    """
    from edgeseg.session import build_session

    params.pop("config")  # read by RunCommand, which put its settings into params
    if params["model"] is None:  # RunCommand fills it from the config or says where it looked
        raise DataError("no model: give MODEL or set model in a config file")
    flags = metadata_flags(**{name: params.pop(name) for name, _, _ in FLAG_OPTIONS})
    options = RunOptions(**params, flags=flags)
    session = build_session(options, warn=lambda msg: err.print(msg, highlight=False))
    err.print(session.description, highlight=False)
    summary = session.run(handle_signals=True)
    for line in summary.lines():
        out.print(line, highlight=False)
    o = options
    written = [str(p) for p in (o.record, o.save_masks, o.csv, o.objects, o.summary_json) if p]
    if o.summary_json:
        o.summary_json.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    if written:
        out.print("wrote " + ", ".join(written), highlight=False)
    if summary.error:
        raise typer.Exit(1)


_parameters = run_parameters()
_run.__signature__ = inspect.Signature(_parameters)  # type: ignore[attr-defined]
_run.__annotations__ = {p.name: p.annotation for p in _parameters}
run = handle_errors(_run)
