"""Live streams: cameras (``camera://``, ``v4l2://``, ``csi://``), GStreamer pipelines
(``gst:``) and network streams (``rtsp://``, ``http(s)://``).

Everything but picamera2 goes through OpenCV's ``VideoCapture``, opened by
:func:`open_capture`: it tries the given backends, reads the first frame at once (so a camera
that opens but delivers nothing fails at opening, with a one-line error saying which step
failed) and converts frames from OpenCV's BGR to RGB. Frames are uint8 (H, W, 3) RGB, or
(H, W) for gray cameras.

PyPI's OpenCV wheels have no GStreamer, so ``gst:`` pipelines and camera pipelines on a Pi or a
Jetson need the system's OpenCV (or picamera2): opening one says so, naming what to install.

Every live stream opened here has ``reopen``: a function that opens the same source again
(the capture thread calls it when the source stopped delivering). A V4L2 camera opened by index
or ``/dev/videoN`` remembers its stable ``/dev/v4l/by-id/…`` name and reopens through it, since
a USB camera that comes back may get another index.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import DataError
from edgeseg.hardware import (
    board_family,
    opencv_capabilities,
    opencv_has_backend,
    v4l_by_id,
    video_devices,
)
from edgeseg.optional import cv2
from edgeseg.runtime.stream_base import Stream, StreamBase, StreamInfo, one_line
from edgeseg.runtime.uri import ParsedURI, redact

__all__ = [
    "CameraStream",
    "OpenCVStream",
    "Picamera2Stream",
    "csi_pipeline",
    "open_capture",
    "open_csi",
    "open_gstreamer",
    "open_network",
]

# A camera pipeline asks for this when the user gives no size or rate.
_CSI_DEFAULT = (1280, 720, 30.0)


# --------------------------------------------------------------------------------------------
# OpenCV captures


def open_capture(
    cv: Any,
    attempts: Sequence[tuple[Any, int]],
    *,
    not_opened: str | Callable[[], str],
    no_frame: str | Callable[[], str],
    settings: Mapping[int, float] | None = None,
) -> tuple[Any, np.ndarray]:
    """Open a ``cv.VideoCapture`` and read its first frame: (capture, first frame in RGB).

    ``attempts`` are (target, API preference) pairs tried in order until one opens;
    ``settings`` ({``cv.CAP_PROP_…``: value}) are set on it before the first read. OpenCV's
    and FFmpeg's log lines are silenced meanwhile.

    Raises:
        DataError: ``not_opened`` when no attempt opens, ``no_frame`` when the capture opened
            but delivered no frame (messages, or functions that make them when needed).
    """
    cap = None
    for target, api in attempts:
        with quiet_opencv(cv):
            candidate = cv.VideoCapture(target, api)
        if candidate.isOpened():
            cap = candidate
            break
        candidate.release()
    if cap is None:
        raise DataError(not_opened() if callable(not_opened) else not_opened)
    with quiet_opencv(cv):
        for prop, value in (settings or {}).items():
            cap.set(prop, float(value))
        ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        raise DataError(no_frame() if callable(no_frame) else no_frame)
    return cap, to_rgb(first)


class OpenCVStream(StreamBase):
    """A live cv2.VideoCapture whose first frame was read at opening (to fail there, not
    later) and is returned by the first :meth:`read`.

    Its description is ``name (backend, WxH, N fps)``, without the parts not given.
    ``reopen`` (when given) opens the same source again as a new stream.
    """

    def __init__(
        self,
        cap: Any,
        first: np.ndarray,
        *,
        uri: str,
        name: str,
        backend: str | None = None,
        fps: float | None,
        warnings: list[str] | None = None,
        reopen: Callable[[], Stream] | None = None,
    ) -> None:
        self._cap = cap
        self.reopen = reopen
        self._pending: np.ndarray | None = first
        h, w = int(first.shape[0]), int(first.shape[1])
        parts = [backend] if backend else []
        parts.append(f"{w}x{h}" + (f", {fps:g} fps" if fps else ""))
        self.info = StreamInfo(
            uri=uri,
            description=f"{name} ({', '.join(parts)})",
            live=True,
            fps=fps,
            size=(h, w),
        )
        self.warnings = [] if warnings is None else warnings

    def read(self) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if self._cap is None:
            return None
        ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        return to_rgb(frame)

    def close(self) -> None:
        self._pending = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class CameraStream(OpenCVStream):
    """``camera://N`` or ``v4l2:///dev/videoN`` through cv2.VideoCapture: V4L2 first on Linux,
    then OpenCV's default backend. Frames uint8 (H, W, 3) RGB (gray cameras (H, W)).

    ``by_id`` is the camera's stable ``/dev/v4l/by-id/…`` name, looked up at opening (under
    ``dev_root``, ``/`` but in tests), None when it has none; ``reopen()`` opens the camera
    through it (the camera may have come back at another index; until its name is back,
    reopening fails), or as at first without one. Given ``by_id``, the camera is opened
    through that name.
    """

    def __init__(
        self,
        parsed: ParsedURI,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        by_id: str | Path | None = None,
        dev_root: str | Path = "/",
    ) -> None:
        cv = cv2()
        linux = sys.platform.startswith("linux")
        if parsed.scheme == "camera":
            index: int | None = int(parsed.target)
            device = None
            label = f"camera {index}"
            node = f"/dev/video{index}" if linux else None
        else:
            device = parsed.target
            index = _video_index(device)
            label = f"camera {device}"
            node = device
        moved = None  # the node a camera reopened through its stable name came back at
        if by_id is not None:
            came_back = _node_under(by_id)
            if came_back is None:
                raise DataError(f"{label} is not back: no {by_id}")
            was = _node_under(Path(dev_root) / Path(node).relative_to("/")) if node else None
            device, index = str(by_id), _video_index(str(by_id))
            moved = came_back if came_back != was else None
        elif device is not None and not os.path.exists(device):
            raise DataError(f"no camera at {device}: no such device; {_list_video_devices()}")
        attempts: list[tuple[str, Any, int]] = []
        if linux and opencv_has_backend(cv, "CAP_V4L2"):
            attempts.append(("V4L2", device if device is not None else index, cv.CAP_V4L2))
        default_target = index if index is not None else device
        attempts.append(("the default backend", default_target, cv.CAP_ANY))

        def not_opened() -> str:
            where = f"at index {index}" if device is None else f"at {device}"
            tried = " and ".join(name for name, _, _ in attempts)
            where_node = device or (f"/dev/video{index}" if linux else None)
            busy = (
                f" ({where_node} exists: in use by another program, or no permission (group "
                "video)?)"
                if where_node and os.path.exists(where_node)
                else ""
            )
            return f"no camera {where}: tried {tried}; {_list_video_devices()}{busy}"

        asked = (
            (cv.CAP_PROP_FRAME_WIDTH, width),
            (cv.CAP_PROP_FRAME_HEIGHT, height),
            (cv.CAP_PROP_FPS, fps),
        )
        cap, first = open_capture(
            cv,
            [(target, api) for _, target, api in attempts],
            not_opened=not_opened,
            no_frame=lambda: (
                f"{label} opened but delivered no frame: is another program using it? "
                f"{_list_video_devices()}"
            ),
            settings={prop: value for prop, value in asked if value is not None},
        )
        warnings: list[str] = []
        h, w = first.shape[:2]
        rate = float(cap.get(cv.CAP_PROP_FPS) or 0.0) or None
        if (width is not None and w != width) or (height is not None and h != height):
            warnings.append(
                f"{label} gives {w}x{h} frames, not the {width or w}x{height or h} asked for"
            )
        if fps is not None and rate is not None and abs(rate - fps) > 0.5:
            warnings.append(f"{label} runs at {rate:g} fps, not the {fps:g} asked for")
        if moved is not None:
            warnings.append(f"{label} came back as {moved} ({by_id})")
        if by_id is None and node is not None and linux:
            by_id = v4l_by_id(node, dev_root)
        self.by_id: Path | None = None if by_id is None else Path(by_id)
        backend = _backend_name(cap)
        super().__init__(
            cap,
            first,
            uri=parsed.uri,
            name=label,
            backend=backend,
            fps=rate,
            warnings=warnings,
            reopen=functools.partial(
                CameraStream,
                parsed,
                width=width,
                height=height,
                fps=fps,
                by_id=self.by_id,
                dev_root=dev_root,
            ),
        )


def open_network(uri: str) -> OpenCVStream:
    """An ``rtsp://`` or ``http(s)://`` stream through FFmpeg (OpenCV's default backend in a
    build without it). Messages and the stream's ``info.uri`` hide the password."""
    cv = cv2()
    shown = redact(uri)
    use_ffmpeg = opencv_has_backend(cv, "CAP_FFMPEG")
    how = "FFmpeg" if use_ffmpeg else "OpenCV (built without FFmpeg)"
    cap, first = open_capture(
        cv,
        [(uri, cv.CAP_FFMPEG if use_ffmpeg else cv.CAP_ANY)],
        not_opened=(
            f"cannot open {shown}: {how} could not connect or decode it "
            "(check the address, the credentials and that the stream is up)"
        ),
        no_frame=f"{shown} opened but delivered no frame",
    )
    rate = float(cap.get(cv.CAP_PROP_FPS) or 0.0)
    rate_or_none = rate if 0 < rate < 1000 else None  # FFmpeg reports 90000 for some streams
    return OpenCVStream(
        cap,
        first,
        uri=shown,
        name=f"stream {shown}",
        fps=rate_or_none,
        reopen=functools.partial(open_network, uri),
    )


