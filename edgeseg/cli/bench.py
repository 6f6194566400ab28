"""`edgeseg bench`: model-only latency (and optionally the pipeline's stages) per device."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeseg.cli.common import err, handle_errors, out
from edgeseg.errors import EdgesegError

DEFAULT_OUT = Path("devices") / "reports"


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
) -> None:
    """Measure each MODEL's latency on this device and write a JSON + Markdown report.

    By default every installed runtime that reads MODEL is measured, side by side, one report
    each. Model-only latency (min, mean, p50, p90, p99, max, std) of the sustained runs, the cold
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
    plans = [(path, info, _runtimes(path, backend, delegate, threads)) for path, info in
             zip(models, infos, strict=True)]  # fmt: skip
    total = sum(len(kinds) for _, _, kinds in plans)
    step = 0
    for path, info, kinds in plans:
        p50: dict[str, float] = {}
        for kind in kinds:
            step += 1
            err.print(
                f"[{step}/{total}] measuring {path.name} ({info.label}) on {kind}, {runs} runs, "
                f"{threads} thread(s), in its own process",
                highlight=False,
            )
            config = BenchConfig(
                model=str(path),
                delegate=delegate,
                threads=threads,
                backend=kind,
                edgetpu_device=edgetpu_device,
                runs=runs,
                warmup=warmup,
                e2e=e2e,
                e2e_frames=e2e_frames,
            )
            try:
                measured = measure_in_subprocess(config, timeout=timeout)
            except EdgesegError as exc:
                if backend != "all" or kind == kinds[0]:
                    raise  # the file's own runtime (or the one asked for) must work
                err.print(f"warning: {kind} left out: {exc}", highlight=False)
                continue
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
            p50[kind] = float(lat["p50"])
            out.print(
                f"{info.name} {info.label} on {kind}: p50 {lat['p50']:.3f} ms, p90 "
                f"{lat['p90']:.3f}, p99 {lat['p99']:.3f} (cold first "
                f"{report['cold']['first_ms']:.1f} ms) on {measured['runtime']['delegate']} → "
                f"{json_path}",
                highlight=False,
            )
        if len(p50) > 1:
            fastest = min(p50, key=p50.__getitem__)
            ratios = ", ".join(f"{p50[k] / p50[fastest]:.2f}x {k}" for k in p50 if k != fastest)
            out.print(
                f"{info.name} {info.label}: fastest {fastest} ({p50[fastest]:.3f} ms p50); "
                f"{ratios} slower (separate processes, one after another)",
                highlight=False,
            )


def _runtimes(path: Path, backend: str, delegate: str, threads: int) -> list[str]:
    """The runtimes to measure ``path`` on, the file's own first; one-line errors for a
    --backend that cannot take the file or the delegate."""
    from edgeseg.runtime.backends import resolve_runtime as backend_kind
    from edgeseg.runtime.selection import candidates, choose_runtime

    if backend != "all":
        kind = backend_kind(path, backend, delegate)
        if kind == "auto":
            kind = choose_runtime(path, threads=threads, warn=_warn).runtime
        return [kind]
    native = backend_kind(path, None, delegate)
    if backend_kind(path, "auto", delegate) != "auto":
        return [native]  # a delegate: LiteRT's (or onnxruntime's provider) alone
    others = [k for k in candidates(path) if k != native]
    return [native, *others]


def _warn(message: str) -> None:
    err.print(message, highlight=False)
