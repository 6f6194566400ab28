"""Training a student on the teacher's soft targets, stopped by agreement on held-back frames.

Each step takes random crops of the student's tile size from the training frames and the
same crops of the teacher's probabilities, flipped and rotated alike. The loss is the one
``edgeseg train`` uses for the head, with the teacher's probabilities as targets: BCE + soft
Dice for one sigmoid class (:func:`~edgeseg.train.losses.dice_bce_loss`), per-channel BCE +
Dice for an instance model's two heads (:func:`~edgeseg.train.losses.multi_sigmoid_loss`),
soft cross-entropy + Dice for a softmax over K classes (:func:`soft_ce_dice_loss`).

After every epoch the student segments the held-back frames whole (the one Segmenter, tiled
as at run time) and its label maps are compared with the teacher's: pooled Dice for semantic
models, AP at IoU 0.5 for instance models. The learning rate halves when agreement stops
improving; training stops after ``patience`` such epochs or at the deadline, and the best
epoch's weights are kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeseg.core.backend import CallableBackend
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.metrics import PooledScores, foreground_overlap, match_instances
from edgeseg.core.segmenter import Segmenter
from edgeseg.distill.frames import TeacherData, labels_of
from edgeseg.optional import keras
from edgeseg.train.losses import dice_bce_loss, multi_sigmoid_loss

__all__ = [
    "EpochRecord",
    "StudentResult",
    "accuracy",
    "agreement",
    "soft_ce_dice_loss",
    "train_student",
]


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    loss: float
    agreement: float
    learning_rate: float
    seconds: float


@dataclass(frozen=True)
class StudentResult:
    model: Any  # the keras.Model with the best epoch's weights
    history: tuple[EpochRecord, ...]
    best_epoch: int
    agreement: float  # on the held-back frames: Dice, or AP@0.5 for instances
    stopped: str  # why training ended
    seconds: float
    steps: int


def soft_ce_dice_loss(num_classes: int) -> Callable:
    """Softmax head with soft (N, h, w, K) targets: CE + (1 - mean soft Dice of 1..K-1)."""
    ops = keras().ops

    def loss(y_true: Any, y_pred: Any) -> Any:
        y_true = ops.cast(y_true, y_pred.dtype)
        p = ops.clip(y_pred, 1e-7, 1.0)
        ce = -ops.mean(ops.sum(y_true * ops.log(p), axis=-1))
        axes = (0, 1, 2)
        inter = ops.sum(y_true * y_pred, axis=axes)
        denom = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
        dice = (2.0 * inter + 1.0) / (denom + 1.0)
        return ce + (1.0 - ops.mean(dice[1:]))

    loss.__name__ = "soft_ce_dice_loss"
    return loss


def _loss(meta: ModelMetadata) -> Callable:
    if meta.instance_spec is not None or (meta.num_classes == 1 and meta.output_channels > 1):
        return multi_sigmoid_loss(tuple(1.0 for _ in range(meta.output_channels)))
    if meta.num_classes == 1:
        return dice_bce_loss()
    return soft_ce_dice_loss(meta.num_classes)


def agreement(
    model: Any, frames: tuple[np.ndarray, ...], reference: tuple[np.ndarray, ...], meta: Any
) -> float:
    """How well ``model``'s label maps of prepared ``frames`` agree with ``reference``: pooled
    foreground Dice, or AP at IoU 0.5 (pooled counts) for an instance model."""
    segmenter = Segmenter(
        CallableBackend(lambda t: np.asarray(model(t, training=False)), meta), meta
    )
    predicted = [labels_of(segmenter.probabilities(x, prepared=True), meta) for x in frames]
    if meta.instance_spec is not None:
        counts = None
        for p, r in zip(predicted, reference, strict=True):
            c = match_instances(p, r, thresholds=(0.5,))
            counts = c if counts is None else counts + c
        return float(counts.ap(0.5)) if counts is not None else 0.0
    return foreground_overlap(predicted, list(reference), meta.num_classes)[0]


def _padded(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    ph, pw = max(0, size[0] - x.shape[0]), max(0, size[1] - x.shape[1])
    if not ph and not pw:
        return x
    return np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(x.shape[:2]) > 1 else "edge")


def _batch(
    data: TeacherData, size: tuple[int, int], batch: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    th, tw = size
    xs, ys = [], []
    for _ in range(batch):
        i = int(rng.integers(len(data.train_x)))
        x, y = _padded(data.train_x[i], size), _padded(data.train_y[i], size)
        r = int(rng.integers(x.shape[0] - th + 1))
        c = int(rng.integers(x.shape[1] - tw + 1))
        x, y = x[r : r + th, c : c + tw], y[r : r + th, c : c + tw].astype(np.float32)
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        if rng.random() < 0.5:
            x, y = x[::-1], y[::-1]
        if th == tw:
            k = int(rng.integers(4))
            x, y = np.rot90(x, k), np.rot90(y, k)
        xs.append(x)
        ys.append(y)
    return np.ascontiguousarray(np.stack(xs)), np.ascontiguousarray(np.stack(ys))


def train_student(
    model: Any,
    meta: ModelMetadata,
    data: TeacherData,
    *,
    deadline: float,
    batch_size: int = 8,
    steps_per_epoch: int = 25,
    max_epochs: int = 200,
    patience: int = 4,
    learning_rate: float = 2e-3,
    seed: int = 0,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> StudentResult:
    """Train ``model`` (compiled here) until agreement stops improving or ``deadline``
    (a ``time.perf_counter()`` value) passes; the best epoch's weights are kept.

    ``meta``: the student's metadata (its tile size is ``meta.input_size``).
    """
    k = keras()
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    model.compile(optimizer=k.optimizers.Adam(learning_rate), loss=_loss(meta))
    size = tuple(meta.input_size)
    best = {"agreement": -1.0, "epoch": 0, "weights": model.get_weights()}
    history: list[EpochRecord] = []
    lr = learning_rate
    since = 0
    steps = 0
    stopped = f"{max_epochs} epochs"
    epoch_s = 0.0
    for epoch in range(1, max_epochs + 1):
        t0 = time.perf_counter()
        if history and t0 + epoch_s > deadline:
            stopped = "the time budget (--max-minutes)"
            break
        losses = []
        for _ in range(steps_per_epoch):
            x, y = _batch(data, size, batch_size, rng)
            losses.append(float(np.asarray(model.train_on_batch(x, y))))
            steps += 1
            if time.perf_counter() > deadline and history:
                break
        score = agreement(model, data.held_x, data.held_labels, meta)
        epoch_s = time.perf_counter() - t0
        record = EpochRecord(epoch, float(np.mean(losses)), score, lr, epoch_s)
        history.append(record)
        if on_epoch:
            on_epoch(record)
        if score > best["agreement"] + 1e-4:
            best.update(agreement=score, epoch=epoch, weights=model.get_weights())
            since = 0
        else:
            since += 1
            if since >= patience:
                stopped = f"agreement on the held-back frames stopped improving ({patience} epochs)"
                break
            lr /= 2
            model.optimizer.learning_rate.assign(lr)
        if time.perf_counter() > deadline:
            stopped = "the time budget (--max-minutes)"
            break
    model.set_weights(best["weights"])
    return StudentResult(
        model=model,
        history=tuple(history),
        best_epoch=int(best["epoch"]),
        agreement=float(best["agreement"]),
        stopped=stopped,
        seconds=time.perf_counter() - start,
        steps=steps,
    )


def accuracy(
    predict: Callable[[np.ndarray], np.ndarray], meta: Any, images: Any, targets: Any
) -> dict[str, float]:
    """Accuracy of a float model (``predict``: tiles → probabilities) against labelled truth
    through the Segmenter: foreground Dice and IoU (pooled), and AP@0.5 for instances."""
    segmenter = Segmenter(CallableBackend(predict, meta), meta)
    predicted = [labels_of(segmenter.probabilities(x, prepared=True), meta) for x in images]
    if meta.instance_spec is not None:
        pixels = PooledScores()
        counts = None
        for p, t in zip(predicted, targets, strict=True):
            pixels.add(p > 0, t > 0)
            c = match_instances(p, t, thresholds=(0.5,))
            counts = c if counts is None else counts + c
        s = pixels.result()
        return {"dice": s.dice, "iou": s.iou, "ap50": counts.ap(0.5) if counts else 0.0}
    d, i = foreground_overlap(predicted, list(targets), meta.num_classes)
    return {"dice": d, "iou": i}
