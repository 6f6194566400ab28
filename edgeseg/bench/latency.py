"""Model-only latency and the real pipeline's per-stage timings, one model per process.

Where an untrusted model is first opened: the parent (``edgeseg bench``) only reads the file
with the pure-Python flatbuffer parser (:func:`edgeseg.core.tflite_file.parse_bytes`, which
validates it), and the native interpreter first sees it in a child process
(``python -m edgeseg.bench.latency``). A flatbuffer that passes every check can still crash
the C++ interpreter; in the child that is a one-line error naming the model and the stage it
crashed in, not a dead ``edgeseg``. The child is also what keeps measurements apart: a
runtime's thread pool or a delegate left behind by one model cannot slow the next.

One measurement (:func:`measure`), in this order:

1. cold: the interpreter's construction and allocation (``load_ms``) and the first
   invocation (``first_ms``: XNNPACK packs weights, an Edge TPU receives the model);
2. ``warmup`` more invocations, kept apart from the statistics;
3. ``runs`` timed invocations: ``time.perf_counter()`` around one ``backend.invoke`` (set the
   input, invoke, copy the output), on a fixed random input in the model's dtype;
4. peak memory: the process's high-water mark (``VmHWM``; ``ru_maxrss`` where there is no
   /proc) minus its resident size before the model was loaded, since tracemalloc does not see
   native allocations;
5. with ``e2e``: the real pipeline (capture thread, preprocessing, tiling, the model,
   postprocessing, overlay) on that source, with a sink that keeps only the timings.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.child import run_child
from edgeseg.errors import DataError, EdgesegError, MissingDependencyError, ModelError

__all__ = [
    "BenchConfig",
    "LatencyStats",
    "ModelInfo",
    "measure",
    "measure_in_subprocess",
    "model_info",
]

_STAGE_SUFFIX = ".stage"
_MAX_MESSAGE = 300


@dataclass(frozen=True)
class LatencyStats:
    """Summary of latencies in milliseconds (percentiles linearly interpolated)."""

    runs: int
    min: float
    mean: float
    p50: float
    p90: float
    p99: float
    max: float
    std: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        arr = np.asarray(samples_ms, dtype=np.float64)
        if arr.size == 0:
            raise ValueError("no samples")
        p50, p90, p99 = np.percentile(arr, [50, 90, 99])
        return cls(
            runs=int(arr.size),
            min=float(arr.min()),
            mean=float(arr.mean()),
            p50=float(p50),
            p90=float(p90),
            p99=float(p99),
            max=float(arr.max()),
            std=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        )

    def to_dict(self, digits: int = 4) -> dict[str, float | int]:
        items = asdict(self).items()
        return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in items}


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how. ``threads`` None: the runtime's default."""

    model: str
    delegate: str = "auto"
    threads: int | None = None
    backend: str | None = None  # litert, openvino, onnxruntime; None: the file's own runtime
    edgetpu_device: str | None = None
    runs: int = 100
    warmup: int = 10
    e2e: str | None = None
    e2e_frames: int = 100
    seed: int = 0
    # A model for whole frames of any size (a dynamic-H/W source ONNX): the frame (H, W) to
    # measure, padded up to its multiple; None: its nominal input.
    frame_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.runs < 2:
            raise DataError(f"--runs must be at least 2, got {self.runs}")
        if self.warmup < 0:
            raise DataError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise DataError(f"--threads must be at least 1, got {self.threads}")
        if self.e2e_frames < 1:
            raise DataError(f"--e2e-frames must be at least 1, got {self.e2e_frames}")


# --------------------------------------------------------------------------------------------
# What the model is (pure Python: no interpreter)


