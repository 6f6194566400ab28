"""`segment --dicom-seg`: one DICOM Segmentation per series of the DICOM inputs, from the
label images and stacks the run wrote (so the SEG holds exactly what `--out` holds)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.metadata import ModelMetadata
from edgeseg.errors import DataError
from edgeseg.optional import require
from edgeseg.paths import atomic_path

__all__ = ["write_segs"]

_UNSAFE = re.compile(r"[^\w.\-+]+")


def _labels(out: Path, item: Any, fmt: str) -> np.ndarray:
    """The run's label maps of ``item`` (N, H, W), in frame (slice) order."""
    if item.stack:
        return np.asarray(require("tifffile").imread(out / f"{item.stem}.tif")).reshape(
            len(item.frames), *_hw(out / f"{item.stem}.tif")
        )
    from edgeseg.imageio import read_image

    return read_image(out / f"{item.stem}.{fmt}")[None]


def _hw(path: Path) -> tuple[int, int]:
    with require("tifffile").TiffFile(path) as tif:
        shape = tif.pages[0].shape
    return int(shape[0]), int(shape[1])


def write_segs(options: Any, meta: ModelMetadata, items: Sequence[Any]) -> dict[str, list[str]]:
    """Write ``OUT/<stem>[_<series>].seg.dcm`` for every series of the DICOM ``items``; the
    paths written, by input path. Inputs whose label maps are missing (an input that failed)
    are left out."""
    from edgeseg.dicom import DicomFile, open_dicom
    from edgeseg.dicom.seg import segmentation

    pydicom = require("pydicom")
    out = Path(options.out)
    written: dict[str, list[str]] = {}
    for item in items:
        try:
            labels = _labels(out, item, options.mask_format)
        except (OSError, DataError, ValueError):
            continue  # its frames failed: reported with the input already
        written[item.path] = []
        source = open_dicom(item.path)
        if isinstance(source, DicomFile):
            groups = [(None, [Path(item.path)], slice(0, len(source)))]
        else:
            parts = getattr(source, "parts", [source])
            groups, start = [], 0
            for s in parts:
                groups.append((s.label, s.files, slice(start, start + len(s))))
                start += len(s)
        for label, files, frames in groups:
            datasets = [pydicom.dcmread(str(f)) for f in files]
            seg = segmentation(
                datasets,
                labels[frames],
                meta,
                instances=options.dicom_seg == "instances",
            )
            name = item.stem if label is None or len(groups) == 1 else f"{item.stem}_{label}"
            target = out / f"{_UNSAFE.sub('_', name)}.seg.dcm"
            try:
                with atomic_path(target) as tmp:
                    seg.save_as(str(tmp))
            except OSError as exc:
                raise DataError(f"cannot write {target}: {exc}") from exc
            written[item.path].append(str(target))
    return written
