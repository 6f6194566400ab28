"""Train a U-Net: random crops, augmentation, Dice + BCE, per-epoch validation on whole images.

Validation segments every held-out image whole, by overlapping tiles, exactly as
``edgeseg eval`` does, so the Dice printed per epoch is the Dice a user will measure.
The weights of the best validation epoch are kept.

Instance models (a ``labels/`` folder, one id per object; ``instances=True`` or automatic
when the folder has only labels/): the U-Net gets two independent sigmoid outputs,
foreground and interior (:mod:`edgeseg.core.instances`). Their targets are derived from the
id map of each crop AFTER cropping and augmentation (the id map is warped with
nearest-neighbour interpolation), so the interior always matches the deformed objects. Loss:
per channel BCE + Dice, averaged with the interior channel weighted ``interior_weight``.
Validation reports AP at IoU 0.5 (the held-out objects matched one to one) beside the pooled
foreground Dice, and ``keep="best"`` picks the epoch by AP50. The foreground threshold is not
tuned for instance models (it stays 0.5): Dice-optimal thresholds shift object outlines, and
AP depends on seeds and outlines together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.backend import CallableBackend
from edgeseg.core.instances import InstanceSpec, instance_targets
from edgeseg.core.metadata import ModelMetadata, class_names_for, write_sidecar
from edgeseg.core.metrics import (
    PooledScores,
    ThresholdChoice,
    best_threshold,
    foreground_overlap,
    match_instances,
)
from edgeseg.core.segmenter import Segmenter
from edgeseg.datasets import (
    LABELS,
    LabelledSet,
    load_labelled,
    split_groups,
    synthetic_labelled,
    target_kind,
)
from edgeseg.errors import DataError
from edgeseg.model.unet import UNetConfig, build_unet
from edgeseg.optional import keras
from edgeseg.train.augment import AugmentConfig, augment, random_crop
from edgeseg.train.losses import dice_bce_loss, dice_ce_loss, multi_sigmoid_loss

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class TrainConfig:
    out: Path
    data: str = SYNTHETIC
    val: str | None = None
    val_fraction: float = 0.2
    unet: UNetConfig = field(default_factory=UNetConfig)
    foreground_value: int = 255
    class_names: tuple[str, ...] | None = None
    normalization: str = "percentile"
    epochs: int = 20
    steps_per_epoch: int = 50
    batch_size: int = 8
    learning_rate: float = 1e-3
    max_minutes: float | None = None
    seed: int = 0
    synthetic_images: int = 200
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pixel_size_um: float | None = None
    keep: str = "best"  # "best" validation epoch, or the "last" one (when val is a test set)
    # "auto": bfloat16 compute where the CPU has native bf16 (AMX / AVX512-BF16), about twice
    # as fast there; weights, head and the saved model stay float32.
    precision: str = "auto"
    # One-class models: pick the threshold with the best pooled Dice on the training images
    # (whole images, tiled as at run time) and write it into the metadata. Never on --val,
    # which stays an unbiased check.
    tune_threshold: bool = True
    tune_pixels: int = 32_000_000  # at most this many training pixels are scored
    # Instance labels (labels/ folders): True, False, or None = labels/ when it is the only
    # target folder (synthetic data: False).
    instances: bool | None = None
    interior_weight: float = 1.0  # weight of the interior channel's loss (foreground: 1)
    # Held-out images by group: these groups, or whole groups drawn until val_fraction.
    val_groups: tuple[str, ...] | None = None
    group_pattern: str | None = None  # regex; default: the name before its first "_"


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    loss: float
    val_dice: float
    val_iou: float
    learning_rate: float
    seconds: float
    val_ap50: float | None = None  # instance models: AP at IoU 0.5 over the held-out images


@dataclass(frozen=True)
class TrainResult:
    model_path: Path
    metadata_path: Path
    metadata: ModelMetadata
    history: tuple[EpochLog, ...]
    best_epoch: int
    val_dice: float
    val_iou: float
    seconds: float
    threshold: ThresholdChoice | None = None
    val_ap50: float | None = None
    val_groups: tuple[str, ...] = ()


def cpu_has_bf16() -> bool:
    """True on CPUs with native bfloat16 arithmetic (Linux flags amx_bf16 or avx512_bf16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & set(flags.split()))


