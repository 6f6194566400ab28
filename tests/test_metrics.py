"""Segmentation metrics: hand-computed cases, empty conventions, HD95 against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeseg.core.metrics import (
    PooledScores,
    Scores,
    confusion,
    dice,
    hd95,
    iou,
    multiclass_dice,
    pixel_accuracy,
    precision,
    recall,
    score,
)
from edgeseg.errors import DataError

pytest.importorskip("cv2")


def _mask(shape: tuple[int, int], *boxes: tuple[int, int, int, int]) -> np.ndarray:
    """Bool mask with the (y0, y1, x0, x1) boxes set."""
    m = np.zeros(shape, dtype=bool)
    for y0, y1, x0, x1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def _brute_surface(mask: np.ndarray) -> np.ndarray:
    """(n, 2) coordinates of mask pixels with a 4-neighbour outside the mask or the image."""
    h, w = mask.shape
    points = []
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                continue
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                yy, xx = y + dy, x + dx
                if not (0 <= yy < h and 0 <= xx < w) or not mask[yy, xx]:
                    points.append((y, x))
                    break
    return np.array(points, dtype=np.float64)


def _brute_hd95(pred: np.ndarray, truth: np.ndarray) -> float:
    a, b = _brute_surface(pred), _brute_surface(truth)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return float(np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95))


# --- overlap scores ----------------------------------------------------------------------------


def test_hand_computed_counts_and_scores() -> None:
    pred = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    truth = np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
    assert confusion(pred, truth) == (2, 2, 2, 6)
    assert dice(pred, truth) == pytest.approx(0.5)  # 2*2 / (4 + 2 + 2)
    assert iou(pred, truth) == pytest.approx(1 / 3)  # 2 / 6
    assert precision(pred, truth) == pytest.approx(0.5)
    assert recall(pred, truth) == pytest.approx(0.5)
    assert pixel_accuracy(pred, truth) == pytest.approx(8 / 12)
    s = score(pred, truth)
    assert isinstance(s, Scores)
    assert (s.dice, s.iou, s.precision, s.recall) == pytest.approx((0.5, 1 / 3, 0.5, 0.5))
    assert s.hd95 == pytest.approx(1.0)


def test_asymmetric_precision_recall() -> None:
    truth = _mask((10, 10), (0, 4, 0, 5))  # 20 pixels
    pred = _mask((10, 10), (0, 2, 0, 5))  # 10 pixels, all inside truth
    assert confusion(pred, truth) == (10, 0, 10, 80)
    assert precision(pred, truth) == 1.0
    assert recall(pred, truth) == 0.5
    assert dice(pred, truth) == pytest.approx(20 / 30)
    assert iou(pred, truth) == pytest.approx(0.5)


def test_integer_and_binary_float_masks_are_accepted() -> None:
    pred = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    truth = np.array([[0.0, 1.0], [0.0, 0.0]])
    assert confusion(pred, truth) == (1, 1, 0, 2)


def test_empty_conventions() -> None:
    empty = np.zeros((8, 8), dtype=bool)
    some = _mask((8, 8), (2, 4, 2, 4))
    both = score(empty, empty)
    assert (both.dice, both.iou, both.precision, both.recall) == (1.0, 1.0, 1.0, 1.0)
    assert both.pixel_accuracy == 1.0 and both.hd95 == 0.0

    missed = score(empty, some)  # nothing predicted, something there
    assert (missed.dice, missed.iou, missed.precision, missed.recall) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(missed.hd95)

    spurious = score(some, empty)  # something predicted, nothing there
    assert (spurious.dice, spurious.iou, spurious.precision) == (0.0, 0.0, 0.0)
    assert spurious.recall == 1.0
    assert math.isnan(spurious.hd95)
    assert spurious.pixel_accuracy == pytest.approx(60 / 64)


def test_as_dict() -> None:
    d = score(_mask((5, 5), (1, 3, 1, 3)), _mask((5, 5), (1, 3, 1, 3))).as_dict()
    assert d == {
        "dice": 1.0,
        "iou": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "pixel_accuracy": 1.0,
        "hd95": 0.0,
    }


# --- HD95 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("axis", [0, 1])
def test_hd95_of_shifted_squares_is_the_shift(k: int, axis: int) -> None:
    truth = _mask((64, 64), (20, 40, 20, 40))
    pred = np.roll(truth, k, axis=axis)
    assert hd95(pred, truth) == pytest.approx(k)
    assert hd95(truth, pred) == pytest.approx(k)
    assert hd95(pred, truth, spacing=0.25) == pytest.approx(0.25 * k)


def test_hd95_identical_masks_is_zero() -> None:
    m = _mask((30, 40), (3, 20, 5, 33), (22, 29, 0, 40))
    assert hd95(m, m) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_hd95_matches_brute_force_on_asymmetric_shapes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = _mask((48, 56), (5, 30, 8, 40))
    # A smaller, offset blob plus a far-away false positive: the two directions differ a lot.
    pred = _mask((48, 56), (10, 22, 12, 30), (40, 46, 45, 55))
    pred ^= rng.random(pred.shape) < 0.05  # salt and pepper noise
    truth[0, :] |= rng.random(56) < 0.2  # touches the image edge
    expected = _brute_hd95(pred, truth)
    assert hd95(pred, truth) == pytest.approx(expected, rel=1e-6)
    # Surface pixels on the image edge: a full-image truth has only its outline as surface.
    full = np.ones((48, 56), dtype=bool)
    assert hd95(pred, full) == pytest.approx(_brute_hd95(pred, full), rel=1e-6)


def test_hd95_needs_2d_masks() -> None:
    with pytest.raises(DataError):
        hd95(np.ones((2, 3, 4), dtype=bool), np.ones((2, 3, 4), dtype=bool))


# --- pooling ---------------------------------------------------------------------------------


def test_pooled_scores_sum_counts_over_images() -> None:
    big_truth = _mask((20, 20), (0, 10, 0, 10))  # 100 pixels, found perfectly
    small_truth = _mask((20, 20), (0, 2, 0, 2))  # 4 pixels, missed entirely
    small_pred = _mask((20, 20), (10, 12, 10, 12))
    pooled = PooledScores()
    first = pooled.add(big_truth, big_truth)
    second = pooled.add(small_pred, small_truth)
    assert pooled.n_images == 2
    assert first.dice == 1.0 and second.dice == 0.0
    assert pooled.counts == (100, 4, 4, 300 + 392)
    result = pooled.result()
    # Pooled Dice weighs pixels: 200 / 208, far from the per-image mean of 0.5.
    assert result.dice == pytest.approx(200 / 208)
    assert result.iou == pytest.approx(100 / 108)
    assert result.precision == pytest.approx(100 / 104)
    assert result.recall == pytest.approx(100 / 104)
    assert result.pixel_accuracy == pytest.approx((800 - 8) / 800)
    assert result.hd95 == pytest.approx((first.hd95 + second.hd95) / 2)


def test_pooled_hd95_skips_images_where_it_is_undefined() -> None:
    pooled = PooledScores(spacing=2.0)
    truth = _mask((32, 32), (8, 16, 8, 16))
    pooled.add(np.roll(truth, 3, axis=1), truth)  # hd95 = 3 px = 6 units
    pooled.add(np.zeros_like(truth), truth)  # NaN: left out
    pooled.add(np.zeros_like(truth), np.zeros_like(truth))  # 0.0: counts
    assert pooled.result().hd95 == pytest.approx((6.0 + 0.0) / 2)
    only_missing = PooledScores()
    only_missing.add(np.zeros_like(truth), truth)
    assert math.isnan(only_missing.result().hd95)


def test_pooled_without_images_raises() -> None:
    with pytest.raises(DataError):
        PooledScores().result()


# --- multiclass ------------------------------------------------------------------------------


def test_multiclass_dice() -> None:
    truth = np.array([[0, 0, 1, 1], [0, 2, 2, 1]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 1]], dtype=np.int64)
    got = multiclass_dice(pred, truth, num_classes=4)
    expected = [dice(pred == c, truth == c) for c in range(4)]
    assert got == pytest.approx(expected)
    assert got == pytest.approx([4 / 6, 6 / 7, 2 / 3, 1.0])  # class 3 absent from both


def test_multiclass_dice_rejects_bad_labels() -> None:
    ok = np.zeros((3, 3), dtype=np.uint8)
    with pytest.raises(DataError):
        multiclass_dice(ok, np.full((3, 3), 3), num_classes=3)
    with pytest.raises(DataError):
        multiclass_dice(ok, np.full((3, 3), -1), num_classes=3)
    with pytest.raises(DataError):
        multiclass_dice(ok, ok.astype(float), num_classes=3)
    with pytest.raises(DataError):
        multiclass_dice(ok, np.zeros((3, 4), dtype=np.uint8), num_classes=3)
    with pytest.raises(DataError):
        multiclass_dice(ok, ok, num_classes=0)


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn", [confusion, dice, iou, precision, recall, pixel_accuracy, hd95, score]
)
def test_shape_mismatch_raises(fn) -> None:
    with pytest.raises(DataError, match="shape"):
        fn(np.zeros((4, 5), dtype=bool), np.zeros((5, 4), dtype=bool))


def test_bad_masks_raise() -> None:
    with pytest.raises(DataError):
        dice(np.full((2, 2), 0.7), np.ones((2, 2), dtype=bool))  # probabilities, not a mask
    with pytest.raises(DataError):
        dice(np.zeros((0, 3), dtype=bool), np.zeros((0, 3), dtype=bool))
    with pytest.raises(DataError):
        dice(np.array([["a"]]), np.array([["b"]]))
    with pytest.raises(DataError):
        hd95(np.ones((2, 2), dtype=bool), np.ones((2, 2), dtype=bool), spacing=0)
    with pytest.raises(DataError):
        PooledScores(spacing=-1.0)
    with pytest.raises(DataError):
        PooledScores().add(np.zeros((3, 3), dtype=bool), np.zeros((3, 4), dtype=bool))


# ---- threshold choice -------------------------------------------------------------------


def test_best_threshold_matches_brute_force() -> None:
    from edgeseg.core.metrics import best_threshold

    rng = np.random.default_rng(3)
    truths = [rng.random((40, 50)) < 0.3 for _ in range(3)]
    # A miscalibrated model: foreground probabilities spread high, background ones overlap.
    probs = [np.clip(0.45 * t + rng.random(t.shape) * 0.6, 0, 1) for t in truths]
    choice = best_threshold(probs, truths)
    brute = {}
    for th in np.round(np.arange(0.05, 0.951, 0.01), 2):
        tp = sum(int(((p > th) & t).sum()) for p, t in zip(probs, truths, strict=True))
        fp = sum(int(((p > th) & ~t).sum()) for p, t in zip(probs, truths, strict=True))
        fn = sum(int((~(p > th) & t).sum()) for p, t in zip(probs, truths, strict=True))
        brute[float(th)] = 2 * tp / (2 * tp + fp + fn)
    best = max(brute.values())
    assert choice.dice == pytest.approx(best)
    assert brute[choice.threshold] == pytest.approx(best)
    assert choice.dice_at_half == pytest.approx(brute[0.5])
    assert choice.threshold != 0.5  # this model's best threshold is not the default


def test_best_threshold_ties_go_to_half_and_boundaries_are_exclusive() -> None:
    from edgeseg.core.metrics import best_threshold

    truth = np.array([[True, False]])
    # Every threshold in [0.1, 0.9) separates perfectly: the tie goes to 0.5.
    assert best_threshold([np.array([[0.9, 0.1]])], [truth]).threshold == 0.5
    # A probability equal to the threshold is not above it.
    c = best_threshold([np.array([[0.7, 0.6]])], [truth], candidates=[0.6, 0.7])
    assert c.threshold == 0.6 and c.dice == 1.0


def test_best_threshold_bad_inputs() -> None:
    from edgeseg.core.metrics import best_threshold

    with pytest.raises(DataError, match="differ"):
        best_threshold([np.zeros((2, 2))], [np.zeros((2, 3), bool)])
    with pytest.raises(DataError, match="at least one"):
        best_threshold([], [])
    with pytest.raises(DataError, match="strictly between"):
        best_threshold([np.zeros((2, 2))], [np.zeros((2, 2), bool)], candidates=[0.0, 0.5])
