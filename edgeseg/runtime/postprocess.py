"""From model probabilities to label maps: pure numpy."""

from __future__ import annotations

import numpy as np

from edgeseg.model.metadata import ModelMetadata


def labels_from_probabilities(prob: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """float (H, W, K) probabilities → uint8 (H, W) labels.

    One class: 1 where the probability exceeds the threshold, else 0. K classes: the argmax.
    """
    if prob.ndim == 2:
        prob = prob[..., None]
    if meta.num_classes == 1:
        return (prob[..., 0] > meta.threshold).astype(np.uint8)
    return np.argmax(prob, axis=-1).astype(np.uint8)
