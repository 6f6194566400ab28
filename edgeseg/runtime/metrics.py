"""A run's metrics in the Prometheus text format, for a fleet's scraper: :class:`RunMetrics`.

:class:`RunMetrics` is a sink (it hears every rendered frame's
:class:`~edgeseg.runtime.sinks.FrameRecord` and every change of the source's status) with its
own :class:`prometheus_client.CollectorRegistry` (never the process-wide one: two sessions in a
process, as in tests, do not mix). :meth:`RunMetrics.exposition` is the text of ``GET
/metrics``, served by :class:`~edgeseg.runtime.sinks.MjpegServer` (on ``--stream``'s address, or
alone on ``--metrics HOST:PORT``). What it exports:

=====================================  ========================================================
``edgeseg_frames_total``               frames rendered (counter)
``edgeseg_frames_dropped_total``       frames a live source delivered that nobody took
``edgeseg_stage_seconds{stage}``       per-stage time: preprocess, inference, postprocess,
                                       render (histogram)
``edgeseg_latency_seconds``            capture → rendered overlay (histogram)
``edgeseg_objects``                    objects in the last frame
``edgeseg_fps``                        frames per second over the last 10 frames (0 when none
                                       came for 5 s)
``edgeseg_camera_outages_total``       times the source was lost
``edgeseg_camera_lost_seconds_total``  seconds without the source, the current outage included
``edgeseg_camera_up``                  1 while frames flow, 0 while the source is lost
``edgeseg_recorder_bytes``             the recording's closed segments on disk
``edgeseg_ring_bytes{output}``         each bounded output's files (recording, masks, csv) …
``edgeseg_ring_max_bytes{output}``     … and its bound
``edgeseg_ring_deleted_files_total``   files the bound deleted
``edgeseg_disk_free_bytes{path}``      free space where the outputs go
``edgeseg_temperature_celsius``        every thermal zone (``{zone, type}``)
``edgeseg_throttled{flag}``            a Pi's ``vcgencmd get_throttled`` bits, where it has one
``edgeseg_model_info``                 model, runtime, device, accelerator, edgeseg version
=====================================  ========================================================

The outputs are read through one small interface, :class:`BoundedOutput` (a sink with a
``ring``, a :class:`~edgeseg.runtime.storage.Ring`: its ``folder``, ``total``, ``max_bytes``
and ``deleted``); nothing else of a sink is looked at. A recording into one file (no ring)
has no ``edgeseg_recorder_bytes``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgeseg.optional import require
from edgeseg.runtime import health
from edgeseg.runtime.sinks.base import Record, SinkBase, record_fields
from edgeseg.runtime.storage import Ring

__all__ = ["STAGE_BUCKETS", "BoundedOutput", "RunMetrics", "parse_metrics_address"]

#: Histogram buckets (seconds) for the stages and the latency: 1 ms to 10 s.
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STAGES = ("preprocess", "inference", "postprocess", "render")
# Device readings that cost a process (vcgencmd) are refreshed at most this often (seconds).
_SLOW_READING_S = 5.0
_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_metrics_address(text: str) -> tuple[str, int]:
    """``--metrics``'s ``[HOST:]PORT``, read as ``--stream``'s is (127.0.0.1 unless a host is
    given); raises DataError."""
    from edgeseg.errors import DataError
    from edgeseg.runtime.sinks.mjpeg import parse_stream_address

    try:
        return parse_stream_address(text)
    except DataError:
        raise DataError(
            f"bad --metrics address {text!r}: give PORT, HOST:PORT or [IPv6]:PORT"
        ) from None


@runtime_checkable
class BoundedOutput(Protocol):
    """What the metrics read of an output: its ring (None: unbounded), whose ``folder``,
    ``total``, ``max_bytes`` and ``deleted`` they export."""

    ring: Ring | None


def _output_name(sink: Any) -> str:
    name = type(sink).__name__.lower()
    for suffix in ("sink", "server"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return {"video": "recording"}.get(name, name)


class RunMetrics(SinkBase):
    """Counts what the pipeline tells it and what the device reports, in its own registry.

    ``outputs`` (set with :meth:`watch_outputs`) are the run's other sinks, read through
    :class:`BoundedOutput`; ``sys_root`` stands for ``/`` when reading thermal zones and
    ``vcgencmd`` is its path (default: the one on PATH), both for tests. ``clock`` is
    time.monotonic unless a test gives another.
    """

    content_type = _CONTENT_TYPE

    def __init__(
        self,
        *,
        sys_root: str | Path = "/",
        vcgencmd: str | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        prom = require("prometheus_client")
        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=False)
        r = self.registry
        self.frames = prom.Counter("edgeseg_frames", "Frames rendered.", registry=r)
        self.dropped = prom.Counter(
            "edgeseg_frames_dropped", "Frames the live source delivered that nobody took.",
            registry=r,
        )  # fmt: skip
        self.stage = prom.Histogram(
            "edgeseg_stage_seconds", "Time of each stage of a frame.", ["stage"],
            buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self._stage = {s: self.stage.labels(stage=s) for s in _STAGES}
        self.latency = prom.Histogram(
            "edgeseg_latency_seconds", "From capture to the rendered overlay.",
            buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.objects = prom.Gauge("edgeseg_objects", "Objects in the last frame.", registry=r)
        self.outages = prom.Counter(
            "edgeseg_camera_outages", "Times the source was lost.", registry=r
        )
        self.info = prom.Info("edgeseg_model", "The model and what runs it.", registry=r)
        self.sys_root = Path(sys_root)
        self.vcgencmd = vcgencmd
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: deque[float] = deque(maxlen=10)
        self._dropped_seen = 0
        self._lost = False
        self._lost_since: float | None = None
        self._lost_s = 0.0
        self._outputs: list[Any] = []
        self._folders: list[Path] = []
        self._throttle: tuple[float, int | None] | None = None
        r.register(_Live(self))

    # -- what the session tells it -----------------------------------------------------------

    def describe(self, **fields: Any) -> None:
        """The info metric's labels (model, runtime, device, accelerator, backend…)."""
        from edgeseg import __version__

        labels = {k: "" if v is None else str(v) for k, v in fields.items()}
        self.info.info({**labels, "edgeseg_version": __version__})

    def watch_outputs(self, sinks: Sequence[Any], folders: Sequence[Path] = ()) -> None:
        """The outputs whose rings are exported, and the folders whose free space is."""
        self._outputs = [s for s in sinks if s is not self and isinstance(s, BoundedOutput)]
        seen: list[Path] = []
        rings = [s.ring.folder for s in self._outputs if s.ring is not None]
        for folder in [*folders, *rings]:
            if folder not in seen:
                seen.append(folder)
        self._folders = seen or [Path.cwd()]

    # -- what the pipeline tells a sink ------------------------------------------------------

    def write(self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Record) -> None:
        f = record_fields(record)
        now = self._clock()
        for s in _STAGES:
            ms = f.get(f"{s}_ms")
            if ms is not None:
                self._stage[s].observe(float(ms) / 1000.0)
        if f.get("latency_ms") is not None:
            self.latency.observe(float(f["latency_ms"]) / 1000.0)
        self.objects.set(int(f.get("objects") or 0))
        self.frames.inc()
        dropped = int(f.get("dropped") or 0)
        with self._lock:
            self._recent.append(now)
            grown, self._dropped_seen = (
                dropped - self._dropped_seen,
                max(dropped, self._dropped_seen),
            )
        if grown > 0:
            self.dropped.inc(grown)

    def status(self, message: str | None) -> None:
        now = self._clock()
        with self._lock:
            if message is not None and not self._lost:
                self._lost, self._lost_since = True, now
                self.outages.inc()
            elif message is None and self._lost:
                self._lost = False
                if self._lost_since is not None:
                    self._lost_s += now - self._lost_since
                self._lost_since = None

    # -- reading -----------------------------------------------------------------------------

    def fps(self) -> float:
        """Frames per second over the last 10 frames; 0 when none came for 5 s."""
        with self._lock:
            recent = list(self._recent)
        if len(recent) < 2 or self._clock() - recent[-1] > 5.0 or recent[-1] <= recent[0]:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def lost_seconds(self) -> float:
        with self._lock:
            extra = self._clock() - self._lost_since if self._lost_since is not None else 0.0
            return self._lost_s + extra

    def camera_up(self) -> bool:
        with self._lock:
            return not self._lost

    def throttle_flags(self) -> int | None:
        """``vcgencmd get_throttled``, read at most every few seconds."""
        now = self._clock()
        if self._throttle is None or now - self._throttle[0] >= _SLOW_READING_S:
            self._throttle = (now, health.throttled(self.vcgencmd))
        return self._throttle[1]

    def exposition(self) -> bytes:
        """The text of ``GET /metrics`` (Prometheus text format 0.0.4)."""
        return self._prom.generate_latest(self.registry)


