"""Stream URIs and the sources behind them: cameras, network streams, files, ``synthetic://``.

``edgeseg run`` takes ``--camera N`` or ``--source URI``; :func:`parse_source` turns either into
one canonical URI (in the style of jetson-inference) and :func:`open_stream` opens it:

=====================================  ==========================================  =====
URI                                    what                                        live
=====================================  ==========================================  =====
``camera://N`` (``--camera N``)        OpenCV camera N (V4L2 on Linux)             yes
``v4l2:///dev/videoN``                 a V4L2 device by path                       yes
``csi://N``                            Raspberry Pi camera (picamera2, else a      yes
                                       ``libcamerasrc`` pipeline) or Jetson camera
                                       (``nvarguscamerasrc``)
``gst:PIPELINE``                       a GStreamer pipeline ending in ``appsink``  yes
``rtsp://…``, ``http(s)://…``          a network video stream (FFmpeg)             yes
``file://PATH`` or a plain path        video, image, folder, glob, TIFF stack      no
``synthetic://?size=256x256&fps=30``   the built-in microscope stream              with fps
=====================================  ==========================================  =====

``synthetic://`` takes ``size`` (N or HxW, default 512), ``fps`` (paced to that rate by the wall
clock; without it frames come as fast as they are read), ``seed`` (0), ``bit_depth`` (8 or 16),
``channels`` (1 or 3), ``frames`` (end after N frames; endless without it) and ``speed`` (cell
speed in pixels per frame).

A stream's ``read()`` returns the next frame, uint8 or uint16 of shape (H, W) or (H, W, C) in
RGB order, or None when it has ended. A live stream (camera, network) is read by a capture
thread that keeps only the newest frame; a file stream is finite and every frame counts (see
:mod:`edgeseg.runtime.capture`). Every stream here also has ``warnings`` (list of one-line
messages, e.g. a truncated video) and ``close()``; frames a file source cannot decode are skipped
with a warning instead of ending the run.

PyPI's OpenCV wheels have no GStreamer, so ``gst:`` pipelines and camera pipelines on a Pi or a
Jetson need the system's OpenCV (or picamera2): opening one says so, naming what to install.
"""

from __future__ import annotations

import bisect
import contextlib
import glob
import importlib
import math
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from edgeseg.errors import DataError
from edgeseg.optional import cv2

__all__ = [
    "SCHEMES",
    "CameraStream",
    "FileStream",
    "Picamera2Stream",
    "Stream",
    "StreamInfo",
    "SyntheticSource",
    "csi_pipeline",
    "open_stream",
    "opencv_capabilities",
    "parse_source",
]

SCHEMES = ("camera", "v4l2", "csi", "gst", "rtsp", "http", "https", "file", "synthetic")
_SUPPORTED = (
    "camera://N, csi://N, v4l2:///dev/videoN, gst:PIPELINE, rtsp://…, http(s)://…, "
    "file://PATH (or a plain path), synthetic://?size=HxW&fps=N"
)
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
# Where the board is recognised (module constants so tests can point them elsewhere).
_JETSON_RELEASE = Path("/etc/nv_tegra_release")
_DEVICE_MODEL = Path("/proc/device-tree/model")
# A camera pipeline asks for this when the user gives no size or rate.
_CSI_DEFAULT = (1280, 720, 30.0)
_MAX_WARNINGS = 50


@dataclass(frozen=True)
class StreamInfo:
    """What a stream is. ``size`` is (height, width) of its frames when known, ``fps`` the rate
    it delivers (a camera's or video's nominal rate, a paced synthetic stream's), ``frames`` the
    number of frames it announces when finite (a file source's count: an upper bound when frames
    are skipped; ``frames=N`` of a synthetic stream). ``uri`` hides passwords."""

    uri: str
    description: str
    live: bool
    fps: float | None
    size: tuple[int, int] | None
    frames: int | None = None