def _policy(precision: str) -> str:
    if precision == "auto":
        return "mixed_bfloat16" if cpu_has_bf16() else "float32"
    if precision in ("float32", "mixed_bfloat16", "mixed_float16"):
        return precision
    raise DataError(
        f"precision must be auto, float32, mixed_bfloat16 or mixed_float16, got {precision!r}"
    )


def resolve_instances(config: TrainConfig) -> TrainConfig:
    """``config`` with ``instances`` decided (True/False) and, for an instance model, a U-Net
    with two sigmoid outputs."""
    instances = config.instances
    if instances is None:
        instances = config.data != SYNTHETIC and target_kind(config.data) == LABELS
    elif instances and config.data != SYNTHETIC:
        target_kind(config.data, True)  # labels/ must exist
    if not instances:
        return replace(config, instances=False)
    if config.unet.num_classes != 1:
        raise DataError("an instance model has one object class; use --num-classes 1")
    if not config.interior_weight > 0:
        raise DataError(f"interior weight must be positive, got {config.interior_weight}")
    return replace(config, instances=True, unet=replace(config.unet, sigmoid_outputs=2))


def metadata_for(config: TrainConfig) -> ModelMetadata:
    u = config.unet
    names = list(config.class_names) if config.class_names else None
    if config.instances and not names:
        names = ["object"]
    return ModelMetadata(
        input_size=u.input_size,
        channels=u.channels,
        channel_order="GRAY" if u.channels == 1 else "RGB",
        normalization=config.normalization,
        num_classes=u.num_classes,
        class_names=class_names_for(u.num_classes, names),
        foreground_value=config.foreground_value if u.num_classes == 1 else None,
        output_border=u.output_border,
        pixel_size_um=config.pixel_size_um,
        instances=InstanceSpec().to_dict() if config.instances else None,
        provenance={
            "trained_on": config.data,
            "unet": u.to_dict(),
            "seed": config.seed,
            "precision": config.precision,
            **(
                {"targets": "instance labels", "interior_weight": config.interior_weight}
                if config.instances
                else {}
            ),
        },
    )


