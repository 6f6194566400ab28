"""Stream URIs and sources: parsing, synthetic://, files (video, truncated video, TIFF, folder),
cameras that are not there, pipelines this OpenCV cannot run, cameras faked."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from helpers import write_video

from edgeseg.errors import DataError
from edgeseg.hardware import board_family, opencv_capabilities
from edgeseg.imageio import write_image
from edgeseg.runtime import cameras
from edgeseg.runtime.cameras import csi_pipeline
from edgeseg.runtime.streams import Stream, open_stream
from edgeseg.runtime.uri import SCHEMES, parse_source, parse_uri, redact

cv2 = pytest.importorskip("cv2")
tifffile = pytest.importorskip("tifffile")


def _read_all(stream: Stream, limit: int = 1000) -> list[np.ndarray]:
    frames = []
    while (frame := stream.read()) is not None:
        frames.append(frame)
        assert len(frames) <= limit
    return frames


def _frame_number(frame: np.ndarray) -> int:
    """The i written by :func:`helpers.write_video`, from the bar width (checks RGB order too)."""
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    i = int((frame[24, :, 1] > 128).sum()) - 1
    assert abs(int(frame[24, 40, 0]) - i * 8) <= 6 and frame[24, 40, 2] < 12, (i, frame[24, 40])
    return i


# --------------------------------------------------------------------------------------------
# URIs


def test_parse_source_canonical_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_source(0, None) == "camera://0"
    assert parse_source(None, "2") == "camera://2"  # no file named 2 here
    (tmp_path / "3").write_bytes(b"")
    assert parse_source(None, "3") == "file://3"  # a file named 3 wins
    assert parse_source(None, "/dev/video1") == "v4l2:///dev/video1"
    assert parse_source(None, "v4l2://1") == "v4l2:///dev/video1"
    assert parse_source(None, " CSI://01 ") == "csi://1"
    assert parse_source(None, "clip.mp4") == "file://clip.mp4"
    assert parse_source(None, "file:///data/*.png") == "file:///data/*.png"
    assert parse_source(None, "rtsp://cam.local:8554/live") == "rtsp://cam.local:8554/live"
    assert parse_source(None, "gst:videotestsrc ! appsink") == "gst:videotestsrc ! appsink"
    assert (
        parse_source(None, "synthetic://?frames=5&fps=30&size=64")
        == "synthetic://?size=64x64&fps=30&frames=5"
    )
    assert parse_source(None, "synthetic://") == "synthetic://"


@pytest.mark.parametrize(
    ("camera", "source", "expected"),
    [
        (0, "clip.mp4", "not both"),
        (None, None, "--camera N or --source URI"),
        (-1, None, "camera index"),
        (None, "foo://bar", "unknown source scheme foo://"),
        (None, "camera://x", "camera index"),
        (None, "camera:0", "write camera://0"),
        (None, "v4l2://video0", "v4l2:///dev/video0"),
        (None, "gst:videotestsrc ! fakesink", "must end in appsink"),
        (None, "synthetic://?colour=red", "unknown synthetic:// parameter 'colour'"),
        (None, "synthetic://?size=4", "at least 8"),
        (None, "synthetic://?size=ax3", "N or HxW"),
        (None, "synthetic://?fps=0", "fps=0"),
        (None, "synthetic://?bit_depth=12", "8 or 16"),
        (None, "synthetic://?channels=2", "1 or 3"),
        (None, "synthetic://?frames=0", "at least 1"),
        (None, "synthetic://?seed=1&seed=2", "given twice"),
        (None, "synthetic://?fps", "needs a value"),
    ],
)
def test_parse_source_errors(camera: int | None, source: str | None, expected: str) -> None:
    with pytest.raises(DataError) as info:
        parse_source(camera, source)
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_unknown_scheme_lists_the_supported_ones() -> None:
    with pytest.raises(DataError) as info:
        open_stream("ftp://example.org/clip.mp4")
    for scheme in ("camera://", "csi://", "v4l2://", "gst:", "rtsp://", "file://", "synthetic://"):
        assert scheme in str(info.value)
    assert set(SCHEMES) >= {"camera", "csi", "v4l2", "gst", "rtsp", "file", "synthetic"}


def test_redacts_passwords() -> None:
    assert redact("rtsp://admin:hunter2@10.0.0.9/s1") == "rtsp://admin:***@10.0.0.9/s1"
    assert redact("rtsp://10.0.0.9/s1") == "rtsp://10.0.0.9/s1"


def test_unreachable_rtsp_is_a_data_error_without_the_password() -> None:
    # Port 1 on localhost refuses at once: no network wait.
    with pytest.raises(DataError) as info:
        open_stream("rtsp://admin:hunter2@127.0.0.1:1/live")
    assert "hunter2" not in str(info.value) and "127.0.0.1:1" in str(info.value)


# --------------------------------------------------------------------------------------------
# synthetic://


@pytest.mark.parametrize(("bit_depth", "channels"), [(8, 1), (16, 3)])
def test_synthetic_sizes_depths_channels_and_end(bit_depth: int, channels: int) -> None:
    uri = f"synthetic://?size=32x48&bit_depth={bit_depth}&channels={channels}&frames=3&seed=2"
    stream = open_stream(uri)
    assert isinstance(stream, Stream)
    assert stream.info.live is False and stream.info.fps is None
    assert stream.info.size == (32, 48) and stream.info.frames == 3
    frames = _read_all(stream)
    assert len(frames) == 3
    shape = (32, 48) if channels == 1 else (32, 48, 3)
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    assert all(f.shape == shape and f.dtype == dtype for f in frames)
    assert stream.last_mask is not None and stream.last_mask.shape == (32, 48)
    assert stream.mask(2) is stream.last_mask and stream.mask(0) is not None
    assert stream.read() is None  # stays ended
    stream.close()


def test_synthetic_same_seed_same_frames_and_width_height_fps_arguments() -> None:
    a = open_stream("synthetic://?size=16&seed=5&frames=2")
    b = open_stream("synthetic://?seed=5&frames=2", width=16, height=16)
    assert b.info.uri == "synthetic://?size=16x16&seed=5&frames=2"
    for fa, fb in zip(_read_all(a), _read_all(b), strict=True):
        np.testing.assert_array_equal(fa, fb)
    paced = open_stream("synthetic://?size=16", fps=25)
    assert paced.info.live and paced.info.fps == 25
    with pytest.raises(DataError, match="once"):
        open_stream("synthetic://?size=16", width=32)


def test_synthetic_fps_paces_frames() -> None:
    fps = 50.0
    stream = open_stream(f"synthetic://?size=16&fps={fps:g}&frames=10")
    assert stream.info.live
    times = []
    while stream.read() is not None:
        times.append(time.perf_counter())
    assert len(times) == 10
    # Never faster than the rate allows (no upper bound: the machine may be busy). Frames keep
    # to a clock, so one that came late is followed by a shorter gap: check the total only.
    assert times[-1] - times[0] >= 9 / fps - 1e-3


def test_synthetic_interrupt_ends_a_waiting_read() -> None:
    stream = open_stream("synthetic://?size=16&fps=0.01")
    assert stream.read() is not None  # the first frame comes at once
    stream.interrupt()
    assert stream.read() is None  # instead of waiting 100 s


# --------------------------------------------------------------------------------------------
# Files


def test_video_is_read_fully_and_in_order(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", n=12)
    stream = open_stream(parse_source(None, str(path)))
    assert stream.info.live is False
    assert stream.info.size == (48, 64) and stream.info.frames == 12 and stream.info.fps == 10
    assert [_frame_number(f) for f in _read_all(stream)] == list(range(12))
    assert stream.warnings == []
    stream.close()


def test_truncated_video_ends_cleanly_with_a_warning(tmp_path: Path) -> None:
    data = write_video(tmp_path / "clip.avi", n=12).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.8)])
    stream = open_stream(f"file://{cut}")
    numbers = [_frame_number(f) for f in _read_all(stream)]
    assert 0 < len(numbers) < 12
    # In order from 0; OpenCV may repeat the last good frame for the half-written one.
    assert numbers[:-1] == list(range(len(numbers) - 1))
    assert numbers[-1] in (len(numbers) - 1, len(numbers) - 2)
    assert len(stream.warnings) == 1
    assert "truncated" in stream.warnings[0] and "cut.avi" in stream.warnings[0]


def test_16bit_tiff_stack(tmp_path: Path) -> None:
    # 5 pages: tifffile stores a (4, H, W) array as one page of 4 samples.
    stack = (np.arange(5 * 12 * 10, dtype=np.uint16).reshape(5, 12, 10) * 97).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    stream = open_stream(f"file://{tmp_path / 'stack.tif'}")
    assert stream.info.frames == 5 and stream.info.size == (12, 10) and not stream.info.live
    frames = _read_all(stream)
    assert len(frames) == 5
    for got, want in zip(frames, stack, strict=True):
        assert got.dtype == np.uint16
        np.testing.assert_array_equal(got, want)


def test_folder_in_natural_order_skips_a_corrupt_image(tmp_path: Path) -> None:
    for i in (10, 2, 1):
        write_image(tmp_path / f"{i}.png", np.full((6, 7), i, np.uint8))
    (tmp_path / "5.png").write_bytes(b"not a png")
    stream = open_stream(str(tmp_path))
    assert [int(f[0, 0]) for f in _read_all(stream)] == [1, 2, 10]
    assert len(stream.warnings) == 1 and "5.png" in stream.warnings[0]


def test_file_streams_name_each_frame_they_return(tmp_path: Path) -> None:
    for i in (10, 2, 1):
        write_image(tmp_path / f"A{i}_s1.png", np.full((6, 7), i, np.uint8))
    (tmp_path / "A5_s1.png").write_bytes(b"not a png")  # skipped: no frame, no name
    stream = open_stream(str(tmp_path))
    assert getattr(stream, "frame_name", None) is None  # nothing returned yet
    names = []
    while (frame := stream.read()) is not None:
        names.append((int(frame[0, 0]), stream.frame_name))
    assert sorted(names) == [(1, "A1_s1.png"), (2, "A2_s1.png"), (10, "A10_s1.png")]
    assert stream.frame_name is None  # after the end
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 6, 7), np.uint16))
    stack = open_stream(str(tmp_path / "stack.tif"))
    stack.read()
    stack.read()
    assert stack.frame_name == "stack.tif#page1"


def test_file_sources_refuse_camera_settings_and_report_missing_paths(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", n=2)
    with pytest.raises(DataError, match="cameras"):
        open_stream(str(path), width=640)
    with pytest.raises(DataError, match="not found"):
        open_stream(str(tmp_path / "missing.mp4"))


# --------------------------------------------------------------------------------------------
# Cameras and pipelines (no camera and no GStreamer here)


def test_missing_camera_says_what_was_tried() -> None:
    if Path("/dev/video7").exists():
        pytest.skip("this machine has a /dev/video7")
    with pytest.raises(DataError) as info:
        open_stream(parse_source(7, None))
    message = str(info.value)
    assert message.startswith("no camera at index 7: tried ")
    assert "default backend" in message and "\n" not in message
    if Path("/dev").is_dir():
        assert "/dev/video* devices:" in message


def test_missing_v4l2_device() -> None:
    if Path("/dev/video77").exists():
        pytest.skip("this machine has a /dev/video77")
    with pytest.raises(DataError, match="no camera at /dev/video77"):
        open_stream("v4l2:///dev/video77")


@pytest.fixture
def no_gstreamer() -> None:
    if opencv_capabilities()["gstreamer"]:
        pytest.skip("this OpenCV has GStreamer")


def test_gst_pipeline_needs_gstreamer(no_gstreamer: None) -> None:
    with pytest.raises(DataError) as info:
        open_stream("gst:videotestsrc ! videoconvert ! appsink")
    message = str(info.value)
    assert "GStreamer" in message and "python3-opencv" in message and "\n" not in message


def test_csi_needs_gstreamer_or_picamera2(
    no_gstreamer: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cameras, "_import_picamera2", lambda: None)
    monkeypatch.setattr(cameras, "board_family", lambda: board_family(tmp_path))
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    with pytest.raises(DataError) as info:
        open_stream("csi://0")
    message = str(info.value)
    assert "GStreamer" in message and "picamera2" in message and "\n" not in message
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.0")
    with pytest.raises(DataError, match="JetPack"):
        open_stream("csi://0")


def test_csi_pipelines() -> None:
    jetson = csi_pipeline("jetson", 1, 1920, 1080, 29.97)
    assert jetson.startswith("nvarguscamerasrc sensor-id=1 ")
    assert "width=1920, height=1080, framerate=2997/100" in jetson
    assert jetson.endswith("appsink drop=true max-buffers=1 sync=false")
    pi = csi_pipeline("raspberrypi", 0, 640, 480, 30)
    assert pi.startswith("libcamerasrc ! ") and "framerate=30/1" in pi and "format=BGR" in pi


# --------------------------------------------------------------------------------------------
# Camera success paths, with OpenCV's VideoCapture and picamera2 replaced by fakes


class FakeCapture:
    """A 640x480 camera at 30 fps whatever is asked, delivering 2 BGR frames."""

    opened: ClassVar[list[tuple[object, int]]] = []

    def __init__(self, target: object, api: int) -> None:
        FakeCapture.opened.append((target, api))
        self.left = 2

    def isOpened(self) -> bool:
        return True

    def set(self, prop: int, value: float) -> bool:
        return True

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: 30.0}.get(prop, 0.0)

    def getBackendName(self) -> str:
        return "V4L2"

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left == 0:
            return False, None
        self.left -= 1
        bgr = np.zeros((480, 640, 3), np.uint8)
        bgr[..., 0] = 200  # blue
        return True, bgr

    def release(self) -> None:
        pass


def test_camera_stream_with_a_fake_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCapture.opened = []
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    stream = open_stream("camera://2", width=1280, height=720, fps=60)
    assert FakeCapture.opened[0][0] == 2
    assert stream.info.live and stream.info.size == (480, 640) and stream.info.fps == 30
    assert stream.info.description.startswith("camera 2 (V4L2, 640x480")
    assert any("640x480" in w and "1280x720" in w for w in stream.warnings)
    assert any("30 fps" in w for w in stream.warnings)
    frames = [stream.read(), stream.read()]
    assert all(f is not None and f.shape == (480, 640, 3) for f in frames)
    assert frames[0][0, 0].tolist() == [0, 0, 200]  # BGR → RGB
    assert stream.read() is None  # the camera went away
    stream.close()
    stream.close()


class FakePicamera2:
    def __init__(self, index: int) -> None:
        self.index, self.started, self.closed = index, False, False

    @staticmethod
    def global_camera_info() -> list[dict]:
        return [{"Model": "imx708", "Num": 0}]

    def create_video_configuration(self, main: dict, controls: dict) -> dict:
        self.asked = (main, controls)
        return {"main": dict(main)}

    def configure(self, config: dict) -> None:
        self.config = config

    def camera_configuration(self) -> dict:
        return self.config

    def start(self) -> None:
        self.started = True

    def capture_array(self, name: str) -> np.ndarray:
        w, h = self.config["main"]["size"]
        bgr = np.zeros((h, w, 3), np.uint8)
        bgr[..., 0] = 200  # RGB888 is [B, G, R] in memory
        return bgr

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


def test_csi_through_picamera2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = type("picamera2", (), {"Picamera2": FakePicamera2})
    monkeypatch.setattr(cameras, "_import_picamera2", lambda: module)
    monkeypatch.setattr(cameras, "board_family", lambda: board_family(tmp_path))
    stream = open_stream("csi://0", width=640, height=480, fps=25)
    assert stream.info.description == "CSI camera 0 (picamera2, 640x480, 25 fps)"
    assert stream.info.size == (480, 640) and stream.info.live
    cam = stream._cam
    assert cam.asked == ({"size": (640, 480), "format": "RGB888"}, {"FrameRate": 25.0})
    frame = stream.read()
    assert frame.shape == (480, 640, 3) and frame[0, 0].tolist() == [0, 0, 200]
    stream.close()
    assert cam.closed and stream.read() is None
    with pytest.raises(DataError, match="picamera2 sees 1 camera"):
        open_stream("csi://1")


# --------------------------------------------------------------------------------------------
# Reopening live streams (a camera that comes back, maybe at another index)


def test_by_id_and_by_path_names_are_v4l2_devices() -> None:
    name = "/dev/v4l/by-id/usb-Logitech_C920_AB12-video-index0"
    assert parse_source(None, name) == f"v4l2://{name}"
    assert parse_source(None, "/dev/v4l/by-path/pci-0000:00:14.0-usb-0:1:1.0-video-index0") == (
        "v4l2:///dev/v4l/by-path/pci-0000:00:14.0-usb-0:1:1.0-video-index0"
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="V4L2 names are Linux's")
def test_camera_reopens_through_its_by_id_name_at_another_index(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    FakeCapture.opened = []
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    dev = tmp_path / "dev"
    by_id = dev / "v4l" / "by-id"
    by_id.mkdir(parents=True)
    (dev / "video0").write_bytes(b"")
    link = by_id / "usb-Logitech_C920_AB12-video-index0"
    os.symlink("../../video0", link)
    stream = cameras.CameraStream(parse_uri("camera://0"), dev_root=tmp_path)
    assert stream.by_id == link and FakeCapture.opened[-1][0] == 0
    stream.close()
    # Unplugged: the name is gone, so reopening fails (it never opens camera 0 blindly, which
    # may now be another camera).
    link.unlink()
    (dev / "video0").unlink()
    with pytest.raises(DataError, match=r"camera 0 is not back: no .*usb-Logitech_C920_AB12"):
        stream.reopen()
    # Back as /dev/video4: opened through the stable name, which says where it came back.
    (dev / "video4").write_bytes(b"")
    os.symlink("../../video4", link)
    again = stream.reopen()
    assert FakeCapture.opened[-1][0] == str(link)
    assert again.by_id == link and again.info.uri == "camera://0"
    assert again.info.description.startswith("camera 0 (")
    assert any(
        "came back as" in w and w.endswith("video4 (" + str(link) + ")") for w in again.warnings
    )
    assert again.read() is not None
    again.close()


def test_camera_without_a_by_id_name_reopens_as_at_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    FakeCapture.opened = []
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    stream = cameras.CameraStream(parse_uri("camera://3"), dev_root=tmp_path)
    assert stream.by_id is None
    again = stream.reopen()
    assert [target for target, _ in FakeCapture.opened][-1] == 3
    assert again.by_id is None and again.info.uri == "camera://3"


def test_network_stream_reopens_with_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCapture.opened = []
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    stream = open_stream("rtsp://admin:hunter2@cam.local/live")
    assert stream.info.uri == "rtsp://admin:***@cam.local/live"
    again = stream.reopen()
    assert FakeCapture.opened[-1][0] == "rtsp://admin:hunter2@cam.local/live"
    assert again.info == stream.info and again.reopen is not None


def test_picamera2_stream_reopens(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = type("picamera2", (), {"Picamera2": FakePicamera2})
    monkeypatch.setattr(cameras, "_import_picamera2", lambda: module)
    monkeypatch.setattr(cameras, "board_family", lambda: board_family(tmp_path))
    stream = open_stream("csi://0", width=640, height=480, fps=25)
    stream.close()
    again = stream.reopen()
    assert again.info == stream.info and again._cam.started and again._cam is not stream._cam
    again.close()
