"""The declared contracts between the pipeline and its parts: the Sink protocol and SinkBase's
defaults, the Capture protocol, the Stream protocol and StreamBase's defaults, and the typed
per-frame record (FrameRecord) with the CSV row it makes."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from helpers import META, ListSink, StatusSink

from edgeseg.core.backend import CallableBackend
from edgeseg.core.segmenter import Segmenter
from edgeseg.errors import EdgesegError
from edgeseg.runtime.capture import Capture, CaptureThread, Frame
from edgeseg.runtime.pipeline import run_pipeline
from edgeseg.runtime.sinks import (
    CSV_FIELDS,
    CsvSink,
    FrameRecord,
    FrameSink,
    MaskSink,
    ObjectSink,
    Sink,
    SinkBase,
)
from edgeseg.runtime.streams import Stream, StreamBase, StreamInfo, open_stream

RECORD = FrameRecord(
    frame=3,
    timestamp_s=1.2346,
    preprocess_ms=0.123,
    inference_ms=12.346,
    postprocess_ms=1.5,
    render_ms=2.0,
    latency_ms=16.789,
    objects=4,
    dropped=1,
    name="A06_s6.tif",
)
RENDERED = np.zeros((8, 8, 3), np.uint8)
LABELS = np.zeros((8, 8), np.uint8)


# ---------------------------------------------------------------------------- sinks


class Minimal(SinkBase):
    """A sink that states nothing but ``write``."""

    def __init__(self) -> None:
        self.records: list[object] = []

    def write(self, index, rendered, labels, record) -> None:  # type: ignore[no-untyped-def]
        self.records.append(record)


def test_a_minimal_sink_gets_every_default() -> None:
    sink = Minimal()
    assert isinstance(sink, Sink)
    assert sink.wants_frame is False and sink.quit_requested is False
    assert list(sink.warnings) == [] and sink.stopped is None and not sink.closed
    sink.status("camera lost, retrying since 14:02:11")  # heard, ignored
    sink.status(None)
    with sink as same:
        same.write(0, RENDERED, LABELS, RECORD)
    assert sink.closed and sink.records == [RECORD]
    assert Minimal().warnings == ()  # no list shared between sinks


def test_a_sink_without_write_cannot_be_made() -> None:
    class NoWrite(SinkBase):
        pass

    with pytest.raises(TypeError, match="write"):
        NoWrite()  # type: ignore[abstract]


def test_edgesegs_sinks_state_their_capabilities(tmp_path: Path) -> None:
    with CsvSink(tmp_path / "a.csv") as csv_sink, MaskSink(tmp_path / "m") as masks:
        for sink in (csv_sink, masks):
            assert isinstance(sink, Sink) and not sink.wants_frame and not sink.quit_requested
            assert sink.warnings == []
    with ObjectSink(tmp_path / "o.csv", META) as objects:
        assert isinstance(objects, FrameSink) and objects.wants_frame is True
        assert objects.warnings is objects.csv.warnings


# ---------------------------------------------------------------------------- the record


def _old_record(name: str | None) -> dict[str, object]:
    """The dict the pipeline handed to every sink before FrameRecord, built as it was."""
    record: dict[str, object] = {
        "frame": 3,
        "timestamp_s": round(1.23456, 4),
        "preprocess_ms": round(0.12345, 3),
        "inference_ms": round(12.3456, 3),
        "postprocess_ms": round(1.5, 3),
        "render_ms": round(2.0, 3),
        "latency_ms": round(16.7894, 3),
        "objects": 4,
        "dropped": 1,
    }
    if name is not None:
        record["name"] = name
    return record


@pytest.mark.parametrize("name", ["A06_s6.tif", None])
def test_a_frame_record_is_the_row_it_replaced(name: str | None) -> None:
    record = dataclasses.replace(RECORD, name=name)
    assert list(record.to_dict().items()) == list(_old_record(name).items())  # keys in order
    # the CSV's columns, the frame's name, and its time on the source's clock (not a column)
    fields = (*CSV_FIELDS, "name", "clock_s")
    assert tuple(f.name for f in dataclasses.fields(FrameRecord)) == fields
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.frame = 4  # type: ignore[misc]


def test_a_frame_record_writes_the_same_csv_bytes(tmp_path: Path) -> None:
    for i, record in enumerate((RECORD, _old_record("A06_s6.tif"))):
        with CsvSink(tmp_path / f"{i}.csv", CSV_FIELDS) as sink:
            sink.write(3, RENDERED, LABELS, record)
            sink.write(4, RENDERED, LABELS, dataclasses.replace(RECORD, frame=4, name=None))
    data = (tmp_path / "0.csv").read_bytes()
    assert data == (tmp_path / "1.csv").read_bytes()
    assert data == (
        b"frame,timestamp_s,preprocess_ms,inference_ms,postprocess_ms,render_ms,latency_ms,"
        b"objects,dropped\r\n"
        b"3,1.2346,0.123,12.346,1.5,2.0,16.789,4,1\r\n"
        b"4,1.2346,0.123,12.346,1.5,2.0,16.789,4,1\r\n"
    )


def test_the_objects_sink_and_the_stream_read_the_record(tmp_path: Path) -> None:
    labels = np.zeros((8, 8), np.uint8)
    labels[2:4, 2:4] = 1
    with ObjectSink(tmp_path / "objects.csv", META) as sink:
        sink.write(3, RENDERED, labels, RECORD, frame=np.zeros((8, 8), np.uint8))
    row = (tmp_path / "objects.csv").read_text().splitlines()[1]
    assert row.startswith("3,A06_s6.tif,1,")
    from edgeseg.runtime.sinks import MjpegServer

    pytest.importorskip("cv2")
    with MjpegServer(port=0) as server:
        server.write(3, RENDERED, LABELS, RECORD)
        with urllib.request.urlopen(server.url + "stats.json", timeout=10) as r:
            assert json.loads(r.read()) == RECORD.to_dict()


# ---------------------------------------------------------------------------- the capture


class ListCapture:
    """A capture of its own (not a CaptureThread): hands out ``images`` in order, reports a
    short outage through its status log, and ends."""

    kind = "camera"
    dropped = 2
    outages = 1
    outage_seconds = 0.5
    status: str | None = None
    last_fault: str | None = "camera 9 stopped delivering frames after 1 frame"
    error: EdgesegError | None = None
    reached_max = False

    def __init__(self, images: list[np.ndarray]) -> None:
        self._frames = deque(
            Frame(i, image, time.perf_counter(), f"f{i}.png") for i, image in enumerate(images)
        )
        self.warnings = ["a warning of the stream"]
        self.stopped = False

    @property
    def finished(self) -> bool:
        return not self._frames

    def get(self, timeout: float | None = None) -> Frame | None:
        return self._frames.popleft() if self._frames else None

    def status_changes(self, since: int = 0) -> tuple[int, list[str | None]]:
        changes: list[str | None] = ["camera lost, retrying since 14:02:11", None]
        return len(changes), changes[since:]

    def stop(self, timeout: float | None = 10.0) -> None:
        self.stopped = True


def test_the_pipeline_runs_any_capture_that_states_the_protocol() -> None:
    pytest.importorskip("cv2")
    images = [np.full((16, 16), v, np.uint8) for v in (0, 255, 0)]
    capture = ListCapture(images)
    assert isinstance(capture, Capture)
    segmenter = Segmenter(
        CallableBackend(lambda tiles: (tiles > 0.5).astype(np.float32), META), META
    )
    sink, plain = StatusSink(), ListSink()
    summary = run_pipeline(capture, segmenter, [sink, plain], source="fake", backend="python")
    assert summary.frames == 3 and summary.stopped == "end of source" and capture.stopped
    assert [i for i, _ in plain.frames] == [0, 1, 2] and sink.closed and plain.closed
    records = plain.records
    assert all(isinstance(r, FrameRecord) for r in records)
    assert [r.name for r in records] == ["f0.png", "f1.png", "f2.png"]
    assert [r.dropped for r in records] == [2, 2, 2]
    assert sink.statuses == ["camera lost, retrying since 14:02:11", None]
    assert summary.dropped == 2 and summary.outages == 1 and summary.outage_seconds == 0.5
    assert summary.lost_what == "camera" and not summary.lost_at_end
    assert summary.last_fault == ListCapture.last_fault
    assert "warning: a warning of the stream" in summary.warnings


def test_the_capture_thread_states_the_protocol() -> None:
    stream = open_stream("synthetic://?size=16&frames=2")
    with CaptureThread(stream).start() as capture:
        assert isinstance(capture, Capture)
        assert capture.warnings is capture.stream.warnings


# ---------------------------------------------------------------------------- streams


class Plain(StreamBase):
    """A stream that states nothing but ``info``, ``warnings``, ``read`` and ``close``."""

    def __init__(self) -> None:
        self.info = StreamInfo("file://x.tif", "x.tif", live=False, fps=None, size=(4, 4))
        self.warnings: list[str] = []
        self.left = 2

    def read(self) -> np.ndarray | None:
        if not self.left:
            return None
        self.left -= 1
        return np.zeros((4, 4), np.uint8)

    def close(self) -> None:
        pass


def test_a_plain_stream_gets_the_optional_defaults() -> None:
    stream = Plain()
    assert isinstance(stream, Stream)
    assert stream.reopen is None and stream.frame_name is None
    stream.interrupt()  # nothing to interrupt
    with CaptureThread(stream).start() as capture:
        frames = [capture.get(timeout=30), capture.get(timeout=30)]
        assert capture.get(timeout=30) is None and capture.error is None
    assert [f.index for f in frames if f is not None] == [0, 1]
    assert all(f is not None and f.name is None for f in frames)
    with pytest.raises(TypeError):
        StreamBase()  # type: ignore[abstract]


def test_edgesegs_streams_state_the_protocol() -> None:
    paced = open_stream("synthetic://?size=16&fps=50")
    assert isinstance(paced, (Stream, StreamBase)) and callable(paced.reopen)
    paced.close()


# ---------------------------------------------------------------------------- masks


def test_masks_left_half_written_are_removed_whatever_their_naming(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    folder = tmp_path / "masks"
    folder.mkdir()
    left = [".000003.partial.png", ".A06_s6.1a2b3c4d.partial.png", ".000004.0badc0de.partial.tif"]
    for name in left:
        (folder / name).write_bytes(b"cut")  # a killed run's (the old naming and atomic_path's)
    (folder / ".notes.partial.png").write_bytes(b"not ours")
    with MaskSink(folder) as sink:
        assert any(w.startswith("deleted 3 unfinished file(s)") for w in sink.warnings)
        sink.write(0, RENDERED, LABELS, RECORD)
    assert sorted(p.name for p in folder.iterdir()) == [".notes.partial.png", "A06_s6.png"]