def _load(
    config: TrainConfig, meta: ModelMetadata
) -> tuple[LabelledSet, LabelledSet, tuple[str, ...], int]:
    """Training and validation sets, the held-out groups and the number of groups."""
    inst = bool(config.instances)
    if config.data == SYNTHETIC:
        data = synthetic_labelled(config.synthetic_images, meta, seed=config.seed, instances=inst)
    else:
        data = load_labelled(config.data, meta, instances=inst)
    if config.val:
        val = (
            synthetic_labelled(
                max(4, config.synthetic_images // 5), meta, seed=config.seed + 1, instances=inst
            )
            if config.val == SYNTHETIC
            else load_labelled(config.val, meta, instances=inst)
        )
        return data, val, (), 0
    s = split_groups(
        data,
        config.val_fraction,
        seed=config.seed,
        pattern=config.group_pattern,
        val_groups=config.val_groups,
    )
    return s.train, s.val, s.val_groups, s.n_groups


def _batches(
    data: LabelledSet, meta: ModelMetadata, config: TrainConfig, rng: np.random.Generator
) -> Any:
    """A keras PyDataset of augmented random crops, sampled in proportion to image area."""
    k = keras()
    areas = np.array([t.size for t in data.targets], dtype=np.float64)
    weights = areas / areas.sum()
    b = meta.output_border
    one_class = meta.num_classes == 1
    spec = meta.instance_spec

    class Crops(k.utils.PyDataset):
        def __len__(self) -> int:
            return config.steps_per_epoch

        def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
            xs, ys = [], []
            for _ in range(config.batch_size):
                i = int(rng.choice(len(data), p=weights))
                x, y = random_crop(data.images[i], data.targets[i], meta.input_size, rng)
                x, y = augment(x, y, rng, config.augment)
                if spec is not None:
                    # Targets of the augmented crop: the interior follows the warped objects.
                    y = instance_targets(y, spec.border)
                if b:
                    y = y[b:-b, b:-b]
                xs.append(x)
                ys.append(y)
            y_arr = np.stack(ys)
            if spec is not None:
                y_arr = y_arr.astype(np.float32, copy=False)
            elif one_class:
                y_arr = y_arr[..., None].astype(np.float32)
            else:
                y_arr = y_arr.astype(np.int32)
            return np.stack(xs), y_arr

    return Crops(workers=1, use_multiprocessing=False)


def _segmenter(model: Any, meta: ModelMetadata) -> Segmenter:
    """The Keras model in inference mode behind the Segmenter every report uses.

    ``predict_on_batch`` runs Keras' compiled predict function (a ``tf.function`` on the
    TensorFlow backend), not the layers one eager op at a time: measured here (2 shared AMD
    cores, 16-filter U-Net, 8 tiles of 256²) about 20% less time per validation batch.
    """
    compiled = getattr(model, "predict_on_batch", None)
    if compiled is not None:
        predict = lambda tiles: np.asarray(compiled(tiles))  # noqa: E731
    else:  # any callable(tiles, training=False), as tests pass
        predict = lambda tiles: np.asarray(model(tiles, training=False))  # noqa: E731
    return Segmenter(CallableBackend(predict, meta), meta)


def validate(model: Any, val: LabelledSet, meta: ModelMetadata) -> tuple[float, float]:
    """Pooled Dice and IoU over all validation pixels (foreground; mean of classes 1..K-1)."""
    segmenter = _segmenter(model, meta)
    predicted = [segmenter.labels(image, prepared=True) for image in val.images]
    return foreground_overlap(predicted, val.targets, meta.num_classes)


def validate_instances(
    model: Any, val: LabelledSet, meta: ModelMetadata
) -> tuple[float, float, float]:
    """Instance model: pooled foreground Dice and IoU, and AP at IoU 0.5 pooled over the
    held-out images (TP, FP, FN summed), from the Segmenter's instance ids."""
    segmenter = _segmenter(model, meta)
    pixels = PooledScores()
    counts = None
    for image, truth in zip(val.images, val.targets, strict=True):
        ids = segmenter.labels(image, prepared=True)
        pixels.add(ids > 0, truth > 0)
        c = match_instances(ids, truth, thresholds=(0.5,))
        counts = c if counts is None else counts + c
    scores = pixels.result()
    return scores.dice, scores.iou, counts.ap(0.5) if counts is not None else 0.0


def tune_threshold(
    model: Any, data: LabelledSet, meta: ModelMetadata, max_pixels: int, seed: int = 0
) -> ThresholdChoice:
    """The one-class threshold with the best pooled Dice on ``data`` (whole images, tiled).

    Images are taken in a seeded random order until ``max_pixels`` are covered (at least one).
    """
    segmenter = _segmenter(model, meta)
    order = np.random.default_rng(seed).permutation(len(data))
    probs, truths, covered = [], [], 0
    for i in order:
        if probs and covered + data.targets[i].size > max_pixels:
            continue
        probs.append(segmenter.probabilities(data.images[i], prepared=True)[..., 0])
        truths.append(data.targets[i] == 1)
        covered += data.targets[i].size
    return best_threshold(probs, truths)


def train(
    config: TrainConfig,
    on_epoch: Callable[[EpochLog], None] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    on_message: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train, keep the best (or last) validation epoch, tune the one-class threshold on the
    training images (not for instance models), write ``config.out`` and its metadata sidecar.

    ``on_step(step, total_steps, loss)`` and ``on_epoch(log)`` report progress;
    ``on_message(text)`` gets notes such as which groups were held out.
    """
    k = keras()
    out = Path(config.out)
    if out.suffix != ".keras":
        raise DataError(f"--out must name a .keras file, got {out}")
    if out.is_dir():
        raise DataError(f"--out {out} is a folder; give a file name such as unet.keras")
    _policy(config.precision)  # reject a bad value before loading any data
    if config.keep not in ("best", "last"):
        raise DataError(f"keep must be 'best' or 'last', got {config.keep!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    config = resolve_instances(config)
    meta = metadata_for(config)
    instances = meta.instance_spec is not None
    train_set, val_set, val_groups, n_groups = _load(config, meta)
    if on_message:
        what = "instance labels" if instances else "masks"
        if val_groups:
            on_message(
                f"training on {len(train_set)} images ({what}); held out {len(val_groups)} of "
                f"{n_groups} groups for validation ({len(val_set)} images): "
                + ", ".join(val_groups)
            )
        else:
            on_message(
                f"training on {len(train_set)} images ({what}); validating on {len(val_set)}"
            )
    k.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    previous_policy = k.mixed_precision.global_policy()
    k.mixed_precision.set_global_policy(_policy(config.precision))
    try:
        model = build_unet(config.unet)
    finally:
        k.mixed_precision.set_global_policy(previous_policy)
    if instances:
        loss = multi_sigmoid_loss((1.0, config.interior_weight))
    elif meta.num_classes == 1:
        loss = dice_bce_loss()
    else:
        loss = dice_ce_loss(meta.num_classes)
    model.compile(optimizer=k.optimizers.Adam(config.learning_rate), loss=loss)

    total_steps = config.epochs * config.steps_per_epoch
    budget = config.max_minutes * 60 if config.max_minutes else None
    start = time.perf_counter()
    history: list[EpochLog] = []
    best: dict[str, Any] = {
        "score": -1.0,
        "dice": -1.0,
        "iou": 0.0,
        "ap50": None,
        "epoch": 0,
        "weights": None,
    }

    def lr_at(step: int) -> float:
        # Cosine decay to 2% over the run, whichever ends it first: the steps, or the
        # wall-clock budget (so a run cut by --max-minutes still ends at a low learning rate).
        # Short linear warm-up.
        frac = step / total_steps
        if budget:
            frac = max(frac, (time.perf_counter() - start) / budget)
        warm = min(1.0, (step + 1) / 20)
        low = config.learning_rate * 0.02
        return warm * (
            low + 0.5 * (config.learning_rate - low) * (1 + math.cos(math.pi * min(frac, 1.0)))
        )

    class Monitor(k.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.step = 0
            self.epoch_start = time.perf_counter()

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch_start = time.perf_counter()

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            self.model.optimizer.learning_rate.assign(lr_at(self.step))

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.step += 1
            if on_step:
                on_step(self.step, total_steps, float((logs or {}).get("loss", float("nan"))))
            if budget and time.perf_counter() - start > budget:
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            ap50 = None
            if instances:
                dice, iou, ap50 = validate_instances(self.model, val_set, meta)
            else:
                dice, iou = validate(self.model, val_set, meta)
            log = EpochLog(
                epoch=epoch + 1,
                loss=float((logs or {}).get("loss", float("nan"))),
                val_dice=dice,
                val_iou=iou,
                learning_rate=float(np.asarray(self.model.optimizer.learning_rate)),
                seconds=time.perf_counter() - self.epoch_start,
                val_ap50=ap50,
            )
            history.append(log)
            score = ap50 if ap50 is not None else dice
            if score > best["score"]:
                best.update(
                    score=score,
                    dice=dice,
                    iou=iou,
                    ap50=ap50,
                    epoch=epoch + 1,
                    weights=self.model.get_weights(),
                )
            if on_epoch:
                on_epoch(log)

    model.fit(
        _batches(train_set, meta, config, rng),
        epochs=config.epochs,
        verbose=0,
        callbacks=[Monitor()],
    )
    if config.keep == "best" and best["weights"] is not None:
        model.set_weights(best["weights"])
    elif history:
        last = history[-1]
        best.update(dice=last.val_dice, iou=last.val_iou, ap50=last.val_ap50, epoch=last.epoch)
    choice = None
    if config.tune_threshold and meta.num_classes == 1 and not instances:
        choice = tune_threshold(model, train_set, meta, config.tune_pixels, config.seed)
        meta = meta.with_updates(
            threshold=choice.threshold,
            provenance={
                **meta.provenance,
                "threshold": {
                    "chosen_on": "training images",
                    "criterion": "pooled Dice",
                    "dice": round(choice.dice, 6),
                    "dice_at_0.5": round(choice.dice_at_half, 6),
                },
            },
        )
    # Save a clean, uncompiled float32 copy: it loads anywhere without edgeseg's loss
    # functions, and converters see float32 layers whatever precision training used.
    clean = build_unet(config.unet)
    clean.set_weights(model.get_weights())
    try:
        clean.save(out)
    except OSError as exc:
        raise DataError(f"cannot write {out}: {exc.strerror or exc}") from exc
    meta_path = write_sidecar(meta, out)
    return TrainResult(
        model_path=out,
        metadata_path=meta_path,
        metadata=meta,
        history=tuple(history),
        best_epoch=best["epoch"],
        val_dice=best["dice"],
        val_iou=best["iou"],
        seconds=time.perf_counter() - start,
        threshold=choice,
        val_ap50=best["ap50"],
        val_groups=val_groups,
    )
