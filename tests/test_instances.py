"""Touching objects as separate instances: targets, recovery (also across tile seams, through
the Segmenter) and one-to-one matching against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import disc_labels, instance_meta, labels_oracle

from edgeseg.core.backend import CallableBackend
from edgeseg.core.instances import (
    InstanceSpec,
    instance_targets,
    instances_from_probabilities,
    relabel_sequential,
)
from edgeseg.core.metrics import (
    IOU_THRESHOLDS,
    MIN_TRUE_AREA,
    match_instances,
    median_count_error,
)
from edgeseg.core.segmenter import Segmenter
from edgeseg.errors import DataError

pytest.importorskip("cv2")

# Two discs that touch (centres 20 apart, radii 10) and a lone one.
DISCS = [(30.0, 20.0, 10.0), (30.0, 40.0, 10.0), (70.0, 70.0, 12.0)]


def test_targets_separate_touching_discs() -> None:
    labels = disc_labels((100, 100), DISCS)
    t = instance_targets(labels, border=2)
    assert t.dtype == np.float32 and t.shape == (100, 100, 2)
    assert np.array_equal(t[..., 0] > 0, labels > 0)
    interior = t[..., 1] > 0
    assert not (interior & (labels == 0)).any()
    # Each disc keeps an interior of its own; the two touching interiors do not touch.
    import cv2

    n, comp = cv2.connectedComponents(interior.astype(np.uint8), connectivity=8)
    assert n - 1 == 3
    for k in (1, 2, 3):
        assert len(np.unique(comp[labels == k])) == 2  # background ring + one interior


def test_two_touching_discs_become_two_instances_and_a_lone_disc_one() -> None:
    labels = disc_labels((100, 100), DISCS)
    ids = instances_from_probabilities(instance_targets(labels), InstanceSpec(), 0.5)
    assert ids.dtype == np.int32 and ids.max() == 3
    counts = match_instances(ids, labels)
    assert counts.ap(0.5) == 1.0 and counts.n_pred == 3 and counts.n_true == 3
    assert counts.ap(0.9) == 1.0  # the seeds grow back to the full outlines
    # The foreground alone (what a semantic model counts) merges the touching pair.
    import cv2

    n, _ = cv2.connectedComponents((labels > 0).astype(np.uint8), connectivity=8)
    assert n - 1 == 2


def test_instances_through_a_segmenter_with_a_stand_in_backend() -> None:
    labels = disc_labels((96, 96), DISCS)
    meta = instance_meta(96)
    targets = instance_targets(labels)
    segmenter = Segmenter(CallableBackend(lambda tiles: targets[None], meta), meta)
    ids = segmenter.labels(np.zeros((96, 96, 1), np.float32), prepared=True)
    assert ids.max() == 3 and match_instances(ids, labels).ap(0.5) == 1.0


def test_object_crossing_tile_seams_keeps_one_id() -> None:
    # A long bar across the whole frame (every seam), a touching pair on a seam, a lone disc.
    shape = (80, 200)
    labels = disc_labels(shape, [(40.0, 60.0, 9.0), (40.0, 78.0, 9.0), (65.0, 150.0, 8.0)])
    labels[10:22, 5:195] = 4
    meta = instance_meta(48)  # 48² tiles: many tiles and seams over 80x200
    segmenter = Segmenter(labels_oracle(meta), meta)
    frame = labels.astype(np.float32)[..., None]
    ids = segmenter.labels(frame, prepared=True)
    assert ids.max() == 4
    counts = match_instances(ids, labels)
    assert counts.ap(0.5) == 1.0 and counts.n_pred == 4
    bar = np.unique(ids[labels == 4])
    assert len(bar[bar > 0]) == 1


def test_relabel_sequential_orders_ids_by_first_pixel() -> None:
    labels = np.array([[0, 7, 7], [3, 0, 9]], np.uint16)
    assert relabel_sequential(labels).tolist() == [[0, 1, 1], [2, 0, 3]]


# --------------------------------------------------------------------------------------------
# Matching, by hand


def _block(shape: tuple[int, int], *boxes: tuple[int, int, int, int]) -> np.ndarray:
    out = np.zeros(shape, np.int32)
    for k, (y0, x0, y1, x1) in enumerate(boxes, start=1):
        out[y0:y1, x0:x1] = k
    return out


def test_identical_maps_match_at_every_threshold() -> None:
    t = _block((40, 40), (0, 0, 10, 10), (20, 20, 30, 35))
    c = match_instances(t, t)
    assert c.tp == (2,) * len(IOU_THRESHOLDS) and c.mean_ap == 1.0 and c.count_error == 0.0


def test_empty_images_and_no_predictions() -> None:
    empty = np.zeros((20, 20), np.int32)
    c = match_instances(empty, empty)
    assert (c.n_true, c.n_pred, c.ap(0.5), c.count_error) == (0, 0, 1.0, None)
    truth = _block((20, 20), (0, 0, 8, 8))
    c = match_instances(empty, truth)
    assert (c.tp[0], c.fp[0], c.fn[0], c.ap(0.5), c.recall(0.5)) == (0, 0, 1, 0.0, 0.0)
    assert c.precision(0.5) == 1.0 and c.count_error == 1.0
    c = match_instances(truth, empty)  # predictions, nothing true
    assert (c.fp[0], c.ap(0.5), c.precision(0.5), c.count_error) == (1, 0.0, 0.0, None)


def test_small_true_object_is_ignored_with_its_prediction() -> None:
    truth = _block((40, 40), (0, 0, 10, 10), (30, 30, 33, 33))  # 100 px and 9 px
    assert MIN_TRUE_AREA > 9
    pred = _block((40, 40), (0, 0, 10, 10), (29, 29, 34, 34))
    c = match_instances(pred, truth)
    assert (c.n_true, c.n_pred, c.tp[0], c.fp[0], c.fn[0]) == (1, 1, 1, 0, 0)


def test_iou_exactly_at_thresholds_matches() -> None:
    truth = _block((20, 20), (0, 0, 4, 10))  # 40 px
    half = _block((20, 20), (0, 0, 2, 10))  # 20 px inside: IoU 0.5
    c = match_instances(half, truth)
    assert c.tp[c.thresholds.index(0.5)] == 1 and c.tp[c.thresholds.index(0.55)] == 0
    three_quarters = _block((20, 20), (0, 0, 3, 10))  # 30 px: IoU 0.75
    c = match_instances(three_quarters, truth)
    assert c.ap(0.75) == 1.0 and c.ap(0.8) == 0.0
    assert c.mean_ap == pytest.approx(6 / 10)


def test_one_prediction_over_two_true_objects_matches_at_most_one() -> None:
    truth = _block((20, 40), (0, 0, 10, 12), (0, 12, 10, 20))  # 120 px + 80 px
    merged = (truth > 0).astype(np.int32)  # 200 px: IoU 0.6 and 0.4
    c = match_instances(merged, truth)
    assert (c.tp[0], c.fp[0], c.fn[0]) == (1, 0, 1) and c.ap(0.5) == pytest.approx(0.5)


def test_pooling_and_median_count_error() -> None:
    t = _block((20, 20), (0, 0, 10, 10))
    a = match_instances(t, t)
    b = match_instances(np.zeros_like(t), t)
    pooled = a + b
    assert (pooled.tp[0], pooled.fn[0], pooled.ap(0.5)) == (1, 1, 0.5)
    empty = match_instances(np.zeros_like(t), np.zeros_like(t))
    assert median_count_error([a, b, empty]) == pytest.approx(0.5)  # of 0.0 and 1.0
    assert median_count_error([empty]) is None


def test_bad_inputs_are_data_errors() -> None:
    with pytest.raises(DataError, match="integer"):
        match_instances(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.int32))
    with pytest.raises(DataError, match="differ"):
        match_instances(np.zeros((4, 4), np.int32), np.zeros((4, 5), np.int32))
    with pytest.raises(DataError, match="integer"):
        instance_targets(np.zeros((4, 4), np.float32))
