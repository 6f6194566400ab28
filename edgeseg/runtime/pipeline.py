"""Capture → infer → render, in threads with shallow queues, every stage timed.

- Capture runs in its own thread (:class:`edgeseg.runtime.capture.CaptureThread`): a live
  source keeps only the newest frame (and counts what it drops), a file source is processed
  frame by frame with nothing dropped.
- Inference runs in a worker thread: preprocessing (normalize, tile or resize), the model,
  stitching, thresholding and connected components. LiteRT releases the GIL while it runs, so
  capture and rendering overlap with it.
- Rendering and the sinks (window, video, masks, CSV, MJPEG) run in the calling thread, which
  is the main thread in ``edgeseg run``: windows must be driven from it on some platforms, and
  Python delivers SIGINT/SIGTERM there.

Stopping (end of source, ``max_frames``, Ctrl-C / SIGTERM, a closed window, a camera that
vanished) always drains what was captured, closes every sink (the recording is finalized and
playable, the CSV complete up to the last frame) and returns a summary.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.postprocess import ObjectStats
from edgeseg.core.segmenter import Segmenter
from edgeseg.runtime.capture import CaptureThread
from edgeseg.runtime.sinks import CSV_FIELDS, Sink

__all__ = [
    "CSV_FIELDS",
    "RenderOptions",
    "RunSummary",
    "Segmenter",
    "run_pipeline",
]  # Segmenter: from core

STAGES = ("preprocess", "inference", "postprocess", "render")


@dataclass(frozen=True)
class Segmented:
    """One frame through the model: the raw frame, its labels and what each stage took."""

    index: int
    captured: float  # time.perf_counter() when the frame was read
    frame: np.ndarray
    labels: np.ndarray  # uint8 (H, W), the frame's size
    stats: ObjectStats
    timings: dict[str, float]  # milliseconds per stage


@dataclass
class RunSummary:
    source: str
    backend: str
    frames: int = 0
    seconds: float = 0.0
    dropped: int = 0
    stopped: str = "end of source"
    error: str | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # capture → rendered
    stage_ms: dict[str, float] = field(default_factory=dict)  # medians per stage
    warnings: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [
            f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} FPS), "
            f"{self.dropped} dropped; stopped: {self.stopped}",
            f"source: {self.source}; model on {self.backend}",
        ]
        if self.latency_ms:
            lat = self.latency_ms
            out.append(
                "latency capture→overlay ms: "
                + ", ".join(f"{k} {lat[k]:.1f}" for k in ("p50", "p90", "p99", "max") if k in lat)
            )
        if self.stage_ms:
            out.append(
                "median stage ms: " + ", ".join(f"{k} {v:.1f}" for k, v in self.stage_ms.items())
            )
        out += self.warnings
        if self.error:
            out.append(f"error: {self.error}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "backend": self.backend,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 3),
            "dropped": self.dropped,
            "stopped": self.stopped,
            "error": self.error,
            "latency_ms": self.latency_ms,
            "stage_ms": self.stage_ms,
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class RenderOptions:
    alpha: float = 0.45
    contours: bool = True
    fill: bool = True
    hud: bool = True


class _End:
    """Queue sentinel: the inference worker has finished."""


def run_pipeline(
    capture: CaptureThread,
    segmenters: Segmenter | Sequence[Segmenter],
    sinks: Sequence[Sink],
    *,
    stop: threading.Event | None = None,
    render: RenderOptions = RenderOptions(),
    source: str = "",
    backend: str = "",
    queue_size: int = 2,
) -> RunSummary:
    """Run until the source ends or ``stop`` is set; returns the summary. Closes every sink.

    ``capture`` is a started :class:`~edgeseg.runtime.capture.CaptureThread`. Each segmenter
    (each with its own interpreter) runs in its own worker thread; several of them process
    consecutive frames of a file source in parallel, and the results are rendered in capture
    order. A sink with a true ``quit_requested`` attribute (a window where the user pressed
    q) stops the run.
    """

    workers_seg = [segmenters] if isinstance(segmenters, Segmenter) else list(segmenters)
    stop = stop or threading.Event()
    meta = workers_seg[0].meta
    results: queue.Queue[tuple[int, Segmented] | type[_End]] = queue.Queue(
        maxsize=queue_size * len(workers_seg)
    )
    worker_error: list[BaseException] = []
    summary = RunSummary(source=source, backend=backend)
    pull_lock = threading.Lock()
    sequence = [0]

    def put(item: tuple[int, Segmented] | type[_End]) -> None:
        while True:
            try:
                results.put(item, timeout=0.1)
                return
            except queue.Full:
                if stop.is_set() and item is not _End:
                    return

    def pull() -> tuple[int, Any] | None:
        # Frames are numbered as they are taken, so results can be rendered in order.
        with pull_lock:
            frame = capture.get(timeout=0.1)
            if frame is None:
                return None
            sequence[0] += 1
            return sequence[0] - 1, frame

    def infer(segmenter: Segmenter) -> None:
        try:
            while not stop.is_set() and not worker_error:
                taken = pull()
                if taken is None:
                    if _capture_finished(capture):
                        break
                    continue
                seq, frame = taken
                seg = segmenter(frame.image)
                item = Segmented(
                    frame.index, frame.captured, frame.image, seg.labels, seg.stats, seg.timings
                )
                put((seq, item))
        except BaseException as exc:  # reported by the main loop, never lost in the thread
            worker_error.append(exc)
        finally:
            put(_End)

    threads = [
        threading.Thread(target=infer, args=(seg,), name=f"edgeseg-infer-{i}", daemon=True)
        for i, seg in enumerate(workers_seg)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    latencies: list[float] = []
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    recent: deque[float] = deque(maxlen=10)
    pending: dict[int, Segmented] = {}
    next_seq = 0
    ended = 0
    try:
        while ended < len(threads):
            try:
                got = results.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set() and not any(t.is_alive() for t in threads):
                    break
                continue
            if got is _End:
                ended += 1
                ready = [pending.pop(k) for k in sorted(pending)] if ended == len(threads) else []
            else:
                pending[got[0]] = got[1]
                ready = []
                while next_seq in pending:
                    ready.append(pending.pop(next_seq))
                    next_seq += 1
            for item in ready:
                _render_one(item, capture, meta, sinks, render, recent, start, latencies, stages)
                summary.frames += 1
                if any(getattr(s, "quit_requested", False) for s in sinks):
                    summary.stopped = "window closed"
                    stop.set()
    finally:
        if stop.is_set() and summary.stopped == "end of source":
            summary.stopped = "interrupted"
        stop.set()
        capture.stop()
        for t in threads:
            t.join(timeout=5)
        summary.seconds = time.perf_counter() - start
        for sink in sinks:
            try:
                sink.close()
            except Exception as exc:  # one failing sink must not keep the others open
                summary.warnings.append(f"warning: closing {type(sink).__name__}: {exc}")
            summary.warnings += [f"warning: {w}" for w in getattr(sink, "warnings", [])]
    summary.dropped = getattr(capture, "dropped", 0)
    if getattr(capture, "error", None) is not None:
        summary.error = str(capture.error)
        summary.stopped = "source failed"
    if worker_error:
        raise worker_error[0]
    if summary.stopped == "end of source" and getattr(capture, "reached_max", False):
        summary.stopped = "max frames"
    warnings = getattr(getattr(capture, "stream", None), "warnings", None)
    if warnings:
        summary.warnings += [f"warning: {w}" for w in warnings]
    if latencies:
        arr = np.asarray(latencies)
        summary.latency_ms = {
            "p50": float(np.percentile(arr, 50)),
            "p90": float(np.percentile(arr, 90)),
            "p99": float(np.percentile(arr, 99)),
            "max": float(arr.max()),
        }
        summary.stage_ms = {s: float(np.median(v)) for s, v in stages.items() if v}
    return summary


def _render_one(
    item: Segmented,
    capture: CaptureThread,
    meta: ModelMetadata,
    sinks: Sequence[Sink],
    render: RenderOptions,
    recent: deque[float],
    start: float,
    latencies: list[float],
    stages: dict[str, list[float]],
) -> None:
    """Overlay one result, write it to every sink, and record its timings."""
    from edgeseg.runtime.overlay import display_frame, draw_hud, hud_lines, overlay

    t0 = time.perf_counter()
    shown = display_frame(item.frame, meta)
    image = overlay(
        shown, item.labels, meta, alpha=render.alpha, contours=render.contours, fill=render.fill
    )
    recent.append(t0)
    fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else None
    dropped = getattr(capture, "dropped", 0)
    if render.hud:
        draw_hud(image, hud_lines(fps, item.timings, item.stats.count, dropped))
    render_ms = (time.perf_counter() - t0) * 1000
    latency = (time.perf_counter() - item.captured) * 1000
    record = {
        "frame": item.index,
        "timestamp_s": round(item.captured - start, 4),
        "preprocess_ms": round(item.timings["preprocess"], 3),
        "inference_ms": round(item.timings["inference"], 3),
        "postprocess_ms": round(item.timings["postprocess"], 3),
        "render_ms": round(render_ms, 3),
        "latency_ms": round(latency, 3),
        "objects": item.stats.count,
        "dropped": dropped,
    }
    for sink in sinks:
        sink.write(item.index, image, item.labels, record)
    latencies.append(latency)
    for s in STAGES:
        stages[s].append(render_ms if s == "render" else item.timings[s])


def _capture_finished(capture: Any) -> bool:
    """True once the capture thread has ended and everything it read has been taken."""
    finished = getattr(capture, "finished", None)
    if finished is not None:
        return bool(finished)
    thread = getattr(capture, "_thread", None)
    return thread is None or not thread.is_alive()
