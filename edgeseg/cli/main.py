"""The `edgeseg` command: one Typer module per command, composed here.

Command modules import only Typer, Rich and light edgeseg modules at import time; each
command imports what it needs (TensorFlow, LiteRT, OpenCV) inside its body.
"""

from __future__ import annotations

import typer

from edgeseg import __version__
from edgeseg.cli import bench as bench_cmd
from edgeseg.cli import calib as calib_cmd
from edgeseg.cli import config as config_cmd
from edgeseg.cli import convert as convert_cmd
from edgeseg.cli import demo as demo_cmd
from edgeseg.cli import distill as distill_cmd
from edgeseg.cli import doctor as doctor_cmd
from edgeseg.cli import eval as eval_cmd
from edgeseg.cli import inspect as inspect_cmd
from edgeseg.cli import report as report_cmd
from edgeseg.cli import run as run_cmd
from edgeseg.cli import samples as samples_cmd
from edgeseg.cli import segment as segment_cmd
from edgeseg.cli import service as service_cmd
from edgeseg.cli import train as train_cmd
from edgeseg.cli.common import set_verbose
from edgeseg.cli.configured import RunCommand

app = typer.Typer(
    name="edgeseg",
    help="Take a trained U-Net to edge devices: train, convert, run live, measure.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        help="Show TensorFlow's, Keras' and the converters' own messages live instead of "
        "writing them to a log file (also EDGESEG_VERBOSE=1).",
    ),
) -> None:
    """Take a trained U-Net to edge devices: train, convert, run live, measure."""
    set_verbose(verbose)


app.command("demo")(demo_cmd.demo)
app.command("samples")(samples_cmd.samples)
app.command("train")(train_cmd.train)
app.command("eval")(eval_cmd.eval_)
app.command("inspect")(inspect_cmd.inspect)
app.command("convert")(convert_cmd.convert)
app.command("run", cls=RunCommand)(run_cmd.run)
app.command("segment")(segment_cmd.segment)
app.command("bench")(bench_cmd.bench)
app.command("report")(report_cmd.report)
app.command("doctor")(doctor_cmd.doctor)
app.command("distill")(distill_cmd.distill)
app.add_typer(calib_cmd.calib_app, name="calib")
app.add_typer(config_cmd.config_app, name="config")
app.add_typer(service_cmd.service_app, name="service")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
