"""`edgeseg config`: where `edgeseg run` looks for edgeseg.toml, and what it reads there."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeseg.cli.common import handle_errors, out
from edgeseg.cli.configured import load_run_config, run_params
from edgeseg.cli.run import run_command
from edgeseg.config import config_search_paths, format_value

config_app = typer.Typer(
    help="The edgeseg.toml settings of `edgeseg run`: where they are looked for, what they say.",
    no_args_is_help=True,
)

ConfigOpt = typer.Option(
    None, "--config", help="Show this file alone (as `edgeseg run --config FILE` reads it)."
)


def _say(line: str) -> None:
    out.print(line, highlight=False, markup=False)


@config_app.command("show")
@handle_errors
def show(config: Path | None = ConfigOpt) -> None:
    """Print the merged settings as TOML, each with the file it came from.

    Files are merged lowest precedence first: /etc/edgeseg/edgeseg.toml,
    ~/.config/edgeseg/edgeseg.toml, ./edgeseg.toml; options given to `edgeseg run` on the
    command line win over all of them.
    """
    command = run_command()
    merged = load_run_config(command, config)
    keys = {p.dest: key for key, p in run_params(command).items()}
    _say("# config files, lowest precedence first:")
    for path in merged.searched:
        _say(f"#   {path} ({'read' if path in merged.files else 'not found'})")
    if not merged.files:
        _say("# no config file found: `edgeseg run` uses its defaults and its command line")
        return
    if not merged.settings:
        _say("# no settings")
    order = list(keys)  # run's own parameter order
    lines = [
        (f"{keys[dest]} = {format_value(s.value)}", str(s.source))
        for dest, s in sorted(merged.settings.items(), key=lambda kv: order.index(kv[0]))
    ]
    width = max((len(text) for text, _ in lines), default=0)
    for text, source in lines:
        _say(f"{text.ljust(width)}  # {source}")


@config_app.command("path")
def path() -> None:
    """Print where config files are looked for, lowest precedence first, and which exist."""
    for p in config_search_paths():
        _say(f"{'found' if p.is_file() else 'missing':8}{p}")
