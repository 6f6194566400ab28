"""Where frames come from: image folders, glob patterns, single images, TIFF stacks, videos.

Every source gives frames as read, in RGB order (or gray) and at their own bit depth: uint8 or
uint16 arrays of shape (H, W) or (H, W, C) (float32 for float TIFFs). Normalisation and
channel reduction happen later, in :func:`edgeseg.core.preprocess.prepare`, identically for
calibration, evaluation and the runtime.

File sources are finite and random access (:class:`FrameSource`): calibration picks frames
across the whole source and reads some of them twice. Live sources (cameras, ``rtsp://``,
``synthetic://``) will live in this module too, behind the same ``read``-a-frame shape but
without random access; :func:`open_file_source` takes only files (and ``file://`` URIs).

What counts as a frame:

- an image file (PNG, JPEG, BMP, single-page TIFF): one frame, named by its file name;
- a TIFF stack: one frame per image plane, named ``stack.tif#page5`` (5 = the plane's index
  in the flattened stack). Leading axes (Z, T, Q, ...) are flattened in file order, so a
  (T, Z, H, W) stack gives T*Z frames; samples (RGB, RGBA, 2-channel contiguous or planar) and
  an ImageJ/OME channel axis of at most 4 become the frame's channels (H, W, C); a longer
  channel axis is flattened into frames like any other;
- a video (.mp4, .avi, .mkv, .mov, via OpenCV): one frame per decoded frame, named
  ``clip.mp4#frame37``, converted from OpenCV's BGR to RGB.

A folder or a glob pattern is the concatenation of its files in natural order (``2.png``
before ``10.png``); TIFF stacks in a folder contribute all their frames.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgeseg.errors import DataError
from edgeseg.imageio import IMAGE_SUFFIXES, list_images, natural_key, read_image
from edgeseg.optional import cv2, require

__all__ = [
    "VIDEO_SUFFIXES",
    "ConcatSource",
    "FrameSource",
    "ImageFile",
    "TiffStack",
    "VideoFile",
    "open_file_source",
]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")
_TIFF_SUFFIXES = (".tif", ".tiff")
_GLOB_CHARS = ("*", "?", "[")
# Reading forward this many frames is cheaper (and exact for every codec) than seeking.
_MAX_GRAB_FORWARD = 32


@runtime_checkable
class FrameSource(Protocol):
    """A finite, random-access sequence of frames.

    ``read(i)`` returns frame ``i``: uint8/uint16 (float32 for float TIFFs) array of shape
    (H, W) or (H, W, C), RGB order. ``name(i)`` names it for messages and manifests
    (``"12.png"``, ``"clip.mp4#frame37"``, ``"stack.tif#page5"``); ``description`` says what
    the source is (``"image folder data/images (30 images)"``). Out-of-range indices raise
    IndexError; frames that cannot be decoded raise DataError naming the frame.
    """

    description: str

    def __len__(self) -> int: ...

    def read(self, i: int) -> np.ndarray: ...

    def name(self, i: int) -> str: ...


def open_file_source(
    source: str | Path, *, window: Any = None
) -> ConcatSource | ImageFile | TiffStack | VideoFile | Any:
    """Open a folder, a glob pattern, an image, a TIFF stack or a video file as a FrameSource.

    Every source returned also has ``path`` (what was asked for, as a string) and ``close()``
    (releases open files; reading again reopens them).

    DICOM (:mod:`edgeseg.dicom`): a DICOM file, or a folder of DICOM files without other
    images (its series, each in slice-position order), windowed by ``window`` (a parsed
    :class:`~edgeseg.dicom.Window`; None or ``"file"``: each file's own).

    Raises:
        DataError: missing path, empty folder, a pattern matching nothing, an unsupported
            suffix, a TIFF or video that cannot be decoded, a bad DICOM file or series.
    """
    from edgeseg.dicom import dicom_files, is_dicom, open_dicom

    text = str(source)
    if text.startswith("file://"):
        text = text[len("file://") :]
    path = Path(text).expanduser()
    if path.is_dir():
        files = list_images(path)
        if not files and dicom_files(path):
            return open_dicom(path, window)
        if not files:
            raise DataError(f"no images in folder {path} (looked for {', '.join(IMAGE_SUFFIXES)})")
        return ConcatSource([_open_file(f) for f in files], kind="image folder", path=str(path))
    if path.is_file():
        if path.suffix.lower() not in _SUPPORTED and is_dicom(path):
            return open_dicom(path, window)
        return _open_file(path)
    if any(ch in text for ch in _GLOB_CHARS):
        matches = [Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True)]
        files = [p for p in matches if p.is_file() and p.suffix.lower() in _SUPPORTED]
        if not files:
            what = f"{len(matches)} match(es), none an image or video" if matches else "nothing"
            raise DataError(f"pattern {text} matches {what}")
        files.sort(key=lambda p: (_natural_key_parts(p.parent), natural_key(p)))
        return ConcatSource([_open_file(f) for f in files], kind="files matching", path=text)
    raise DataError(f"source not found: {text}")


# --------------------------------------------------------------------------------------------
# Single image files


class ImageFile:
    """One PNG/JPEG/BMP image as a one-frame source (read with :func:`read_image`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._path = Path(path)
        self.description = f"image {self._path}"

    def __len__(self) -> int:
        return 1

    def read(self, i: int) -> np.ndarray:
        _check_index(i, 1)
        return read_image(self._path)

    def name(self, i: int) -> str:
        _check_index(i, 1)
        return self._path.name

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# TIFF stacks


class TiffStack:
    """A TIFF file's first image series as frames; single-page TIFFs are one-frame stacks.

    Only the pages of the frame asked for are read, so a stack of thousands of 2048² planes
    costs one plane of memory. The file stays open until :meth:`close`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._path = Path(path)
        self._tif: Any = None
        tif = self._open()
        try:
            series = tif.series[0]
            self._layout = _tiff_layout(series, self._path)
            self.dtype = np.dtype(series.dtype)
        except DataError:
            self.close()
            raise
        except Exception as exc:  # tifffile raises many types for damaged files
            self.close()
            raise DataError(f"cannot read {self._path}: {type(exc).__name__}: {exc}") from exc
        self.close()  # a folder may hold thousands of TIFFs: reopen on the first read
        n = self._layout.n_frames
        h, w = self._layout.frame_hw
        what = "TIFF stack" if n > 1 else "TIFF image"
        frames = f"{n} frames of " if n > 1 else ""
        self.description = f"{what} {self._path} ({frames}{h}x{w}, {self.dtype})"

    def __len__(self) -> int:
        return self._layout.n_frames

    def read(self, i: int) -> np.ndarray:
        _check_index(i, len(self))
        tif = self._open()
        pages = self._layout.pages(i)
        try:
            planes = [tif.asarray(key=k, series=0) for k in pages]
        except Exception as exc:  # truncated strips, bad compression, ...
            raise DataError(
                f"cannot read {self.name(i)} of {self._path}: {type(exc).__name__}: {exc}"
            ) from exc
        if self._layout.channel_pages:
            frame = np.stack(planes, axis=-1)
        else:
            frame = planes[0]
            if self._layout.samples_first and frame.ndim == 3:
                frame = np.moveaxis(frame, 0, -1)  # planar (S, H, W) page
        return _frame_dtype(np.ascontiguousarray(frame), f"{self.name(i)} of {self._path}")

    def name(self, i: int) -> str:
        _check_index(i, len(self))
        return self._path.name if len(self) == 1 else f"{self._path.name}#page{i}"

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None

    def _open(self) -> Any:
        if self._tif is None:
            tifffile = require("tifffile")
            try:
                self._tif = tifffile.TiffFile(self._path)
            except Exception as exc:  # tifffile raises many types for damaged files
                raise DataError(f"cannot read {self._path}: {type(exc).__name__}: {exc}") from exc
        return self._tif


class _TiffLayout:
    """How frames map to pages: ``lead_shape`` indexes pages (C order, as stored); the frame
    index runs over ``lead_shape`` without the channel axis ``channel_axis`` (if any)."""

    def __init__(
        self,
        lead_shape: tuple[int, ...],
        channel_axis: int | None,
        frame_hw: tuple[int, int],
        samples_first: bool,
    ) -> None:
        self.lead_shape = lead_shape
        self.channel_axis = channel_axis
        self.frame_hw = frame_hw
        self.samples_first = samples_first
        self.frame_shape = tuple(s for a, s in enumerate(lead_shape) if a != channel_axis)
        self.n_frames = math.prod(self.frame_shape)

    @property
    def channel_pages(self) -> bool:
        return self.channel_axis is not None

    def pages(self, i: int) -> list[int]:
        """Page indices (within the series) of frame ``i``, one per channel when the channel
        axis is stored as pages."""
        index = list(np.unravel_index(i, self.frame_shape)) if self.frame_shape else []
        if self.channel_axis is None:
            return [_ravel(index, self.lead_shape)]
        pages = []
        for c in range(self.lead_shape[self.channel_axis]):
            full = [*index[: self.channel_axis], c, *index[self.channel_axis :]]
            pages.append(_ravel(full, self.lead_shape))
        return pages


def _ravel(index: Sequence[int], shape: tuple[int, ...]) -> int:
    return int(np.ravel_multi_index(tuple(index), shape)) if shape else 0


def _tiff_layout(series: Any, path: Path) -> _TiffLayout:
    """Read a series' axes ('TZCYXS', 'QYX', 'YXS', 'SYX', ...) into a frame layout."""
    axes, shape = str(series.axes), tuple(int(s) for s in series.shape)
    page = series.keyframe
    page_axes = str(page.axes)
    if not axes.endswith(page_axes) or not set(page_axes) <= {"Y", "X", "S"}:
        raise DataError(f"{path}: unsupported TIFF layout (axes {axes}, page axes {page_axes})")
    if "Y" not in page_axes or "X" not in page_axes:
        raise DataError(f"{path}: TIFF pages of shape {tuple(page.shape)} are not 2-D images")
    lead_axes = axes[: len(axes) - len(page_axes)]
    lead_shape = shape[: len(lead_axes)]
    page_shape = dict(zip(page_axes, page.shape, strict=True))
    if math.prod(lead_shape) != len(series):
        raise DataError(f"{path}: TIFF series shape {shape} does not match its {len(series)} pages")
    channel_axis = None
    if "C" in lead_axes and lead_shape[lead_axes.index("C")] <= 4:
        if page_shape.get("S", 1) > 1:
            raise DataError(f"{path}: TIFF has both a channel axis and multi-sample pages")
        channel_axis = lead_axes.index("C")
    return _TiffLayout(
        lead_shape=lead_shape,
        channel_axis=channel_axis,
        frame_hw=(page_shape["Y"], page_shape["X"]),
        samples_first=page_axes.startswith("S"),
    )


def _frame_dtype(frame: np.ndarray, what: str) -> np.ndarray:
    """The pixel types :func:`read_image` returns: uint8, uint16, float32 (bool → 0/255)."""
    if frame.dtype in (np.uint8, np.uint16):
        return frame
    if frame.dtype == bool:
        return frame.astype(np.uint8) * 255
    if np.issubdtype(frame.dtype, np.floating):
        return frame.astype(np.float32, copy=False)
    if np.issubdtype(frame.dtype, np.integer) and frame.min() >= 0 and frame.max() <= 65535:
        return frame.astype(np.uint16)
    raise DataError(f"{what}: unsupported pixel type {frame.dtype}")


# --------------------------------------------------------------------------------------------
# Videos


class VideoFile:
    """A video file decoded by OpenCV, frames as uint8 (H, W, 3) RGB.

    The frame count is the container's (CAP_PROP_FRAME_COUNT) when its last frame decodes;
    otherwise (a truncated file, a container without a count) the frames are counted by
    decoding them all once. Sequential and nearby reads decode forward; far ones seek.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._path = Path(path)
        self._cap: Any = None
        self._next = 0  # index of the frame the capture's next read() returns; -1: unknown
        self._times: dict[int, float] = {}  # presentation times of the frames just read
        cap = self._open()
        cv = cv2()
        width = int(cap.get(cv.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv.CAP_PROP_FPS) or 0.0)
        self.fps: float | None = fps if fps > 0 else None
        # The container's frame count (0 when it has none): more than len(self) means the file
        # is truncated or damaged, which a stream reports as a warning.
        self.container_frames = max(int(cap.get(cv.CAP_PROP_FRAME_COUNT)), 0)
        self._n = self._count_frames(self.container_frames)
        if self._n == 0:
            self.close()
            raise DataError(f"cannot decode any frame of {self._path}")
        rate = f", {fps:g} fps" if fps > 0 else ""
        self.description = f"video {self._path} ({self._n} frames, {width}x{height}{rate})"

    def __len__(self) -> int:
        return self._n

    def read(self, i: int) -> np.ndarray:
        _check_index(i, self._n)
        cap = self._open()
        cv = cv2()
        if self._next < 0 or not 0 <= i - self._next <= _MAX_GRAB_FORWARD:
            cap.set(cv.CAP_PROP_POS_FRAMES, i)
            self._next = i
        ok = True
        while ok and self._next < i:
            ok = cap.grab()
            self._next += 1
        frame = None
        if ok:
            ok, frame = cap.read()
        if not ok or frame is None:
            self._next = -1
            raise DataError(f"cannot decode {self.name(i)} ({self._path} is truncated or damaged)")
        self._next = i + 1
        # The decoded frame's own timestamp (FFmpeg's pts, from the video's start).
        msec = float(cap.get(cv.CAP_PROP_POS_MSEC))
        if len(self._times) > 64:
            self._times.clear()
        known = math.isfinite(msec) and msec >= 0
        self._times[i] = msec / 1000.0 if known else i / (self.fps or 25.0)
        if frame.ndim == 2:
            return frame
        return cv.cvtColor(frame, cv.COLOR_BGR2RGB if frame.shape[2] == 3 else cv.COLOR_BGRA2RGBA)

    def name(self, i: int) -> str:
        _check_index(i, self._n)
        return f"{self._path.name}#frame{i}"

    def time(self, i: int) -> float:
        """Frame ``i``'s presentation time in seconds from the video's start, as decoded
        (frames read lately), else ``i`` over the nominal rate."""
        known = self._times.get(i)
        return known if known is not None else i / (self.fps or 25.0)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._next = 0

    def _open(self) -> Any:
        if self._cap is None:
            cv = cv2()
            # FFmpeg's and OpenCV's log lines ("moov atom not found", "backend ... can't be
            # used") would precede our one-line error; quiet them while opening.
            os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
            logging = getattr(getattr(cv, "utils", None), "logging", None)
            level = logging.getLogLevel() if logging else None
            try:
                if logging:
                    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
                registry = getattr(cv, "videoio_registry", None)
                if registry is None or registry.hasBackend(cv.CAP_FFMPEG):
                    cap = cv.VideoCapture(str(self._path), cv.CAP_FFMPEG)
                else:  # a build without FFmpeg (a system OpenCV with GStreamer, say)
                    cap = cv.VideoCapture(str(self._path))
            finally:
                if logging:
                    logging.setLogLevel(level)
            if not cap.isOpened():
                raise DataError(f"cannot open video {self._path}: not a video OpenCV can decode")
            self._cap = cap
            self._next = 0
        return self._cap

    def _count_frames(self, reported: int) -> int:
        cv = cv2()
        cap = self._open()
        if reported > 0:
            cap.set(cv.CAP_PROP_POS_FRAMES, reported - 1)
            ok = cap.grab()
            self.close()
            if ok:
                return reported
        # The container's count is missing or wrong: count what decodes.
        cap = self._open()
        n = 0
        while cap.grab():
            n += 1
        self.close()
        return n


# --------------------------------------------------------------------------------------------
# Folders and patterns


class ConcatSource:
    """Several file sources one after another (a folder, a glob pattern)."""

    def __init__(self, parts: Sequence[Any], *, kind: str, path: str) -> None:
        self.parts = list(parts)
        self.path = path
        self._starts = np.cumsum([0, *(len(p) for p in self.parts)])
        self._current: Any = None
        # Frames are named by file name; when a pattern matches equal names in different
        # folders, by the path relative to the folders' common parent instead.
        names = [Path(p.path).name for p in self.parts]
        self._labels: list[str] | None = None
        if len(set(names)) < len(names):
            root = os.path.commonpath([str(Path(p.path).parent) for p in self.parts])
            self._labels = [os.path.relpath(p.path, root) for p in self.parts]
        n_files, n_frames = len(self.parts), int(self._starts[-1])
        files = f"{n_files} {'images' if kind == 'image folder' else 'files'}"
        frames = f", {n_frames} frames" if n_frames != n_files else ""
        self.description = f"{kind} {path} ({files}{frames})"

    def __len__(self) -> int:
        return int(self._starts[-1])

    def read(self, i: int) -> np.ndarray:
        k, j = self._locate(i)
        part = self.parts[k]
        if self._current is not None and self._current is not part:
            self._current.close()  # keep at most one file (TIFF, video) open
        self._current = part
        return part.read(j)

    def name(self, i: int) -> str:
        k, j = self._locate(i)
        part = self.parts[k]
        name = part.name(j)
        if self._labels is None:
            return name
        return self._labels[k] + name[len(Path(part.path).name) :]

    def close(self) -> None:
        for part in self.parts:
            part.close()
        self._current = None

    def _locate(self, i: int) -> tuple[int, int]:
        """(part index, frame index within that part) of frame ``i``."""
        _check_index(i, len(self))
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return k, i - int(self._starts[k])


# --------------------------------------------------------------------------------------------
# Internals

_SUPPORTED = (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES)


def _open_file(path: Path) -> ImageFile | TiffStack | VideoFile:
    suffix = path.suffix.lower()
    if suffix in _TIFF_SUFFIXES:
        return TiffStack(path)
    if suffix in IMAGE_SUFFIXES:
        return ImageFile(path)
    if suffix in VIDEO_SUFFIXES:
        return VideoFile(path)
    raise DataError(
        f"unsupported file type {path.suffix or '(none)'} for {path}: give an image "
        f"({', '.join(IMAGE_SUFFIXES)}), a video ({', '.join(VIDEO_SUFFIXES)}) or a folder"
    )


def _natural_key_parts(folder: Path) -> tuple:
    return tuple(natural_key(Path(part)) for part in folder.parts)


def _check_index(i: int, n: int) -> None:
    if not 0 <= i < n:
        raise IndexError(f"frame {i} out of range for a source of {n} frame(s)")
