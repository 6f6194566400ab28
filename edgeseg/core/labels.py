"""The one check of a label map, for every module that takes one.

A label map is (H, W), one value per pixel, in one of two kinds:

- **classes**: class indices 0..K-1 (0 background), uint8; bool masks and integer maps whose
  values fit 0..255 are converted (the Segmenter of a semantic model gives these);
- **ids**: object ids (0 background, any non-negative integer; an instance model's
  Segmenter gives int32); a bool mask is refused (its objects have no ids yet).

:func:`check_labels` with ``kind="any"`` takes either as it is (a uint8 map is classes,
another integer map ids), which is what a sink that serves both kinds of model wants.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from edgeseg.errors import DataError

__all__ = ["LabelKind", "check_labels"]

LabelKind = Literal["classes", "ids", "any"]


def check_labels(
    labels: np.ndarray, *, kind: LabelKind = "any", what: str = "labels"
) -> np.ndarray:
    """``labels`` as a checked (H, W) map of ``kind`` (see the module docstring).

    Returns: ``classes``: a contiguous uint8 array; ``ids``: the integer array as it is;
    ``any``: uint8 (a bool map viewed as uint8) or the integer array as it is.

    Raises:
        DataError: one line naming ``what``: not 2-D, not integer (bool for ``ids``),
            negative ids, or classes outside 0..255.
    """
    labels = np.asarray(labels)
    if labels.dtype == bool and kind != "ids":  # a mask is not a map of objects
        labels = labels.view(np.uint8)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        wanted = {
            "classes": "a uint8 (H, W) class map",
            "ids": "an integer (H, W) image with one id per object",
            "any": "a uint8 (H, W) class map or an integer (H, W) map of object ids",
        }[kind]
        raise DataError(f"{what} must be {wanted}, got {labels.dtype} of shape {labels.shape}")
    if kind == "classes":
        if labels.dtype != np.uint8:
            if labels.size and (labels.min() < 0 or labels.max() > 255):
                raise DataError(f"{what} must hold classes 0..255, got {labels.dtype} values")
            labels = labels.astype(np.uint8)
        return np.ascontiguousarray(labels)
    if kind == "ids" and labels.size and labels.min() < 0:
        raise DataError(f"{what} hold negative ids")
    return labels
