"""`edgeseg run`: segment a camera, microscope or file stream live, with overlay and outputs."""

from __future__ import annotations

import json
from pathlib import Path

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


@handle_errors
def run(
    model: Path = typer.Argument(..., help="A .tflite model (from `edgeseg convert` or not)."),
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
    record: Path | None = typer.Option(None, "--record", help="Write the overlay video (.mp4)."),
    save_masks: Path | None = typer.Option(
        None, "--save-masks", help="Folder for lossless label maps, one per frame."
    ),
    mask_format: str = typer.Option("png", "--mask-format", help="png or tif."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Per-frame timings and counts."),
    stream: str | None = typer.Option(
        None,
        "--stream",
        help="Serve the overlay as MJPEG over HTTP at [HOST:]PORT (binds 127.0.0.1 unless a "
        "host is given).",
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
    --csv, --stream. Ctrl-C stops cleanly: the recording stays playable and the CSV complete.
    """
    import os
    import signal
    import threading

    from edgeseg.errors import DataError
    from edgeseg.model.resolve import apply_flags
    from edgeseg.runtime.backends import TFLiteBackend, open_backend
    from edgeseg.runtime.capture import CaptureThread
    from edgeseg.runtime.pipeline import CSV_FIELDS, RenderOptions, Segmenter, run_pipeline
    from edgeseg.runtime.sinks import (
        CsvSink,
        MaskSink,
        MjpegServer,
        VideoSink,
        WindowSink,
        parse_stream_address,
    )
    from edgeseg.runtime.streams import open_stream, parse_source

    profile = None
    if device is not None:
        from edgeseg.devices.profiles import load_profile

        profile = load_profile(device)
        if camera is None and source is None:
            source = profile.camera
    delegate = delegate or (profile.delegate if profile else "auto")
    if model.suffix.lower() not in (".tflite", ".onnx"):
        raise DataError(
            f"{model} is not a .tflite or .onnx model; convert it first: "
            f"edgeseg convert {model} --int8 …"
        )
    if mask_format not in ("png", "tif"):
        raise DataError(f"--mask-format must be png or tif, got {mask_format}")
    if not 0.0 <= alpha <= 1.0:
        raise DataError(f"--alpha must be between 0 and 1, got {alpha}")
    uri = parse_source(camera, source)
    backend, chosen = open_backend(
        model,
        delegate=delegate,
        # One interpreter gets every core unless told otherwise (LiteRT's own default is
        # fewer); with several workers the pool below splits the cores between them.
        threads=threads or (profile.threads if profile else None) or os.cpu_count(),
        fallback=fallback,
        device=edgetpu_device,
        warn=lambda msg: err.print(msg, highlight=False),
    )
    embedded = backend.metadata()
    meta = apply_flags(
        embedded,
        backend.input.shape,
        backend.output.shape,
        **metadata_flags(input_size, normalization, input_max, threshold, None, channel_order),
    )
    tile = (embedded is not None) if resize is None else not resize
    options = {"resize": not tile, "overlap": overlap, "min_area": min_area}
    segmenter = Segmenter.for_backend(backend, meta, **options)

    sinks: list = []
    stream_obj = None
    try:
        # Outputs first: a port in use or an unwritable path fails before the camera opens.
        if stream:
            host, port = parse_stream_address(stream)
            server = MjpegServer(host=host, port=port)
            sinks.append(server)
            err.print(f"streaming at {server.url}", highlight=False)
        if csv_path:
            sinks.append(CsvSink(csv_path, CSV_FIELDS))
        if save_masks:
            sinks.append(MaskSink(save_masks, fmt=mask_format))
        if record:
            sinks.append(VideoSink(record, fps=fps or 0))
        if not headless:
            try:
                sinks.append(WindowSink(f"edgeseg: {model.name}"))
            except Exception as exc:  # no display / headless OpenCV: say so, run on
                if not sinks:
                    raise
                err.print(f"no window ({exc}); continuing with the other outputs", highlight=False)
        if not sinks:
            raise DataError(
                "--headless with no output: add --record, --save-masks, --csv or --stream"
            )
        stream_obj = open_stream(uri, width=width, height=height, fps=fps)
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    info = stream_obj.info
    cores = os.cpu_count() or 1
    if workers is None:
        workers = cores if (not info.live and chosen.startswith("CPU")) else 1
    segmenters = [segmenter]
    if workers > 1:
        if not chosen.startswith("CPU"):
            raise DataError("--workers above 1 runs several CPU interpreters, not a delegate")
        per = threads or max(1, cores // workers)
        # One interpreter per worker, each with its share of the cores.
        pool = [TFLiteBackend(backend.path, threads=per) for _ in range(workers)]
        segmenters = [Segmenter.for_backend(b, meta, **options) for b in pool]
        chosen = f"CPU (XNNPACK), {workers} interpreters x {per} thread(s) via {backend.runtime}"
    err.print(
        f"{info.description} → {model.name} on {chosen}; "
        f"{'tiling' if tile else 'resizing'} to {meta.input_size[0]}x{meta.input_size[1]}",
        highlight=False,
    )

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    capture = CaptureThread(stream_obj, max_frames=max_frames).start()
    try:
        summary = run_pipeline(
            capture,
            segmenters,
            sinks,
            stop=stop,
            render=RenderOptions(alpha=alpha, contours=contours, hud=hud),
            source=info.description,
            backend=chosen,
        )
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for line in summary.lines():
        out.print(line, highlight=False)
    written = [str(p) for p in (record, save_masks, csv_path, summary_json) if p]
    if summary_json:
        summary_json.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    if written:
        out.print("wrote " + ", ".join(written), highlight=False)
    if summary.error:
        raise typer.Exit(1)
