"""Label maps to objects: thresholds, small-object removal and connected-component counts."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BINARY, THREE

from edgeseg.core.postprocess import (
    ObjectStats,
    labels_from_probabilities,
    object_stats,
    remove_small_objects,
)
from edgeseg.errors import DataError

pytest.importorskip("cv2")


def hand_map() -> np.ndarray:
    """Class 1: a 4x5 block (20 px), a 2x2 block (4 px) and a diagonal pair (2 px, one object
    with 8-connectivity). Class 2: a 3-px bar touching the big block (a separate object)."""
    labels = np.zeros((16, 16), np.uint8)
    labels[1:5, 1:6] = 1
    labels[5, 1:4] = 2
    labels[10:12, 10:12] = 1
    labels[13, 2] = 1
    labels[14, 3] = 1
    return labels


def test_labels_from_probabilities() -> None:
    prob = np.array([[0.2, 0.7], [0.5, 0.9]], np.float32)
    np.testing.assert_array_equal(labels_from_probabilities(prob, BINARY), [[0, 1], [0, 1]])
    soft = np.zeros((1, 2, 3), np.float32)
    soft[0, 0, 2] = soft[0, 1, 1] = 1
    np.testing.assert_array_equal(labels_from_probabilities(soft, THREE), [[2, 1]])


def test_remove_small_objects_by_class_and_8_connectivity() -> None:
    labels = hand_map()
    out = remove_small_objects(labels, 4)
    assert out.dtype == np.uint8 and out.shape == labels.shape
    expected = labels.copy()
    expected[13, 2] = expected[14, 3] = 0  # the diagonal pair (2 px)
    expected[5, 1:4] = 0  # the class-2 bar (3 px), not merged with the class-1 block
    np.testing.assert_array_equal(out, expected)
    assert labels[13, 2] == 1  # the input is left alone
    # The diagonal pair is one object of 2 px, not two of 1.
    assert remove_small_objects(labels, 2)[13, 2] == 1
    assert not remove_small_objects(labels, 21).any()


def test_remove_small_objects_no_op_and_bad_input() -> None:
    labels = hand_map()
    assert remove_small_objects(labels, 0) is labels
    np.testing.assert_array_equal(remove_small_objects(labels, -3), labels)
    np.testing.assert_array_equal(remove_small_objects(labels.astype(np.int32), 0), labels)
    with pytest.raises(DataError, match="shape"):
        remove_small_objects(np.zeros((4, 4, 3), np.uint8), 2)
    with pytest.raises(DataError, match="uint8"):
        remove_small_objects(np.full((4, 4), 0.5), 2)


def test_object_stats_one_class() -> None:
    labels = hand_map()
    labels[labels == 2] = 0
    stats = object_stats(labels, BINARY)
    assert isinstance(stats, ObjectStats)
    assert stats.count == 3
    assert sorted(stats.areas) == [2, 4, 20]
    assert stats.per_class == {"foreground": 3}


def test_object_stats_k_classes() -> None:
    labels = hand_map()
    labels[0, 15] = 7  # not a class of this model: ignored
    stats = object_stats(labels, THREE)
    assert stats.count == 4
    assert stats.areas == (20, 4, 2, 3)  # class by class, raster order within a class
    assert stats.per_class == {"nucleus": 3, "membrane": 1}


def test_object_stats_empty() -> None:
    stats = object_stats(np.zeros((8, 8), np.uint8), THREE)
    assert stats == ObjectStats(0, (), {"nucleus": 0, "membrane": 0})
