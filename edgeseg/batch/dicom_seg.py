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

__all__ = ["prob_path", "series_volumes", "write_segs"]

_UNSAFE = re.compile(r"[^\w.\-+]+")


def prob_path(out: Path, identity: str, page: int) -> Path:
    """Where a worker keeps frame ``page``'s probabilities (uint8 (H, W, S), ``.npy``) of the
    input ``identity`` for a fractional DICOM SEG."""
    import hashlib

    from edgeseg.batch.store import WORK

    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return Path(out) / WORK / "prob" / key / f"{page:06d}.npy"


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
        fractional = None
        if getattr(options, "dicom_seg_type", "binary") == "fractional":
            try:
                fractional = np.stack(
                    [np.load(prob_path(out, item.identity, fr.page)) for fr in item.frames]
                )
            except OSError as exc:
                raise DataError(f"{item.path}: probabilities missing for its SEG: {exc}") from exc
        for label, files, frames in groups:
            datasets = [pydicom.dcmread(str(f)) for f in files]
            seg = segmentation(
                datasets,
                labels[frames],
                meta,
                instances=options.dicom_seg == "instances",
                fractional=None if fractional is None else fractional[frames],
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


def series_volumes(options: Any, meta: ModelMetadata, item: Any) -> dict[str, float]:
    """Volume in mm³ of each foreground class of each series of a DICOM input, from the
    run's label maps: pixels × Pixel Spacing (row × column) × the slice spacing (the median
    distance between slice positions; Slice Thickness for one slice); ``{"CT-series3
    foreground": 1234.5}``. Series without spacing or slice distance are left out."""
    from edgeseg.core.postprocess import foreground_classes
    from edgeseg.dicom import DicomFile, open_dicom

    labels = _labels(Path(options.out), item, options.mask_format)
    source = open_dicom(item.path)
    if meta.instances is not None:
        classes = [(None, meta.class_names[0])]
    else:
        classes = list(foreground_classes(meta))
    parts = [source] if isinstance(source, DicomFile) else getattr(source, "parts", [source])
    out: dict[str, float] = {}
    start = 0
    for part in parts:
        n = len(part)
        geo = [part.frame_geometry(i) for i in range(n)]
        maps = labels[start : start + n]
        start += n
        positions = [g.position_mm for g in geo]
        if n > 1 and all(p is not None for p in positions):
            dz = float(np.median(np.abs(np.diff(np.asarray(positions, float)))))
        else:
            dz = geo[0].thickness_mm or 0.0
        if dz <= 0 or any(g.spacing_mm is None for g in geo):
            continue
        name = getattr(part, "label", None) or Path(item.path).name
        for c, cname in classes:
            total = 0.0
            for k, g in enumerate(geo):
                count = int(np.count_nonzero(maps[k] > 0 if c is None else maps[k] == c))
                total += count * g.spacing_mm[0] * g.spacing_mm[1] * dz  # type: ignore[index]
            out[f"{name} {cname}"] = round(total, 3)
    return out
