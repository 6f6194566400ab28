"""``--backend auto``: pick the fastest installed runtime whose label maps agree, by measuring.

A model can run on more than one runtime: a ``.tflite`` on LiteRT and on OpenVINO, an
``.onnx`` on onnxruntime and on OpenVINO. Which is faster depends on the CPU (OpenVINO's
oneDNN uses AMX and AVX-512 VNNI, LiteRT's XNNPACK does not), so ``auto`` measures:

1. the candidates are the installed runtimes that read the file; with one candidate (say,
   LiteRT alone) it is chosen without measuring anything;
2. each candidate runs in its own child process (:mod:`edgeseg.child`: thread pools that keep
   spinning distort in-process comparisons, and a runtime that crashes on a file is a return
   code): load, one warm-up, :data:`INVOCATIONS` timed invocations with ``threads`` threads
   (median), and the label maps of two synthetic microscopy frames through the
   :class:`~edgeseg.core.segmenter.Segmenter`;
3. the reference is the file's own runtime (LiteRT for ``.tflite``, onnxruntime's CPU for
   ``.onnx``); another runtime qualifies when its label maps agree with the reference's: the
   Dice of every class (of the foreground, for an instance model's object ids) reaches
   :data:`MIN_DICE`, for int8 models as for float ones. Two runtimes' int8 arithmetic may
   round differently (OpenVINO's and LiteRT's differ by a few quantization steps on a CPU
   without VNNI), which moves a handful of boundary pixels: what counts is the label map
   the user sees;
4. the fastest qualifying runtime wins; a runtime that cannot load the model, crashes or
   disagrees is left out and the reason kept for ``--explain``;
5. the choice is cached in ``$XDG_CACHE_HOME/edgeseg/backend-choices.json`` keyed by the
   device (machine, CPU model, cores), the model's sha256, the runtime versions, the threads
   and the frame size the caller runs (``run``: the stream's frames; ``eval`` and
   ``segment``: the first image's size), with the measured agreement, so the measuring (a few
   seconds) happens once per combination. When that folder cannot be written, every start
   measures again and says so once.

The candidates are the runtimes of the registry (:mod:`edgeseg.runtime.backends.registry`)
that are installed and read the file. Delegates belong to the file's own runtime: a
``*_edgetpu.tflite`` model or ``--delegate`` other than ``auto`` and ``cpu`` goes to it with
its delegate, without measuring (:func:`edgeseg.runtime.backends.resolve_runtime`).

:func:`open_selected` is how every command opens a model with ``--backend`` (auto included):
it resolves the runtime here and opens it with :func:`edgeseg.runtime.backends.open_model`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.child import run_python
from edgeseg.errors import DataError, EdgesegError
from edgeseg.paths import atomic_write, file_sha256
from edgeseg.runtime.backends import (
    OpenedModel,
    installed_runtimes,
    native_runtime,
    open_model,
    readers,
    resolve_runtime,
)
from edgeseg.sizes import format_hw

__all__ = [
    "INVOCATIONS",
    "MIN_DICE",
    "Choice",
    "Measurement",
    "Trial",
    "agreement",
    "cache_file",
    "cache_key",
    "candidates",
    "choose_runtime",
    "measure_here",
    "measure_in_child",
    "open_selected",
    "reference_runtime",
]

#: Timed invocations per runtime (after the first, cold one and one warm-up); the median counts.
INVOCATIONS = 7
#: Label maps agree when the Dice of every class with the reference's reaches this.
MIN_DICE = 0.999
#: Seconds a measuring child may take before it is killed and its runtime left out.
CHILD_TIMEOUT = 120.0
CACHE_NAME = "backend-choices.json"
# 2: int8 models are judged by per-class Dice like float ones (1 demanded identical labels).
_CACHE_VERSION = 2
_FRAMES = 2  # synthetic frames whose label maps are compared

_warned_unwritable = False


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Measurement:
    """What one runtime did with the model (in a child process, or injected by a test).

    Attributes:
        runtime: "litert", "openvino" or "onnxruntime".
        label: The runtime's own description, e.g. "openvino 2026.4.1 (CPU)".
        median_ms: Median of the timed invocations; None when it failed.
        times_ms: Every timed invocation.
        labels: (n, H, W) label maps of the synthetic frames: uint8 classes, or int32 object
            ids of an instance model; None when it failed.
        error: One line saying why it failed (cannot load, crashed, timed out), or None.
    """

    runtime: str
    label: str = ""
    median_ms: float | None = None
    times_ms: tuple[float, ...] = ()
    labels: np.ndarray | None = None
    error: str | None = None


@dataclass(frozen=True)
class Trial:
    """One candidate as judged: its speed and how its label maps compare with the reference's.

    ``dice`` is the lowest per-class Dice against the reference (1.0 for the reference
    itself), ``identical`` whether every label agrees; ``verdict`` says why it was or was not
    chosen.
    """

    runtime: str
    label: str
    median_ms: float | None
    dice: float | None
    identical: bool | None
    qualifies: bool
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Choice:
    """What ``auto`` picked and the figures behind it.

    Attributes:
        runtime: The runtime to open ("litert", "openvino", "onnxruntime").
        reason: One line: why this one.
        trials: Every candidate measured (empty when nothing was measured).
        source: "measured", "cached" or "only" (a single candidate, nothing measured).
        key: The cache key's parts (device, model sha256, versions, threads, frame size).
    """

    runtime: str
    reason: str
    trials: tuple[Trial, ...] = ()
    source: str = "only"
    key: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The explanation, for ``--explain``: the pick, the key, one line per candidate."""
        out = [f"backend auto: {self.runtime} ({self.source}): {self.reason}"]
        if self.key:
            k = self.key
            out.append(
                f"  measured for {k.get('device')}, {k.get('threads')} thread(s), frame "
                f"{k.get('frame')}, model sha256 {str(k.get('model_sha256', ''))[:12]}…, "
                + ", ".join(str(v) for _, v in sorted((k.get("versions") or {}).items()))
            )
        for t in self.trials:
            ms = "–" if t.median_ms is None else f"{t.median_ms:.3f} ms"
            agree = ""
            if t.dice is not None:
                agree = (
                    ", labels identical" if t.identical else f", Dice {t.dice:.5f} (lowest class)"
                )
            out.append(f"  {t.runtime:<12} {ms:>12}{agree}: {t.verdict}")
        return out


