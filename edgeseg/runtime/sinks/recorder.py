"""One video file written with PyAV (FFmpeg), frames at the times they carry
(:class:`VideoWriter`), and what this FFmpeg can encode (:func:`pick_encoder`).

The video sink (:mod:`edgeseg.runtime.sinks.video`) decides what goes where (segments, the
ring, when a segment closes); this module only writes one container:

- every frame is given with its time in seconds (from the container's start); that time
  becomes its presentation timestamp, so a container holds a variable frame rate where frames
  were dropped and plays back in the time that passed;
- each frame lasts until the next one; the last one until the ``end`` given to
  :meth:`VideoWriter.close` (the muxer takes a packet's duration for it), so a segment's
  duration is the time it covers, not its frame count over a nominal rate;
- H.264 in ``.mp4`` (yuv420p, ``+faststart``: the index before the data, so a browser plays
  it as it downloads) and ``.mkv``; Motion JPEG in ``.avi`` (whose muxer has one frame rate:
  frames are put on a grid of the nominal rate, gaps filled by repeats).

Which H.264 encoder: libx264 where the FFmpeg has it (PyAV's PyPI wheels do), else
libopenh264 (BSD), else FFmpeg's own MPEG-4 part 2 (plays in VLC and FFmpeg players, not in
browsers). The bitrate is capped (x264's VBV) at :data:`MAX_BITS_PER_PIXEL` per pixel per
frame of the nominal rate, so a segment's size has a bound the sink can check a ring against.
"""

from __future__ import annotations

import contextlib
import functools
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import DataError
from edgeseg.optional import require

__all__ = [
    "CONTAINERS",
    "MAX_BITS_PER_PIXEL",
    "TIME_BASE",
    "VideoWriter",
    "bytes_bound",
    "count_packets",
    "pick_encoder",
]

#: Container suffix → (FFmpeg format, codec family).
CONTAINERS = {"mp4": ("mp4", "h264"), "mkv": ("matroska", "h264"), "avi": ("avi", "mjpeg")}
#: Timestamps in 1/90000 s, the MPEG clock: exact for 25, 30 and 30000/1001 fps alike.
TIME_BASE = Fraction(1, 90000)
#: The H.264 bitrate cap, bits per pixel per frame at the nominal rate (CRF 23 below it).
MAX_BITS_PER_PIXEL = 0.3
# Motion JPEG has no rate control: a generous bound per pixel per frame, for estimates only.
_MJPEG_BITS_PER_PIXEL = 3.0
_H264_ENCODERS = ("libx264", "libopenh264")


def _av() -> Any:
    return require("av")


@functools.cache
def pick_encoder(family: str) -> str:
    """The encoder this FFmpeg offers for ``family`` ("h264" or "mjpeg"): for H.264 the first
    of libx264, libopenh264, then FFmpeg's own ``mpeg4``. Raises DataError if none."""
    av = _av()
    names = (*_H264_ENCODERS, "mpeg4") if family == "h264" else ("mjpeg",)
    for name in names:
        with contextlib.suppress(Exception):
            av.codec.Codec(name, "w")
            return name
    raise DataError(f"this FFmpeg (PyAV {av.__version__}) has no {family} video encoder")


def bytes_bound(
    family: str, size: tuple[int, int], rate: float, seconds: float, encoder: str | None = None
) -> int:
    """About the most bytes ``seconds`` of video take: (width, height) frames at ``rate`` FPS
    through the capped H.264 encoder (one second of VBV buffer on top), or Motion JPEG's
    rough bound; container overhead included."""
    w, h = size
    if family == "h264" and (encoder or pick_encoder("h264")) in _H264_ENCODERS:
        bits = MAX_BITS_PER_PIXEL * w * h * rate * (seconds + 1.0)
    else:
        bits = _MJPEG_BITS_PER_PIXEL * w * h * rate * seconds
    return int(bits / 8 + 4096 + 32 * rate * seconds)


