"""The objects of a frame as a table: one row per object, the same columns for ``run
--objects`` (a CSV written frame by frame) and ``segment`` (one table of an archive).

- :func:`frame_object_columns`: the objects of a label map as numpy columns (``class`` and
  :data:`~edgeseg.core.instances.OBJECT_FIELDS`), in id order; :func:`frame_objects` gives
  the same as rows (dicts of Python values, :func:`column_rows`).
- :func:`object_class_names`: the names a ``class`` code stands for.
- :data:`OBJECT_CSV_FIELDS`: the columns of an objects CSV; :func:`csv_value` writes one
  cell; :data:`NULLABLE`: the columns whose NaN means "not measured" (an empty cell).

numpy and OpenCV (connected components of a semantic map) only; the sinks and ``batch``
both build on this.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgeseg.core.instances import OBJECT_FIELDS, object_columns
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.postprocess import foreground_classes
from edgeseg.core.preprocess import drop_alpha
from edgeseg.optional import cv2

__all__ = [
    "NULLABLE",
    "OBJECT_CSV_FIELDS",
    "column_rows",
    "csv_value",
    "frame_object_columns",
    "frame_objects",
    "object_class_names",
]

#: The columns of the objects CSV: one row per object per frame.
OBJECT_CSV_FIELDS = ("frame", "name", "id", "class", *OBJECT_FIELDS[1:])
#: Columns whose NaN means "not measured": None in a row, an empty cell in a table.
NULLABLE = ("area_um2", "mean_intensity", "integrated_intensity")


def object_class_names(meta: ModelMetadata) -> tuple[str, ...]:
    """The names an object's ``class`` can take, in the order of their codes
    (:func:`frame_object_columns` with ``codes=True``)."""
    if meta.instances is not None:
        return (meta.class_names[0],)
    return tuple(name for _, name in foreground_classes(meta))


def frame_object_columns(
    labels: np.ndarray,
    meta: ModelMetadata,
    frame: np.ndarray | None = None,
    pixel_size_um: float | None = None,
    *,
    codes: bool = False,
) -> dict[str, np.ndarray]:
    """The objects of a frame as columns: ``class`` (str; with ``codes``, int16 indices into
    :func:`object_class_names`) and :data:`OBJECT_FIELDS`, one numpy array each, in id
    order; what :func:`frame_objects` gives as rows. Without a frame the intensities are NaN;
    without a pixel size ``area_um2`` is NaN (empty cells)."""
    labels = np.asarray(labels)
    image = None if frame is None else drop_alpha(np.asarray(frame))
    parts: list[tuple[int, dict[str, np.ndarray]]] = []  # (class code, columns)
    if meta.instances is not None:
        parts.append((0, object_columns(labels, image, pixel_size_um)))
    else:
        cv = cv2()
        classes = np.ascontiguousarray(labels)
        offset = 0
        for code, (c, _) in enumerate(foreground_classes(meta)):
            mask = (classes == c).view(np.uint8)
            if not cv.countNonZero(mask):
                continue
            n, components = cv.connectedComponents(mask, connectivity=8, ltype=cv.CV_32S)
            cols = object_columns(components, image, pixel_size_um)
            cols["id"] = cols["id"] + offset
            parts.append((code, cols))
            offset += n - 1
    if not parts:
        parts.append((0, object_columns(np.zeros((1, 1), np.int32))))
    class_codes = np.concatenate([np.full(len(c["id"]), code, np.int16) for code, c in parts])
    names = np.asarray(object_class_names(meta), object)
    out = {"class": class_codes if codes else names[class_codes]}
    for f in OBJECT_FIELDS:
        out[f] = np.concatenate([c[f] for _, c in parts])
    if image is None:
        out["mean_intensity"] = np.full(len(out["id"]), np.nan)
        out["integrated_intensity"] = np.full(len(out["id"]), np.nan)
    return out


def column_rows(columns: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Columns (equal-length arrays) → one dict per row of Python values; NaN in the
    :data:`NULLABLE` columns becomes None."""
    names = list(columns)
    values = []
    for name in names:
        col = np.asarray(columns[name]).tolist()
        if name in NULLABLE:
            col = [None if v != v else v for v in col]
        values.append(col)
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


def frame_objects(
    labels: np.ndarray,
    meta: ModelMetadata,
    frame: np.ndarray | None = None,
    pixel_size_um: float | None = None,
) -> list[dict[str, Any]]:
    """One dict per object of a frame (keys ``class`` and :data:`OBJECT_FIELDS`), in id order.

    An instance model's objects are its ids (class: its one class name); a semantic model's
    are the 8-connected components of each foreground class, numbered 1..N class after class
    (class: the class's name), as :func:`~edgeseg.core.postprocess.object_stats` counts them.
    Intensities are measured on ``frame`` as read (16-bit values stay 16-bit; alpha dropped;
    several channels: their mean); without a frame they are left empty.
    """
    return column_rows(frame_object_columns(labels, meta, frame, pixel_size_um))


def csv_value(value: Any) -> Any:
    """A CSV cell: empty for None and non-finite floats, floats to 4 decimals."""
    if value is None:
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return repr(round(value, 4)) if math.isfinite(value) else ""
    return value
