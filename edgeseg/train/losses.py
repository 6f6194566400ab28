"""Dice + cross-entropy losses (Keras 3 ops, any backend).

Dice is computed over the whole batch (not averaged per image), which keeps it defined for
crops without foreground. Targets are (N, h, w, 1) floats in {0, 1} for one class,
(N, h, w) integer class indices for K classes, and (N, h, w, K) floats in {0, 1} for K
independent sigmoid channels (an instance model: foreground, interior).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeseg.optional import keras

_EPS = 1.0


def dice_bce_loss(dice_weight: float = 1.0, bce_weight: float = 1.0) -> Callable:
    """Loss for a sigmoid head: ``bce_weight * BCE + dice_weight * (1 - soft Dice)``."""
    ops = keras().ops

    def loss(y_true: Any, y_pred: Any) -> Any:
        y_true = ops.cast(y_true, y_pred.dtype)
        p = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        bce = -ops.mean(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
        inter = ops.sum(y_true * y_pred)
        dice = (2.0 * inter + _EPS) / (ops.sum(y_true) + ops.sum(y_pred) + _EPS)
        return bce_weight * bce + dice_weight * (1.0 - dice)

    loss.__name__ = "dice_bce_loss"
    return loss


def dice_ce_loss(num_classes: int, dice_weight: float = 1.0, ce_weight: float = 1.0) -> Callable:
    """Loss for a softmax head over K classes: CE + (1 - mean soft Dice of classes 1..K-1)."""
    ops = keras().ops

    def loss(y_true: Any, y_pred: Any) -> Any:
        labels = ops.cast(ops.squeeze(y_true, -1) if len(y_true.shape) == 4 else y_true, "int32")
        onehot = ops.one_hot(labels, num_classes, dtype=y_pred.dtype)
        p = ops.clip(y_pred, 1e-7, 1.0)
        ce = -ops.mean(ops.sum(onehot * ops.log(p), axis=-1))
        axes = (0, 1, 2)
        inter = ops.sum(onehot * y_pred, axis=axes)
        denom = ops.sum(onehot, axis=axes) + ops.sum(y_pred, axis=axes)
        dice = (2.0 * inter + _EPS) / (denom + _EPS)
        return ce_weight * ce + dice_weight * (1.0 - ops.mean(dice[1:]))

    loss.__name__ = "dice_ce_loss"
    return loss


def multi_sigmoid_loss(weights: tuple[float, ...], dice_weight: float = 1.0) -> Callable:
    """Loss for K independent sigmoid channels: per channel BCE + (1 - soft Dice, pooled over
    the batch), averaged over the channels with ``weights`` (normalized to sum to 1)."""
    ops = keras().ops
    total = float(sum(weights))
    if len(weights) < 1 or total <= 0 or min(weights) < 0:
        raise ValueError("channel weights must be non-negative with a positive sum")
    w = [float(x) / total for x in weights]

    def loss(y_true: Any, y_pred: Any) -> Any:
        y_true = ops.cast(y_true, y_pred.dtype)
        p = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        axes = (0, 1, 2)
        bce = -ops.mean(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p), axis=axes)
        inter = ops.sum(y_true * y_pred, axis=axes)
        dice = (2.0 * inter + _EPS) / (
            ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes) + _EPS
        )
        per_channel = bce + dice_weight * (1.0 - dice)
        return ops.sum(per_channel * ops.convert_to_tensor(w, dtype=y_pred.dtype))

    loss.__name__ = "multi_sigmoid_loss"
    return loss
