"""What every command shares: error handling, consoles, parsing helpers, metadata flags.

Nothing heavy is imported here: `edgeseg --help` must not load TensorFlow, LiteRT or OpenCV.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from edgeseg.errors import DataError, EdgesegError
from edgeseg.run_options import ACTIVATION_HELP, WHOLE_FRAMES_HELP
from edgeseg.sizes import parse_hw

# Rich cuts and wraps tables to 80 columns when it does not write to a terminal; in a pipe or a
# CI log nobody resizes the window, so lines may be as wide as their content.
WIDE = 1000


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _console(stderr: bool) -> Console:
    tty = _isatty(sys.stderr if stderr else sys.stdout)
    return Console(stderr=stderr, soft_wrap=True, width=None if tty else WIDE)


out = _console(stderr=False)
err = _console(stderr=True)
_settings = {"verbose": False}

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    from rich.markup import escape  # "pip install 'edgeseg[micro]'" is not markup

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn EdgesegError into one line on stderr and a non-zero exit; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EdgesegError as exc:
            message = " ".join(str(exc).split())  # one line, whatever the message held
            log = getattr(exc, "log_path", None)  # set by quiet_console
            if log is not None:
                message += f" (details in {log})"
            raise fail(message, exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def set_verbose(on: bool) -> None:
    """``edgeseg --verbose``: show TensorFlow's own messages live (see quiet_console)."""
    _settings["verbose"] = on


@contextlib.contextmanager
def quiet_console(command: str, folder: Path | None = None) -> Iterator[Path | None]:
    """Run a command's body with what TensorFlow, absl, oneDNN, Keras and the converters
    print sent to a log file (:mod:`edgeseg.quiet`), while ``out`` and ``err`` keep printing
    to the terminal. The log goes in ``folder`` (the command's output folder), else the
    user's cache folder; an EdgesegError leaving the block names it. Yields the log's path,
    None with ``--verbose`` or ``EDGESEG_VERBOSE=1`` (everything shows live).
    """
    from edgeseg.quiet import new_log_path, quiet, verbose_from_env

    verbose = _settings["verbose"] or verbose_from_env()
    log = None if verbose else new_log_path(command, folder)
    with quiet(log, verbose=verbose) as session:
        if session.log_path is not None:
            out.file, err.file = session.stdout, session.stderr
        try:
            yield session.log_path
        except EdgesegError as exc:
            if session.log_path is not None:
                print(f"error: {exc}", file=sys.stderr)  # into the log, beside the details
                exc.log_path = session.log_path  # type: ignore[attr-defined]
            raise
        finally:
            if session.log_path is not None:
                out.file = err.file = None  # type: ignore[assignment]  # sys.* again


def parse_hw_option(text: str | None, flag: str) -> tuple[int, int] | None:
    """An option's ``"256"`` → (256, 256), ``"256x320"`` (H x W) → (256, 320); None stays None.

    Raises:
        typer.BadParameter: one line naming ``flag`` (``sizes.parse_hw``'s message).
    """
    if text is None:
        return None
    try:
        return parse_hw(text, what=flag)
    except DataError as exc:
        raise typer.BadParameter(str(exc)) from None


def progress_bar() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        disable=not _isatty(err.file),
        # Rich would send sys.stdout / sys.stderr to the terminal while the bar shows:
        # inside quiet_console they belong to the log.
        redirect_stdout=False,
        redirect_stderr=False,
    )


# Metadata flags for models without edgeseg metadata (anyone else's U-Net); when the model
# has a sidecar, any flag given overrides that field.
InputSizeOpt = typer.Option(None, "--input-size", help="Model tile size, N or HxW.")
NormalizationOpt = typer.Option(
    None,
    "--normalization",
    help="How frames become [0, 1]: scale (divide by --input-max or the dtype maximum), "
    "percentile (per frame 1st..99.8th), minmax; for PyTorch models imagenet or "
    "mean=M1,M2,M3,std=S1,S2,S3 (after scale, per channel). Default without metadata: scale.",
)
InputMaxOpt = typer.Option(
    None, "--input-max", help="Divisor for --normalization scale (e.g. 4095 for 12-bit)."
)
ThresholdOpt = typer.Option(None, "--threshold", help="Foreground probability threshold.")
ForegroundOpt = typer.Option(
    None,
    "--foreground-value",
    help="Mask value that marks foreground in binary masks (255; 0 for ISBI membranes).",
)
ChannelOrderOpt = typer.Option(
    None, "--channel-order", help="RGB or BGR for a 3-channel model (default RGB)."
)
TrustOpt = typer.Option(
    False,
    "--trust-model",
    help="Allow Lambda layers (they can run arbitrary code): only for models you trust.",
)


def metadata_flags(
    input_size: str | None = None,
    normalization: str | None = None,
    input_max: float | None = None,
    threshold: float | None = None,
    foreground_value: int | None = None,
    channel_order: str | None = None,
) -> dict[str, Any]:
    """The metadata flags as keyword arguments for ``edgeseg.model.resolve``."""
    return {
        "input_size": parse_hw_option(input_size, "--input-size"),
        "normalization": normalization,
        "input_max": input_max,
        "threshold": threshold,
        "foreground_value": foreground_value,
        "channel_order": channel_order,
    }


# A source ONNX (PyTorch export) in run, eval, bench and convert.
ActivationOpt = typer.Option(None, "--activation", help=ACTIVATION_HELP)
WholeFramesOpt = typer.Option(False, "--whole-frames", help=WHOLE_FRAMES_HELP)
