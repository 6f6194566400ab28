"""`edgeseg run`: segment a camera, microscope or file stream live, with overlay and outputs.

Every option can also come from `edgeseg.toml` files (`edgeseg/cli/configured.py`).
"""

from __future__ import annotations

import json
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


def run_command() -> Any:
    """The `run` click command, built from this module alone (for `config` and `service`)."""
    solo = typer.Typer(add_completion=False)
    solo.command("run", cls=RunCommand)(run)
    return typer.main.get_command(solo)


@handle_errors
def run(
    model: Path | None = typer.Argument(
        None,
        help="A .tflite model (from `edgeseg convert` or not). Default: `model` of the config.",
        metavar="MODEL",
        show_default=False,
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="Read settings from this edgeseg.toml only (default: /etc/edgeseg, "
        "~/.config/edgeseg, then ./edgeseg.toml, later winning; the command line wins over "
        "all). See `edgeseg config show`.",
    ),
    camera: int | None = typer.Option(None, "--camera", help="Camera index (like /dev/videoN)."),
    source: str | None = typer.Option(
        None,
        "--source",
        help="Stream URI: v4l2:///dev/video0, csi://0, file://clip.mp4 or a path, an image "
        "folder or glob, a TIFF stack, rtsp://…, gst:PIPELINE, synthetic://?size=1024x1024.",
    ),
    delegate: str | None = typer.Option(
        None,
        "--delegate",
        help="auto (Edge TPU for *_edgetpu.tflite, else CPU/XNNPACK), cpu, edgetpu, or a "
        "delegate library path. Default: the --device profile's, else auto.",
    ),
    backend: str = typer.Option(
        "auto",
        "--backend",
        help="Runtime: auto (measure the installed runtimes that read MODEL once, keep the "
        "fastest whose label maps agree with the file's own runtime's; cached per device, "
        "model, versions, threads and frame size), litert, openvino or onnxruntime. A "
        "delegate or an *_edgetpu.tflite model means LiteRT.",
    ),
    explain: bool = typer.Option(
        False, "--explain", help="Say what --backend auto picked and the figures behind it."
    ),
    device: str | None = typer.Option(
        None,
        "--device",
        help="Device profile (rpi4, rpi5, jetson-orin-nano, coral-usb, coral-devboard, x86-64 "
        "or a .toml): its delegate, threads and camera unless given.",
    ),
    fallback: bool = typer.Option(
        False, "--fallback", help="If the delegate cannot load, warn and run the CPU model."
    ),
    edgetpu_device: str | None = typer.Option(
        None, "--edgetpu-device", help="Which Edge TPU: usb:0, pci:0 (several attached)."
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads per interpreter (default: cores / workers)."
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        help="Interpreters working on consecutive frames. Default: one per core for file "
        "sources on the CPU (throughput), one for live sources and delegates (latency).",
    ),
    resize: bool | None = typer.Option(
        None,
        "--resize/--tile",
        help="Resize frames to the model input instead of tiling (default: tile when the "
        "model has edgeseg metadata, resize otherwise).",
    ),
    overlap: int = typer.Option(32, "--overlap", help="Tile overlap in pixels."),
    min_area: int = typer.Option(0, "--min-area", help="Remove objects smaller than this (px)."),
    alpha: float = typer.Option(0.45, "--alpha", help="Overlay opacity, 0..1."),
    contours: bool = typer.Option(True, "--contours/--no-contours"),
    hud: bool = typer.Option(True, "--hud/--no-hud", help="FPS, latency and count overlay."),
    record: Path | None = typer.Option(
        None,
        "--record",
        help="Write the overlay video: a .mp4/.avi file, or a folder (or a name ending in /) "
        "for short segments, each playable as soon as it closes.",
    ),
    record_segment: float = typer.Option(
        10.0, "--record-segment", min=0.1, help="Seconds of video per segment (folder --record)."
    ),
    record_max_bytes: str | None = typer.Option(
        None,
        "--record-max-bytes",
        help="Keep the newest segments within this size (2G, 500M, bytes, or 20% of the free "
        "disk); the oldest of edgeseg's own segments are deleted first.",
    ),
    save_masks: Path | None = typer.Option(
        None,
        "--save-masks",
        help="Folder for lossless label maps, one per frame (8-bit classes; 16-bit object ids "
        "for an instance model), named after the source file for image folders and globs.",
    ),
    masks_max_bytes: str | None = typer.Option(
        None, "--masks-max-bytes", help="Keep the newest mask files within this size."
    ),
    mask_format: str = typer.Option("png", "--mask-format", help="png or tif."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Per-frame timings and counts."),
    csv_max_bytes: str | None = typer.Option(
        None,
        "--csv-max-bytes",
        help="Rotate the CSV (name.1.csv, name.2.csv…, each with its header) within this size.",
    ),
    objects: Path | None = typer.Option(
        None,
        "--objects",
        help="CSV of one row per object per frame: id, class, area (px, µm² with a pixel "
        "size), centroid, bounding box, mean and integrated intensity of the raw frame, "
        "touches the border.",
    ),
    objects_max_bytes: str | None = typer.Option(
        None,
        "--objects-max-bytes",
        help="Rotate the objects CSV (name.1.csv, name.2.csv…) within this size.",
    ),
    pixel_size: float | None = typer.Option(
        None,
        "--pixel-size",
        help="µm per pixel, for object areas in µm² (default: the model's pixel_size_um).",
    ),
    stream: str | None = typer.Option(
        None,
        "--stream",
        help="Serve the overlay as MJPEG over HTTP at [HOST:]PORT (binds 127.0.0.1 unless a "
        "host is given; off loopback it needs a token).",
    ),
    stream_token: str | None = typer.Option(
        None,
        "--stream-token",
        help="The token a browser must give off loopback (default: one generated on first use "
        "and kept in ~/.config/edgeseg/stream-token).",
    ),
    retry: bool = typer.Option(
        True,
        "--retry/--no-retry",
        help="A live source that stops delivering (unplugged, hung, dropped) is reopened with "
        "back-off until it comes back; --no-retry ends the run instead.",
    ),
    read_timeout: float = typer.Option(
        5.0, "--read-timeout", min=0.1, help="Seconds before a live read counts as hung."
    ),
    headless: bool = typer.Option(False, "--headless", help="No window."),
    max_frames: int | None = typer.Option(None, "--max-frames", min=1),
    width: int | None = typer.Option(None, "--width", help="Camera capture width."),
    height: int | None = typer.Option(None, "--height", help="Camera capture height."),
    fps: float | None = typer.Option(None, "--fps", help="Camera capture rate."),
    summary_json: Path | None = typer.Option(
        None, "--summary-json", help="Write the run summary as JSON."
    ),
    input_size: str | None = InputSizeOpt,
    normalization: str | None = NormalizationOpt,
    input_max: float | None = InputMaxOpt,
    threshold: float | None = ThresholdOpt,
    channel_order: str | None = ChannelOrderOpt,
) -> None:
    """Run MODEL on a live or recorded stream and overlay the masks in real time.

    Outputs in any combination: a window (when a display exists), --record, --save-masks,
    --csv, --objects, --stream. Ctrl-C stops cleanly: the recording stays playable and the
    CSV complete. Every option can be set in edgeseg.toml (`edgeseg config show`).
    """
    from edgeseg.session import RunOptions, build_session

    if model is None:  # RunCommand fills it from the config or says where it looked
        raise DataError("no model: give MODEL or set model in a config file")
    options = RunOptions(
        model=model,
        camera=camera,
        source=source,
        delegate=delegate,
        backend=backend,
        explain=explain,
        device=device,
        fallback=fallback,
        edgetpu_device=edgetpu_device,
        threads=threads,
        workers=workers,
        resize=resize,
        overlap=overlap,
        min_area=min_area,
        alpha=alpha,
        contours=contours,
        hud=hud,
        record=record,
        record_segment=record_segment,
        record_max_bytes=record_max_bytes,
        save_masks=save_masks,
        masks_max_bytes=masks_max_bytes,
        mask_format=mask_format,
        csv=csv_path,
        csv_max_bytes=csv_max_bytes,
        objects=objects,
        objects_max_bytes=objects_max_bytes,
        pixel_size=pixel_size,
        stream=stream,
        stream_token=stream_token,
        retry=retry,
        read_timeout=read_timeout,
        headless=headless,
        max_frames=max_frames,
        width=width,
        height=height,
        fps=fps,
        flags=metadata_flags(input_size, normalization, input_max, threshold, None, channel_order),
    )
    session = build_session(options, warn=lambda msg: err.print(msg, highlight=False))
    err.print(session.description, highlight=False)
    summary = session.run(handle_signals=True)
    for line in summary.lines():
        out.print(line, highlight=False)
    written = [str(p) for p in (record, save_masks, csv_path, objects, summary_json) if p]
    if summary_json:
        summary_json.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    if written:
        out.print("wrote " + ", ".join(written), highlight=False)
    if summary.error:
        raise typer.Exit(1)
