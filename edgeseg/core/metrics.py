"""Binary segmentation scores: overlap metrics from pixel counts and the 95th percentile
Hausdorff distance (HD95).

Masks are arrays of identical shape: bool, integers (non-zero is foreground) or floats holding
only 0 and 1 (a probability map must be thresholded first; it is rejected rather than
silently binarised).

Empty-mask conventions, chosen so that a model that correctly predicts "nothing here" on an
empty image is not punished:

- Dice and IoU are 1.0 when both masks are empty.
- Precision with no predicted positives is 1.0 if the truth is empty too, else 0.0.
- Recall with no positives in the truth is 1.0.
- HD95 is 0.0 when both masks are empty and NaN when exactly one is.

HD95 follows medpy's ``hd95``: the surface of a mask is the mask minus its erosion by the
4-connected (cross) structuring element, with pixels outside the image counted as background
(so the surface is an 8-connected outline and a mask touching the image edge has a surface
there). Each surface pixel of one mask gets its exact Euclidean distance to the nearest surface
pixel of the other; the distances of both directions are pooled and the 95th percentile
(numpy's linear interpolation) is reported, times the pixel ``spacing``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from edgeseg.errors import DataError

__all__ = [
    "IOU_THRESHOLDS",
    "MIN_TRUE_AREA",
    "InstanceCounts",
    "PooledScores",
    "Scores",
    "ThresholdChoice",
    "best_threshold",
    "confusion",
    "dice",
    "hd95",
    "iou",
    "match_instances",
    "median_count_error",
    "multiclass_dice",
    "pixel_accuracy",
    "precision",
    "recall",
    "score",
]


@dataclass(frozen=True)
class Scores:
    """Scores of a binary segmentation against its ground truth.

    All overlap scores are in [0, 1]. ``hd95`` is in pixels times the spacing; NaN when
    exactly one of prediction and truth is empty, 0.0 when both are.
    """

    dice: float
    iou: float
    precision: float
    recall: float
    pixel_accuracy: float
    hd95: float

    def as_dict(self) -> dict[str, float]:
        """The scores by name, e.g. for JSON reports (NaN stays NaN)."""
        return {k: float(v) for k, v in asdict(self).items()}


def confusion(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel counts (tp, fp, fn, tn) of two masks of identical shape.

    Raises:
        DataError: on a shape mismatch, zero-size masks, or values that are not a mask.
    """
    p, t = _masks(pred, truth)
    return _counts(p, t)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice = 2 tp / (2 tp + fp + fn); 1.0 when both masks are empty."""
    tp, fp, fn, _ = confusion(pred, truth)
    return _dice(tp, fp, fn)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union = tp / (tp + fp + fn); 1.0 when both masks are empty."""
    tp, fp, fn, _ = confusion(pred, truth)
    return _iou(tp, fp, fn)


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    """tp / (tp + fp); with nothing predicted, 1.0 if the truth is empty too, else 0.0."""
    tp, fp, fn, _ = confusion(pred, truth)
    return _precision(tp, fp, fn)


def recall(pred: np.ndarray, truth: np.ndarray) -> float:
    """tp / (tp + fn); 1.0 when the truth is empty."""
    tp, _, fn, _ = confusion(pred, truth)
    return _recall(tp, fn)


