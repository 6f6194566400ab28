"""From model probabilities to label maps, and from label maps to objects.

Label maps are uint8 arrays of shape (H, W): 0 is background; a one-class (sigmoid) model
labels its foreground 1, a K-class (softmax) model labels pixels 0..K-1. Objects are the
8-connected components of each foreground class, found with OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeseg.core.labels import check_labels
from edgeseg.core.metadata import ModelMetadata
from edgeseg.optional import cv2

__all__ = [
    "ObjectStats",
    "foreground_classes",
    "labels_from_probabilities",
    "object_stats",
    "remove_small_objects",
]


@dataclass(frozen=True)
class ObjectStats:
    """Connected components (8-connectivity) of a label map's foreground classes.

    ``count`` objects in all; ``areas`` their sizes in pixels, class by class (in class order)
    and, within a class, in raster order of each object's first pixel; ``per_class`` the count
    per class name (every foreground class of the model is present, 0 when absent).
    """

    count: int = 0
    areas: tuple[int, ...] = ()
    per_class: dict[str, int] = field(default_factory=dict)


def labels_from_probabilities(prob: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """float (H, W, K) probabilities → uint8 (H, W) labels.

    One class: 1 where the probability exceeds the threshold, else 0. K classes: the argmax.
    """
    if prob.ndim == 2:
        prob = prob[..., None]
    if meta.num_classes == 1:
        return (prob[..., 0] > meta.threshold).astype(np.uint8)
    return np.argmax(prob, axis=-1).astype(np.uint8)


def foreground_classes(meta: ModelMetadata) -> list[tuple[int, str]]:
    """(label value, class name) of each foreground class: [(1, name)] for a one-class model,
    1..K-1 otherwise (class 0 is the background)."""
    if meta.num_classes == 1:
        return [(1, meta.class_names[0])]
    return [(c, meta.class_names[c]) for c in range(1, meta.num_classes)]


def remove_small_objects(labels: np.ndarray, min_area: int) -> np.ndarray:
    """uint8 (H, W) labels → a new uint8 (H, W) array without objects smaller than ``min_area``.

    Objects are 8-connected components of each label value > 0; the pixels of small ones
    become background (0). ``min_area <= 0`` returns ``labels`` itself, unchanged.
    """
    labels = check_labels(labels, kind="classes", what="label map")
    if min_area <= 0:
        return labels
    cv = cv2()
    out = labels.copy()
    for c in range(1, int(labels.max(initial=0)) + 1):
        mask = labels == c
        n = cv.countNonZero(mask.view(np.uint8))
        if n == 0:
            continue
        if n < min_area:  # every object of this class is small
            out[mask] = 0
            continue
        _, components, stats, _ = cv.connectedComponentsWithStats(
            mask.view(np.uint8), connectivity=8
        )
        small = stats[:, cv.CC_STAT_AREA] < min_area
        small[0] = False  # component 0 is everything that is not class c
        if small.any():
            out[small[components]] = 0
    return out


def object_stats(labels: np.ndarray, meta: ModelMetadata) -> ObjectStats:
    """Count and measure the objects of each foreground class of a uint8 (H, W) label map,
    or the objects of an instance model's (H, W) id map (one object per id).

    Label values outside the model's foreground classes are ignored.
    """
    if meta.instances is not None:
        ids = check_labels(labels, kind="ids", what="instance map")
        areas = np.bincount(ids.ravel())[1:] if ids.size else np.zeros(0, np.int64)
        present = tuple(int(a) for a in areas if a > 0)
        return ObjectStats(len(present), present, {meta.class_names[0]: len(present)})
    labels = check_labels(labels, kind="classes", what="label map")
    cv = cv2()
    areas: list[int] = []
    per_class: dict[str, int] = {}
    for c, name in foreground_classes(meta):
        n = 0
        mask = (labels == c).view(np.uint8)
        if c < 256 and cv.countNonZero(mask):
            n_components, _, stats, _ = cv.connectedComponentsWithStats(mask, connectivity=8)
            n = n_components - 1
            areas.extend(int(a) for a in stats[1:, cv.CC_STAT_AREA])
        per_class[name] = per_class.get(name, 0) + n
    return ObjectStats(count=len(areas), areas=tuple(areas), per_class=per_class)