# --------------------------------------------------------------------------------------------
# What is installed, and what can read a model


def reference_runtime(model_path: str | Path) -> str:
    """The file's own runtime, whose label maps the others must match."""
    return native_runtime(model_path).name


def candidates(model_path: str | Path, installed: dict[str, str] | None = None) -> list[str]:
    """The installed runtimes that read the file, the reference first."""
    installed = installed_runtimes() if installed is None else installed
    return [r.name for r in readers(model_path, installed_only=False) if r.name in installed]


# --------------------------------------------------------------------------------------------
# The cache


def cache_file() -> Path:
    """``$XDG_CACHE_HOME/edgeseg/backend-choices.json`` (``~/.cache/edgeseg/…`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "edgeseg" / CACHE_NAME


def device_key() -> str:
    """This machine as the cache sees it: architecture, CPU model, cores."""
    from edgeseg.hardware import read_text

    model = ""
    for line in (read_text(Path("/proc/cpuinfo")) or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
            model = value.strip()
            break
    model = model or platform.processor() or "unknown CPU"
    return f"{platform.machine()} {model} x{os.cpu_count() or 1}"


def model_input_size(model_path: Path) -> tuple[int, int] | None:
    """(H, W) of the model's input, read from the file without a runtime where possible."""
    try:
        if model_path.suffix.lower() == ".tflite":
            from edgeseg.core.tflite_file import tensor_summary

            shape = tensor_summary(model_path).inputs[0].shape
            return int(shape[1]), int(shape[2])
        from edgeseg.runtime.backends import onnx_metadata

        meta = onnx_metadata(model_path)  # read without parsing the graph
        if meta is not None:
            return meta.input_size
        import onnx

        graph = onnx.load(str(model_path), load_external_data=False).graph
        dims = graph.input[0].type.tensor_type.shape.dim
        h, w = int(dims[1].dim_value), int(dims[2].dim_value)
        return (h, w) if h > 0 and w > 0 else None  # dynamic H/W: no one size
    except (ImportError, EdgesegError, IndexError, ValueError, OSError):
        return None
    except Exception:  # onnx's own DecodeError: the runtimes will say what is wrong
        return None