def pixel_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of pixels where prediction and truth agree."""
    return _accuracy(*confusion(pred, truth))


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: float = 1.0) -> float:
    """95th percentile symmetric Hausdorff distance between the surfaces of two 2-D masks.

    Args:
        pred, truth: (H, W) masks of identical shape.
        spacing: physical size of a pixel (isotropic), e.g. micrometres per pixel.

    Returns:
        Distance in pixels times ``spacing``; 0.0 when both masks are empty, NaN when exactly
        one is.

    Raises:
        DataError: on a shape mismatch, masks that are not 2-D, or a non-positive spacing.
        MissingDependencyError: if OpenCV is not installed.
    """
    p, t = _masks(pred, truth)
    return _hd95(p, t, _spacing(spacing))


def score(pred: np.ndarray, truth: np.ndarray, spacing: float = 1.0) -> Scores:
    """All scores of one 2-D prediction against its truth (see :class:`Scores`)."""
    p, t = _masks(pred, truth)
    return _scores(_counts(p, t), _hd95(p, t, _spacing(spacing)))


class PooledScores:
    """Scores over a set of images, accumulated one image at a time.

    Dice, IoU, precision, recall and pixel accuracy are computed from the tp/fp/fn/tn counts
    summed over all pixels of all images (large objects weigh more than small ones, and an
    empty image does not count as a perfect 1.0). HD95 is the mean of the per-image HD95 over
    the images where it is finite (images where exactly one mask is empty are left out).
    """

    def __init__(self, spacing: float = 1.0) -> None:
        """``spacing``: physical size of a pixel, applied to HD95."""
        self._spacing = _spacing(spacing)
        self._counts = np.zeros(4, dtype=np.int64)
        self._hd95_sum = 0.0
        self._hd95_n = 0
        self.n_images = 0

    @property
    def counts(self) -> tuple[int, int, int, int]:
        """Pooled (tp, fp, fn, tn) so far."""
        tp, fp, fn, tn = (int(c) for c in self._counts)
        return tp, fp, fn, tn

    def add(self, pred: np.ndarray, truth: np.ndarray) -> Scores:
        """Add one image's (H, W) prediction and truth masks; returns that image's scores."""
        p, t = _masks(pred, truth)
        counts = _counts(p, t)
        distance = _hd95(p, t, self._spacing)
        self._counts += counts
        if math.isfinite(distance):
            self._hd95_sum += distance
            self._hd95_n += 1
        self.n_images += 1
        return _scores(counts, distance)

    def result(self) -> Scores:
        """The pooled scores of all images added so far.

        Raises:
            DataError: if no image has been added.
        """
        if self.n_images == 0:
            raise DataError("no images were scored")
        distance = self._hd95_sum / self._hd95_n if self._hd95_n else math.nan
        return _scores(self.counts, distance)


def multiclass_dice(
    pred_labels: np.ndarray, truth_labels: np.ndarray, num_classes: int
) -> list[float]:
    """Per-class Dice of two integer label maps of identical shape.

    Args:
        pred_labels, truth_labels: integer arrays with values in [0, num_classes).
        num_classes: number of classes, background included.

    Returns:
        ``num_classes`` floats; a class absent from both maps scores 1.0.

    Raises:
        DataError: on a shape mismatch, non-integer labels or labels out of range.
    """
    if not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise DataError(f"num_classes must be a positive integer, got {num_classes!r}")
    num_classes = int(num_classes)
    pred = _labels(pred_labels, "pred_labels", num_classes)
    truth = _labels(truth_labels, "truth_labels", num_classes)
    if pred.shape != truth.shape:
        raise DataError(f"label maps differ in shape: pred {pred.shape}, truth {truth.shape}")
    # One pass over the pixels: a num_classes x num_classes confusion matrix (rows = truth).
    matrix = np.bincount(
        (truth.ravel().astype(np.int64) * num_classes + pred.ravel()),
        minlength=num_classes * num_classes,
    ).reshape(num_classes, num_classes)
    tp = np.diag(matrix)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    return [_dice(int(a), int(b), int(c)) for a, b, c in zip(tp, fp, fn, strict=True)]


# --------------------------------------------------------------------------------------------
# Internals


def _as_mask(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        return arr != 0
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all((arr == 0) | (arr == 1)):
            raise DataError(f"{name} is a float array with values other than 0 and 1; threshold it")
        return arr != 0
    raise DataError(f"{name} must be a boolean or integer mask, got dtype {arr.dtype}")


def _masks(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_mask(pred, "pred"), _as_mask(truth, "truth")
    if p.shape != t.shape:
        raise DataError(f"pred and truth differ in shape: {p.shape} vs {t.shape}")
    if p.size == 0:
        raise DataError(f"pred and truth have no pixels (shape {p.shape})")
    return p, t


def _labels(x: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{name} must be an integer label map, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise DataError(
            f"{name} has labels in [{arr.min()}, {arr.max()}], outside [0, {num_classes - 1}]"
        )
    return arr


def _spacing(spacing: float) -> float:
    try:
        value = float(spacing)
    except (TypeError, ValueError):
        raise DataError(f"spacing must be a number, got {spacing!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise DataError(f"spacing must be positive, got {spacing!r}")
    return value


def _counts(p: np.ndarray, t: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    return tp, fp, fn, p.size - tp - fp - fn


def _dice(tp: int, fp: int, fn: int) -> float:
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 1.0


def _iou(tp: int, fp: int, fn: int) -> float:
    denominator = tp + fp + fn
    return tp / denominator if denominator else 1.0


def _precision(tp: int, fp: int, fn: int) -> float:
    if tp + fp:
        return tp / (tp + fp)
    return 1.0 if fn == 0 else 0.0


def _recall(tp: int, fn: int) -> float:
    return tp / (tp + fn) if tp + fn else 1.0


def _accuracy(tp: int, fp: int, fn: int, tn: int) -> float:
    return (tp + tn) / (tp + fp + fn + tn)


def _scores(counts: tuple[int, int, int, int], distance: float) -> Scores:
    tp, fp, fn, tn = counts
    return Scores(
        dice=_dice(tp, fp, fn),
        iou=_iou(tp, fp, fn),
        precision=_precision(tp, fp, fn),
        recall=_recall(tp, fn),
        pixel_accuracy=_accuracy(tp, fp, fn, tn),
        hd95=distance,
    )


def _surface(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: mask pixels with a 4-neighbour outside the mask or outside the image."""
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    interior = (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )
    return mask & ~interior


