"""The capture thread: file streams lose nothing, live streams keep the newest frame, the end,
max_frames, stop() while blocked, and a camera that vanishes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgeseg.errors import DataError
from edgeseg.runtime.capture import CaptureThread, Frame
from edgeseg.runtime.streams import StreamBase, StreamInfo, open_stream

tifffile = pytest.importorskip("tifffile")


class FakeStream(StreamBase):
    """Frames 0, 1, 2, … (4x4 filled with the number), optionally ending or failing."""

    def __init__(
        self,
        *,
        live: bool,
        end_after: int | None = None,
        fail_after: int | None = None,
        gate: threading.Semaphore | None = None,
    ) -> None:
        self.info = StreamInfo(
            uri="camera://9", description="camera 9 (fake)", live=live, fps=None, size=(4, 4)
        )
        self.warnings: list[str] = []
        self.reads = 0
        self.closed = 0
        self._end_after, self._fail_after, self._gate = end_after, fail_after, gate

    def read(self) -> np.ndarray | None:
        if self._gate is not None and self.reads > 0:
            self._gate.acquire()  # the test lets each next frame through
        if self._end_after is not None and self.reads >= self._end_after:
            return None
        if self._fail_after is not None and self.reads >= self._fail_after:
            raise RuntimeError("VIDIOC_DQBUF: No such device\n(errno 19)")
        self.reads += 1
        return np.full((4, 4), self.reads - 1, np.uint8)

    def close(self) -> None:
        self.closed += 1


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _drain(capture: CaptureThread, pause: float = 0.0) -> list[Frame]:
    frames = []
    while (frame := capture.get(timeout=30)) is not None:
        frames.append(frame)
        time.sleep(pause)
    return frames


def test_file_stream_delivers_every_frame_in_order_to_a_slow_consumer(tmp_path: Path) -> None:
    stack = np.arange(8, dtype=np.uint16)[:, None, None] * np.ones((8, 6, 5), np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    capture = CaptureThread(open_stream(str(tmp_path / "stack.tif")), queue_size=2).start()
    frames = []
    while (frame := capture.get(timeout=30)) is not None:
        # Bounded: the thread holds at most queue_size frames plus the one it waits to add.
        assert capture.frames_read - capture.delivered <= 2 + 1
        frames.append(frame)
        time.sleep(0.02)
    assert [f.index for f in frames] == list(range(8))
    assert [int(f.image[0, 0]) for f in frames] == list(range(8))
    assert all(f.image.dtype == np.uint16 for f in frames)
    assert capture.dropped == 0 and capture.delivered == 8 and capture.error is None
    assert capture.finished and not capture.reached_max
    times = [f.captured for f in frames]
    assert times == sorted(times)
    assert [f.name for f in frames] == [f"stack.tif#page{i}" for i in range(8)]
    capture.stop()


def test_live_stream_keeps_the_newest_frame_for_a_slow_consumer() -> None:
    stream = open_stream("synthetic://?size=16&fps=100&frames=30")
    with CaptureThread(stream).start() as capture:
        frames = _drain(capture, pause=0.05)
    assert capture.error is None  # a live stream that announced 30 frames ended normally
    assert capture.dropped > 0
    assert capture.dropped + capture.delivered == 30 == capture.frames_read
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices)) and indices[-1] == 29
    assert all(f.name is None for f in frames)  # only file sources name their frames


def test_max_frames() -> None:
    endless = open_stream("synthetic://?size=16")
    with CaptureThread(endless, max_frames=5).start() as capture:
        frames = _drain(capture)
        assert [f.index for f in frames] == list(range(5))
        assert capture.reached_max and capture.finished and capture.error is None
        assert capture.get(timeout=0.01) is None
    fake = FakeStream(live=False)
    with CaptureThread(fake, max_frames=2).start() as capture:
        assert len(_drain(capture)) == 2
    assert fake.reads == 2 and fake.closed == 1  # a file stream reads no further


def test_stop_while_blocked_on_a_full_queue() -> None:
    fake = FakeStream(live=False)  # endless, not live: the thread blocks when the queue is full
    capture = CaptureThread(fake, queue_size=1).start()
    _wait_for(lambda: fake.reads >= 2)  # one frame queued, one waiting to be added
    assert not capture.finished
    capture.stop()
    assert not capture._thread.is_alive()
    assert fake.closed == 1 and capture.get() is None and capture.finished
    capture.stop()  # idempotent
    assert fake.closed == 1 and capture.error is None


def test_stop_interrupts_a_paced_stream_waiting_for_its_next_frame() -> None:
    stream = open_stream("synthetic://?size=16&fps=0.01")  # next frame due in 100 s
    capture = CaptureThread(stream).start()
    assert capture.get(timeout=30) is not None
    capture.stop(timeout=30)
    assert not capture._thread.is_alive() and capture.error is None


def test_stop_before_start_closes_the_stream() -> None:
    fake = FakeStream(live=True)
    capture = CaptureThread(fake)
    capture.stop()
    assert fake.closed == 1 and capture.get() is None
    with pytest.raises(RuntimeError):
        capture.start()


def test_camera_that_stops_delivering() -> None:
    gate = threading.Semaphore(0)
    fake = FakeStream(live=True, end_after=3, gate=gate)
    capture = CaptureThread(fake).start()
    frames = [capture.get(timeout=30)]
    assert capture.get(timeout=0.01) is None and not capture.finished  # a timeout, not the end
    for _ in range(3):
        gate.release()
        frames.append(capture.get(timeout=30))
    assert [f.index for f in frames[:3]] == [0, 1, 2] and frames[3] is None
    assert capture.finished and capture.dropped == 0 and capture.delivered == 3
    assert isinstance(capture.error, DataError)
    message = str(capture.error)
    assert message == "camera 9 (fake) stopped delivering frames after 3 frames"
    capture.stop()
    assert fake.closed == 1


def test_read_that_raises_delivers_what_was_read_then_reports_one_line() -> None:
    fake = FakeStream(live=False, fail_after=2)
    with CaptureThread(fake).start() as capture:
        frames = _drain(capture)
    assert [int(f.image[0, 0]) for f in frames] == [0, 1]
    assert isinstance(capture.error, DataError)
    assert str(capture.error) == (
        "camera 9 (fake) failed after 2 frames: RuntimeError: VIDIOC_DQBUF: No such device "
        "(errno 19)"
    )


def test_get_before_start_and_bad_arguments() -> None:
    with pytest.raises(RuntimeError, match="start"):
        CaptureThread(FakeStream(live=True)).get(timeout=0)
    with pytest.raises(DataError):
        CaptureThread(FakeStream(live=True), max_frames=0)
    with pytest.raises(DataError):
        CaptureThread(FakeStream(live=False), queue_size=0)
