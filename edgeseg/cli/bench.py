"""`edgeseg bench`: model-only latency (and optionally the pipeline's stages) per device."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeseg.bench.run import DEFAULT_OUT, BenchOptions, bench_models
from edgeseg.cli.common import (
    ActivationOpt,
    ChannelOrderOpt,
    ForegroundOpt,
    InputMaxOpt,
    InputSizeOpt,
    NormalizationOpt,
    ThresholdOpt,
    err,
    handle_errors,
    metadata_flags,
    out,
    parse_hw_option,
)


@handle_errors
def bench(
    models: list[Path] = typer.Argument(
        ...,
        help=".tflite or .onnx models; each model on each runtime is measured in its own "
        "process, one after another.",
    ),
    backend: str = typer.Option(
        "all",
        "--backend",
        help="all (every installed runtime that reads the model, side by side: LiteRT and "
        "OpenVINO for .tflite, onnxruntime and OpenVINO for .onnx), auto (what `run` would "
        "pick), litert, openvino or onnxruntime. A delegate or an *_edgetpu.tflite model "
        "means LiteRT alone.",
    ),
    delegate: str | None = typer.Option(
        None,
        "--delegate",
        help="auto (Edge TPU for *_edgetpu.tflite, else CPU/XNNPACK), cpu, edgetpu, or a "
        "delegate library path. Default: the --device profile's, else auto.",
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="CPU threads. Default: the --device profile's, else every core.",
    ),
    device: str | None = typer.Option(
        None,
        "--device",
        help="Device profile (rpi4, rpi5, jetson-orin-nano, coral-usb, coral-devboard, x86-64 "
        "or a .toml): its delegate and threads, and its reference figures in `edgeseg report`. "
        "Default: recognised from the system.",
    ),
    edgetpu_device: str | None = typer.Option(
        None, "--edgetpu-device", help="Which Edge TPU: usb:0, pci:0 (several attached)."
    ),
    runs: int = typer.Option(100, "--runs", min=2, help="Timed inferences per model."),
    warmup: int = typer.Option(
        10, "--warmup", min=0, help="Untimed inferences after the first (cold) one."
    ),
    e2e: str | None = typer.Option(
        None,
        "--e2e",
        help="Also run the real pipeline on this source (a stream URI or path, as `edgeseg "
        "run --source` takes) and time each stage.",
    ),
    e2e_frames: int = typer.Option(
        100, "--e2e-frames", min=1, help="Frames of the --e2e source to process."
    ),
    out_dir: Path = typer.Option(
        DEFAULT_OUT,
        "--out",
        help="Reports go to OUT/<device>/<model>-<precision>-<runtime>-<date>.json.",
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", min=1, help="Give up on a model after this many seconds."
    ),
    frame_size: str | None = typer.Option(
        None,
        "--frame-size",
        metavar="HxW",
        help="ONNX model with dynamic H/W (PyTorch export): measure whole frames of this size, "
        "padded up to the model's multiple, instead of its tiles.",
    ),
    activation: str | None = ActivationOpt,
    input_size: str | None = InputSizeOpt,
    normalization: str | None = NormalizationOpt,
    input_max: float | None = InputMaxOpt,
    threshold: float | None = ThresholdOpt,
    foreground_value: int | None = ForegroundOpt,
    channel_order: str | None = ChannelOrderOpt,
) -> None:
    """Measure each MODEL's latency on this device and write a JSON + Markdown report.

    By default every installed runtime that reads MODEL is measured, side by side, one report
    each. Model-only latency (min, mean, p50, p90, p99, max, std) of the sustained runs, the cold
    start apart, throughput, peak memory and model size; with --e2e the per-stage timings of
    the real pipeline. The report names the device by a fingerprint read from the system.
    """
    options = BenchOptions(
        models=tuple(models),
        backend=backend,
        delegate=delegate,
        threads=threads,
        device=device,
        edgetpu_device=edgetpu_device,
        runs=runs,
        warmup=warmup,
        e2e=e2e,
        e2e_frames=e2e_frames,
        out=out_dir,
        timeout=timeout,
        flags=metadata_flags(
            input_size, normalization, input_max, threshold, foreground_value, channel_order
        ),
        activation=activation,
        frame_size=parse_hw_option(frame_size, "--frame-size"),
    )
    bench_models(
        options,
        say=lambda line: err.print(line, highlight=False),
        tell=lambda line: out.print(line, highlight=False),
    )
