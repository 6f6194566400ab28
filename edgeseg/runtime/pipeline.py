"""Capture → infer → render, in threads with shallow queues, every stage timed.

- Capture runs in its own thread (:class:`edgeseg.runtime.capture.CaptureThread`): a live
  source keeps only the newest frame (and counts what it drops), a file source is processed
  frame by frame with nothing dropped.
- Inference runs in a worker thread: preprocessing (normalize, tile or resize), the model,
  stitching, thresholding and connected components. LiteRT releases the GIL while it runs, so
  capture and rendering overlap with it.
- Rendering and the sinks (window, video, masks, CSV, objects, MJPEG) run in the calling
  thread, which is the main thread in ``edgeseg run``: windows must be driven from it on some
  platforms, and Python delivers SIGINT/SIGTERM there.

What the pipeline asks of its parts is declared, never probed: of the capture, the
:class:`~edgeseg.runtime.capture.Capture` protocol (frames, counters, status, the end); of a
sink, the :class:`~edgeseg.runtime.sinks.Sink` protocol, whose optional capabilities
:class:`~edgeseg.runtime.sinks.SinkBase` gives defaults.

Each sink gets the rendered overlay, the label map (uint8 classes, or int32 object ids of an
instance model) and the frame's :class:`~edgeseg.runtime.sinks.FrameRecord` (``frame``,
timings, ``objects``, ``dropped``, and ``name``, the frame's file in a file source); a sink
whose ``wants_frame`` is true (:class:`~edgeseg.runtime.sinks.FrameSink`) also gets the raw
frame as read (``frame=``).

A live source that stops delivering does not end the run: the capture thread reopens it with
back-off while the pipeline waits. Whenever the capture's ``status`` changes ("camera lost,
retrying since HH:MM:SS", then None when frames flow again), every sink hears it
(``sink.status(message)``: nothing is rendered while no frame comes, so the MJPEG page, say,
shows it itself); frames rendered while it is set carry it on the HUD in red, and the summary
counts the outages.

Stopping (end of source, ``max_frames``, Ctrl-C / SIGTERM, a closed window, a camera that
vanished and cannot be reopened) always drains what was captured, closes every sink (the
recording is finalized and playable, the CSV complete up to the last frame) and returns a
summary.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.postprocess import ObjectStats
from edgeseg.core.segmenter import Segmenter
from edgeseg.runtime.capture import Capture, Frame
from edgeseg.runtime.sinks import CSV_FIELDS, FrameRecord, FrameSink, Sink

__all__ = [
    "CSV_FIELDS",
    "FrameRecord",
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
    labels: np.ndarray  # (H, W), the frame's size: uint8 classes, or int32 instance ids
    stats: ObjectStats
    timings: dict[str, float]  # milliseconds per stage
    name: str | None = None  # the frame's name in a file source
    clock: float | None = None  # the frame's time on its source's clock (capture.Frame.clock)


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
    outages: int = 0  # times the live source was lost (and reopening began)
    outage_seconds: float = 0.0  # without frames in all, from each loss noticed to the next frame
    lost_at_end: bool = False  # the run ended during an outage
    lost_what: str = "camera"  # "camera" or "stream", for the summary line
    last_fault: str | None = None  # why the source was last lost
    notes: list[str] = field(default_factory=list)  # what the sinks made (the recorded rate)

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
        if self.outages:
            times = f"{self.outages} time{'' if self.outages == 1 else 's'}"
            how = "still lost at the end" if self.lost_at_end else "resumed each time"
            out.append(f"{self.lost_what} lost {times} ({self.outage_seconds:.1f} s in all), {how}")
            if self.last_fault:
                out.append(f"last loss: {self.last_fault}")
        out += self.notes
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
            "outages": self.outages,
            "outage_seconds": round(self.outage_seconds, 3),
            "lost_at_end": self.lost_at_end,
            "last_fault": self.last_fault,
            "notes": self.notes,
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
    capture: Capture,
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

    ``capture`` is a started :class:`~edgeseg.runtime.capture.CaptureThread` (any
    :class:`~edgeseg.runtime.capture.Capture`). Each segmenter (each with its own
    interpreter) runs in its own worker thread; several of them process consecutive frames of
    a file source in parallel, and the results are rendered in capture order. A sink whose
    ``quit_requested`` turns true (a window where the user pressed q) stops the run. While the
    capture reopens a lost live source the run goes on; the sinks hear the capture's status
    (``sink.status(message)``) when it changes.
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

    def pull() -> tuple[int, Frame] | None:
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
                    if capture.finished:
                        break
                    continue
                seq, frame = taken
                seg = segmenter(frame.image)
                item = Segmented(
                    frame.index,
                    frame.captured,
                    frame.image,
                    seg.labels,
                    seg.stats,
                    seg.timings,
                    frame.name,
                    frame.clock,
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
    told = [0]  # how many of the capture's status changes the sinks heard
    try:
        while ended < len(threads):
            _announce_status(capture, sinks, told, summary)
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
                if any(s.quit_requested for s in sinks):
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
            summary.warnings += [f"warning: {w}" for w in sink.warnings]
            summary.notes += sink.notes
    summary.dropped = capture.dropped
    summary.outages = capture.outages
    if summary.outages:
        summary.outage_seconds = capture.outage_seconds
        summary.lost_at_end = capture.status is not None
        summary.lost_what = capture.kind
        summary.last_fault = capture.last_fault
    if capture.error is not None:
        summary.error = str(capture.error)
        summary.stopped = "source failed"
    if worker_error:
        raise worker_error[0]
    if summary.stopped == "end of source" and capture.reached_max:
        summary.stopped = "max frames"
    summary.warnings += [f"warning: {w}" for w in capture.warnings]
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
    capture: Capture,
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
    dropped = capture.dropped
    if render.hud:
        lines = hud_lines(
            fps,
            item.timings,
            item.stats.count,
            dropped,
            status=capture.status,
            outages=capture.outages,
        )
        draw_hud(image, lines)
    render_ms = (time.perf_counter() - t0) * 1000
    latency = (time.perf_counter() - item.captured) * 1000
    record = FrameRecord(
        frame=item.index,
        timestamp_s=round(item.captured - start, 4),
        preprocess_ms=round(item.timings["preprocess"], 3),
        inference_ms=round(item.timings["inference"], 3),
        postprocess_ms=round(item.timings["postprocess"], 3),
        render_ms=round(render_ms, 3),
        latency_ms=round(latency, 3),
        objects=item.stats.count,
        dropped=dropped,
        name=item.name,
        clock_s=item.clock,
    )
    for sink in sinks:
        if sink.wants_frame:
            cast(FrameSink, sink).write(item.index, image, item.labels, record, frame=item.frame)
        else:
            sink.write(item.index, image, item.labels, record)
    latencies.append(latency)
    for s in STAGES:
        stages[s].append(render_ms if s == "render" else item.timings[s])


def _announce_status(
    capture: Capture, sinks: Sequence[Sink], told: list[int], summary: RunSummary
) -> None:
    """Tell the sinks every change of the capture's status since the ``told[0]`` they heard
    (also those too short to be seen by polling). A sink failing at it gets a warning, once."""
    told[0], new = capture.status_changes(told[0])
    for status in new:
        _tell_status(sinks, status, summary)


def _tell_status(sinks: Sequence[Sink], status: str | None, summary: RunSummary) -> None:
    for sink in sinks:
        try:
            sink.status(status)
        except Exception as exc:  # a status line is not worth ending a run for
            message = f"warning: {type(sink).__name__}.status failed: {type(exc).__name__}: {exc}"
            message = " ".join(message.split())
            if message not in summary.warnings:
                summary.warnings.append(message)