@dataclass(frozen=True)
class ModelInfo:
    """A validated .tflite file as a report names it.

    ``name`` is the file stem without its recipe and ``_edgetpu`` suffixes ("unet" for
    ``unet_int8.tflite``); ``precision`` is fp32, fp16 or int8; ``label`` tells variants of
    one precision apart: the recipe name ("int8-legacy"), plus "-edgetpu" for a compiled model.
    """

    path: str
    name: str
    precision: str
    label: str
    recipe: str | None
    size_bytes: int
    sha256: str
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shape: tuple[int, ...]
    output_dtype: str
    weight_bytes: dict[str, int]
    edgetpu: bool
    has_metadata: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": Path(self.path).name,
            "name": self.name,
            "precision": self.precision,
            "label": self.label,
            "recipe": self.recipe,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "input": {"shape": list(self.input_shape), "dtype": self.input_dtype},
            "output": {"shape": list(self.output_shape), "dtype": self.output_dtype},
            "weight_bytes": dict(self.weight_bytes),
            "edgetpu_compiled": self.edgetpu,
            "edgeseg_metadata": self.has_metadata,
        }


def model_info(path: str | Path) -> ModelInfo:
    """Validate ``path`` (a one-line ModelError if it is not a sound .tflite) and describe it."""
    from edgeseg.core.tflite_file import (
        op_histogram,
        read_embedded,
        read_model_bytes,
        tensor_summary,
    )

    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".onnx":
        return _onnx_info(path)
    if path.is_file() and path.suffix.lower() != ".tflite":
        raise ModelError(
            f"{path} is not a .tflite model; convert it first: edgeseg convert {path} --int8 …"
        )
    try:
        data, _ = read_model_bytes(path)
        summary = tensor_summary(path)  # validates: identifier, a full parse, index ranges
        embedded = read_embedded(path)
        ops = op_histogram(path)
    except ModelError as exc:
        # A corrupt file can put kilobytes of garbage into a quoted name: keep the line short.
        text = " ".join(str(exc).split())
        if len(text) > _MAX_MESSAGE:
            raise ModelError(text[: _MAX_MESSAGE - 1] + "…") from exc
        raise
    if len(summary.inputs) != 1 or len(summary.outputs) != 1:
        raise ModelError(
            f"{path} is not an image-to-mask model: {len(summary.inputs)} inputs and "
            f"{len(summary.outputs)} outputs; edgeseg needs one of each"
        )
    edgetpu = any("edgetpu" in op.lower() for op in ops)
    recipe = None
    precision = None
    if embedded and isinstance(embedded.get("recipe"), dict):
        recipe = str(embedded["recipe"].get("name") or "") or None
        precision = embedded["recipe"].get("precision")
    if precision not in ("fp32", "fp16", "int8"):
        precision = _infer_precision(summary.weight_bytes, summary.inputs[0].dtype, edgetpu)
    label = recipe or precision
    if edgetpu:  # compiled by edgetpu_compiler: tell it from its CPU sibling of one recipe
        label += "-compiled" if "edgetpu" in label else "-edgetpu"
    stem = path.stem
    if stem.endswith("_edgetpu"):
        stem = stem[: -len("_edgetpu")]
    for suffix in (recipe, precision):
        if suffix and stem.endswith(f"_{suffix}") and len(stem) > len(suffix) + 1:
            stem = stem[: -len(suffix) - 1]
            break
    inp, out = summary.inputs[0], summary.outputs[0]
    return ModelInfo(
        path=str(path),
        name=stem,
        precision=precision,
        label=label,
        recipe=recipe,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        input_shape=inp.shape,
        input_dtype=inp.dtype,
        output_shape=out.shape,
        output_dtype=out.dtype,
        weight_bytes=summary.weight_bytes,
        edgetpu=edgetpu,
        has_metadata=embedded is not None,
    )


def _onnx_info(path: Path) -> ModelInfo:
    """Describe an ONNX model (the Jetson path) through onnxruntime's own loader."""
    from edgeseg.runtime.backends import OnnxBackend
    from edgeseg.runtime.foreign_onnx import adapt_onnx

    name = path.stem
    path = adapt_onnx(path)  # a source ONNX (NCHW, logits): what open_backend runs
    backend = OnnxBackend(path, provider="cpu", threads=1)  # validates; one-line errors
    data = path.read_bytes()
    weights = sum(int(np.prod(i.dims)) * 4 for i in _onnx_initializers(data)) if _has_onnx() else 0
    quantized = "QuantizeLinear" in data.decode("latin-1")
    precision = "int8" if quantized else "fp32"
    return ModelInfo(
        path=str(path),
        name=name,
        precision=precision,
        label=f"onnx-{precision}",
        recipe=None,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        input_shape=backend.input.shape,
        input_dtype=backend.input.dtype,
        output_shape=backend.output.shape,
        output_dtype=backend.output.dtype,
        weight_bytes={"float32": weights} if weights else {},
        edgetpu=False,
        has_metadata=backend.metadata() is not None,
    )


