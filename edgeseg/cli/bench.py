"""`edgeseg bench`: model-only latency (and optionally the pipeline's stages) per device."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeseg.cli.common import err, handle_errors, out

DEFAULT_OUT = Path("devices") / "reports"


@handle_errors
def bench(
    models: list[Path] = typer.Argument(
        ..., help=".tflite models; each is measured in its own process, one after another."
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
        DEFAULT_OUT, "--out", help="Reports go to OUT/<device>/<model>-<precision>-<date>.json."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", min=1, help="Give up on a model after this many seconds."
    ),
) -> None:
    """Measure each MODEL's latency on this device and write a JSON + Markdown report.

    Model-only latency (min, mean, p50, p90, p99, max, std) of the sustained runs, the cold
    start apart, throughput, peak memory and model size; with --e2e the per-stage timings of
    the real pipeline. The report names the device by a fingerprint read from the system.
    """
    from edgeseg.bench.latency import BenchConfig, measure_in_subprocess, model_info
    from edgeseg.bench.report import build_report, write_report
    from edgeseg.devices.fingerprint import fingerprint
    from edgeseg.devices.profiles import detect_profile
    from edgeseg.session import device_policy

    policy = device_policy(device, delegate=delegate, threads=threads)
    profile, delegate, threads = policy.profile, policy.delegate, policy.threads
    if e2e is not None:
        from edgeseg.runtime.streams import parse_source

        parse_source(None, e2e)  # a malformed URI fails before anything is measured
    # Every file is validated (pure Python) before any is measured.
    infos = [model_info(m) for m in models]
    fp = fingerprint()
    device_dict = fp.to_dict()
    err.print(f"device: {fp.describe()} → {fp.slug}", highlight=False)
    for i, (path, info) in enumerate(zip(models, infos, strict=True), start=1):
        err.print(
            f"[{i}/{len(models)}] measuring {path.name} ({info.label}, {runs} runs, "
            f"{threads} thread(s)) in its own process",
            highlight=False,
        )
        config = BenchConfig(
            model=str(path),
            delegate=delegate,
            threads=threads,
            edgetpu_device=edgetpu_device,
            runs=runs,
            warmup=warmup,
            e2e=e2e,
            e2e_frames=e2e_frames,
        )
        measured = measure_in_subprocess(config, timeout=timeout)
        if profile is not None:
            profile_name, profile_from = profile.name, "--device"
        else:
            profile_name = detect_profile(device_dict, measured["runtime"]["delegate"])
            profile_from = "recognised from the fingerprint" if profile_name else None
        report = build_report(
            info.to_dict(),
            device_dict,
            measured,
            profile=profile_name,
            profile_from=profile_from,
            models_in_run=len(models),
        )
        json_path, _ = write_report(report, out_dir)
        lat = report["latency_ms"]
        out.print(
            f"{info.name} {info.label}: p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f}, p99 "
            f"{lat['p99']:.3f} (cold first {report['cold']['first_ms']:.1f} ms) on "
            f"{measured['runtime']['delegate']} → {json_path}",
            highlight=False,
        )
