"""Segment whole images of any size with a model of fixed input size, by overlapping tiles."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.postprocess import labels_from_probabilities
from edgeseg.core.preprocess import prepare
from edgeseg.core.tiling import segment_tiled

DEFAULT_OVERLAP = 32


def probabilities(
    image: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
    meta: ModelMetadata,
    *,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 8,
    prepared: bool = False,
) -> np.ndarray:
    """Image as read (or already prepared float32 (H, W, C)) → float32 (H, W, K) probabilities.

    ``predict`` maps float32 (n, th, tw, C) tiles to (n, oh, ow, K). Images larger than the
    model input are tiled with ``overlap`` and stitched; smaller ones are padded.
    """
    x = image if prepared else prepare(image, meta)
    overlap = min(overlap, max(0, min(meta.output_size) // 2 - 1))
    return segment_tiled(
        x,
        meta.input_size,
        predict,
        batch_size=batch_size,
        overlap=overlap,
        border=meta.output_border,
    )


def segment(
    image: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
    meta: ModelMetadata,
    **kwargs: object,
) -> np.ndarray:
    """Image → uint8 (H, W) label map (1 = foreground for a one-class model)."""
    return labels_from_probabilities(probabilities(image, predict, meta, **kwargs), meta)