def _has_onnx() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnx") is not None


def _onnx_initializers(data: bytes) -> list[Any]:
    import onnx

    return [i for i in onnx.load_from_string(data).graph.initializer if i.data_type == 1]


def _infer_precision(weight_bytes: dict[str, int], input_dtype: str, edgetpu: bool) -> str:
    if edgetpu or input_dtype in ("int8", "uint8"):
        return "int8"
    floats = weight_bytes.get("float32", 0)
    if weight_bytes.get("int8", 0) > floats:
        return "int8"
    if weight_bytes.get("float16", 0) > floats:
        return "fp16"
    return "fp32"


# --------------------------------------------------------------------------------------------
# The measurement (runs in the child process)


def measure(config: BenchConfig, stage: Any = None) -> dict[str, Any]:
    """Measure one model in this process; a JSON-ready dict (see the module docstring).

    ``stage(name)`` is called before each step (the child records it so that a crash can be
    named).
    """
    from edgeseg.devices.fingerprint import thermal_snapshot
    from edgeseg.runtime.backends import import_runtime, open_backend, resolve_runtime

    say = stage or (lambda _name: None)
    kind = resolve_runtime(Path(config.model), config.backend, config.delegate)
    import_runtime(kind)  # import the runtime before the memory baseline
    rss_before = _memory_mb()["rss"]
    thermal_start = thermal_snapshot()
    say("loading the model")
    t0 = time.perf_counter()
    opened = open_backend(
        config.model,
        delegate=config.delegate,
        threads=config.threads,
        fallback=False,
        device=config.edgetpu_device,
        backend=kind,
    )
    backend = opened.backend
    if config.frame_size is not None:
        backend = _at_frame_size(backend, config)
    load_ms = (time.perf_counter() - t0) * 1000
    x = _random_input(backend.input.shape, backend.input.dtype, config.seed)
    say("the first inference")
    t0 = time.perf_counter()
    backend.invoke(x)
    first_ms = (time.perf_counter() - t0) * 1000
    say("the warm-up runs")
    warm = [_timed(backend.invoke, x) for _ in range(config.warmup)]
    say("the timed runs")
    runs = [_timed(backend.invoke, x) for _ in range(config.runs)]
    peak = _memory_mb()
    thermal_end = thermal_snapshot()
    stats = LatencyStats.from_samples(runs)
    batch = backend.batch_size
    result: dict[str, Any] = {
        "runtime": {
            "name": backend.runtime,
            "backend": kind,
            "delegate": opened.describe(),
            "requested_delegate": config.delegate,
            "threads": config.threads,
        },
        "method": {
            "pid": os.getpid(),
            "runs": config.runs,
            "warmup": config.warmup,
            "timer": "time.perf_counter() around one invocation (set the input, infer, copy "
            "the output)",
            "input": f"random {backend.input.dtype} {list(backend.input.shape)}, seed "
            f"{config.seed}",
            "isolation": "Measured in its own process (python -m edgeseg.bench.latency)",
        },
        "cold": {"load_ms": round(load_ms, 4), "first_ms": round(first_ms, 4)},
        "whole_frame": (
            None
            if config.frame_size is None
            else {
                "frame_size": [int(d) for d in config.frame_size],
                "input_size": list(backend.input.shape[1:3]),
            }
        ),
        "warmup_ms": [round(v, 4) for v in warm],
        "latency_ms": stats.to_dict(),
        "throughput": {
            "inferences_per_s": round(1000.0 * len(runs) / sum(runs), 3),
            "tiles_per_inference": batch,
            "tiles_per_s": round(1000.0 * batch * len(runs) / sum(runs), 3),
        },
        "drift": _drift(runs),
        "memory": {
            "rss_before_load_mb": round(rss_before, 2),
            "peak_rss_mb": round(peak["hwm"], 2),
            "model_peak_mb": round(max(0.0, peak["hwm"] - rss_before), 2),
            "method": peak["method"],
        },
        "thermal": {"start": thermal_start.to_dict(), "end": thermal_end.to_dict()},
        "e2e": None,
    }
    if config.e2e:
        say("the end-to-end run")
        result["e2e"] = measure_e2e(config)
    return result


