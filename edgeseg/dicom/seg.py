"""DICOM Segmentation objects (highdicom) from label maps, and back.

:func:`segmentation` builds one SEG for one series: its frames reference the source images
(SOP Instance UIDs, Frame of Reference, positions), so a viewer (3D Slicer, OHIF) draws the
masks over the series. Segments: one per foreground class of a semantic model (class names as
segment labels), or, for an instance model with ``instances``, one per object (objects are
2-D, per slice; numbered slice after slice). Binary segmentation only: ``segment`` keeps
label maps, not probabilities, so a fractional SEG would hold 0 and 1 alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.postprocess import foreground_classes
from edgeseg.errors import DataError
from edgeseg.optional import require

__all__ = ["FRACTION_MAX", "fractions", "read_segmentation", "segmentation"]

#: Fractional SEGs store probabilities as 0..FRACTION_MAX (uint8).
FRACTION_MAX = 255


def fractions(prob: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """A frame's probabilities (H, W, K) → uint8 (H, W, S), 0..255: one plane per segment of a
    fractional SEG (the foreground probability of an instance or one-class model; each
    foreground class's of a K-class one)."""
    prob = np.asarray(prob, np.float32)
    if meta.instances is not None or meta.num_classes == 1:
        planes = prob[..., :1]
    else:
        planes = prob[..., [c for c, _ in foreground_classes(meta)]]
    return np.clip(np.rint(planes * FRACTION_MAX), 0, FRACTION_MAX).astype(np.uint8)


def _description(hd: Any, number: int, label: str, version: str) -> Any:
    codes = require("pydicom.sr.codedict").codes
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label[:64],
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="edgeseg",
            version=version,
            family=codes.cid7162.ArtificialIntelligence,
        ),
    )


def segmentation(
    sources: Sequence[Any],
    labels: np.ndarray,
    meta: ModelMetadata,
    *,
    instances: bool = False,
    series_number: int = 900,
    fractional: np.ndarray | None = None,
) -> Any:
    """A highdicom ``Segmentation`` of ``labels`` (N, H, W: one label map per source image, in
    the order of ``sources``, pydicom datasets of one series).

    ``fractional`` (N, H, W, S) uint8 from :func:`fractions`: a FRACTIONAL (probability) SEG
    of those planes instead of a binary one of the labels, one segment per plane.

    Raises:
        DataError: labels that do not fit the sources, sources highdicom cannot reference.
    """
    hd = require("highdicom")
    from edgeseg import __version__ as version

    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.shape[0] != len(sources):
        raise DataError(f"{labels.shape} label maps for {len(sources)} source images")
    if fractional is not None:
        fractional = np.asarray(fractional)
        if fractional.ndim != 4 or fractional.shape[:3] != labels.shape:
            raise DataError(f"fractions {fractional.shape} do not fit labels {labels.shape}")
        if meta.instances is not None or meta.num_classes == 1:
            names = [meta.class_names[0]]
        else:
            names = [name for _, name in foreground_classes(meta)]
        descriptions = [_description(hd, i + 1, n, version) for i, n in enumerate(names)]
        return _segmentation(
            hd,
            sources,
            fractional.astype(np.float32) / FRACTION_MAX,
            descriptions,
            series_number,
            version,
            "edgeseg segmentation (probabilities)",
            segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
            fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
            max_fractional_value=FRACTION_MAX,
        )
    if meta.instances is not None and instances:
        seg_map = np.zeros(labels.shape, np.uint16)
        descriptions = []
        for k in range(labels.shape[0]):
            for obj in np.unique(labels[k]):
                if obj == 0:
                    continue
                number = len(descriptions) + 1
                seg_map[k][labels[k] == obj] = number
                descriptions.append(
                    _description(hd, number, f"{meta.class_names[0]} {number}", version)
                )
        if len(descriptions) > 0xFFFF:
            raise DataError(f"{len(descriptions)} objects: a SEG holds at most 65535 segments")
    elif meta.instances is not None:
        seg_map = (labels > 0).astype(np.uint8)
        descriptions = [_description(hd, 1, meta.class_names[0], version)]
    else:
        seg_map = np.zeros(labels.shape, np.uint8)
        descriptions = []
        for number, (c, name) in enumerate(foreground_classes(meta), start=1):
            seg_map[labels == c] = number
            descriptions.append(_description(hd, number, name, version))
    if not descriptions:
        descriptions = [_description(hd, 1, meta.class_names[-1], version)]
    return _segmentation(
        hd,
        sources,
        seg_map,
        descriptions,
        series_number,
        version,
        "edgeseg segmentation",
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
    )


def _segmentation(
    hd: Any,
    sources: Sequence[Any],
    pixel_array: np.ndarray,
    descriptions: list[Any],
    series_number: int,
    version: str,
    series_description: str,
    **kind: Any,
) -> Any:
    """The one highdicom ``Segmentation`` call: what a binary and a fractional SEG share, with
    ``kind`` (the segmentation type and, for fractions, their type and maximum) added."""
    try:
        return hd.seg.Segmentation(
            source_images=list(sources),
            pixel_array=pixel_array,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="edgeseg",
            manufacturer_model_name="edgeseg segment",
            software_versions=version,
            device_serial_number="0",
            series_description=series_description,
            omit_empty_frames=False,
            **kind,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise DataError(f"cannot build a DICOM SEG: {type(exc).__name__}: {exc}") from exc


def read_segmentation(path: Any, source_uids: Sequence[str]) -> np.ndarray:
    """A SEG file's segments, one per source image in ``source_uids`` order: a binary SEG as
    label maps (N, H, W) uint16 (segment numbers, 0 none); a fractional one as float32
    (N, H, W, S) fractions in 0..1."""
    hd = require("highdicom")
    seg = hd.seg.segread(str(path))
    if seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL:
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(source_uids), combine_segments=False
        )
        return np.asarray(pixels, dtype=np.float32)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(source_uids),
        combine_segments=True,
        skip_overlap_checks=True,
    )
    return np.asarray(pixels).astype(np.uint16)