def cache_key(
    model_path: str | Path,
    *,
    threads: int,
    frame_size: tuple[int, int] | None,
    versions: dict[str, str],
    device: str | None = None,
) -> dict[str, Any]:
    """The parts a cached choice depends on; any change means measuring again."""
    path = Path(model_path)
    frame = format_hw(frame_size) if frame_size else "model input"
    return {
        "device": device or device_key(),
        "model_sha256": file_sha256(path),
        "versions": dict(sorted(versions.items())),
        "threads": int(threads),
        "frame": frame,
    }


def _key_id(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION:
        return {}
    entries = data.get("choices")
    return entries if isinstance(entries, dict) else {}


def _write_cache(path: Path, entries: dict[str, Any]) -> bool:
    """Write atomically (:func:`edgeseg.paths.atomic_write`); False when the folder is not
    writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"version": _CACHE_VERSION, "choices": entries}, indent=1))
        return True
    except OSError:
        return False


def _cached(path: Path, key: dict[str, Any]) -> Choice | None:
    entry = _read_cache(path).get(_key_id(key))
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    try:
        trials = tuple(Trial.from_dict(t) for t in entry.get("trials", []))
        return Choice(str(entry["runtime"]), str(entry["reason"]), trials, "cached", key)
    except (KeyError, TypeError):
        return None


# --------------------------------------------------------------------------------------------
# Judging measurements


def agreement(labels: np.ndarray, reference: np.ndarray) -> tuple[float, bool]:
    """(lowest per-class Dice, identical) of label maps against the reference's.

    uint8 maps hold classes: every class above 0 present in either map is scored and the
    lowest Dice counts (a small class is not drowned by a large one). Other integer maps hold
    object ids (an instance model), whose numbering may differ between runtimes: their
    foreground (any id above 0) is scored. Maps without any foreground agree (Dice 1).
    """
    a, b = np.asarray(labels), np.asarray(reference)
    if a.shape != b.shape:
        return 0.0, False
    if np.array_equal(a, b):
        return 1.0, True
    if a.dtype == np.uint8 and b.dtype == np.uint8:
        classes = np.union1d(np.unique(a), np.unique(b))
        masks = [(a == c, b == c) for c in classes if c > 0]
    else:
        masks = [(a > 0, b > 0)]
    dices = []
    for fa, fb in masks:
        total = int(fa.sum()) + int(fb.sum())
        dices.append(1.0 if total == 0 else 2.0 * int((fa & fb).sum()) / total)
    return min(dices, default=1.0), False


def _judge(measured: Sequence[Measurement], reference: str) -> tuple[str | None, list[Trial]]:
    """The fastest runtime whose labels agree with the reference's, and every verdict."""
    ref = next((m for m in measured if m.runtime == reference), None)
    trials: list[Trial] = []
    for m in measured:
        if m.error is not None or m.median_ms is None:
            trials.append(Trial(m.runtime, m.label, None, None, None, False, m.error or "failed"))
            continue
        if m.runtime == reference:
            trials.append(Trial(m.runtime, m.label, m.median_ms, 1.0, True, True, "reference"))
            continue
        if ref is None or ref.error is not None or ref.labels is None or m.labels is None:
            why = f"left out: no {reference} label maps to compare with"
            trials.append(Trial(m.runtime, m.label, m.median_ms, None, None, False, why))
            continue
        dice, identical = agreement(m.labels, ref.labels)
        ok = dice >= MIN_DICE
        rule = f"the Dice of every class must reach {MIN_DICE}"
        verdict = "agrees" if ok else f"left out: disagrees ({rule})"
        trials.append(Trial(m.runtime, m.label, m.median_ms, dice, identical, ok, verdict))
    ok = [t for t in trials if t.qualifies]
    if not ok:
        return None, trials
    best = min(ok, key=lambda t: t.median_ms or float("inf"))
    final = []
    for t in trials:
        if t.qualifies:
            word = "chosen: fastest that agrees" if t is best else f"slower ({t.verdict})"
            t = Trial(t.runtime, t.label, t.median_ms, t.dice, t.identical, True, word)
        final.append(t)
    return best.runtime, final


# --------------------------------------------------------------------------------------------
# Choosing


MeasureFn = Callable[[Path, str, int, "tuple[int, int] | None"], Measurement]


def choose_runtime(
    model_path: str | Path,
    *,
    threads: int | None = None,
    frame_size: tuple[int, int] | None = None,
    measure: MeasureFn | None = None,
    installed: dict[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Choice:
    """What ``--backend auto`` runs ``model_path`` on (see the module docstring).

    ``threads`` None means every core. ``frame_size`` (H, W) is the frame whose label maps
    are compared (default: the model's input). ``measure(path, runtime, threads,
    frame_size)`` runs one candidate (default :func:`measure_in_child`); ``installed`` maps
    runtime → version (default :func:`installed_runtimes`). Never raises for what a runtime
    does: a failure leaves that runtime out, and without any the reference is returned so
    that opening it says what is wrong.
    """
    global _warned_unwritable
    path = Path(model_path)
    if not path.is_file():
        raise DataError(f"model file not found: {path}")
    installed = installed_runtimes() if installed is None else installed
    reference = reference_runtime(path)
    names = candidates(path, installed)
    if len(names) < 2:
        only = names[0] if names else reference
        why = "the only installed runtime that reads this file" if names else "no other runtime"
        return Choice(only, why)
    threads = threads or os.cpu_count() or 1
    frame_size = frame_size or model_input_size(path)
    versions = {r: installed[r] for r in names}
    key = cache_key(path, threads=threads, frame_size=frame_size, versions=versions)
    store = cache_file()
    hit = _cached(store, key)
    if hit is not None:
        return hit
    measure = measure or measure_in_child
    measured = [measure(path, r, threads, frame_size) for r in names]
    best, trials = _judge(measured, reference)
    if best is None:
        why = "no runtime loaded the model and agreed"
        return Choice(reference, why, tuple(trials), "measured", key)
    fastest = trials[[t.runtime for t in trials].index(best)]
    others = [t for t in trials if t.runtime != best and t.median_ms]
    if others and fastest.median_ms:
        ratios = ", ".join(f"{t.median_ms / fastest.median_ms:.2f}x {t.runtime}" for t in others)
        reason = f"fastest that agrees with {reference} ({fastest.median_ms:.3f} ms; {ratios})"
    else:
        reason = f"the only runtime that loaded the model and agreed ({reference} reference)"
    choice = Choice(best, reason, tuple(trials), "measured", key)
    entries = _read_cache(store)
    entries[_key_id(key)] = {
        "key": key,
        "runtime": best,
        "reason": reason,
        "trials": [t.to_dict() for t in trials],
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if not _write_cache(store, entries) and not _warned_unwritable:
        _warned_unwritable = True
        if warn:
            warn(
                f"warning: cannot write the backend cache {store}; --backend auto will measure "
                "the runtimes at every start (set XDG_CACHE_HOME to a writable folder)"
            )
    return choice


def open_selected(
    model_path: str | Path,
    *,
    backend: str | None = "auto",
    frame_size: tuple[int, int] | None = None,
    delegate: str = "auto",
    threads: int | None = None,
    fallback: bool = False,
    device: str | None = None,
    warn: Callable[[str], None] | None = None,
    explain: Callable[[str], None] | None = None,
    reuse: OpenedModel | None = None,
    **flags: Any,
) -> OpenedModel:
    """Open a device artefact on the runtime ``backend`` names: ``auto`` (measured here, or
    cached), a registered runtime, or None (the file's own).

    ``frame_size`` (H, W) is the frame the caller will run (``auto`` compares label maps of
    frames that size and keys its cache by it; None: the model's input). ``explain(line)``
    hears the figures behind an ``auto`` pick. ``reuse``: the same file already open on some
    runtime (with the same arguments), returned as it is when that runtime is picked. The
    other arguments go to :func:`edgeseg.runtime.backends.open_model`; the record says how
    the runtime was chosen.
    """
    options = dict(delegate=delegate, threads=threads, fallback=fallback, device=device)
    if resolve_runtime(model_path, backend, delegate) != "auto":
        # Nothing to measure: open_backend resolves and records how the runtime was chosen.
        return open_model(model_path, backend=backend, warn=warn, **options, **flags)
    choice = choose_runtime(model_path, threads=threads, frame_size=frame_size, warn=warn)
    if explain:
        for line in choice.lines():
            explain(line)
    chosen_by = f"auto: {choice.source}"
    if reuse is not None and reuse.opened.runtime == choice.runtime:
        return replace(reuse, opened=replace(reuse.opened, chosen_by=chosen_by))
    model = open_model(model_path, backend=choice.runtime, warn=warn, **options, **flags)
    return replace(model, opened=replace(model.opened, chosen_by=chosen_by))


# --------------------------------------------------------------------------------------------
# Measuring one runtime (in a child process)


def measure_here(
    model_path: str | Path, runtime: str, threads: int, frame_size: tuple[int, int] | None
) -> Measurement:
    """Measure ``runtime`` on the model in this process (what the child runs)."""
    from edgeseg.core.segmenter import Segmenter
    from edgeseg.samples import SyntheticStream

    model = open_model(model_path, backend=runtime, threads=threads)
    backend = model.backend
    if model.meta.size_multiple is not None and frame_size:
        # A model for whole frames of any size is timed at the frame's padded size.
        from edgeseg.core.segmenter import padded_to_multiple

        backend = backend.at_size(padded_to_multiple(frame_size, model.meta.size_multiple))  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    dtype = np.dtype(backend.input.dtype)
    if np.issubdtype(dtype, np.integer):
        lim = np.iinfo(dtype)
        x = rng.integers(lim.min, int(lim.max) + 1, size=backend.input.shape, dtype=dtype)
    else:
        x = rng.random(backend.input.shape, dtype=np.float32).astype(dtype)
    invoke = backend.invoke  # type: ignore[attr-defined]
    invoke(x)  # cold: weights packed, kernels chosen
    invoke(x)  # warm-up
    times = []
    for _ in range(INVOCATIONS):
        t0 = time.perf_counter()
        invoke(x)
        times.append((time.perf_counter() - t0) * 1000)
    meta = model.meta
    size = frame_size or meta.input_size
    stream = SyntheticStream(size=tuple(size), seed=0, channels=meta.channels)
    segmenter = Segmenter(backend, meta)
    labels = np.stack([segmenter.labels(stream.read()[0]) for _ in range(_FRAMES)])
    return Measurement(
        runtime=runtime,
        label=backend.runtime,
        median_ms=float(np.median(times)),
        times_ms=tuple(round(t, 4) for t in times),
        labels=labels,
    )


def measure_in_child(
    model_path: str | Path,
    runtime: str,
    threads: int,
    frame_size: tuple[int, int] | None,
    *,
    timeout: float = CHILD_TIMEOUT,
) -> Measurement:
    """:func:`measure_here` in a fresh child process; a failure is a Measurement with an
    error, never an exception."""
    with tempfile.TemporaryDirectory(prefix="edgeseg-select-") as tmp:
        cfg, res = Path(tmp) / "config.json", Path(tmp) / "result"
        cfg.write_text(
            json.dumps(
                {
                    "model": str(model_path),
                    "runtime": runtime,
                    "threads": threads,
                    "frame_size": list(frame_size) if frame_size else None,
                }
            )
        )
        done = run_python(["-m", "edgeseg.runtime.selection", str(cfg), str(res)], timeout=timeout)
        if done.timed_out:
            return Measurement(runtime, error=f"did not finish within {timeout:g} s")
        if done.signal_name is not None:
            return Measurement(runtime, error=f"the runtime crashed ({done.signal_name})")
        try:
            payload = json.loads(res.with_suffix(".json").read_text())
        except (OSError, ValueError):
            tail = [ln for ln in done.stderr.splitlines() if ln.strip()]
            why = tail[-1].strip() if tail else f"exit code {done.returncode}"
            return Measurement(runtime, error=f"the measuring process failed: {why[:200]}")
        if "error" in payload:
            return Measurement(runtime, error=str(payload["error"]))
        labels = np.load(res.with_suffix(".npy"))
        return Measurement(
            runtime=runtime,
            label=str(payload["label"]),
            median_ms=float(payload["median_ms"]),
            times_ms=tuple(payload["times_ms"]),
            labels=labels,
        )


def _child_main(argv: list[str]) -> int:
    """``python -m edgeseg.runtime.selection CONFIG RESULT``: RESULT.json (+ RESULT.npy)."""
    config_path, result = argv
    out = Path(result)
    try:
        cfg = json.loads(Path(config_path).read_text())
        frame = tuple(cfg["frame_size"]) if cfg.get("frame_size") else None
        m = measure_here(cfg["model"], cfg["runtime"], int(cfg["threads"]), frame)  # type: ignore[arg-type]
        np.save(out.with_suffix(".npy"), m.labels)
        payload: dict[str, Any] = {
            "label": m.label,
            "median_ms": m.median_ms,
            "times_ms": list(m.times_ms),
        }
    except EdgesegError as exc:
        payload = {"error": " ".join(str(exc).split())[:300]}
    except Exception as exc:  # any runtime's own exception: one line, this runtime left out
        payload = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:240]}"}
    out.with_suffix(".json").write_text(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