@runtime_checkable
class Stream(Protocol):
    """A source of frames read one after another (no random access).

    ``read()`` returns the next frame, uint8/uint16 array of shape (H, W) or (H, W, C) in RGB
    order, or None when a finite source has ended (for a live source: it stopped delivering).
    It may block until the frame exists. ``close()`` releases the device or file; it is
    idempotent. Streams of this module also have ``warnings: list[str]``, and those whose
    ``read()`` can wait long (a paced synthetic stream) have ``interrupt()``, which makes a
    waiting ``read()`` return None soon and is safe to call from another thread.
    """

    info: StreamInfo

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------
# URIs


@dataclass(frozen=True)
class _Parsed:
    scheme: str
    uri: str  # canonical
    target: str = ""  # camera index, device path, pipeline, URL or path
    params: dict[str, Any] = field(default_factory=dict)  # synthetic://


def parse_source(camera: int | None, source: str | None) -> str:
    """The canonical stream URI of ``--camera N`` or ``--source URI``.

    Plain paths become ``file://PATH``, a bare number that is not a file ``camera://N``,
    ``/dev/videoN`` ``v4l2:///dev/videoN``; ``synthetic://`` parameters are checked and written
    in a fixed order. Nothing is opened.

    Raises:
        DataError: both or neither given, a negative camera index, an unknown scheme, a
            malformed URI or ``synthetic://`` parameter.
    """
    if camera is not None and source is not None:
        raise DataError("give either --camera N or --source URI, not both")
    if camera is None and source is None:
        raise DataError(f"give a frame source: --camera N or --source URI ({_SUPPORTED})")
    if camera is not None:
        if isinstance(camera, bool) or not isinstance(camera, int) or camera < 0:
            raise DataError(f"--camera takes a camera index 0, 1, …, got {camera!r}")
        return f"camera://{camera}"
    assert source is not None
    return _parse(source).uri


