"""`edgeseg calib build` and `edgeseg calib show`: representative sets for int8 calibration."""

from __future__ import annotations

import contextlib
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
    quiet_console,
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
        help="Frames: image folder, glob pattern ('data/*.tif'), image, TIFF stack, video, "
        "synthetic://?size=HxW&seed=S&frames=N, or a named set (`edgeseg calib list`).",
    ),
    model: Path = typer.Option(
        ..., "--model", "-m", help="The model to calibrate: .keras, .h5, SavedModel or .tflite."
    ),
    n: int | None = typer.Option(
        None, "--n", "-n", help="Tiles to keep [default: 200, or the named set's n]."
    ),
    out_path: Path = typer.Option(
        Path("set.npz"), "--out", "-o", help="Where to write the set (.npz; manifest beside it)."
    ),
    holdout: float | None = typer.Option(
        None,
        "--holdout",
        help="Fraction of frames to hold out of the set (to score the int8 model on) "
        "[default: 0, or the named set's holdout].",
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
    window: str | None = typer.Option(
        None,
        "--window",
        help="DICOM frames: CENTER,WIDTH, file or a preset (ct-soft-tissue, ct-lung, …); "
        "default: each file's own. Give the same --window to `convert --calib SET`, which "
        "records it in the model.",
    ),
) -> None:
    """Pick N diverse model-input tiles from SOURCE, preprocessed as the runtime will."""
    from edgeseg.convert.calibration import (
        build_calibration,
        check_output_path,
        manifest_path,
        named_set_for,
        open_calibration_source,
    )
    from edgeseg.session import any_model_metadata

    # Cheap checks first: a bad --out or source should not wait for the model to load.
    check_output_path(out_path)
    named = named_set_for(source)
    if named is not None:
        _say(f"named set {named.name} ({named.origin}): {named.source}")
        source = named.source
        n = named.n if n is None else n
        holdout = named.holdout if holdout is None else holdout
    n = 200 if n is None else n
    holdout = 0.0 if holdout is None else holdout
    from edgeseg.dicom import parse_window

    src = open_calibration_source(source, window=parse_window(window))
    with quiet_console("calib-build"), contextlib.closing(src):
        _say(f"read {src.description}")
        meta = any_model_metadata(
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
                named=named,
            )
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


@calib_app.command("list")
@handle_errors
def list_sets() -> None:
    """List the named calibration sets: calibration/sets/*.toml shipped with edgeseg, and
    yours in ./calibration/sets/ (they win)."""
    from rich.table import Table

    from edgeseg.convert.calibration import available_sets

    sets = available_sets()
    if not sets:
        _say("no named calibration sets found")
        return
    table = Table(title="named calibration sets")
    for col in ("name", "tiles", "source", "description", "from"):
        table.add_column(col, justify="right" if col == "tiles" else "left", overflow="fold")
    for s in sets.values():
        table.add_row(s.name, str(s.n), s.source, s.description, s.origin)
    out.print(table, markup=False, highlight=False)
    _say("build one: edgeseg calib build NAME --model MODEL --out set.npz")


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
        *([("named set", _named(m["named_set"]))] if m.get("named_set") else []),
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


def _named(named: Any) -> str:
    if not isinstance(named, dict):
        return str(named)
    return f"{named.get('name')} ({named.get('from')})"


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