class VideoWriter:
    """One video file (``path``; the container from ``fmt``, a key of :data:`CONTAINERS`)
    of (width, height) ``size`` frames, ``rate`` the nominal frame rate (for the bitrate cap,
    the Motion JPEG grid and the players' hint; the timestamps are what counts).

    :meth:`write` takes uint8 (H, W, 3) RGB frames with their time in seconds from the
    file's start (increasing; a time not after the last is moved one tick after it).
    :meth:`close` ends the last frame at ``end`` and writes the index. Odd sizes are padded by
    one edge pixel (yuv420p needs even sides). Raises OSError for file-system failures and
    DataError for an encoder that will not open.
    """

    def __init__(self, path: str | Path, fmt: str, size: tuple[int, int], rate: float) -> None:
        av = _av()
        self.path = Path(path)
        self.fmt = fmt
        self.format, self.family = CONTAINERS[fmt]
        self.encoder = pick_encoder(self.family)
        self.size = size
        self.rate = float(rate) if rate and math.isfinite(rate) and rate > 0 else 25.0
        self.frames = 0
        self.muxed = 0  # packets handed to the muxer (the file exists once there is one)
        self.first: float | None = None
        self.last: float | None = None  # time of the newest frame, seconds
        self._last_pts = -1
        self._held: Any = None  # the newest packet, muxed once the next frame says its length
        w, h = size
        self._even = (w + w % 2, h + h % 2)
        grid = self.family == "mjpeg"  # AVI: one rate; frames on its grid
        self.time_base = Fraction(1, round(self.rate)) if grid else TIME_BASE
        options = {"movflags": "+faststart"} if self.format == "mp4" else {}
        try:
            self._container = av.open(str(self.path), mode="w", format=self.format, options=options)
        except av.FFmpegError as exc:
            raise _os_error(exc, self.path) from exc
        try:
            stream = self._container.add_stream(self.encoder, rate=round(self.rate) or 25)
            stream.width, stream.height = self._even
            stream.time_base = self.time_base
            stream.codec_context.time_base = self.time_base
            if self.family == "mjpeg":
                stream.pix_fmt = "yuvj420p"
                # a fixed quantizer (-q:v 3): global_quality is in lambda units (118 a step)
                stream.options = {"flags": "+qscale", "global_quality": str(3 * 118)}
            else:
                stream.pix_fmt = "yuv420p"
                cap = int(MAX_BITS_PER_PIXEL * self._even[0] * self._even[1] * self.rate)
                opts = {"maxrate": str(cap), "bufsize": str(cap)}
                if self.encoder == "libx264":
                    opts |= {"preset": "veryfast", "tune": "zerolatency", "crf": "23"}
                    opts["x264-params"] = f"keyint={max(1, round(2 * self.rate))}"
                elif self.encoder == "mpeg4":
                    opts = {"flags": "+qscale", "global_quality": str(4 * 118)}
                stream.options = opts
            stream.codec_context.open()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self._container.close()
            if isinstance(exc, av.FFmpegError):
                raise DataError(f"cannot open the {self.encoder} encoder: {exc}") from exc
            raise
        self._stream = stream

    def write(self, rgb: np.ndarray, t: float) -> None:
        """Encode one uint8 (H, W, 3) RGB frame shown from ``t`` seconds (raises OSError)."""
        av = _av()
        if rgb.shape[1::-1] != self._even:
            pad_w, pad_h = self._even[0] - rgb.shape[1], self._even[1] - rgb.shape[0]
            rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        pts = max(round(t / self.time_base), self._last_pts + 1)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = pts
        frame.time_base = self.time_base
        self._last_pts = pts
        try:
            self._mux(self._stream.encode(frame))
        except av.FFmpegError as exc:
            raise _os_error(exc, self.path) from exc
        self.frames += 1
        if self.first is None:
            self.first = t
        self.last = t

    def _mux(self, packets: list[Any]) -> None:
        for packet in packets:
            if self._held is not None:
                if packet.pts is not None and self._held.pts is not None:
                    self._held.duration = max(1, packet.pts - self._held.pts)
                self._container.mux(self._held)
                self.muxed += 1
            self._held = packet

    def close(self, end: float | None = None) -> None:
        """Flush the encoder, end the last frame at ``end`` seconds (default: one frame
        period after it) and finish the file (raises OSError)."""
        av = _av()
        try:
            self._mux(self._stream.encode(None))
            if self._held is not None:
                period = round(1 / (self.rate * self.time_base))
                stop = self._last_pts + period if end is None else round(end / self.time_base)
                if self._held.pts is not None:
                    self._held.duration = max(1, stop - self._held.pts)
                self._container.mux(self._held)
                self._held = None
            self._container.close()
        except av.FFmpegError as exc:
            raise _os_error(exc, self.path) from exc

    def abandon(self) -> None:
        """Close without caring whether the file is whole (it is to be deleted)."""
        with contextlib.suppress(Exception):
            self._container.close()


def count_packets(path: str | Path) -> tuple[int, float]:
    """(video packets, seconds) in a closed file, read back by demuxing (nothing decoded):
    what the sink checks a segment by before publishing it. (0, 0.0) if it does not open."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return 0, 0.0
            stream = container.streams.video[0]
            n = sum(1 for p in container.demux(stream) if p.size)
            seconds = float(stream.duration * stream.time_base) if stream.duration else 0.0
            return n, seconds
    except (av.FFmpegError, OSError):
        return 0, 0.0


def _os_error(exc: Exception, path: Path) -> OSError:
    """An FFmpeg error as the OSError the sinks' disk policy handles (errno kept)."""
    number = getattr(exc, "errno", None)
    return OSError(number or 5, getattr(exc, "strerror", None) or str(exc), str(path))
