"""What every command shares: error handling, consoles, parsing helpers, metadata flags.

Nothing heavy is imported here: `edgeseg --help` must not load TensorFlow, LiteRT or OpenCV.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from edgeseg.errors import EdgesegError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn EdgesegError into one line on stderr and a non-zero exit; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EdgesegError as exc:
            message = " ".join(str(exc).split())  # one line, whatever the message held
            raise fail(message, exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"256"`` → (256, 256); ``"256x320"`` (H x W) → (256, 320)."""
    if text is None:
        return None
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise typer.BadParameter(f"expected N or HxW, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise typer.BadParameter(f"expected N or HxW with positive sizes, got {text!r}")
    return (values[0], values[1])


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
        disable=not sys.stderr.isatty(),
    )


# Metadata flags for models without edgeseg metadata (anyone else's U-Net); when the model
# has a sidecar, any flag given overrides that field.
InputSizeOpt = typer.Option(None, "--input-size", help="Model tile size, N or HxW.")
NormalizationOpt = typer.Option(
    None,
    "--normalization",
    help="How frames become [0, 1]: scale (divide by --input-max or the dtype maximum), "
    "percentile (per frame 1st..99.8th), minmax. Default for models without metadata: scale.",
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
        "input_size": parse_size(input_size),
        "normalization": normalization,
        "input_max": input_max,
        "threshold": threshold,
        "foreground_value": foreground_value,
        "channel_order": channel_order,
    }
