"""Touching objects as separate instances: training targets from instance labels, instances
from a model's output, and one row of measurements per object. numpy and OpenCV only.

An instance model is a plain U-Net with two sigmoid output channels (a per-pixel softmax
falls to the CPU on the Edge TPU, sigmoid heads do not):

- channel 0, ``foreground``: the object pixels;
- channel 1, ``interior``: the object pixels at least ``border`` pixels inside their own
  object's outline, so two touching objects have a gap of about ``2 * border`` pixels between
  their interiors (the separation the U-Net paper's weight map teaches, as a target of its own;
  Caicedo et al. 2019 show interior/boundary targets on BBBC039). Objects too small to keep
  an interior at that depth keep their innermost pixels (those at least half their own
  maximum depth inside).

Instances come back by seeding: each connected interior region is an object; the seeds grow,
label by label, through the foreground (a few pixels at a time, as far as ``border`` and a
little more took off), and foreground left unclaimed (an object whose interior the model
missed) becomes objects of its own. Seams of a tiled frame do not matter: instances are
recovered from the stitched probabilities of the whole frame.

Label maps of instances are int32 (H, W) with 0 for background and ids 1..N in raster order
of each object's first pixel; written to files as uint16 (ids up to 65535).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeseg.core.labels import check_labels
from edgeseg.errors import DataError
from edgeseg.optional import cv2

__all__ = [
    "DECIMALS",
    "INSTANCE_CHANNELS",
    "OBJECT_FIELDS",
    "InstanceSpec",
    "ObjectRow",
    "columns_from_sums",
    "instance_targets",
    "instances_from_probabilities",
    "measure_objects",
    "object_columns",
    "relabel_sequential",
    "round_column",
]

INSTANCE_CHANNELS = ("foreground", "interior")
METHOD = "interior-seeds"


@dataclass(frozen=True)
class InstanceSpec:
    """How a model's output becomes instances (stored in the metadata as ``instances``).

    Attributes:
        method: "interior-seeds" (the only one so far).
        border: depth in pixels of the border taken off each object for its interior target.
        interior_threshold: interior probability above which a pixel seeds an object.
        min_area: objects (and seeds) smaller than this, in pixels, are dropped.
    """

    method: str = METHOD
    border: int = 2
    interior_threshold: float = 0.5
    min_area: int = 8

    def __post_init__(self) -> None:
        problems = []
        if self.method != METHOD:
            problems.append(f"instances.method must be {METHOD!r}, got {self.method!r}")
        if not 1 <= self.border <= 16:
            problems.append(f"instances.border must be 1..16, got {self.border}")
        if not 0.0 < self.interior_threshold < 1.0:
            problems.append("instances.interior_threshold must be in (0, 1)")
        if self.min_area < 0:
            problems.append("instances.min_area must be >= 0")
        if problems:
            raise DataError("invalid instance settings: " + "; ".join(problems))

    @property
    def channels(self) -> tuple[str, ...]:
        return INSTANCE_CHANNELS

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "border": self.border,
            "interior_threshold": self.interior_threshold,
            "min_area": self.min_area,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceSpec:
        if not isinstance(data, dict):
            raise DataError("invalid instance settings: expected an object")
        unknown = sorted(set(data) - {"method", "border", "interior_threshold", "min_area"})
        if unknown:
            raise DataError(f"invalid instance settings: unknown field(s) {', '.join(unknown)}")
        try:
            return cls(
                method=str(data.get("method", METHOD)),
                border=int(data.get("border", 2)),
                interior_threshold=float(data.get("interior_threshold", 0.5)),
                min_area=int(data.get("min_area", 8)),
            )
        except (TypeError, ValueError) as exc:
            raise DataError(f"invalid instance settings: {exc}") from exc


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """int32 copy with ids 1..N in raster order of each object's first pixel (0 stays 0)."""
    labels = check_labels(labels, kind="ids", what="instance labels")
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    keep = ids != 0
    ids, first = ids[keep], first[keep]
    order = ids[np.argsort(first, kind="stable")]
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int32)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return lut[labels]


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """bool (H, W): object pixels with a 4-neighbour of another id (background included)."""
    pad = np.pad(labels, 1, mode="edge")
    centre = pad[1:-1, 1:-1]
    edge = np.zeros(labels.shape, dtype=bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= pad[dy : dy + labels.shape[0], dx : dx + labels.shape[1]] != centre
    return edge & (labels > 0)


def instance_targets(labels: np.ndarray, border: int = 2) -> np.ndarray:
    """Instance ids (H, W), 0 background → float32 (H, W, 2) targets: foreground, interior.

    Raises:
        DataError: for labels that are not a 2-D integer image.
    """
    labels = check_labels(labels, kind="ids", what="instance labels")
    fg = labels > 0
    out = np.zeros((*labels.shape, 2), dtype=np.float32)
    out[..., 0] = fg
    if not fg.any():
        return out
    inside = (fg & ~_boundaries(labels)).astype(np.uint8)
    # Distance to the nearest pixel outside the object's own interior (its outline or beyond).
    depth = cv2().distanceTransform(inside, cv2().DIST_L2, 3)
    ids = labels.ravel()
    deepest = np.zeros(int(ids.max()) + 1, dtype=np.float32)
    np.maximum.at(deepest, ids, depth.ravel())
    # Deep enough objects lose `border` pixels; shallow ones keep their innermost half.
    need = np.minimum(np.float32(border), deepest * np.float32(0.5))[labels]
    out[..., 1] = fg & (depth > 0) & (depth >= need)
    return out


def _grow(seeds: np.ndarray, mask: np.ndarray, steps: int) -> np.ndarray:
    """Grow int32 seed ids into ``mask`` one 3x3 step at a time (ties: the larger id)."""
    lab = seeds.astype(np.float32)  # ids are exact in float32 up to 2**24
    kernel = np.ones((3, 3), np.uint8)
    cv = cv2()
    for _ in range(steps):
        free = mask & (lab == 0)
        if not free.any():
            break
        grown = cv.dilate(lab, kernel)
        take = free & (grown > 0)
        if not take.any():
            break
        lab[take] = grown[take]
    return lab.astype(np.int32)


def instances_from_probabilities(
    prob: np.ndarray, spec: InstanceSpec, threshold: float = 0.5
) -> np.ndarray:
    """float (H, W, 2) foreground and interior probabilities → int32 (H, W) instance ids.

    ``threshold`` is the foreground threshold (the metadata's). Objects under
    ``spec.min_area`` pixels are dropped; ids are 1..N in raster order.
    """
    prob = np.asarray(prob)
    if prob.ndim != 3 or prob.shape[2] != 2:
        raise DataError(f"instance probabilities must be (H, W, 2), got shape {prob.shape}")
    cv = cv2()
    fg = prob[..., 0] > threshold
    seeds_mask = (prob[..., 1] > spec.interior_threshold) & fg
    n, seeds = cv.connectedComponents(seeds_mask.astype(np.uint8), connectivity=4)
    if n > 1 and spec.min_area > 1:
        # Specks of interior are noise, not objects: a seed needs a fraction of min_area.
        areas = np.bincount(seeds.ravel(), minlength=n)
        small = areas < max(1, spec.min_area // 4)
        small[0] = False
        seeds[small[seeds]] = 0
    lab = _grow(seeds.astype(np.int32), fg, steps=spec.border + 2)
    # Foreground no seed reached: objects whose interior was missed.
    rest = (fg & (lab == 0)).astype(np.uint8)
    if rest.any():
        m, extra = cv.connectedComponents(rest, connectivity=8)
        if m > 1:
            offset = int(lab.max()) + 1
            lab = np.where(extra > 0, extra.astype(np.int32) + offset, lab)
    if spec.min_area > 1 and lab.any():
        areas = np.bincount(lab.ravel())
        small = areas < spec.min_area
        small[0] = False
        lab[small[lab]] = 0
    return relabel_sequential(lab)


@dataclass(frozen=True)
class ObjectRow:
    """One object of one frame, measured on the raw frame (16-bit values stay 16-bit).

    Intensities of a multi-channel frame are the mean over its channels (documented choice:
    one number per object, comparable between gray and colour frames).
    """

    id: int
    area_px: int
    area_um2: float | None
    centroid_y: float
    centroid_x: float
    bbox: tuple[int, int, int, int]  # y0, x0, y1, x1 (exclusive)
    mean_intensity: float
    integrated_intensity: float
    touches_border: bool

    def to_dict(self) -> dict[str, Any]:
        y0, x0, y1, x1 = self.bbox
        return {
            "id": self.id,
            "area_px": self.area_px,
            "area_um2": None if self.area_um2 is None else _rounded(self.area_um2, "area_um2"),
            "centroid_y": _rounded(self.centroid_y, "centroid_y"),
            "centroid_x": _rounded(self.centroid_x, "centroid_x"),
            "bbox_y0": y0,
            "bbox_x0": x0,
            "bbox_y1": y1,
            "bbox_x1": x1,
            "mean_intensity": _rounded(self.mean_intensity, "mean_intensity"),
            "integrated_intensity": _rounded(self.integrated_intensity, "integrated_intensity"),
            "touches_border": self.touches_border,
        }


#: Decimals the measurements are rounded to in tables (numpy's rounding, row and column alike).
DECIMALS = {
    "area_um2": 4,
    "centroid_y": 3,
    "centroid_x": 3,
    "mean_intensity": 4,
    "integrated_intensity": 4,
}


def _rounded(value: float, field: str) -> float:
    return float(np.round(np.float64(value), DECIMALS[field]))


OBJECT_FIELDS = (
    "id",
    "area_px",
    "area_um2",
    "centroid_y",
    "centroid_x",
    "bbox_y0",
    "bbox_x0",
    "bbox_y1",
    "bbox_x1",
    "mean_intensity",
    "integrated_intensity",
    "touches_border",
)


def _object_sums(labels: np.ndarray, frame: np.ndarray | None) -> tuple[np.ndarray, ...] | None:
    """(ids, area, sum of y, sum of x, y0, x0, y1, x1 (inclusive), sum of intensity) of the
    objects present, in id order, each a numpy array; None when there is no object."""
    h, w = labels.shape
    flat = labels.ravel()
    fg = np.flatnonzero(flat)  # only object pixels are measured: most of a frame is background
    if fg.size == 0:
        return None
    ids = flat[fg].astype(np.intp)
    n = int(ids.max()) + 1
    ys, xs = np.divmod(fg, w)
    area = np.bincount(ids, minlength=n)
    cy = np.bincount(ids, weights=ys, minlength=n)
    cx = np.bincount(ids, weights=xs, minlength=n)
    if frame is not None:
        frame = np.asarray(frame)
        if frame.shape[:2] != labels.shape:
            raise DataError(f"frame {frame.shape[:2]} and label map {labels.shape} differ in size")
        values = frame.reshape(h * w, -1)[fg].astype(np.float64)
        total = np.bincount(ids, weights=values.mean(axis=1), minlength=n)
    else:
        total = np.zeros(n)
    big = np.iinfo(np.int64).max
    y0 = np.full(n, big, np.int64)
    x0 = np.full(n, big, np.int64)
    y1 = np.full(n, -1, np.int64)
    x1 = np.full(n, -1, np.int64)
    np.minimum.at(y0, ids, ys)
    np.minimum.at(x0, ids, xs)
    np.maximum.at(y1, ids, ys)
    np.maximum.at(x1, ids, xs)
    present = np.flatnonzero(area[1:]) + 1
    return (present, *(a[present] for a in (area, cy, cx, y0, x0, y1, x1, total)))


def measure_objects(
    labels: np.ndarray, frame: np.ndarray | None = None, pixel_size_um: float | None = None
) -> list[ObjectRow]:
    """One row per object of an instance (or semantic-component) label map, in id order.

    ``frame``: the raw frame the labels were made from, (H, W) or (H, W, C) of any dtype;
    None gives intensities of 0. ``pixel_size_um`` adds the area in µm². Tables of many
    objects: :func:`object_columns` measures the same without a Python object per row.
    """
    labels = check_labels(labels, kind="ids", what="label map")
    h, w = labels.shape
    sums = _object_sums(labels, frame)
    if sums is None:
        return []
    rows = []
    for i, a, cy, cx, y0, x0, y1, x1, total in zip(*(s.tolist() for s in sums), strict=True):
        rows.append(
            ObjectRow(
                id=i,
                area_px=a,
                area_um2=None if pixel_size_um is None else a * pixel_size_um**2,
                centroid_y=cy / a,
                centroid_x=cx / a,
                bbox=(y0, x0, y1 + 1, x1 + 1),
                mean_intensity=total / a,
                integrated_intensity=float(total),
                touches_border=bool(y0 == 0 or x0 == 0 or y1 == h - 1 or x1 == w - 1),
            )
        )
    return rows


def object_columns(
    labels: np.ndarray, frame: np.ndarray | None = None, pixel_size_um: float | None = None
) -> dict[str, np.ndarray]:
    """:func:`measure_objects` as columns: one numpy array per name of
    :data:`OBJECT_FIELDS`, one entry per object in id order, rounded as
    :meth:`ObjectRow.to_dict` rounds. Without ``pixel_size_um``, ``area_um2`` is NaN (a
    table's empty cell)."""
    labels = check_labels(labels, kind="ids", what="label map")
    h, w = labels.shape
    sums = _object_sums(labels, frame)
    return columns_from_sums(sums, (h, w), pixel_size_um)


def columns_from_sums(
    sums: tuple[np.ndarray, ...] | None,
    shape: tuple[int, int],
    pixel_size_um: float | None = None,
) -> dict[str, np.ndarray]:
    """The :data:`OBJECT_FIELDS` columns from per-object sums (ids, area, sum of y, sum of x,
    y0, x0, y1, x1 inclusive, sum of intensity), as :func:`object_columns` gives them."""
    if sums is None:
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
        ints = ("id", "area_px", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")
        cols = {f: empty_i if f in ints else empty_f for f in OBJECT_FIELDS}
        cols["touches_border"] = np.zeros(0, bool)
        return cols
    h, w = shape
    ids, area, cy, cx, y0, x0, y1, x1, total = sums
    a = area.astype(np.float64)
    um2 = np.full(len(a), np.nan) if pixel_size_um is None else a * pixel_size_um**2
    return {
        "id": ids.astype(np.int64),
        "area_px": area.astype(np.int64),
        "area_um2": round_column(um2, "area_um2"),
        "centroid_y": round_column(cy / a, "centroid_y"),
        "centroid_x": round_column(cx / a, "centroid_x"),
        "bbox_y0": y0.astype(np.int64),
        "bbox_x0": x0.astype(np.int64),
        "bbox_y1": y1.astype(np.int64) + 1,
        "bbox_x1": x1.astype(np.int64) + 1,
        "mean_intensity": round_column(total / a, "mean_intensity"),
        "integrated_intensity": round_column(total.astype(np.float64), "integrated_intensity"),
        "touches_border": (y0 == 0) | (x0 == 0) | (y1 == h - 1) | (x1 == w - 1),
    }


def round_column(values: np.ndarray, field: str) -> np.ndarray:
    """``values`` of an :data:`OBJECT_FIELDS` field rounded as tables show it."""
    return np.round(np.asarray(values, np.float64), DECIMALS[field])