def _parse(text: str) -> _Parsed:
    text = str(text).strip()
    if not text:
        raise DataError(f"empty source: give {_SUPPORTED}")
    if text[:4].lower() == "gst:":
        return _parse_gst(text[4:].strip())
    m = _SCHEME_RE.match(text)
    if m is None:
        bare = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):(?!//)", text)
        if bare and bare.group(1).lower() in SCHEMES and not Path(text).exists():
            name = bare.group(1).lower()
            raise DataError(f"write {name}://{text[len(name) + 1 :]}, not {text}")
        if re.fullmatch(r"\d+", text) and not Path(text).exists():
            return _Parsed("camera", f"camera://{int(text)}", str(int(text)))
        if re.fullmatch(r"/dev/video\d+", text):
            return _Parsed("v4l2", f"v4l2://{text}", text)
        return _Parsed("file", f"file://{text}", text)
    scheme, rest = m.group(1).lower(), m.group(2)
    if scheme == "camera" or scheme == "csi":
        if not re.fullmatch(r"\d+", rest):
            raise DataError(f"{scheme}:// takes a camera index ({scheme}://0), got {text}")
        return _Parsed(scheme, f"{scheme}://{int(rest)}", str(int(rest)))
    if scheme == "v4l2":
        device = f"/dev/video{int(rest)}" if re.fullmatch(r"\d+", rest) else rest
        if not device.startswith("/"):
            raise DataError(f"v4l2 URIs name a device: v4l2:///dev/video0, got {text}")
        return _Parsed("v4l2", f"v4l2://{device}", device)
    if scheme in ("rtsp", "http", "https"):
        if not rest.strip("/"):
            raise DataError(f"{scheme}:// needs an address: {scheme}://host[:port]/path")
        uri = f"{scheme}://{rest}"
        return _Parsed(scheme, uri, uri)
    if scheme == "file":
        if not rest:
            raise DataError("file:// needs a path: file://clip.mp4, file:///data/images")
        return _Parsed("file", f"file://{rest}", rest)
    if scheme == "synthetic":
        return _parse_synthetic(text, rest)
    raise DataError(f"unknown source scheme {scheme}://: supported are {_SUPPORTED}")


def _parse_gst(pipeline: str) -> _Parsed:
    if not pipeline:
        raise DataError("gst: needs a pipeline: gst:videotestsrc ! videoconvert ! appsink")
    if "\n" in pipeline:
        pipeline = " ".join(pipeline.split())
    last = pipeline.split("!")[-1].split()
    if not last or last[0] != "appsink":
        raise DataError(f"a gst: pipeline must end in appsink (… ! appsink), got gst:{pipeline}")
    return _Parsed("gst", f"gst:{pipeline}", pipeline)


_SYNTH_KEYS = ("size", "fps", "seed", "bit_depth", "channels", "frames", "speed")


def _parse_synthetic(text: str, rest: str) -> _Parsed:
    where, _, query = rest.partition("?")
    if where.strip("/"):
        raise DataError(
            f"synthetic:// takes only parameters (synthetic://?size=256&fps=30), got {text}"
        )
    params: dict[str, Any] = {}
    for item in query.split("&"):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip().lower().replace("-", "_")
        if key not in _SYNTH_KEYS:
            raise DataError(
                f"unknown synthetic:// parameter {key!r}: known are {', '.join(_SYNTH_KEYS)}"
            )
        if not eq or not value.strip():
            raise DataError(f"synthetic:// parameter {key} needs a value ({key}=…)")
        if key in params:
            raise DataError(f"synthetic:// parameter {key} given twice")
        params[key] = _synthetic_value(key, value.strip())
    shown = [f"{k}={_format_synthetic(k, params[k])}" for k in _SYNTH_KEYS if k in params]
    uri = "synthetic://" + ("?" + "&".join(shown) if shown else "")
    return _Parsed("synthetic", uri, "", params)


def _synthetic_value(key: str, value: str) -> Any:
    bad = f"synthetic:// {key}={value} is not valid: "
    if key == "size":
        parts = value.lower().replace("×", "x").split("x")
        try:
            hw = tuple(int(p) for p in parts)
        except ValueError:
            raise DataError(bad + "give N or HxW, e.g. size=512 or size=480x640") from None
        if len(hw) == 1:
            hw = (hw[0], hw[0])
        if len(hw) != 2 or min(hw) < 8:
            raise DataError(bad + "give N or HxW of at least 8 pixels")
        return hw
    if key in ("fps", "speed"):
        try:
            number = float(value)
        except ValueError:
            raise DataError(bad + "not a number") from None
        if not math.isfinite(number) or number < 0 or (key == "fps" and number == 0):
            raise DataError(bad + ("give frames per second > 0" if key == "fps" else "give ≥ 0"))
        return number
    try:
        integer = int(value)
    except ValueError:
        raise DataError(bad + "not an integer") from None
    allowed = {"bit_depth": (8, 16), "channels": (1, 3)}.get(key)
    if allowed is not None and integer not in allowed:
        raise DataError(bad + f"give {' or '.join(map(str, allowed))}")
    if key == "frames" and integer < 1:
        raise DataError(bad + "give at least 1 frame")
    if key == "seed" and integer < 0:
        raise DataError(bad + "give a seed ≥ 0")
    return integer


def _format_synthetic(key: str, value: Any) -> str:
    if key == "size":
        return f"{value[0]}x{value[1]}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _redact(uri: str) -> str:
    """``rtsp://user:secret@host/x`` → ``rtsp://user:***@host/x`` for messages and reports."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None:
        return uri
    user = parts.username or ""
    netloc = f"{user}:***@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


# --------------------------------------------------------------------------------------------
# Opening


def open_stream(
    uri: str,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
) -> Stream:
    """Open a stream URI (as :func:`parse_source` gives, or any form it accepts).

    ``width``, ``height`` and ``fps`` ask a camera (``camera://``, ``v4l2://``, ``csi://``) for
    that mode; a camera that picks another mode says so in ``stream.warnings``. For
    ``synthetic://`` they stand in for ``size`` and ``fps`` parameters not in the URI. Other
    sources have their own size and rate and refuse them.

    Raises:
        DataError: an unknown scheme, a camera that does not open or delivers no frame, a
            pipeline this OpenCV cannot run (no GStreamer), a missing or undecodable file.
        MissingDependencyError: OpenCV is not installed.
    """
    parsed = _parse(uri)
    for name, value in (("width", width), ("height", height)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise DataError(f"--{name} must be a positive number of pixels, got {value!r}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise DataError(f"--fps must be a positive number of frames per second, got {fps!r}")
    asked = width is not None or height is not None or fps is not None
    scheme = parsed.scheme
    if scheme in ("camera", "v4l2"):
        return CameraStream(parsed, width=width, height=height, fps=fps)
    if scheme == "csi":
        return _open_csi(int(parsed.target), parsed.uri, width, height, fps)
    if scheme == "synthetic":
        return SyntheticSource(parsed, width=width, height=height, fps=fps)
    if asked:
        what = {"gst": "a gst: pipeline (set them in its caps)", "file": "a file source"}
        raise DataError(
            f"--width/--height/--fps apply to cameras and synthetic://, not to "
            f"{what.get(scheme, 'a network stream')}"
        )
    if scheme == "gst":
        return _open_gstreamer(parsed.target, parsed.uri, f"the pipeline {parsed.uri}")
    if scheme in ("rtsp", "http", "https"):
        return _open_network(parsed.uri)
    return FileStream(parsed)


# --------------------------------------------------------------------------------------------
# OpenCV streams: cameras, network streams, GStreamer pipelines


class _OpenCVStream:
    """A live cv2.VideoCapture whose first frame was read at opening (to fail there, not
    later) and is returned by the first :meth:`read`."""

    def __init__(self, cap: Any, first: np.ndarray, info: StreamInfo, warnings: list[str]):
        self._cap = cap
        self._pending: np.ndarray | None = first
        self.info = info
        self.warnings = warnings

    def read(self) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if self._cap is None:
            return None
        ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        return _to_rgb(frame)

    def close(self) -> None:
        self._pending = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class CameraStream(_OpenCVStream):
    """``camera://N`` or ``v4l2:///dev/videoN`` through cv2.VideoCapture: V4L2 first on Linux,
    then OpenCV's default backend. Frames uint8 (H, W, 3) RGB (gray cameras (H, W))."""

    def __init__(
        self,
        parsed: _Parsed,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
    ) -> None:
        cv = cv2()
        if parsed.scheme == "camera":
            index: int | None = int(parsed.target)
            device = None
            label = f"camera {index}"
        else:
            device = parsed.target
            index = _video_index(device)
            label = f"camera {device}"
            if not os.path.exists(device):
                raise DataError(f"no camera at {device}: no such device; {_list_video_devices()}")
        attempts: list[tuple[str, Any, int]] = []
        if sys.platform.startswith("linux") and _has_backend(cv, "CAP_V4L2"):
            attempts.append(("V4L2", device if device is not None else index, cv.CAP_V4L2))
        default_target = index if index is not None else device
        attempts.append(("the default backend", default_target, cv.CAP_ANY))
        cap = None
        for _name, target, api in attempts:
            with _quiet_opencv(cv):
                candidate = cv.VideoCapture(target, api)
            if candidate.isOpened():
                cap = candidate
                break
            candidate.release()
        if cap is None:
            where = f"at index {index}" if device is None else f"at {device}"
            tried = " and ".join(name for name, _, _ in attempts)
            node = device or (f"/dev/video{index}" if sys.platform.startswith("linux") else None)
            busy = (
                f" ({node} exists: in use by another program, or no permission (group video)?)"
                if node and os.path.exists(node)
                else ""
            )
            raise DataError(f"no camera {where}: tried {tried}; {_list_video_devices()}{busy}")
        warnings: list[str] = []
        with _quiet_opencv(cv):
            if width is not None:
                cap.set(cv.CAP_PROP_FRAME_WIDTH, float(width))
            if height is not None:
                cap.set(cv.CAP_PROP_FRAME_HEIGHT, float(height))
            if fps is not None:
                cap.set(cv.CAP_PROP_FPS, float(fps))
            ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise DataError(
                f"{label} opened but delivered no frame: is another program using it? "
                f"{_list_video_devices()}"
            )
        first = _to_rgb(first)
        h, w = first.shape[:2]
        rate = float(cap.get(cv.CAP_PROP_FPS) or 0.0) or None
        if (width is not None and w != width) or (height is not None and h != height):
            warnings.append(
                f"{label} gives {w}x{h} frames, not the {width or w}x{height or h} asked for"
            )
        if fps is not None and rate is not None and abs(rate - fps) > 0.5:
            warnings.append(f"{label} runs at {rate:g} fps, not the {fps:g} asked for")
        backend = _backend_name(cap)
        shown = f", {rate:g} fps" if rate else ""
        info = StreamInfo(
            uri=parsed.uri,
            description=f"{label} ({backend}, {w}x{h}{shown})",
            live=True,
            fps=rate,
            size=(h, w),
        )
        super().__init__(cap, first, info, warnings)


def _open_network(uri: str) -> _OpenCVStream:
    cv = cv2()
    shown = _redact(uri)
    use_ffmpeg = _has_backend(cv, "CAP_FFMPEG")
    with _quiet_opencv(cv):
        cap = cv.VideoCapture(uri, cv.CAP_FFMPEG if use_ffmpeg else cv.CAP_ANY)
    if not cap.isOpened():
        cap.release()
        how = "FFmpeg" if use_ffmpeg else "OpenCV (built without FFmpeg)"
        raise DataError(
            f"cannot open {shown}: {how} could not connect or decode it "
            "(check the address, the credentials and that the stream is up)"
        )
    with _quiet_opencv(cv):
        ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        raise DataError(f"{shown} opened but delivered no frame")
    first = _to_rgb(first)
    h, w = first.shape[:2]
    rate = float(cap.get(cv.CAP_PROP_FPS) or 0.0)
    rate_or_none = rate if 0 < rate < 1000 else None  # FFmpeg reports 90000 for some streams
    shown_rate = f", {rate_or_none:g} fps" if rate_or_none else ""
    info = StreamInfo(
        uri=shown,
        description=f"stream {shown} ({w}x{h}{shown_rate})",
        live=True,
        fps=rate_or_none,
        size=(h, w),
    )
    return _OpenCVStream(cap, first, info, [])


def _open_gstreamer(
    pipeline: str, uri: str, what: str, *, fps: float | None = None, label: str | None = None
) -> _OpenCVStream:
    """Open a GStreamer pipeline ending in appsink; ``what`` names it in messages."""
    cv = cv2()
    if not opencv_capabilities()["gstreamer"]:
        raise DataError(f"{what} needs GStreamer, {_no_gstreamer_advice(cv, _board())}")
    with _quiet_opencv(cv):
        cap = cv.VideoCapture(pipeline, cv.CAP_GSTREAMER)
    if not cap.isOpened():
        cap.release()
        raise DataError(
            f"GStreamer could not start {what} ({pipeline}): is the camera connected and free? "
            "run the pipeline with gst-launch-1.0 (fakesink for appsink) to see why"
        )
    with _quiet_opencv(cv):
        ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        raise DataError(f"{what} started but delivered no frame ({pipeline})")
    first = _to_rgb(first)
    h, w = first.shape[:2]
    rate = float(cap.get(cv.CAP_PROP_FPS) or 0.0) or fps
    shown_rate = f", {rate:g} fps" if rate else ""
    info = StreamInfo(
        uri=uri,
        description=f"{label or what} (GStreamer, {w}x{h}{shown_rate})",
        live=True,
        fps=rate,
        size=(h, w),
    )
    return _OpenCVStream(cap, first, info, [])


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


def _open_csi(
    index: int, uri: str, width: int | None, height: int | None, fps: float | None
) -> Stream:
    board = _board()
    w = width or _CSI_DEFAULT[0]
    h = height or _CSI_DEFAULT[1]
    rate = fps or _CSI_DEFAULT[2]
    what = f"{uri} (CSI camera {index})"
    if board == "jetson":
        pipeline = csi_pipeline(board, index, w, h, rate)
        return _open_gstreamer(pipeline, uri, what, fps=rate, label=f"CSI camera {index}")
    picamera2 = _import_picamera2()
    if picamera2 is not None:
        return Picamera2Stream(picamera2, index, uri, w, h, fps)
    cv = cv2()
    if not opencv_capabilities()["gstreamer"]:
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
    return _open_gstreamer(pipeline, uri, what, fps=rate, label=f"CSI camera {index}")


def _import_picamera2() -> Any | None:
    try:
        return importlib.import_module("picamera2")
    except Exception:  # not installed, or libcamera missing underneath it
        return None


class Picamera2Stream:
    """A Raspberry Pi camera through picamera2, frames uint8 (H, W, 3) RGB.

    picamera2's ``RGB888`` format (the one its video pipeline prefers) stores pixels as
    [B, G, R], following libcamera's naming; frames are reversed to RGB here.
    """

    def __init__(
        self, module: Any, index: int, uri: str, width: int, height: int, fps: float | None
    ) -> None:
        self.warnings: list[str] = []
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
                f"CSI camera {index} did not start ({type(exc).__name__}: {_one_line(exc)}): "
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


def _board() -> str:
    """``"jetson"``, ``"raspberrypi"`` or ``"other"``."""
    if _JETSON_RELEASE.exists():
        return "jetson"
    try:
        model = _DEVICE_MODEL.read_bytes().decode("utf-8", "replace")
    except OSError:
        model = ""
    return "raspberrypi" if "Raspberry Pi" in model else "other"


# --------------------------------------------------------------------------------------------
# Files


class FileStream:
    """A file source (:func:`~edgeseg.runtime.sources.open_file_source`) read in order: every
    frame once, then None. Not live: a capture thread delivers every frame.

    A frame that does not decode is skipped with a warning; in a video, decoding stops at the
    first such frame (what follows a damaged spot rarely decodes). A video whose container
    announces more frames than decode (a truncated recording) ends where decoding ends, with a
    warning. Opening reads the first frame, so a source of which nothing decodes fails there.
    """

    def __init__(self, parsed: _Parsed) -> None:
        from edgeseg.runtime.sources import open_file_source

        self.warnings: list[str] = []
        self._source = open_file_source(parsed.target)
        parts = getattr(self._source, "parts", None) or [self._source]
        ends = np.cumsum([len(p) for p in parts]).tolist()
        self._parts = [(p, end - len(p), end) for p, end in zip(parts, ends, strict=True)]
        self._starts = [start for _, start, _ in self._parts]
        # Videos whose container announces more frames than decode, by part number: warned
        # about once the stream passes their end.
        self._truncated = {
            k: entry
            for k, entry in enumerate(self._parts)
            if getattr(entry[0], "container_frames", 0) > entry[2] - entry[1]
        }
        self._next = 0
        self._pending: np.ndarray | None = None
        self._closed = False
        first = self._read_next()
        if first is None:
            self._source.close()
            why = f": {self.warnings[0]}" if self.warnings else ""
            raise DataError(f"no frame of {self._source.description} can be read{why}")
        self._pending = first
        rate = getattr(self._source, "fps", None)
        self.info = StreamInfo(
            uri=parsed.uri,
            description=self._source.description,
            live=False,
            fps=rate,
            size=(int(first.shape[0]), int(first.shape[1])),
            frames=len(self._source),
        )

    def read(self) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if self._closed:
            return None
        return self._read_next()

    def close(self) -> None:
        self._closed = True
        self._pending = None
        self._source.close()

    def _read_next(self) -> np.ndarray | None:
        from edgeseg.runtime.sources import VideoFile

        n = len(self._source)
        while self._next < n:
            i = self._next
            k, (part, start, end) = self._locate(i)
            try:
                frame = self._source.read(i)
            except DataError as exc:
                if isinstance(part, VideoFile):
                    self._warn(
                        f"{part.path}: decoding stopped at frame {i - start} of {end - start} "
                        f"({exc}); skipped the rest of it"
                    )
                    self._truncated.pop(k, None)
                    self._next = end
                else:
                    self._warn(f"skipped {self._source.name(i)}: {exc}")
                    self._next = i + 1
                self._note_ends()
                continue
            self._next = i + 1
            self._note_ends()
            return frame
        return None

    def _locate(self, i: int) -> tuple[int, tuple[Any, int, int]]:
        """(part number, (part, its first frame, its end)) of frame ``i``."""
        k = bisect.bisect_right(self._starts, i) - 1
        return k, self._parts[k]

    def _note_ends(self) -> None:
        """Warn about a truncated video once the stream has passed its last decodable frame."""
        for k, (part, start, end) in list(self._truncated.items()):
            if self._next >= end:
                del self._truncated[k]
                self._warn(
                    f"{part.path} is truncated or damaged: only {end - start} of the "
                    f"{part.container_frames} frames its header announces decode (those were "
                    "delivered)"
                )

    def _warn(self, message: str) -> None:
        if len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(_one_line(message))
        elif len(self.warnings) == _MAX_WARNINGS:
            self.warnings.append("further warnings left out")


# --------------------------------------------------------------------------------------------
# synthetic://


class SyntheticSource:
    """The built-in microscope stream (:class:`~edgeseg.samples.SyntheticStream`) as a stream.

    Frames uint8/uint16 (H, W) or (H, W, 3) RGB; their ground-truth masks (uint8 (H, W), 0/255)
    are kept: ``last_mask`` is the newest one, ``mask(i)`` the one of the i-th frame read (0-based,
    the capture thread's ``Frame.index``) for the last few frames. With ``fps`` the stream is live
    and paced by the wall clock: frames are returned at most ``fps`` per second (never in a burst
    to catch up when reading lagged); without it, frames come as fast as they are read.
    """

    _KEEP_MASKS = 16

    def __init__(
        self,
        parsed: _Parsed,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
    ) -> None:
        from edgeseg.samples import SyntheticStream

        params = dict(parsed.params)
        if width is not None or height is not None:
            if "size" in params:
                raise DataError("give the synthetic:// size once: size=HxW or --width/--height")
            side = width or height
            params["size"] = (int(height or side), int(width or side))  # type: ignore[arg-type]
        if fps is not None:
            if "fps" in params:
                raise DataError("give the synthetic:// rate once: fps=N in the URI or --fps")
            params["fps"] = float(fps)
        self.params = params
        size = params.get("size", (512, 512))
        self._fps: float | None = params.get("fps")
        self._frames: int | None = params.get("frames")
        self._gen = SyntheticStream(
            size=size,
            seed=params.get("seed", 0),
            bit_depth=params.get("bit_depth"),
            channels=params.get("channels"),
            speed=params.get("speed", 0.8),
        )
        cfg = self._gen.config
        self.warnings: list[str] = []
        self.last_mask: np.ndarray | None = None
        self._masks: deque[tuple[int, np.ndarray]] = deque(maxlen=self._KEEP_MASKS)
        self._count = 0
        self._due: float | None = None
        self._wake = threading.Event()
        shown = [f"{k}={_format_synthetic(k, params[k])}" for k in _SYNTH_KEYS if k in params]
        uri = "synthetic://" + ("?" + "&".join(shown) if shown else "")
        pace = f"{self._fps:g} fps" if self._fps else "unpaced"
        ends = f", {self._frames} frames" if self._frames else ""
        self.info = StreamInfo(
            uri=uri,
            description=(
                f"synthetic microscope stream ({cfg.size[0]}x{cfg.size[1]}, {cfg.bit_depth}-bit, "
                f"{cfg.channels} channel{'s' if cfg.channels > 1 else ''}, {pace}{ends}, "
                f"seed {params.get('seed', 0)})"
            ),
            live=self._fps is not None,
            fps=self._fps,
            size=cfg.size,
            frames=self._frames,
        )

    def read(self) -> np.ndarray | None:
        if self._wake.is_set() or (self._frames is not None and self._count >= self._frames):
            return None
        frame, mask = self._gen.read()
        if self._fps is not None:
            now = time.perf_counter()
            # The next frame is due one period after the last; when reading lagged, it is due
            # now: a camera that was not read does not deliver a burst afterwards.
            due = now if self._due is None else max(self._due + 1.0 / self._fps, now)
            self._due = due
            while (left := due - time.perf_counter()) > 0:
                if self._wake.wait(left):
                    return None
        self._masks.append((self._count, mask))
        self.last_mask = mask
        self._count += 1
        return frame

    def mask(self, index: int) -> np.ndarray | None:
        """Ground truth of the ``index``-th frame read, if it is among the last 16."""
        for i, m in self._masks:
            if i == index:
                return m
        return None

    def interrupt(self) -> None:
        """Make a read() waiting for its frame's time return None now (any thread)."""
        self._wake.set()

    def close(self) -> None:
        self._wake.set()


# --------------------------------------------------------------------------------------------
# OpenCV helpers


def opencv_capabilities() -> dict[str, Any]:
    """What the installed OpenCV can do, from ``cv2.getBuildInformation()``:
    ``{"version": "4.12.0", "gstreamer": bool, "ffmpeg": bool, "v4l2": bool, "gui": bool}``
    (``gui``: a HighGUI backend other than NONE, so windows can open).

    Raises:
        MissingDependencyError: OpenCV is not installed.
    """
    cv = cv2()
    caps = _parse_build_information(cv.getBuildInformation())
    caps = {"version": str(cv.__version__), **caps}
    # A videoio plugin loaded at run time counts too.
    for key, attr in (("gstreamer", "CAP_GSTREAMER"), ("ffmpeg", "CAP_FFMPEG")):
        if not caps[key] and _has_backend(cv, attr):
            caps[key] = True
    return caps


def _parse_build_information(text: str) -> dict[str, bool]:
    """The flags of :func:`opencv_capabilities` from build information text. Handles both
    ``GUI: GTK3`` / ``GStreamer: YES (1.20)`` and older blocks whose header has no value and
    whose sub-lines say ``GTK+: YES`` or ``base: YES``."""
    entries = []  # (indent, key, value)
    for line in text.splitlines():
        m = re.match(r"^(\s*)([^:]+?):\s*(.*?)\s*$", line)
        if m:
            entries.append((len(m.group(1)), m.group(2).strip().lower(), m.group(3)))

    def block(i: int) -> Iterator[tuple[int, str, str]]:
        indent = entries[i][0]
        for entry in entries[i + 1 :]:
            if entry[0] <= indent:
                return
            yield entry

    def yes(value: str) -> bool:
        return value.upper().startswith("YES")

    def flag(section: str, keys: tuple[str, ...]) -> bool:
        for i, (_, key, _) in enumerate(entries):
            if key == section:
                for j, (_, sub, value) in enumerate(entries[i + 1 :], start=i + 1):
                    if entries[j][0] <= entries[i][0]:
                        break
                    if sub in keys:
                        return yes(value) or (not value and any(yes(v) for *_, v in block(j)))
        return False

    gui = False
    for i, (_, key, value) in enumerate(entries):
        if key == "gui":
            if value:
                gui = value.upper() != "NONE"
            else:
                backends = ("gtk+", "gtk", "gtk2", "gtk3", "qt", "win32 ui", "cocoa", "wayland")
                gui = any(k in backends and yes(v) for _, k, v in block(i))
            break
    return {
        "gstreamer": flag("video i/o", ("gstreamer",)),
        "ffmpeg": flag("video i/o", ("ffmpeg",)),
        "v4l2": flag("video i/o", ("v4l/v4l2", "v4l2", "v4l")),
        "gui": gui,
    }


def _has_backend(cv: Any, attr: str) -> bool:
    registry = getattr(cv, "videoio_registry", None)
    api = getattr(cv, attr, None)
    if registry is None or api is None:
        return api is not None
    try:
        return bool(registry.hasBackend(api))
    except Exception:  # very old builds
        return True


def _backend_name(cap: Any) -> str:
    try:
        return str(cap.getBackendName())
    except Exception:  # getBackendName raises when the backend is unknown
        return "OpenCV"


@contextlib.contextmanager
def _quiet_opencv(cv: Any) -> Iterator[None]:
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


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    """OpenCV's BGR(A) → RGB(A); gray stays as is."""
    if frame.ndim == 2 or frame.shape[2] == 1:
        return frame if frame.ndim == 2 else frame[..., 0]
    cv = cv2()
    return cv.cvtColor(frame, cv.COLOR_BGR2RGB if frame.shape[2] == 3 else cv.COLOR_BGRA2RGBA)


def _video_index(device: str) -> int | None:
    """``/dev/video2`` (or a symlink to it) → 2."""
    real = os.path.realpath(device)
    m = re.fullmatch(r"/dev/video(\d+)", real)
    return int(m.group(1)) if m else None


def _list_video_devices() -> str:
    if not sys.platform.startswith("linux"):
        return "use --camera 0, 1, … for the cameras the system knows"
    found = sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p))
    return f"/dev/video* devices: {', '.join(found) if found else 'none'}"


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())