def open_gstreamer(
    pipeline: str, uri: str, what: str, *, fps: float | None = None, label: str | None = None
) -> OpenCVStream:
    """Open a GStreamer pipeline ending in appsink; ``what`` names it in messages, ``label``
    (default ``what``) in the description, ``fps`` is the rate when the pipeline reports none."""
    cv = cv2()
    if not opencv_capabilities(cv)["gstreamer"]:
        raise DataError(f"{what} needs GStreamer, {_no_gstreamer_advice(cv, board_family())}")
    cap, first = open_capture(
        cv,
        [(pipeline, cv.CAP_GSTREAMER)],
        not_opened=(
            f"GStreamer could not start {what} ({pipeline}): is the camera connected and free? "
            "run the pipeline with gst-launch-1.0 (fakesink for appsink) to see why"
        ),
        no_frame=f"{what} started but delivered no frame ({pipeline})",
    )
    rate = float(cap.get(cv.CAP_PROP_FPS) or 0.0) or fps
    return OpenCVStream(
        cap,
        first,
        uri=uri,
        name=label or what,
        backend="GStreamer",
        fps=rate,
        reopen=functools.partial(open_gstreamer, pipeline, uri, what, fps=fps, label=label),
    )


def _no_gstreamer_advice(cv: Any, board: str) -> str:
    have = f"and this OpenCV {cv.__version__} has none (PyPI's opencv-python wheels never do)"
    system = (
        "make the venv with --system-site-packages and pip uninstall opencv-python "
        "opencv-python-headless in it"
    )
    if board == "jetson":
        return f"{have}: use JetPack's OpenCV (it has GStreamer): {system}"
    if board == "raspberrypi":
        return (
            f"{have}: on Raspberry Pi OS install python3-picamera2 (for csi://) or python3-opencv "
            f"with apt, {system}"
        )
    return (
        f"{have}: install your system's OpenCV (Debian, Ubuntu, Raspberry Pi OS: apt install "
        f"python3-opencv; on a Jetson JetPack's OpenCV), {system}"
    )