def _at_frame_size(backend: Any, config: BenchConfig) -> Any:
    """The backend of a whole-frames model (metadata ``size_multiple``) at the frame size
    padded up to its multiple; a one-line DataError for a model of one input size."""
    from edgeseg.core.segmenter import padded_to_multiple

    meta = backend.metadata()
    if meta is None or meta.size_multiple is None or not hasattr(backend, "at_size"):
        raise DataError(
            f"--frame-size measures whole frames of a source ONNX with dynamic H/W; "
            f"{Path(config.model).name} takes one input size (convert it with --frame-size for "
            "a whole-frame artefact)"
        )
    h, w = config.frame_size  # type: ignore[misc]
    return backend.at_size(padded_to_multiple((int(h), int(w)), meta.size_multiple))


def _timed(func: Any, x: np.ndarray) -> float:
    t0 = time.perf_counter()
    func(x)
    return (time.perf_counter() - t0) * 1000


def _random_input(shape: tuple[int, ...], dtype: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dt)
    return rng.random(shape, dtype=np.float32).astype(dt)


def _drift(runs: Sequence[float]) -> dict[str, Any] | None:
    """Median of the last tenth of the timed runs over that of the first tenth: above 1.0 the
    device slowed down while measured (heat, clock, other load)."""
    n = len(runs) // 10
    if n < 2:
        return None
    first, last = float(np.median(runs[:n])), float(np.median(runs[-n:]))
    return {
        "first_tenth_p50_ms": round(first, 4),
        "last_tenth_p50_ms": round(last, 4),
        "ratio": round(last / first, 4) if first > 0 else None,
    }


def _memory_mb() -> dict[str, Any]:
    """{"rss", "hwm", "method"} of this process in MB."""
    try:
        text = Path("/proc/self/status").read_text()
        values = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024.0
        if "VmRSS" in values and "VmHWM" in values:
            return {
                "rss": values["VmRSS"],
                "hwm": values["VmHWM"],
                "method": "/proc/self/status VmHWM",
            }
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS, else kB
    return {"rss": peak / scale, "hwm": peak / scale, "method": "getrusage ru_maxrss"}


class _TimingSink:
    """A pipeline sink that keeps the per-frame timing records and nothing else.

    It states the capabilities of :class:`~edgeseg.runtime.sinks.Sink` itself rather than
    building on ``SinkBase``: this module is the measuring child, whose memory the report
    gives, and it imports the runtime only where it measures."""

    wants_frame = False
    quit_requested = False
    notes: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.frame_shape: tuple[int, ...] | None = None
        self.warnings: list[str] = []

    def status(self, message: str | None) -> None:
        pass  # the source's state does not count in the timings

    def write(self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Any) -> None:
        """``record``: the pipeline's FrameRecord, kept as its row."""
        if self.frame_shape is None:
            self.frame_shape = tuple(int(d) for d in labels.shape)
        self.records.append(record.to_dict())

    def close(self) -> None:
        pass


def measure_e2e(config: BenchConfig) -> dict[str, Any]:
    """The pipeline `edgeseg run` builds, on ``config.e2e`` (up to ``config.e2e_frames``
    frames), with its policy (one interpreter per core for a file source on the CPU): per-stage
    timings."""
    from edgeseg.runtime.backends import resolve_runtime
    from edgeseg.runtime.pipeline import STAGES
    from edgeseg.session import RunOptions, build_session

    sink = _TimingSink()
    options = RunOptions(
        model=Path(config.model),
        source=config.e2e,
        delegate=config.delegate,
        backend=resolve_runtime(Path(config.model), config.backend, config.delegate),
        edgetpu_device=config.edgetpu_device,
        threads=config.threads,
        headless=True,
        max_frames=config.e2e_frames,
    )
    session = build_session(options, extra_sinks=[sink])
    summary = session.run()
    out: dict[str, Any] = {
        "source": summary.source,
        "frames": summary.frames,
        "frame_size": list(sink.frame_shape) if sink.frame_shape else None,
        "mode": "resize" if session.mode.startswith("resizing") else "tiles",
        "seconds": round(summary.seconds, 3),
        "fps": round(summary.fps, 3),
        "dropped": summary.dropped,
        "stopped": summary.stopped,
        "error": summary.error,
        "warnings": summary.warnings,
        "workers": len(session.segmenters),
        "stages_ms": {},
        "latency_ms": None,
    }
    if sink.records:
        for stage in STAGES:
            values = [float(r[f"{stage}_ms"]) for r in sink.records]
            out["stages_ms"][stage] = _brief_stats(values)
        out["latency_ms"] = _brief_stats([float(r["latency_ms"]) for r in sink.records])
    return out


