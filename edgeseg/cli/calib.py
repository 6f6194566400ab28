"""`edgeseg calib build` and `edgeseg calib show`: representative sets for int8 calibration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from edgeseg.cli.common import (
    ChannelOrderOpt,
    ForegroundOpt,
    InputMaxOpt,
    InputSizeOpt,
    NormalizationOpt,
    ThresholdOpt,
    TrustOpt,
    handle_errors,
    metadata_flags,
    out,
    progress_bar,
)

calib_app = typer.Typer(
    help="Build and inspect representative sets for int8 calibration.",
    no_args_is_help=True,
)


def _say(text: str) -> None:
    # File names and patterns may hold '[', which Rich would read as markup.
    out.print(text, markup=False, highlight=False, soft_wrap=True)


@calib_app.command("build")
@handle_errors
def build(
    source: str = typer.Argument(
        ...,
        help="Frames: image folder, glob pattern ('data/*.tif'), image, TIFF stack or video.",
    ),
    model: Path = typer.Option(
        ..., "--model", "-m", help="The model to calibrate: .keras, .h5, SavedModel or .tflite."
    ),
    n: int = typer.Option(200, "--n", "-n", help="Tiles to keep."),
    out_path: Path = typer.Option(
        Path("set.npz"), "--out", "-o", help="Where to write the set (.npz; manifest beside it)."
    ),
    holdout: float = typer.Option(
        0.0,
        "--holdout",
        help="Fraction of frames to hold out of the set (to score the int8 model on).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the holdout split."),
    max_frames: int = typer.Option(
        500, "--max-frames", help="Look at most this many frames, evenly spaced over the source."
    ),
    trust_model: bool = TrustOpt,
    input_size: str | None = InputSizeOpt,
    normalization: str | None = NormalizationOpt,
    input_max: float | None = InputMaxOpt,
    threshold: float | None = ThresholdOpt,
    foreground_value: int | None = ForegroundOpt,
    channel_order: str | None = ChannelOrderOpt,
) -> None:
    """Pick N diverse model-input tiles from SOURCE, preprocessed as the runtime will."""
    from edgeseg.convert.calibration import build_calibration, check_output_path, manifest_path
    from edgeseg.model.resolve import model_metadata
    from edgeseg.runtime.sources import open_file_source

    # Cheap checks first: a bad --out or source should not wait for the model to load.
    check_output_path(out_path)
    src = open_file_source(source)
    try:
        _say(f"read {src.description}")
        meta = model_metadata(
            model,
            trust_model=trust_model,
            **metadata_flags(
                input_size, normalization, input_max, threshold, foreground_value, channel_order
            ),
        )
        h, w = meta.input_size
        _say(
            f"model {model.name}: input {h}x{w}x{meta.channels} ({meta.channel_order}), "
            f"normalization {meta.normalization}"
        )
        with progress_bar() as bar:
            task = bar.add_task("reading frames", total=None)
            calib, held = build_calibration(
                src,
                meta,
                n,
                holdout=holdout,
                seed=seed,
                max_candidate_frames=max_frames,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        src.close()
    path = calib.save(out_path)
    m = calib.manifest
    held_text = f"; held out {len(held)} frame(s)" if held else ""
    _say(
        f"kept {m['n']} tiles ({h}x{w}x{meta.channels}) from {m['frames_used']} of "
        f"{m['frames_seen']} frames looked at ({m['candidate_tiles']} candidate tiles)"
        f"{held_text}"
    )
    _say(f"sha256 {m['sha256']}")
    _say(f"wrote {path} and {manifest_path(path)}")


@calib_app.command("show")
@handle_errors
def show(
    path: Path = typer.Argument(..., help="A calibration set (.npz) written by `calib build`."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON."),
) -> None:
    """Print a calibration set's manifest (after checking its hash)."""
    from edgeseg.convert.calibration import CalibrationSet

    calib = CalibrationSet.load(path)
    m = calib.manifest
    if as_json:
        typer.echo(json.dumps(m, indent=2, sort_keys=True))
        return
    n, h, w, c = calib.tiles.shape
    pre = m.get("preprocessing", {})
    source = m.get("source", {})
    rows: list[tuple[str, Any]] = [
        ("set", f"{path}: {n} tiles of {h}x{w}x{c} float32"),
        ("source", source.get("description")),
        ("source path", source.get("path")),
        (
            "frames",
            f"{m.get('frames_total')} in the source, {m.get('frames_seen')} looked at, "
            f"{m.get('frames_used')} used",
        ),
        ("held out", _held_out(m)),
        ("preprocessing", _preprocessing(pre)),
        ("tiling", ", ".join(f"{k} {v}" for k, v in m.get("tiling", {}).items())),
        ("selection", m.get("selection")),
        ("seed", m.get("seed")),
        ("sha256", f"{m.get('sha256')} (verified)"),
        ("built by", f"edgeseg {m.get('edgeseg')}, {m.get('created')}"),
    ]
    for key, value in rows:
        _say(f"{key + ':':<15} {value}")


def _held_out(m: dict[str, Any]) -> str:
    names = list(m.get("holdout") or [])
    if not names:
        return "none"
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"{len(names)} frame(s) ({m.get('holdout_fraction')}): {shown}"


def _preprocessing(pre: dict[str, Any]) -> str:
    size = pre.get("input_size") or ["?", "?"]
    parts = [
        f"input {size[0]}x{size[1]}x{pre.get('channels')} ({pre.get('channel_order')})",
        f"normalization {pre.get('normalization')}",
    ]
    if pre.get("normalization") == "scale" and pre.get("input_max") is not None:
        parts.append(f"input_max {pre['input_max']}")
    if pre.get("normalization") == "percentile":
        parts.append(f"percentiles {pre.get('percentiles')}")
    return ", ".join(parts)