# --------------------------------------------------------------------------------------------
# CSI cameras


def csi_pipeline(board: str, sensor: int, width: int, height: int, fps: float) -> str:
    """The GStreamer pipeline (ending in a BGR appsink that keeps only the newest frame) for a
    CSI camera: ``nvarguscamerasrc`` on a Jetson, ``libcamerasrc`` elsewhere."""
    rate = Fraction(fps).limit_denominator(1001)
    framerate = f"{rate.numerator}/{rate.denominator}"
    sink = "appsink drop=true max-buffers=1 sync=false"
    if board == "jetson":
        return (
            f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={width}, "
            f"height={height}, framerate={framerate} ! nvvidconv ! video/x-raw, format=BGRx ! "
            f"videoconvert ! video/x-raw, format=BGR ! {sink}"
        )
    return (
        f"libcamerasrc ! video/x-raw, width={width}, height={height}, framerate={framerate} ! "
        f"videoconvert ! video/x-raw, format=BGR ! {sink}"
    )


def open_csi(
    index: int, uri: str, width: int | None, height: int | None, fps: float | None
) -> Stream:
    """CSI camera ``index``: ``nvarguscamerasrc`` on a Jetson; elsewhere picamera2 when it is
    installed, else a ``libcamerasrc`` pipeline (camera 0 only)."""
    board = board_family()
    w = width or _CSI_DEFAULT[0]
    h = height or _CSI_DEFAULT[1]
    rate = fps or _CSI_DEFAULT[2]
    what = f"{uri} (CSI camera {index})"
    if board == "jetson":
        pipeline = csi_pipeline(board, index, w, h, rate)
        return open_gstreamer(pipeline, uri, what, fps=rate, label=f"CSI camera {index}")
    picamera2 = _import_picamera2()
    if picamera2 is not None:
        return Picamera2Stream(picamera2, index, uri, w, h, fps)
    cv = cv2()
    if not opencv_capabilities(cv)["gstreamer"]:
        raise DataError(
            f"{uri} needs picamera2 or an OpenCV with GStreamer (for libcamerasrc), "
            f"{_no_gstreamer_advice(cv, board)}"
        )
    if index != 0:
        raise DataError(
            f"{uri}: libcamerasrc picks cameras by name, not number: install picamera2, or give "
            "the pipeline as gst:libcamerasrc camera-name=… ! videoconvert ! appsink"
        )
    pipeline = csi_pipeline(board, index, w, h, rate)
    return open_gstreamer(pipeline, uri, what, fps=rate, label=f"CSI camera {index}")