def _hd95(p: np.ndarray, t: np.ndarray, spacing: float) -> float:
    if p.ndim != 2:
        raise DataError(f"HD95 needs 2-D masks, got shape {p.shape}")
    p_any, t_any = bool(p.any()), bool(t.any())
    if not (p_any or t_any):
        return 0.0
    if p_any != t_any:
        return math.nan
    from edgeseg.optional import cv2

    cv = cv2()
    # Every surface pixel lies inside the bounding box of the union of the masks, so the
    # distance transforms can run on that box alone (small objects in big frames are common).
    union = p | t
    rows = np.flatnonzero(union.any(axis=1))
    cols = np.flatnonzero(union.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    # Just outside the box both masks are background, exactly what _surface pads with.
    p_surface, t_surface = _surface(p[box]), _surface(t[box])

    def distance_to(surface: np.ndarray) -> np.ndarray:
        # distanceTransform measures from each non-zero pixel to the nearest zero pixel, so the
        # surface is the zero set. DIST_MASK_PRECISE gives the exact Euclidean distance.
        src = (~surface).astype(np.uint8)
        return cv.distanceTransform(src, cv.DIST_L2, cv.DIST_MASK_PRECISE)

    distances = np.concatenate(
        [distance_to(t_surface)[p_surface], distance_to(p_surface)[t_surface]]
    )
    return float(np.percentile(distances.astype(np.float64), 95)) * spacing


def foreground_overlap(
    predicted: Sequence[np.ndarray], reference: Sequence[np.ndarray], num_classes: int
) -> tuple[float, float]:
    """(Dice, IoU) pooled over all pixels of all label maps, averaged over foreground classes.

    Label maps hold class indices; the foreground classes are 1 for a one-class model and
    1..K-1 for K classes.
    """
    classes = [1] if num_classes == 1 else list(range(1, num_classes))
    scores = []
    for c in classes:
        acc = PooledScores()
        for p, r in zip(predicted, reference, strict=True):
            acc.add(p == c, r == c)
        scores.append(acc.result())
    return float(np.mean([s.dice for s in scores])), float(np.mean([s.iou for s in scores]))


@dataclass(frozen=True)
class ThresholdChoice:
    """The probability threshold that maximises pooled Dice, and the Dice at 0.5 beside it."""

    threshold: float
    dice: float
    dice_at_half: float


def best_threshold(
    probabilities: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    candidates: Sequence[float] | None = None,
) -> ThresholdChoice:
    """Threshold of a one-class probability map with the highest Dice pooled over all pixels.

    ``probabilities`` are float maps in [0, 1] and ``truths`` boolean masks of the same shapes.
    A pixel is foreground where its probability exceeds the threshold (as at run time). The
    candidates default to 0.05, 0.06, ..., 0.95; ties go to the candidate nearest 0.5. Counting
    is done once, on histograms of the foreground and background probabilities, so any number
    of candidates costs one pass over the pixels.
    """
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2) if candidates is None else candidates
    grid = np.asarray(sorted({float(t) for t in grid} | {0.5}), dtype=np.float64)
    if grid.size == 0 or grid.min() <= 0.0 or grid.max() >= 1.0:
        raise DataError("threshold candidates must lie strictly between 0 and 1")
    # Bin edges at the candidates: a pixel with p > t lies in a bin right of edge t.
    edges = np.concatenate(([-np.inf], grid, [np.inf]))
    fg = np.zeros(grid.size + 1, dtype=np.int64)
    bg = np.zeros(grid.size + 1, dtype=np.int64)
    if len(probabilities) != len(truths) or not len(truths):
        raise DataError("best_threshold needs as many probability maps as masks, at least one")
    for prob, truth in zip(probabilities, truths, strict=True):
        prob = np.asarray(prob, dtype=np.float64)
        truth = np.asarray(truth, dtype=bool)
        if prob.shape != truth.shape:
            raise DataError(f"probability map {prob.shape} and mask {truth.shape} differ")
        # side="left": a pixel exactly on a candidate counts as not above it.
        bins = np.searchsorted(edges, prob.ravel(), side="left") - 1
        fg += np.bincount(bins[truth.ravel()], minlength=grid.size + 1)
        bg += np.bincount(bins[~truth.ravel()], minlength=grid.size + 1)
    # Pixels above candidate i fill bins i+1 onwards.
    tp = np.cumsum(fg[::-1])[::-1][1:]
    fp = np.cumsum(bg[::-1])[::-1][1:]
    fn = fg.sum() - tp
    denom = 2 * tp + fp + fn
    dices = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)
    order = np.lexsort((np.abs(grid - 0.5), -dices))
    best = int(order[0])
    half = int(np.flatnonzero(grid == 0.5)[0])
    return ThresholdChoice(float(grid[best]), float(dices[best]), float(dices[half]))


