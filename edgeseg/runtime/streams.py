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

Every live stream :func:`open_stream` returns has ``reopen``: a function that opens the same
source again as a new stream (the same URI, size and rate; a V4L2 camera through its stable
``/dev/v4l/by-id`` name when it has one). A capture thread calls it when the source stopped
delivering, to carry on once the camera or the network stream is back. File streams have none:
they end at their end.

Modules: :mod:`~edgeseg.runtime.uri` parses URIs, :mod:`~edgeseg.runtime.cameras` opens the
live ones (cameras, pipelines, network streams), this module dispatches and opens files and
``synthetic://``. Everything a caller needs (``open_stream``, ``parse_source``, ``Stream``,
``StreamBase``, ``StreamInfo``) is importable from here.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from edgeseg.errors import DataError
from edgeseg.runtime.cameras import CameraStream, open_csi, open_gstreamer, open_network
from edgeseg.runtime.stream_base import Stream, StreamBase, StreamInfo, one_line
from edgeseg.runtime.uri import SCHEMES, ParsedURI, parse_source, parse_uri, synthetic_uri

__all__ = [
    "SCHEMES",
    "FileStream",
    "Stream",
    "StreamBase",
    "StreamInfo",
    "SyntheticSource",
    "open_stream",
    "parse_source",
]

_MAX_WARNINGS = 50


def open_stream(
    uri: str,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    window: Any = None,
) -> Stream:
    """Open a stream URI (as :func:`parse_source` gives, or any form it accepts).

    ``width``, ``height`` and ``fps`` ask a camera (``camera://``, ``v4l2://``, ``csi://``) for
    that mode; a camera that picks another mode says so in ``stream.warnings``. For
    ``synthetic://`` they stand in for ``size`` and ``fps`` parameters not in the URI. Other
    sources have their own size and rate and refuse them.

    ``window`` (a parsed :class:`~edgeseg.dicom.Window`, or ``"file"``) windows DICOM files.

    A live stream's ``reopen()`` opens the same source again (raising as this does when it is
    not back yet); a file stream's ``reopen`` is None.

    Raises:
        DataError: an unknown scheme, a camera that does not open or delivers no frame, a
            pipeline this OpenCV cannot run (no GStreamer), a missing or undecodable file.
        MissingDependencyError: OpenCV is not installed.
    """
    parsed = parse_uri(uri)
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
        return open_csi(int(parsed.target), parsed.uri, width, height, fps)
    if scheme == "synthetic":
        return SyntheticSource(parsed, width=width, height=height, fps=fps)
    if asked:
        what = {"gst": "a gst: pipeline (set them in its caps)", "file": "a file source"}
        raise DataError(
            f"--width/--height/--fps apply to cameras and synthetic://, not to "
            f"{what.get(scheme, 'a network stream')}"
        )
    if scheme == "gst":
        return open_gstreamer(parsed.target, parsed.uri, f"the pipeline {parsed.uri}")
    if scheme in ("rtsp", "http", "https"):
        return open_network(parsed.uri)
    return FileStream(parsed, window=window)


# --------------------------------------------------------------------------------------------
# Files


class FileStream(StreamBase):
    """A file source (:func:`~edgeseg.runtime.sources.open_file_source`) read in order: every
    frame once, then None. Not live: a capture thread delivers every frame.

    A frame that does not decode is skipped with a warning; in a video, decoding stops at the
    first such frame (what follows a damaged spot rarely decodes). A video whose container
    announces more frames than decode (a truncated recording) ends where decoding ends, with a
    warning. Opening reads the first frame, so a source of which nothing decodes fails there.

    ``frame_name`` is the source's name of the frame :meth:`read` returned last (``"A06.tif"``
    in a folder, ``"clip.mp4#frame37"``, ``"stack.tif#page5"``: the source's ``name(i)``), None
    before the first read and after the end. ``frame_time`` is that frame's own time in a
    video (its presentation timestamp, seconds from the video's start), else None.
    """

    def __init__(self, parsed: ParsedURI, *, window: Any = None) -> None:
        from edgeseg.runtime.sources import open_file_source

        self.warnings: list[str] = []
        self.reopen: Callable[[], Stream] | None = None  # a file ends at its end
        self._source = open_file_source(parsed.target, window=window)
        # µm per pixel by frame name where the files say (DICOM Pixel Spacing), for areas.
        self.pixel_sizes: dict[str, float] = {}
        if hasattr(self._source, "frame_geometry"):
            for i in range(len(self._source)):
                um = self._source.frame_geometry(i).pixel_size_um
                if um is not None:
                    self.pixel_sizes[self._source.name(i)] = um
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
        self.frame_name: str | None = None
        self.frame_time: float | None = None
        self._read_name: str | None = None  # of the frame _read_next returned last
        self._read_time: float | None = None
        first = self._read_next()
        if first is None:
            self._source.close()
            why = f": {self.warnings[0]}" if self.warnings else ""
            raise DataError(f"no frame of {self._source.description} can be read{why}")
        self._pending, self._pending_name = first, self._read_name
        self._pending_time = self._read_time
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
            self.frame_name, self.frame_time = self._pending_name, self._pending_time
            return frame
        if self._closed:
            self.frame_name = self.frame_time = None
            return None
        frame = self._read_next()
        self.frame_name = self._read_name if frame is not None else None
        self.frame_time = self._read_time if frame is not None else None
        return frame

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
            self._read_name = self._source.name(i)
            self._read_time = part.time(i - start) if isinstance(part, VideoFile) else None
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
            self.warnings.append(one_line(message))
        elif len(self.warnings) == _MAX_WARNINGS:
            self.warnings.append("further warnings left out")


# --------------------------------------------------------------------------------------------
# synthetic://


class SyntheticSource(StreamBase):
    """The built-in microscope stream (:class:`~edgeseg.samples.SyntheticStream`) as a stream.

    Frames uint8/uint16 (H, W) or (H, W, 3) RGB; their ground-truth masks (uint8 (H, W), 0/255)
    are kept: ``last_mask`` is the newest one, ``mask(i)`` the one of the i-th frame read (0-based,
    the capture thread's ``Frame.index``) for the last few frames. With ``fps`` the stream is live
    and paced by the wall clock: frames are returned at most ``fps`` per second (never in a burst
    to catch up when reading lagged); without it, frames come as fast as they are read.
    A paced stream's ``reopen()`` starts it again from its first frame, as a new stream.
    """

    _KEEP_MASKS = 16

    def __init__(
        self,
        parsed: ParsedURI,
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
        uri = synthetic_uri(params)
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
        self.reopen: Callable[[], Stream] | None = (
            partial(SyntheticSource, parsed, width=width, height=height, fps=fps)
            if self._fps is not None
            else None
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
