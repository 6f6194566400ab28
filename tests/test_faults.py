"""Faults survived (weeks unattended on a device): a live source that stops delivering —
read() returns None, raises or hangs — is reopened with back-off and the run goes on; the
outage shows in the capture's status, in the sinks that have ``status``, on the HUD and in the
summary. Files still end at their end, ``retry=False`` keeps the old behaviour, stop() is
prompt, and cameras come back through their /dev/v4l/by-id name.

Fakes fail and recover when the test says so (events); timeouts only guard against hangs."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import META, FakeCamera, ListSink, StatusSink, wait_for

from edgeseg.core.backend import CallableBackend
from edgeseg.core.segmenter import Segmenter
from edgeseg.errors import DataError
from edgeseg.hardware import v4l_by_id
from edgeseg.runtime.capture import CaptureThread, Frame
from edgeseg.runtime.pipeline import run_pipeline
from edgeseg.runtime.streams import StreamBase, StreamInfo, open_stream

FAST = {"backoff": 0.01, "max_backoff": 0.05}  # retry at once: the tests wait on events


def _take(capture: CaptureThread, n: int) -> list[Frame]:
    """The next ``n`` frames (None never: the capture must go on). A live capture keeps only
    the newest frame, so a test never counts on taking every frame a stream delivered."""
    frames = []
    for _ in range(n):
        frame = capture.get(timeout=30)
        assert frame is not None, (capture.error, capture.status, capture.reopen_error)
        frames.append(frame)
    return frames


def _segmenter() -> Segmenter:
    backend = CallableBackend(lambda tiles: (tiles > 0.5).astype(np.float32), META)
    return Segmenter(backend, META)


# --------------------------------------------------------------------------------------------
# The capture thread


@pytest.mark.parametrize("how", ["none", "raise"])
def test_a_lost_camera_is_reopened_and_frames_resume(how: str) -> None:
    camera = FakeCamera([(3, how)], back=False)
    capture = CaptureThread(camera.streams[0], reopen=camera.reopen, **FAST).start()
    try:
        wait_for(lambda: camera.reopen_attempts >= 2)  # still away: attempts fail
        assert capture.status is not None and capture.lost
        assert capture.status.startswith("camera lost, retrying since ")
        assert capture.outages == 1 and not capture.finished and capture.error is None
        assert "not back" in capture.reopen_error
        expected = "stopped delivering frames" if how == "none" else "RuntimeError: VIDIOC_DQBUF"
        assert expected in capture.last_fault and "after 3 frames" in capture.last_fault
        assert camera.streams[0].closed == 1  # the lost stream was closed
        camera.back.set()
        after = _take(capture, 3)
        assert capture.status is None and not capture.lost and capture.outages == 1
        assert capture.outage_seconds > 0 and capture.reopen_error is None
    finally:
        capture.stop(timeout=30)
    assert after[-1].index >= 3 and int(after[-1].image[0, 0]) >= 3  # from the new stream
    assert [f.index for f in after] == sorted({f.index for f in after})
    assert capture.stream is camera.streams[1] and capture.error is None
    wait_for(lambda: camera.streams[1].closed == 1)
    # The new stream carries the earlier one's warnings.
    assert capture.stream.warnings == ["stream 0 opened", "stream 1 opened"]


def test_a_read_that_hangs_longer_than_read_timeout_is_abandoned_and_retried() -> None:
    camera = FakeCamera([(2, "hang")])
    capture = CaptureThread(
        camera.streams[0], reopen=camera.reopen, read_timeout=0.2, **FAST
    ).start()
    try:
        _take(capture, 2)
        after = _take(capture, 3)  # the hang is noticed, the camera reopened
        assert capture.outages == 1 and capture.status is None
        assert "read() hung for 0.2 s" in capture.last_fault
        assert "after 2 frames" in capture.last_fault
        wait_for(lambda: camera.streams[0].closed == 1)  # closed best-effort, not waited for
        assert camera.streams[0].reads == 2  # its read never returned
    finally:
        capture.stop(timeout=30)
        camera.unhang.set()
    assert after[0].index >= 2 and capture.error is None


def test_every_outage_is_counted() -> None:
    # Stream 0 ends after 2 frames, stream 1 raises after 2, stream 2 goes on.
    camera = FakeCamera([(2, "none"), (2, "raise")])
    capture = CaptureThread(camera.streams[0], reopen=camera.reopen, **FAST).start()
    try:
        frames = _take(capture, 6)
    finally:
        capture.stop(timeout=30)
    assert capture.outages == 2 and capture.status is None and capture.error is None
    assert len(camera.streams) == 3
    wait_for(lambda: all(s.closed == 1 for s in camera.streams))
    assert frames[-1].index >= 5


def test_a_reopened_stream_that_fails_at_once_is_still_the_same_outage() -> None:
    camera = FakeCamera([(2, "none"), (0, "none"), (0, "raise")])
    capture = CaptureThread(camera.streams[0], reopen=camera.reopen, **FAST).start()
    try:
        _take(capture, 3)
    finally:
        capture.stop(timeout=30)
    assert capture.outages == 1 and len(camera.streams) == 4


def test_stop_during_back_off_returns_promptly() -> None:
    camera = FakeCamera([(1, "none")], back=False)
    capture = CaptureThread(
        camera.streams[0], reopen=camera.reopen, backoff=1000.0, max_backoff=1000.0
    ).start()
    _take(capture, 1)
    wait_for(lambda: capture.lost)
    capture.stop(timeout=30)  # the back-off (1000 s) is cut short, or this join times out
    assert not capture._thread.is_alive()
    assert capture.finished and capture.get(timeout=0) is None and capture.error is None
    assert camera.reopen_attempts == 0 and capture.lost  # still lost at the end


def test_stop_during_a_reopen_that_hangs_returns_and_a_late_stream_is_closed() -> None:
    gate = threading.Event()
    camera = FakeCamera([(1, "none")], open_gate=gate)
    capture = CaptureThread(camera.streams[0], reopen=camera.reopen, **FAST).start()
    _take(capture, 1)
    wait_for(lambda: camera.reopen_attempts == 1)  # the open hangs on the gate
    capture.stop(timeout=30)
    assert not capture._thread.is_alive() and capture.error is None
    gate.set()  # the open returns after all: its stream is closed, not leaked
    wait_for(lambda: len(camera.streams) == 2 and camera.streams[1].closed == 1)


def test_a_reopen_that_hangs_is_given_up_after_open_timeout_and_tried_again() -> None:
    gate = threading.Event()
    camera = FakeCamera([(1, "none")], open_gate=gate)
    capture = CaptureThread(
        camera.streams[0], reopen=camera.reopen, open_timeout=0.1, **FAST
    ).start()
    try:
        _take(capture, 1)
        wait_for(lambda: camera.reopen_attempts >= 2)
        assert capture.lost and "no answer within 0.1 s" in capture.reopen_error
        gate.set()
        _take(capture, 2)
    finally:
        capture.stop(timeout=30)
    assert capture.outages == 1 and capture.status is None
    # Streams opened by the abandoned attempts were closed once they arrived.
    wait_for(lambda: all(s.closed == 1 for s in camera.streams if s is not capture.stream))


def test_a_file_source_still_ends_at_its_end_and_fails_on_a_read_error() -> None:
    class FileFake(StreamBase):
        def __init__(self, fail: bool) -> None:
            self.info = StreamInfo("file://x.tif", "x.tif", live=False, fps=10.0, size=(4, 4))
            self.warnings: list[str] = []
            self.fail, self.reads = fail, 0

        def read(self) -> np.ndarray | None:
            if self.reads == 3:
                if self.fail:
                    raise OSError("I/O error")
                return None
            self.reads += 1
            return np.zeros((4, 4), np.uint8)

        def close(self) -> None:
            pass

    reopened = []
    for fail in (False, True):
        capture = CaptureThread(
            FileFake(fail), reopen=lambda: reopened.append(1), read_timeout=0.01, **FAST
        ).start()
        frames = []
        while (frame := capture.get(timeout=30)) is not None:
            frames.append(frame)
        capture.stop()
        assert len(frames) == 3 and capture.outages == 0 and capture.status is None
        assert not capture.retry and capture.read_timeout is None
        if fail:
            assert str(capture.error) == "x.tif failed after 3 frames: OSError: I/O error"
        else:
            assert capture.error is None
    assert reopened == []


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("none", "camera 9 (fake) stopped delivering frames after 2 frames"),
        ("raise", "camera 9 (fake) failed after 2 frames: RuntimeError: VIDIOC_DQBUF: No such"),
        ("hang", "camera 9 (fake) stopped delivering frames after 2 frames: read() hung for"),
    ],
)
def test_retry_false_ends_the_capture_as_before(how: str, message: str) -> None:
    camera = FakeCamera([(2, how)])
    capture = CaptureThread(
        camera.streams[0], reopen=camera.reopen, retry=False, read_timeout=0.2
    ).start()
    try:
        frames = []
        while (frame := capture.get(timeout=30)) is not None:
            frames.append(frame)
    finally:
        capture.stop(timeout=30)
        camera.unhang.set()
    assert capture.frames_read == 2 == capture.delivered + capture.dropped
    assert 1 <= len(frames) <= 2 and capture.finished
    assert str(capture.error).startswith(message)
    assert camera.reopen_attempts == 0 and capture.outages == 0 and capture.status is None


def test_a_live_stream_that_announced_its_end_is_not_reopened() -> None:
    stream = open_stream("synthetic://?size=16&fps=200&frames=3")
    reopened = []
    capture = CaptureThread(stream, reopen=lambda: reopened.append(1), **FAST).start()
    while capture.get(timeout=30) is not None:
        pass
    capture.stop()
    assert capture.error is None and capture.outages == 0 and reopened == []


def test_read_timeout_allows_three_frame_periods_and_bad_parameters() -> None:
    slow = open_stream("synthetic://?size=16&fps=0.1")
    assert CaptureThread(slow).read_timeout == pytest.approx(30.0)
    assert CaptureThread(slow, read_timeout=None).read_timeout is None
    for bad in ({"read_timeout": 0}, {"backoff": -1.0}, {"backoff": 2.0, "max_backoff": 1.0}):
        with pytest.raises(DataError):
            CaptureThread(slow, **bad)
    slow.close()


def test_live_streams_of_open_stream_can_reopen_and_files_cannot(tmp_path: Path) -> None:
    paced = open_stream("synthetic://?size=16&seed=3", fps=50)
    again = paced.reopen()
    assert again is not paced and again.info == paced.info
    assert np.array_equal(again.read(), paced.read())  # the same source from its start
    paced.close()
    again.close()
    assert open_stream("synthetic://?size=16").reopen is None  # unpaced: not live
    from edgeseg.imageio import write_image

    write_image(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    assert open_stream(str(tmp_path / "a.png")).reopen is None


def test_a_paced_synthetic_stream_lost_in_a_hang_is_reopened() -> None:
    """End to end with a real stream: the paced source stalls (its frame is due in 100 s)
    longer than read_timeout; the capture reopens it through its own reopen()."""
    stream = open_stream("synthetic://?size=16&fps=0.01")
    capture = CaptureThread(stream, read_timeout=0.2, **FAST)
    capture.read_timeout = 0.2  # shorter than the frame period, on purpose
    capture.start()
    try:
        _take(capture, 2)  # the first frame of each stream comes at once
        assert capture.outages >= 1 and "hung" in capture.last_fault
        assert capture.stream is not stream
    finally:
        capture.stop(timeout=30)


# --------------------------------------------------------------------------------------------
# The pipeline


def test_the_run_survives_an_outage_and_tells_sinks_with_a_status_method() -> None:
    pytest.importorskip("cv2")
    camera = FakeCamera([(3, "hang")], back=False)
    heard = []

    def on_status(message: str | None) -> None:
        heard.append(message)
        if message is not None:
            camera.back.set()  # the camera comes back once the loss was reported

    status_sink, plain = StatusSink(on_status), ListSink()
    capture = CaptureThread(
        camera.streams[0], reopen=camera.reopen, max_frames=8, read_timeout=0.3, **FAST
    ).start()
    try:
        summary = run_pipeline(
            capture, _segmenter(), [status_sink, plain], source="camera 9", backend="python"
        )
    finally:
        camera.unhang.set()
    assert summary.frames == 8 and summary.stopped == "max frames" and summary.error is None
    indices = [i for i, _ in plain.frames]
    assert indices == sorted(set(indices))
    assert indices[0] <= 2 and indices[-1] >= 3  # frames before and after the outage
    assert all(shape == (32, 32) for _, shape in plain.frames)
    assert [i for i, _ in status_sink.frames] == indices
    assert len(status_sink.statuses) == 2
    assert status_sink.statuses[0].startswith("camera lost, retrying since ")
    assert status_sink.statuses[1] is None  # frames flow again
    assert summary.outages == 1 and summary.outage_seconds > 0 and not summary.lost_at_end
    lines = summary.lines()
    assert any(
        line.startswith("camera lost 1 time (") and line.endswith(" s in all), resumed each time")
        for line in lines
    ), lines
    assert any(line.startswith("last loss: camera 9 (fake) stopped delivering") for line in lines)
    record = summary.to_dict()
    assert record["outages"] == 1 and record["lost_at_end"] is False
    assert record["outage_seconds"] > 0 and "hung" in record["last_fault"]
    assert status_sink.closed and plain.closed


def test_a_run_stopped_while_the_camera_is_lost_says_so() -> None:
    pytest.importorskip("cv2")
    camera = FakeCamera([(2, "none")], back=False)
    stop = threading.Event()
    sink = StatusSink(lambda message: message is not None and stop.set())
    capture = CaptureThread(camera.streams[0], reopen=camera.reopen, **FAST).start()
    summary = run_pipeline(capture, _segmenter(), [sink], stop=stop, source="camera 9")
    assert summary.frames >= 1 and summary.stopped == "interrupted" and summary.error is None
    assert summary.outages == 1 and summary.lost_at_end
    assert any(line.endswith("s in all), still lost at the end") for line in summary.lines())
    assert not capture._thread.is_alive()


def test_a_sink_whose_status_fails_does_not_end_the_run() -> None:
    pytest.importorskip("cv2")

    class Broken(ListSink):
        def status(self, message: str | None) -> None:
            raise OSError("pipe\nbroken")

    camera = FakeCamera([(2, "none")])
    sink = Broken()
    capture = CaptureThread(camera.streams[0], reopen=camera.reopen, max_frames=5, **FAST)
    summary = run_pipeline(capture.start(), _segmenter(), [sink])
    assert summary.frames == 5 and summary.outages == 1 and summary.error is None
    assert summary.warnings.count("warning: Broken.status failed: OSError: pipe broken") == 1


def test_without_retry_the_run_ends_with_the_error_as_before() -> None:
    pytest.importorskip("cv2")
    camera = FakeCamera([(2, "none")])
    sink = StatusSink()
    capture = CaptureThread(camera.streams[0], reopen=camera.reopen, retry=False).start()
    summary = run_pipeline(capture, _segmenter(), [sink])
    assert summary.frames + summary.dropped == 2 and summary.stopped == "source failed"
    assert summary.error == "camera 9 (fake) stopped delivering frames after 2 frames"
    assert summary.outages == 0 and sink.statuses == [] and camera.reopen_attempts == 0
    assert not any("lost" in line for line in summary.lines())


# --------------------------------------------------------------------------------------------
# Stable camera names


def _fake_dev(root: Path) -> Path:
    """root/dev with video0 (capture), video1 (its metadata node), video2 (another camera)
    and udev's by-id links (relative, as udev writes them; one absolute)."""
    dev = root / "dev"
    by_id = dev / "v4l" / "by-id"
    by_id.mkdir(parents=True)
    for name in ("video0", "video1", "video2"):
        (dev / name).write_bytes(b"")
    os.symlink("../../video0", by_id / "usb-Logitech_C920_AB12-video-index0")
    os.symlink("../../video1", by_id / "usb-Logitech_C920_AB12-video-index1")
    os.symlink("/dev/video2", by_id / "usb-Other_Cam_99-video-index0")
    return by_id


def test_v4l_by_id_finds_the_stable_name_of_a_device_node(tmp_path: Path) -> None:
    by_id = _fake_dev(tmp_path)
    assert v4l_by_id("/dev/video0", tmp_path) == by_id / "usb-Logitech_C920_AB12-video-index0"
    assert v4l_by_id("/dev/video1", tmp_path) == by_id / "usb-Logitech_C920_AB12-video-index1"
    assert v4l_by_id("/dev/video2", tmp_path) == by_id / "usb-Other_Cam_99-video-index0"
    own = "/dev/v4l/by-id/usb-Logitech_C920_AB12-video-index0"
    assert v4l_by_id(own, tmp_path) == by_id / "usb-Logitech_C920_AB12-video-index0"
    assert v4l_by_id("/dev/video7", tmp_path) is None  # no such node
    (tmp_path / "dev" / "video5").write_bytes(b"")
    assert v4l_by_id("/dev/video5", tmp_path) is None  # a node without a by-id name
    assert v4l_by_id("/dev/video0", tmp_path / "empty") is None  # no /dev at all