# --------------------------------------------------------------------------------------------
# Instances: one-to-one matching of objects (StarDist's `matching`, the DSB2018 score)

#: IoU thresholds of the mean AP (0.50, 0.55, ..., 0.95).
IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
#: Ground-truth objects smaller than this (px) are debris or border fragments: ignored.
MIN_TRUE_AREA = 20


@dataclass(frozen=True)
class InstanceCounts:
    """Matches of one image (or pooled) at each IoU threshold, and the object counts.

    ``tp``, ``fp``, ``fn`` are tuples over :data:`IOU_THRESHOLDS` (or the thresholds given).
    """

    thresholds: tuple[float, ...]
    tp: tuple[int, ...]
    fp: tuple[int, ...]
    fn: tuple[int, ...]
    n_true: int
    n_pred: int

    def ap(self, tau: float = 0.5) -> float:
        """TP / (TP + FP + FN) at IoU threshold ``tau`` (1.0 when there is nothing at all)."""
        i = self.thresholds.index(tau)
        denom = self.tp[i] + self.fp[i] + self.fn[i]
        return self.tp[i] / denom if denom else 1.0

    @property
    def mean_ap(self) -> float:
        return float(np.mean([self.ap(t) for t in self.thresholds]))

    def precision(self, tau: float = 0.5) -> float:
        i = self.thresholds.index(tau)
        d = self.tp[i] + self.fp[i]
        return self.tp[i] / d if d else 1.0

    def recall(self, tau: float = 0.5) -> float:
        i = self.thresholds.index(tau)
        d = self.tp[i] + self.fn[i]
        return self.tp[i] / d if d else 1.0

    def f1(self, tau: float = 0.5) -> float:
        i = self.thresholds.index(tau)
        d = 2 * self.tp[i] + self.fp[i] + self.fn[i]
        return 2 * self.tp[i] / d if d else 1.0

    @property
    def count_error(self) -> float | None:
        """|predicted - true| / true objects; None for an image without true objects."""
        return abs(self.n_pred - self.n_true) / self.n_true if self.n_true else None

    def __add__(self, other: InstanceCounts) -> InstanceCounts:
        if self.thresholds != other.thresholds:
            raise DataError("cannot pool instance counts taken at other IoU thresholds")
        return InstanceCounts(
            self.thresholds,
            tuple(a + b for a, b in zip(self.tp, other.tp, strict=True)),
            tuple(a + b for a, b in zip(self.fp, other.fp, strict=True)),
            tuple(a + b for a, b in zip(self.fn, other.fn, strict=True)),
            self.n_true + other.n_true,
            self.n_pred + other.n_pred,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "ap50": round(self.ap(0.5), 6) if 0.5 in self.thresholds else None,
            "mean_ap": round(self.mean_ap, 6),
            "precision50": round(self.precision(0.5), 6) if 0.5 in self.thresholds else None,
            "recall50": round(self.recall(0.5), 6) if 0.5 in self.thresholds else None,
            "f1_50": round(self.f1(0.5), 6) if 0.5 in self.thresholds else None,
            "n_true": self.n_true,
            "n_pred": self.n_pred,
            "thresholds": list(self.thresholds),
            "tp": list(self.tp),
            "fp": list(self.fp),
            "fn": list(self.fn),
        }


