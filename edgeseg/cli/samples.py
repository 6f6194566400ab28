"""`edgeseg samples`: write synthetic microscopy with exact masks and instance labels to
images/ + masks/ + labels/."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeseg.cli.common import handle_errors, out, parse_hw_option, progress_bar


@handle_errors
def samples(
    out_dir: Path = typer.Option(
        ..., "--out", "-o", help="Folder to write images/, masks/ and labels/ to."
    ),
    n: int = typer.Option(200, "-n", "--count", min=1, help="Number of image/mask pairs."),
    size: str = typer.Option("256", "--size", help="Image size, N or HxW."),
    bit_depth: int = typer.Option(8, "--bit-depth", help="8 or 16."),
    channels: int = typer.Option(1, "--channels", help="1 (gray) or 3 (RGB)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same images."),
    fmt: str = typer.Option("png", "--format", help="png or tif."),
) -> None:
    """Write synthetic fluorescence microscopy (nuclei) with exact ground-truth masks and
    instance labels (labels/: uint16, one id per nucleus; a later nucleus owns an overlap)."""
    from edgeseg.errors import DataError
    from edgeseg.samples import SynthConfig, write_dataset

    if bit_depth not in (8, 16):
        raise DataError(f"--bit-depth must be 8 or 16, got {bit_depth}")
    if channels not in (1, 3):
        raise DataError(f"--channels must be 1 or 3, got {channels}")
    if fmt not in ("png", "tif"):
        raise DataError(f"--format must be png or tif, got {fmt}")
    config = SynthConfig(
        size=parse_hw_option(size, "--size"), bit_depth=bit_depth, channels=channels
    )
    with progress_bar() as bar:
        task = bar.add_task("writing samples", total=n)
        path = write_dataset(
            out_dir, n, config, seed=seed, fmt=fmt, progress=lambda i: bar.update(task, completed=i)
        )
    out.print(
        f"wrote {n} images, masks and instance labels to {path}/images, {path}/masks "
        f"and {path}/labels"
    )