def _import_picamera2() -> Any | None:
    try:
        return importlib.import_module("picamera2")
    except Exception:  # not installed, or libcamera missing underneath it
        return None


class Picamera2Stream(StreamBase):
    """A Raspberry Pi camera through picamera2, frames uint8 (H, W, 3) RGB; ``reopen()``
    starts it again as a new stream.

    picamera2's ``RGB888`` format (the one its video pipeline prefers) stores pixels as
    [B, G, R], following libcamera's naming; frames are reversed to RGB here.
    """

    def __init__(
        self, module: Any, index: int, uri: str, width: int, height: int, fps: float | None
    ) -> None:
        self.warnings: list[str] = []
        self.reopen: Callable[[], Stream] | None = functools.partial(
            Picamera2Stream, module, index, uri, width, height, fps
        )
        cameras = module.Picamera2.global_camera_info()
        if index >= len(cameras):
            raise DataError(f"no CSI camera {index}: picamera2 sees {len(cameras)} camera(s)")
        try:
            cam = module.Picamera2(index)
            controls = {"FrameRate": float(fps)} if fps else {}
            config = cam.create_video_configuration(
                main={"size": (width, height), "format": "RGB888"}, controls=controls
            )
            cam.configure(config)
            cam.start()
        except Exception as exc:  # picamera2 raises RuntimeError, IndexError, ...
            raise DataError(
                f"CSI camera {index} did not start ({type(exc).__name__}: {one_line(exc)}): "
                "is it connected, enabled, and not in use by another program?"
            ) from exc
        self._cam = cam
        try:  # the mode the camera settled on (sizes get aligned)
            size = tuple(cam.camera_configuration()["main"]["size"])
        except Exception:
            size = tuple(config["main"]["size"])
        if size != (width, height):
            self.warnings.append(
                f"CSI camera {index} gives {size[0]}x{size[1]}, not {width}x{height}"
            )
        shown = f", {fps:g} fps" if fps else ""
        self.info = StreamInfo(
            uri=uri,
            description=f"CSI camera {index} (picamera2, {size[0]}x{size[1]}{shown})",
            live=True,
            fps=fps,
            size=(int(size[1]), int(size[0])),
        )

    def read(self) -> np.ndarray | None:
        if self._cam is None:
            return None
        array = self._cam.capture_array("main")
        if array is None:
            return None
        return np.ascontiguousarray(array[..., 2::-1])  # [B, G, R(, X)] → RGB

    def close(self) -> None:
        if self._cam is not None:
            cam, self._cam = self._cam, None
            with contextlib.suppress(Exception):
                cam.stop()
            with contextlib.suppress(Exception):
                cam.close()


# --------------------------------------------------------------------------------------------
# Helpers


@contextlib.contextmanager
def quiet_opencv(cv: Any) -> Iterator[None]:
    """Silence OpenCV's and FFmpeg's log lines while opening: our one-line error says what
    failed, and their warnings ("can't open camera by index") would precede it."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    logging = getattr(getattr(cv, "utils", None), "logging", None)
    level = logging.getLogLevel() if logging else None
    try:
        if logging:
            logging.setLogLevel(logging.LOG_LEVEL_SILENT)
        yield
    finally:
        if logging:
            logging.setLogLevel(level)


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """OpenCV's BGR(A) → RGB(A); gray stays as is."""
    if frame.ndim == 2 or frame.shape[2] == 1:
        return frame if frame.ndim == 2 else frame[..., 0]
    cv = cv2()
    return cv.cvtColor(frame, cv.COLOR_BGR2RGB if frame.shape[2] == 3 else cv.COLOR_BGRA2RGBA)


def _backend_name(cap: Any) -> str:
    try:
        return str(cap.getBackendName())
    except Exception:  # getBackendName raises when the backend is unknown
        return "OpenCV"


def _node_under(path: str | Path) -> str | None:
    """The device node a path ends at after its symlinks, or None when nothing is there."""
    return os.path.realpath(path) if os.path.exists(path) else None


def _video_index(device: str) -> int | None:
    """``/dev/video2`` (or a symlink to it) → 2."""
    real = os.path.realpath(device)
    m = re.fullmatch(r"/dev/video(\d+)", real)
    return int(m.group(1)) if m else None


def _list_video_devices() -> str:
    if not sys.platform.startswith("linux"):
        return "use --camera 0, 1, … for the cameras the system knows"
    found = [str(p) for p in video_devices()]
    return f"/dev/video* devices: {', '.join(found) if found else 'none'}"