def _instance_map(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or not (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise DataError(f"{name} must be an integer label image (H, W), got {x.dtype} {x.shape}")
    x = x.astype(np.int64)
    if x.size and x.min() < 0:
        raise DataError(f"{name} holds negative ids")
    return x


def match_instances(
    pred: np.ndarray,
    truth: np.ndarray,
    thresholds: tuple[float, ...] = IOU_THRESHOLDS,
    min_true_area: int = MIN_TRUE_AREA,
) -> InstanceCounts:
    """Match predicted and true objects one to one by IoU, at each threshold.

    As StarDist's ``matching`` and the DSB2018 score: a pair matches at τ when its IoU >= τ;
    pairs are taken greedily by decreasing IoU, each object at most once (for τ >= 0.5 the
    match is unique anyway). True objects under ``min_true_area`` pixels are ignored together
    with the predictions that overlap them most.
    """
    p = _instance_map(pred, "predicted labels")
    t = _instance_map(truth, "true labels")
    if p.shape != t.shape:
        raise DataError(f"predicted labels {p.shape} and true labels {t.shape} differ in size")
    if any(not 0.0 < tau <= 1.0 for tau in thresholds):
        raise DataError("IoU thresholds must lie in (0, 1]")
    t_ids, t_inv = np.unique(t, return_inverse=True)
    p_ids, p_inv = np.unique(p, return_inverse=True)
    nt, np_ = len(t_ids), len(p_ids)
    inter = np.bincount(t_inv.ravel() * np_ + p_inv.ravel(), minlength=nt * np_).reshape(nt, np_)
    t_area, p_area = inter.sum(axis=1), inter.sum(axis=0)
    # Row/column 0 are the background where it exists.
    t_fg = t_ids != 0
    p_fg = p_ids != 0
    ignored_t = t_fg & (t_area < min_true_area)
    overlap = inter[:, p_fg][t_fg]  # (true objects, predicted objects)
    keep_t = ~ignored_t[t_fg]
    keep_p = np.ones(overlap.shape[1], dtype=bool)
    if (~keep_t).any() and overlap.shape[1]:
        # A prediction whose largest overlap is an ignored true object is ignored with it.
        best = overlap.argmax(axis=0)
        keep_p = ~((~keep_t)[best] & (overlap.max(axis=0) > 0))
    inter_k = overlap[keep_t][:, keep_p].astype(np.float64)
    ta = t_area[t_fg][keep_t].astype(np.float64)
    pa = p_area[p_fg][keep_p].astype(np.float64)
    union = ta[:, None] + pa[None, :] - inter_k
    iou = np.divide(inter_k, union, out=np.zeros_like(inter_k), where=union > 0)
    n_true, n_pred = int(keep_t.sum()), int(keep_p.sum())
    pairs = np.argwhere(iou > 0)
    order = np.argsort(-iou[pairs[:, 0], pairs[:, 1]], kind="stable")
    pairs = pairs[order]
    values = iou[pairs[:, 0], pairs[:, 1]] if len(pairs) else np.zeros(0)
    tps, fps, fns = [], [], []
    for tau in thresholds:
        used_t = np.zeros(n_true, dtype=bool)
        used_p = np.zeros(n_pred, dtype=bool)
        tp = 0
        for (i, j), v in zip(pairs, values, strict=True):
            if v < tau:
                break
            if not used_t[i] and not used_p[j]:
                used_t[i] = used_p[j] = True
                tp += 1
        tps.append(tp)
        fps.append(n_pred - tp)
        fns.append(n_true - tp)
    return InstanceCounts(tuple(thresholds), tuple(tps), tuple(fps), tuple(fns), n_true, n_pred)


def median_count_error(counts: list[InstanceCounts]) -> float | None:
    """Median relative count error over the images that have true objects (None: none do)."""
    errors = [c.count_error for c in counts if c.count_error is not None]
    return float(np.median(errors)) if errors else None