def _brief_stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "p50": round(float(p50), 4),
        "p90": round(float(p90), 4),
        "p99": round(float(p99), 4),
        "mean": round(float(arr.mean()), 4),
        "max": round(float(arr.max()), 4),
    }


# --------------------------------------------------------------------------------------------
# The parent's side: one child process per model


def _child_command(config_path: str, result_path: str) -> list[str]:
    """The child's command line (tests replace it to simulate a native crash)."""
    return [sys.executable, "-m", "edgeseg.bench.latency", config_path, result_path]


def measure_in_subprocess(config: BenchConfig, *, timeout: float | None = None) -> dict[str, Any]:
    """:func:`measure` in a fresh child process; any failure is a one-line EdgesegError.

    A child killed by a signal (the native interpreter crashed on the file) is a ModelError
    naming the signal and the step it was in; a child that outlives ``timeout`` seconds is
    killed and reported.
    """
    label = config.model
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
        cfg, res = Path(tmp) / "config.json", Path(tmp) / "result.json"
        cfg.write_text(json.dumps(asdict(config)))
        done = run_child(_child_command(str(cfg), str(res)), timeout=timeout)
        if done.timed_out:
            step = _read_stage(res)
            raise ModelError(
                f"{label}: the measurement did not finish within {timeout:g} s "
                f"(stopped during {step}); raise --timeout or lower --runs"
            )
        if done.signal_name is not None:
            step = _read_stage(res)
            raise ModelError(
                f"{label}: the runtime crashed ({done.signal_name}) during {step}; the file passed "
                "edgeseg's checks but the interpreter cannot run it: it is corrupt or was "
                "written for another runtime"
            )
        try:
            payload = json.loads(res.read_text())
        except (OSError, json.JSONDecodeError):
            tail = [ln for ln in done.stderr.splitlines() if ln.strip()]
            why = tail[-1].strip() if tail else f"exit code {done.returncode}"
            raise ModelError(f"{label}: the measuring process failed: {why}") from None
    if "error" in payload:
        kinds = {"DataError": DataError, "MissingDependencyError": MissingDependencyError}
        raise kinds.get(payload.get("type"), ModelError)(payload["error"])
    result = payload["result"]
    result["runtime"]["xnnpack_reported"] = "XNNPACK delegate" in done.stderr
    return result


def _read_stage(result_path: Path) -> str:
    try:
        return Path(str(result_path) + _STAGE_SUFFIX).read_text().strip() or "start-up"
    except OSError:
        return "start-up"


def _child_main(argv: list[str]) -> int:
    """``python -m edgeseg.bench.latency CONFIG RESULT``: measure, write JSON, exit 0."""
    config_path, result_path = argv
    stage_path = Path(result_path + _STAGE_SUFFIX)

    def stage(name: str) -> None:
        stage_path.write_text(name)

    stage("start-up")
    try:
        config = BenchConfig(**json.loads(Path(config_path).read_text()))
        payload: dict[str, Any] = {"result": measure(config, stage=stage)}
    except EdgesegError as exc:
        payload = {"error": " ".join(str(exc).split()), "type": type(exc).__name__}
    except (ValueError, RuntimeError, OSError) as exc:  # anything else stays one line
        payload = {"error": f"{config_path}: {type(exc).__name__}: {exc}", "type": "ModelError"}
    Path(result_path).write_text(json.dumps(payload, allow_nan=False, default=_json_default))
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        v = float(value)
        return v if math.isfinite(v) else None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
