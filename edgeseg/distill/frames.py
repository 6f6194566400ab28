"""The unlabelled frames a student learns from, and what the teacher says about them.

Frames are read from a folder, a video, a TIFF stack, a glob or ``synthetic://`` (the sources
calibration takes), evenly subsampled to at most ``max_frames``, checked against the teacher's
channel count, and prepared exactly as the runtime prepares them
(:func:`~edgeseg.core.preprocess.prepare`). The teacher (a float Keras model) segments every
frame whole through the one :class:`~edgeseg.core.segmenter.Segmenter`, tiled as at run time;
its probabilities (float16 to halve the memory) are the soft targets, and its label maps on
the frames held back are what the student's agreement is measured against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeseg.core.backend import CallableBackend
from edgeseg.core.instances import instances_from_probabilities
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.postprocess import labels_from_probabilities
from edgeseg.core.preprocess import drop_alpha, gray_if_equal, prepare
from edgeseg.core.segmenter import Segmenter
from edgeseg.errors import DataError

__all__ = [
    "LIVE_SCHEMES",
    "MIN_FRAMES",
    "CapturedFrames",
    "TeacherData",
    "frame_channels",
    "labels_of",
    "open_frames",
    "teacher_data",
]

#: Sources read live (a camera, a network stream, a GStreamer pipeline): ``max_frames``
#: frames are captured first, then used as a folder would be.
LIVE_SCHEMES = ("camera", "v4l2", "csi", "gst", "rtsp", "http", "https")

#: Frames needed: at least three to learn from and one held back to stop on.
MIN_FRAMES = 4


@dataclass(frozen=True)
class TeacherData:
    """Prepared frames and the teacher's outputs, split into training and held-back frames.

    ``train_x``/``held_x``: float32 (H, W, C) frames; ``train_y``: float16 (H, W, K) teacher
    probabilities; ``held_labels``: the teacher's (H, W) label maps (classes, or instance ids)
    of the held-back frames; ``frame_size``: (H, W) of the first frame.
    """

    train_x: tuple[np.ndarray, ...]
    train_y: tuple[np.ndarray, ...]
    held_x: tuple[np.ndarray, ...]
    held_labels: tuple[np.ndarray, ...]
    frame_size: tuple[int, int]
    source: str
    frames_total: int

    @property
    def n_frames(self) -> int:
        return len(self.train_x) + len(self.held_x)


class CapturedFrames:
    """Frames captured from a live stream, as a FrameSource (``read(i)``, ``name(i)``)."""

    def __init__(self, frames: list[np.ndarray], uri: str) -> None:
        self.frames = frames
        self.path = uri
        self.description = f"{len(frames)} frames captured from {uri}"

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, i: int) -> np.ndarray:
        return self.frames[i]

    def name(self, i: int) -> str:
        return f"{self.path}#frame{i}"

    def close(self) -> None:
        return None


def capture(stream: Any, uri: str, n: int) -> CapturedFrames:
    """Up to ``n`` frames read from an open ``stream`` (until it ends), then closed."""
    frames: list[np.ndarray] = []
    try:
        while len(frames) < n:
            frame = stream.read()
            if frame is None:
                break
            frames.append(np.array(frame, copy=True))
    finally:
        stream.close()
    return CapturedFrames(frames, uri)


def open_frames(source: str, max_frames: int) -> Any:
    """A FrameSource for ``--frames``: a live URI (:data:`LIVE_SCHEMES`) captured first, else
    a folder, glob, video, stack or ``synthetic://`` as calibration reads them."""
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme in LIVE_SCHEMES:
        from edgeseg.runtime.streams import open_stream

        return capture(open_stream(source), source, max_frames)
    from edgeseg.convert.calibration import open_calibration_source

    return open_calibration_source(source)


def frame_channels(frame: np.ndarray) -> int:
    """1 for a gray frame (or RGB with equal channels, as videos decode gray), else 3."""
    x = gray_if_equal(drop_alpha(frame)) if frame.ndim == 3 else frame
    return 1 if x.ndim == 2 or x.shape[2] == 1 else int(x.shape[2])


def labels_of(prob: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """(H, W) label map of (H, W, K) probabilities: classes, or instance ids."""
    spec = meta.instance_spec
    if spec is not None:
        return instances_from_probabilities(np.asarray(prob, np.float32), spec, meta.threshold)
    return labels_from_probabilities(np.asarray(prob, np.float32), meta)


def teacher_data(
    src: Any,
    predict: Callable[[np.ndarray], np.ndarray],
    meta: ModelMetadata,
    *,
    max_frames: int,
    holdout: float,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> TeacherData:
    """Read ``src`` (a FrameSource), check it, and label every frame with the teacher.

    Raises:
        DataError: too few frames (saying how many are needed), frames of another channel
            count than the teacher's input, frames that cannot be decoded.
    """
    total = len(src)
    if total < MIN_FRAMES:
        raise DataError(
            f"{src.description}: {total} frame(s); distill needs at least {MIN_FRAMES} "
            f"({MIN_FRAMES - 1} to learn from and 1 held back to stop on), and learns better "
            "from 30 or more"
        )
    picks = np.unique(np.linspace(0, total - 1, min(max_frames, total)).round().astype(int))
    segmenter = Segmenter(CallableBackend(predict, meta), meta)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    size: tuple[int, int] | None = None
    for n, i in enumerate(picks):
        frame = src.read(int(i))
        c = frame_channels(frame)
        if c != meta.channels:
            raise DataError(
                f"frame {src.name(int(i))} has {c} channel(s) ({'gray' if c == 1 else 'color'}); "
                f"the teacher takes {meta.channels}: give frames like the ones it was trained on"
            )
        x = prepare(frame, meta)
        size = size or (int(x.shape[0]), int(x.shape[1]))
        xs.append(x)
        ys.append(segmenter.probabilities(x, prepared=True).astype(np.float16))
        if progress:
            progress(n + 1, len(picks))
    order = np.random.default_rng(seed).permutation(len(xs))
    n_held = max(1, round(holdout * len(xs)))
    held, train = order[:n_held], order[n_held:]
    assert size is not None
    return TeacherData(
        train_x=tuple(xs[i] for i in train),
        train_y=tuple(ys[i] for i in train),
        held_x=tuple(xs[i] for i in held),
        held_labels=tuple(labels_of(ys[i], meta) for i in held),
        frame_size=size,
        source=src.description,
        frames_total=total,
    )
