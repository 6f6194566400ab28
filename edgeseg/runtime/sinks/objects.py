"""The objects sink: one CSV row per object per frame, measured on the raw frame
(:class:`ObjectSink`)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from edgeseg.core.labels import check_labels
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.objects import OBJECT_CSV_FIELDS, frame_objects
from edgeseg.errors import DataError
from edgeseg.runtime.sinks.base import Record, SinkBase, record_fields
from edgeseg.runtime.sinks.csv import CsvSink

__all__ = ["ObjectSink"]


class ObjectSink(SinkBase):
    """One CSV row per object per frame (:data:`OBJECT_CSV_FIELDS`): frame, name (the frame's
    file in a file source), id, class, area in pixels (and µm² with ``pixel_size_um``),
    centroid, bounding box (y0, x0, y1, x1, exclusive), mean and integrated intensity on the
    raw frame, and whether the object touches the frame's edge (:func:`frame_objects`).

    A :class:`FrameSink`: the pipeline gives it the raw frame. A :class:`CsvSink` writes the
    rows (each frame's in one write, straight to the file: complete up to the last frame after
    a kill; ``max_bytes`` rotates it the same way); a write that fails on disk stops it with a
    warning and never raises. The folder of ``path`` must exist (a typo fails at once).
    """

    wants_frame = True

    def __init__(
        self,
        path: str | Path,
        meta: ModelMetadata,
        *,
        pixel_size_um: float | None = None,
        max_bytes: int | str | None = None,
        file_bytes: int | str | None = None,
    ) -> None:
        path = Path(path)
        if pixel_size_um is not None and not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
            raise DataError(f"the pixel size must be a positive number of µm, got {pixel_size_um}")
        parent = path.parent
        if not parent.is_dir():
            what = "is not a folder" if parent.exists() else "does not exist"
            raise DataError(f"cannot write the objects CSV {path}: {parent} {what}")
        if not os.access(parent, os.W_OK):
            raise DataError(f"cannot write the objects CSV {path}: {parent} is not writable")
        self.meta = meta
        self.pixel_size_um = pixel_size_um
        # µm per pixel by frame name, from the source (DICOM Pixel Spacing); frames named
        # here use theirs instead of ``pixel_size_um`` (see FileStream.pixel_sizes).
        self.pixel_sizes: dict[str, float] = {}
        self.path = path
        self.csv = CsvSink(
            path, OBJECT_CSV_FIELDS, max_bytes=max_bytes, file_bytes=file_bytes, what="objects CSV"
        )

    @property
    def warnings(self) -> list[str]:
        return self.csv.warnings

    @property
    def stopped(self) -> str | None:  # type: ignore[override]
        return self.csv.stopped

    @property
    def rows(self) -> int:
        return self.csv.rows

    def write(
        self,
        index: int,
        rendered: np.ndarray,
        labels: np.ndarray,
        record: Record,
        *,
        frame: np.ndarray | None = None,
    ) -> None:
        self._check_open()
        if self.csv.stopped is not None:
            return
        labels = check_labels(labels, kind="any")
        fields = record_fields(record)
        name = fields.get("name")
        pixel = self.pixel_sizes.get(name, self.pixel_size_um) if name else self.pixel_size_um
        rows = frame_objects(labels, self.meta, frame, pixel)
        head = {"frame": fields.get("frame", index), "name": fields.get("name")}
        self.csv.write_rows([{**head, **row} for row in rows])

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.csv.close()
