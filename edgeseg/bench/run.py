"""`edgeseg bench` as a library call: plan the (model × runtime) jobs, measure each in its own
process, one after another, name the device profile, write one report per job.

The steps: :func:`plan_models` (every file validated and every runtime chosen before
anything is measured), then per model × runtime
:func:`~edgeseg.bench.latency.measure_in_subprocess`, :func:`report_profile` (the
``--device`` profile, else one recognised from the fingerprint) and
:func:`~edgeseg.bench.report.write_report`; a model measured on several runtimes ends with a
:class:`RuntimeComparison`. :func:`bench_models` runs them all.

Nothing heavy is imported at the top: the CLI imports this module to build its options.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError

__all__ = [
    "DEFAULT_OUT",
    "BenchOptions",
    "BenchResult",
    "ModelPlan",
    "RuntimeComparison",
    "bench_models",
    "plan_models",
    "report_profile",
    "runtimes_for",
]

DEFAULT_OUT = Path("devices") / "reports"


@dataclass(frozen=True)
class BenchOptions:
    """Everything `edgeseg bench` takes; the field names are its option names.

    ``backend``: ``all`` (every installed runtime that reads a model, the file's own first),
    ``auto`` (what `run` would pick) or one runtime. ``delegate`` and ``threads`` left None
    come from the ``device`` profile, else defaults (:func:`edgeseg.session.device_policy`).
    ``e2e``: a source to run the real pipeline on, timing each stage. ``timeout``: seconds
    before a job's process is given up on.
    """

    models: tuple[Path, ...]
    backend: str = "all"
    delegate: str | None = None
    threads: int | None = None
    device: str | None = None
    edgetpu_device: str | None = None
    runs: int = 100
    warmup: int = 10
    e2e: str | None = None
    e2e_frames: int = 100
    out: Path = DEFAULT_OUT
    timeout: float | None = None
    # A source ONNX (PyTorch export): the metadata flags (input_size, normalization, …), what
    # its output holds, and ``frame_size`` (H, W): measure whole frames of that size (dynamic
    # H/W, padded up to the model's multiple) instead of its tiles.
    flags: dict[str, Any] | None = None
    activation: str | None = None
    frame_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class ModelPlan:
    """One model and the runtimes to measure it on, each in its own process."""

    path: Path
    info: Any  # bench.latency.ModelInfo
    runtimes: tuple[str, ...]  # the file's own (or the one asked for) first: it must work


@dataclass(frozen=True)
class BenchResult:
    """One model measured on one runtime, and where its report went."""

    path: Path
    info: Any  # bench.latency.ModelInfo
    runtime: str
    report: dict[str, Any]  # as written (bench.report.build_report)
    json_path: Path
    md_path: Path

    @property
    def p50_ms(self) -> float:
        return float(self.report["latency_ms"]["p50"])

    def line(self) -> str:
        """``NAME LABEL on RUNTIME: p50 … ms, p90 …, p99 … (cold first … ms) on DELEGATE →
        JSON``."""
        lat = self.report["latency_ms"]
        compute = self.report.get("compute") or {}
        rate = f", {compute['gmacs_per_s']:.1f} GMAC/s" if compute.get("gmacs_per_s") else ""
        return (
            f"{self.info.name} {self.info.label} on {self.runtime}: p50 {lat['p50']:.3f} ms, "
            f"p90 {lat['p90']:.3f}, p99 {lat['p99']:.3f} (cold first "
            f"{self.report['cold']['first_ms']:.1f} ms{rate}) on "
            f"{self.report['runtime']['delegate']} → {self.json_path}"
        )


@dataclass(frozen=True)
class RuntimeComparison:
    """One model measured on several runtimes: p50 (ms) per runtime, in measuring order."""

    info: Any  # bench.latency.ModelInfo
    p50_ms: dict[str, float]

    @property
    def fastest(self) -> str:
        return min(self.p50_ms, key=self.p50_ms.__getitem__)

    def line(self) -> str:
        p50, fastest = self.p50_ms, self.fastest
        ratios = ", ".join(f"{p50[k] / p50[fastest]:.2f}x {k}" for k in p50 if k != fastest)
        return (
            f"{self.info.name} {self.info.label}: fastest {fastest} ({p50[fastest]:.3f} ms p50); "
            f"{ratios} slower (separate processes, one after another)"
        )


def runtimes_for(
    path: Path,
    backend: str,
    delegate: str,
    threads: int,
    warn: Callable[[str], None] = lambda _msg: None,
    frame_size: tuple[int, int] | None = None,
) -> list[str]:
    """The runtimes to measure ``path`` on, the file's own first; one-line errors for a
    ``backend`` that cannot take the file or the delegate. ``warn`` hears what ``auto``'s
    choice has to say; ``frame_size``: the whole frames ``auto`` compares runtimes on."""
    from edgeseg.runtime.backends import resolve_runtime
    from edgeseg.runtime.selection import candidates, choose_runtime

    if backend != "all":
        kind = resolve_runtime(path, backend, delegate)
        if kind == "auto":
            kind = choose_runtime(path, threads=threads, frame_size=frame_size, warn=warn).runtime
        return [kind]
    native = resolve_runtime(path, None, delegate)
    if resolve_runtime(path, "auto", delegate) != "auto":
        return [native]  # a delegate: LiteRT's (or onnxruntime's provider) alone
    others = [k for k in candidates(path) if k != native]
    return [native, *others]


def plan_models(
    models: Sequence[Path],
    backend: str,
    delegate: str,
    threads: int,
    warn: Callable[[str], None] = lambda _msg: None,
    *,
    infos: Sequence[Any] | None = None,
    frame_size: tuple[int, int] | None = None,
) -> list[ModelPlan]:
    """The runtimes of every model (:func:`runtimes_for`), all chosen before anything is
    measured. ``infos``: the models' :func:`~edgeseg.bench.latency.model_info`, when the
    caller has read them already (every file is validated before any runtime is chosen)."""
    if infos is None:
        from edgeseg.bench.latency import model_info

        infos = [model_info(m) for m in models]
    return [
        ModelPlan(
            path, info, tuple(runtimes_for(path, backend, delegate, threads, warn, frame_size))
        )
        for path, info in zip(models, infos, strict=True)
    ]


def report_profile(
    profile: Any, device: dict[str, Any], delegate: str
) -> tuple[str | None, str | None]:
    """(device profile name, how it was found) for a report: the ``--device`` profile, else
    one recognised from the fingerprint ``device`` and the delegate that ran, else none."""
    if profile is not None:
        return profile.name, "--device"
    from edgeseg.devices.profiles import detect_profile

    name = detect_profile(device, delegate)
    return name, "recognised from the fingerprint" if name else None


def compute_rate(model: Path, measured: dict[str, Any]) -> dict[str, Any] | None:
    """The model's multiply-accumulates and the effective GMAC/s of its median latency: what
    a device profile records as ``int8_gmacs`` (measured on an int8 model) for ``edgeseg
    distill --device``. None for a file whose ops cannot be counted (an ONNX model)."""
    from edgeseg.core.macs import tflite_macs

    if model.suffix.lower() != ".tflite":
        return None
    try:
        macs = tflite_macs(model)
    except EdgesegError:
        return None
    p50 = float(measured["latency_ms"]["p50"])
    if macs <= 0 or p50 <= 0:
        return None
    return {
        "macs": macs,
        "gmacs_per_s": round(macs / p50 / 1e6, 3),
        "counted": "CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED",
    }


def _adapted_models(
    o: BenchOptions, model_info: Callable[[Path], Any]
) -> tuple[list[Path], list[Any]]:
    """(the files to measure, their ModelInfo): a source ONNX as its adapted copy, named as
    the source; a ``frame_size`` only for a model that runs whole frames of any size."""
    from dataclasses import replace

    from edgeseg.errors import DataError
    from edgeseg.runtime.backends import onnx_metadata
    from edgeseg.runtime.foreign_onnx import adapt_onnx

    models: list[Path] = []
    infos: list[Any] = []
    for m in o.models:
        path = m
        if m.is_file():
            path = adapt_onnx(
                m, activation=o.activation, whole_frames=o.frame_size is not None, flags=o.flags
            )
        info = model_info(path)
        if path != m:
            info = replace(info, name=m.stem)
        if o.frame_size is not None:
            meta = onnx_metadata(path) if path.suffix.lower() == ".onnx" else None
            if meta is None or meta.size_multiple is None:
                raise DataError(
                    f"--frame-size measures whole frames of a source ONNX with dynamic H/W; "
                    f"{m.name} takes one input size (convert it with --frame-size for a "
                    "whole-frame artefact)"
                )
            from edgeseg.core.segmenter import padded_to_multiple

            fh, fw = o.frame_size
            ph, pw = padded_to_multiple((fh, fw), meta.size_multiple)
            info = replace(
                info,
                label=f"{info.label}-{fh}x{fw}",
                input_shape=(1, ph, pw, info.input_shape[3]),
                output_shape=(1, ph, pw, info.output_shape[3]),
            )
        models.append(path)
        infos.append(info)
    return models, infos


def bench_models(
    options: BenchOptions,
    *,
    say: Callable[[str], None] = lambda _msg: None,
    tell: Callable[[str], None] = lambda _msg: None,
) -> list[BenchResult]:
    """Measure every model of ``options`` on its runtimes and write a JSON + Markdown report
    per job to ``options.out/<device>/``; see the module docstring.

    ``say`` hears progress and warnings (the device, each job as it starts, a runtime left
    out); ``tell`` hears the results: a line per job as it is measured and, for a model
    measured on several runtimes, a comparison line.

    Raises:
        EdgesegError: a bad option, model or source (before anything is measured); a job
            on a model's first runtime (its own, or the one asked for) that fails.
    """
    from edgeseg.bench.latency import BenchConfig, measure_in_subprocess, model_info
    from edgeseg.bench.report import build_report, write_report
    from edgeseg.devices.fingerprint import fingerprint
    from edgeseg.session import device_policy

    o = options
    policy = device_policy(o.device, delegate=o.delegate, threads=o.threads)
    if o.e2e is not None:
        from edgeseg.runtime.streams import parse_source

        parse_source(None, o.e2e)  # a malformed URI fails before anything is measured
    # A source ONNX runs as its adapted copy (tiles, or whole frames of --frame-size); every
    # file is validated (pure Python) before any is measured.
    models, infos = _adapted_models(o, model_info)
    shown = dict(zip(models, o.models, strict=True))  # an adapted copy by its source's name
    fp = fingerprint()
    device_dict = fp.to_dict()
    say(f"device: {fp.describe()} → {fp.slug}")
    plans = plan_models(
        models, o.backend, policy.delegate, policy.threads, say, infos=infos,
        frame_size=o.frame_size,
    )  # fmt: skip
    total = sum(len(plan.runtimes) for plan in plans)
    step = 0
    results: list[BenchResult] = []
    for plan in plans:
        mine: list[BenchResult] = []
        for kind in plan.runtimes:
            step += 1
            say(
                f"[{step}/{total}] measuring {shown[plan.path].name} ({plan.info.label}) on "
                f"{kind}, {o.runs} runs, {policy.threads} thread(s), in its own process"
            )
            config = BenchConfig(
                model=str(plan.path),
                delegate=policy.delegate,
                threads=policy.threads,
                backend=kind,
                edgetpu_device=o.edgetpu_device,
                runs=o.runs,
                warmup=o.warmup,
                e2e=o.e2e,
                e2e_frames=o.e2e_frames,
                frame_size=o.frame_size,
            )
            try:
                measured = measure_in_subprocess(config, timeout=o.timeout)
            except EdgesegError as exc:
                if o.backend != "all" or kind == plan.runtimes[0]:
                    raise  # the file's own runtime (or the one asked for) must work
                say(f"warning: {kind} left out: {exc}")
                continue
            measured["compute"] = compute_rate(plan.path, measured)
            profile, profile_from = report_profile(
                policy.profile, device_dict, measured["runtime"]["delegate"]
            )
            report = build_report(
                plan.info.to_dict(),
                device_dict,
                measured,
                profile=profile,
                profile_from=profile_from,
                models_in_run=len(o.models),
            )
            json_path, md_path = write_report(report, o.out)
            mine.append(BenchResult(plan.path, plan.info, kind, report, json_path, md_path))
            tell(mine[-1].line())
        if len(mine) > 1:
            tell(RuntimeComparison(plan.info, {r.runtime: r.p50_ms for r in mine}).line())
        results += mine
    return results
