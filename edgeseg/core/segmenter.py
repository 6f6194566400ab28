"""One Segmenter: frame as read → probabilities → label map → objects, given a backend.

Every path that turns a frame into a label map goes through this class: `edgeseg run` (and
`bench --e2e`, the demo), `eval`, the parity check of `convert`, training validation and
threshold tuning; calibration cuts its tiles with :func:`frame_tiles`, which the Segmenter
uses too. So what a report measures is what the device runs.

Steps, in order: prepare the frame (normalize the whole frame, reduce channels; integer frames
for an integer model go straight to its input dtype through a lookup table), cut it into
overlapping tiles (or resize it, for models without edgeseg metadata), run the backend
``batch_size`` tiles at a time, blend the tile outputs, then threshold / argmax, drop small
objects and count. Pure numpy (OpenCV for resizing and connected components).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edgeseg.core.backend import Backend
from edgeseg.core.instances import instances_from_probabilities, relabel_sequential
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.postprocess import (
    ObjectStats,
    labels_from_probabilities,
    object_stats,
    remove_small_objects,
)
from edgeseg.core.preprocess import prepare, prepare_quantized
from edgeseg.core.tiling import TileGrid, extract_tiles, plan_tiles, predict_tiles, stitch_tiles
from edgeseg.errors import ModelError
from edgeseg.optional import cv2

__all__ = [
    "DEFAULT_OVERLAP",
    "Segmentation",
    "Segmenter",
    "effective_overlap",
    "frame_tiles",
    "padded_to_multiple",
]

#: Pixels neighbouring output tiles share, unless told otherwise.
DEFAULT_OVERLAP = 32
#: Tiles per backend call: bounds the memory a large frame takes in a Keras model.
DEFAULT_BATCH = 8


def effective_overlap(meta: ModelMetadata, overlap: int = DEFAULT_OVERLAP) -> int:
    """``overlap``, reduced for small model outputs: it must stay below half an output tile."""
    return min(overlap, max(0, min(meta.output_size) // 2 - 1))


def plan_frame(
    shape: tuple[int, int], meta: ModelMetadata, overlap: int = DEFAULT_OVERLAP
) -> TileGrid:
    """The tile grid for a frame of ``shape`` (H, W) and this model."""
    return plan_tiles(
        shape, meta.input_size, overlap=effective_overlap(meta, overlap), border=meta.output_border
    )


def padded_to_multiple(shape: tuple[int, int], multiple: int) -> tuple[int, int]:
    """(H, W) rounded up to ``multiple``: the input a dynamic-size model gets for a frame."""
    h, w = shape
    return (-(-int(h) // multiple) * multiple, -(-int(w) // multiple) * multiple)


#: Frame sizes a Segmenter keeps a sized backend for (a dynamic-size model; OpenVINO compiles
#: one model per size).
_SIZED_KEPT = 8


def frame_tiles(
    prepared: np.ndarray, meta: ModelMetadata, overlap: int = DEFAULT_OVERLAP
) -> np.ndarray:
    """A prepared float32 (H, W, C) frame cut into the (T, th, tw, C) tiles the model sees."""
    return extract_tiles(prepared, plan_frame(prepared.shape[:2], meta, overlap))


@dataclass(frozen=True)
class Segmentation:
    """One frame through the model.

    Attributes:
        labels: (H, W) label map of the frame's size, 0 background: uint8 class labels of a
            semantic model, int32 object ids 1..N of an instance model.
        stats: the objects counted and measured on ``labels``.
        timings: milliseconds per stage: preprocess, inference, postprocess.
    """

    labels: np.ndarray
    stats: ObjectStats
    timings: dict[str, float]


class Segmenter:
    """Frame (as read, any size, bit depth and channel count) → labels, with timings.

    Frames of another size than the model input are cut into tiles with ``overlap`` and
    stitched; with ``resize`` (for models without edgeseg metadata) the frame is resized to
    the model input and the output back. A model whose metadata has ``size_multiple`` (dynamic
    H/W) runs each frame whole: padded up to that multiple (centred reflect padding, as a
    frame smaller than any model input is), through the backend's ``at_size`` for that input,
    and cropped back. ``min_area`` drops smaller objects.
    """

    def __init__(
        self,
        backend: Backend,
        meta: ModelMetadata,
        *,
        resize: bool = False,
        overlap: int = DEFAULT_OVERLAP,
        min_area: int = 0,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        self.backend = backend
        self.meta = meta
        self.resize = resize
        self.overlap = effective_overlap(meta, overlap)
        self.min_area = min_area
        self.batch_size = batch_size
        self._grids: dict[tuple[int, int], TileGrid] = {}
        self._sized: dict[tuple[int, int], tuple[Backend, ModelMetadata, TileGrid]] = {}

    def _at_size(self, shape: tuple[int, int]) -> tuple[Backend, ModelMetadata, TileGrid]:
        """(backend, metadata, one-tile grid) of a dynamic-size model for frames of ``shape``."""
        hit = self._sized.get(shape)
        if hit is None:
            multiple = self.meta.size_multiple or 1
            size = padded_to_multiple(shape, multiple)
            at_size = getattr(self.backend, "at_size", None)
            if at_size is None:
                raise ModelError(
                    f"{self.backend.runtime} runs one input size; {self.backend.path} takes "
                    "whole frames of any size (size_multiple): use onnxruntime or OpenVINO"
                )
            meta = self.meta.with_updates(input_size=size, frame_size=tuple(shape))
            hit = (at_size(size), meta, plan_tiles(shape, size, overlap=0, border=0))
            if len(self._sized) >= _SIZED_KEPT:
                self._sized.pop(next(iter(self._sized)))
            self._sized[shape] = hit
        return hit

    def _grid(self, shape: tuple[int, int]) -> TileGrid:
        grid = self._grids.get(shape)
        if grid is None:
            grid = plan_tiles(
                shape, self.meta.input_size, overlap=self.overlap, border=self.meta.output_border
            )
            self._grids[shape] = grid
        return grid

    def _input(self, frame: np.ndarray, prepared: bool) -> tuple[np.ndarray, bool]:
        """The frame in the model's input domain, and whether it is already quantized."""
        if prepared:
            return frame, False
        info = self.backend.input
        if info.quantized and not self.resize:
            q = prepare_quantized(frame, self.meta, info)
            if q is not None:
                return q, True
        return prepare(frame, self.meta), False

    def probabilities(self, frame: np.ndarray, *, prepared: bool = False) -> np.ndarray:
        """float32 (H, W, K) model output for a frame as read (or already ``prepared``)."""
        return self._run(frame, prepared)[0]

    def _run(self, frame: np.ndarray, prepared: bool) -> tuple[np.ndarray, float, float, float]:
        """Probabilities, and the seconds spent preparing, inferring and blending."""
        t0 = time.perf_counter()
        x, raw = self._input(frame, prepared)
        h, w = x.shape[:2]
        backend, meta = self.backend, self.meta
        if meta.size_multiple is not None and not self.resize:
            backend, meta, grid = self._at_size((h, w))
        predict = backend.predict_raw if raw else backend.predict
        if self.resize:
            cv = cv2()
            th, tw = self.meta.input_size
            tiles = cv.resize(x, (tw, th), interpolation=cv.INTER_AREA)
            tiles = tiles.reshape(1, th, tw, self.meta.channels)
        else:
            if meta is self.meta:
                grid = self._grid((h, w))
            # A frame the size of a whole-frame artefact's input is its one tile as it is:
            # no cut, no blend (the output is the map).
            whole = grid.n_tiles == 1 and grid.padded_shape == (h, w) and grid.border == 0
            tiles = (
                np.ascontiguousarray(x).reshape(1, h, w, -1) if whole else extract_tiles(x, grid)
            )
        t1 = time.perf_counter()
        out = predict_tiles(tiles, predict, meta.output_size, self.batch_size)
        t2 = time.perf_counter()
        if self.resize:
            cv = cv2()
            prob = cv.resize(out[0], (w, h), interpolation=cv.INTER_LINEAR).reshape(h, w, -1)
        elif whole:
            prob = out[0]
        else:
            prob = stitch_tiles(out, grid)
        return prob, t1 - t0, t2 - t1, time.perf_counter() - t2

    def labels(self, frame: np.ndarray, *, prepared: bool = False) -> np.ndarray:
        """(H, W) label map of a frame as read (or already ``prepared``): uint8 classes, or
        int32 object ids for an instance model."""
        return self._labels(self.probabilities(frame, prepared=prepared))

    def labels_from(self, prob: np.ndarray) -> np.ndarray:
        """The label map :meth:`labels` gives, from probabilities :meth:`probabilities` gave
        (for callers that keep both, e.g. a fractional DICOM SEG)."""
        return self._labels(prob)

    def _labels(self, prob: np.ndarray) -> np.ndarray:
        spec = self.meta.instance_spec
        if spec is not None:
            ids = instances_from_probabilities(prob, spec, self.meta.threshold)
            if self.min_area > spec.min_area:
                areas = np.bincount(ids.ravel())
                small = areas < self.min_area
                small[0] = False
                if small.any():
                    ids[small[ids]] = 0
                    ids = relabel_sequential(ids)
            return ids
        labels = labels_from_probabilities(prob, self.meta)
        if self.min_area > 0:
            labels = remove_small_objects(labels, self.min_area)
        return labels

    def __call__(self, frame: np.ndarray) -> Segmentation:
        """Labels, objects and per-stage timings of one frame as read."""
        prob, pre_s, infer_s, stitch_s = self._run(frame, False)
        t0 = time.perf_counter() - stitch_s
        labels = self._labels(prob)
        stats = object_stats(labels, self.meta)
        timings = {
            "preprocess": pre_s * 1000,
            "inference": infer_s * 1000,
            "postprocess": (time.perf_counter() - t0) * 1000,
        }
        return Segmentation(labels, stats, timings)