class _Live:
    """The metrics computed when scraped: rates, outages so far, outputs and the device."""

    def __init__(self, metrics: RunMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.m
        yield GaugeMetricFamily("edgeseg_fps", "Frames per second (last 10 frames).", m.fps())
        yield CounterMetricFamily(
            "edgeseg_camera_lost_seconds", "Seconds without the source, the current outage "
            "included.", value=m.lost_seconds(),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgeseg_camera_up", "1 while frames flow, 0 while the source is lost.",
            value=1.0 if m.camera_up() else 0.0,
        )  # fmt: skip
        recorder = GaugeMetricFamily(
            "edgeseg_recorder_bytes", "Bytes of the recording's closed files on disk."
        )
        ring = GaugeMetricFamily(
            "edgeseg_ring_bytes", "Bytes of a bounded output's files.", labels=["output"]
        )
        bound = GaugeMetricFamily(
            "edgeseg_ring_max_bytes", "The size bound of an output.", labels=["output"]
        )
        deleted = CounterMetricFamily(
            "edgeseg_ring_deleted_files", "Files deleted to keep an output within its bound.",
            labels=["output"],
        )  # fmt: skip
        for sink in m._outputs:
            name, r = _output_name(sink), sink.ring
            if r is not None:
                ring.add_metric([name], float(r.total))
                if r.max_bytes is not None:
                    bound.add_metric([name], float(r.max_bytes))
                deleted.add_metric([name], float(r.deleted))
            if name == "recording" and r is not None:
                recorder.add_metric([], float(r.total))
        yield from (f for f in (recorder, ring, bound, deleted) if f.samples)
        free = GaugeMetricFamily(
            "edgeseg_disk_free_bytes", "Free space where the outputs go.", labels=["path"]
        )
        for folder in m._folders:
            got = health.disk_free(folder)
            if got is not None:
                free.add_metric([str(folder)], float(got))
        if free.samples:
            yield free
        temps = health.temperatures(m.sys_root)
        if temps:
            fam = GaugeMetricFamily(
                "edgeseg_temperature_celsius", "Thermal zones of the device.",
                labels=["zone", "type"],
            )  # fmt: skip
            for t in temps:
                fam.add_metric([t.zone, t.type], t.celsius)
            yield fam
        flags = m.throttle_flags()
        if flags is not None:
            fam = GaugeMetricFamily(
                "edgeseg_throttled", "vcgencmd get_throttled, one bit a flag.", labels=["flag"]
            )
            for bit, name in health.THROTTLE_FLAGS.items():
                fam.add_metric([name], float((flags >> bit) & 1))
            yield fam
