"""Score a model on a labelled set: Dice, IoU, precision, recall, pixel accuracy, HD95, and for
a ``labels/`` folder (one id per object) instance metrics.

Each image is segmented whole (tiled with overlap when larger than the model input, never
squashed); pixel scores are pooled over all pixels of the set, HD95 is the mean over images.

Instance metrics (a folder with ``labels/``; with both ``masks/`` and ``labels/`` the labels
are used for an instance model, the masks for a semantic one): predicted objects are the
instance model's ids, or for a semantic model the 8-connected components of its foreground
(any foreground class), as ``run`` counts them. Objects are matched one to one by IoU
(:func:`edgeseg.core.metrics.match_instances`; true objects under 20 px are ignored with the
predictions matched to them). Reported: AP = TP / (TP + FP + FN) at IoU 0.5 with TP, FP, FN
summed over the images, the mean AP over IoU 0.50, 0.55, …, 0.95, precision, recall and F1 at
0.5, and the median relative count error |predicted - true| / true over images with objects.

A .tflite or .onnx model is opened as `run` opens it (:func:`open_eval_model`, through
:func:`edgeseg.session.open_any_model`): with ``--backend auto`` on the runtime `run` would
pick for frames of the set's size (the same cached choice), so the scores are those of what
the device runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.backend import Backend
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.metrics import (
    InstanceCounts,
    PooledScores,
    Scores,
    match_instances,
    median_count_error,
)
from edgeseg.core.segmenter import DEFAULT_OVERLAP, Segmenter
from edgeseg.datasets import (
    LABELS,
    MASKS,
    find_pairs,
    mask_to_labels,
    read_frame,
    read_instance_labels,
    read_pair,
    target_kind,
)
from edgeseg.optional import cv2


@dataclass(frozen=True)
class ClassReport:
    name: str
    pooled: Scores
    per_image: tuple[tuple[str, Scores], ...]


@dataclass(frozen=True)
class InstanceReport:
    """Object matching over a labels/ folder: pooled counts, per image, count error."""

    objects: str  # how predicted objects were made: "instances" or "8-connected components"
    pooled: InstanceCounts
    per_image: tuple[tuple[str, InstanceCounts], ...]
    median_count_error: float | None

    def to_dict(self) -> dict[str, Any]:
        err = self.median_count_error
        return {
            "objects": self.objects,
            "pooled": {
                **self.pooled.to_dict(),
                "median_count_error": None if err is None else round(err, 6),
            },
            "per_image": {
                name: {**c.to_dict(), "count_error": _round(c.count_error)}
                for name, c in self.per_image
            },
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


@dataclass(frozen=True)
class EvalReport:
    model: str
    data: str
    n_images: int
    classes: tuple[ClassReport, ...]
    seconds: float
    targets: str = MASKS  # "masks" or "labels"
    instances: InstanceReport | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "model": self.model,
            "data": self.data,
            "n_images": self.n_images,
            "seconds": round(self.seconds, 3),
            "targets": self.targets,
            "classes": {
                c.name: {
                    "pooled": c.pooled.as_dict(),
                    "per_image": {name: s.as_dict() for name, s in c.per_image},
                }
                for c in self.classes
            },
        }
        if self.instances is not None:
            d["instances"] = self.instances.to_dict()
        return d


def eval_targets(data_dir: str | Path, meta: ModelMetadata | None = None) -> str:
    """ "labels" or "masks": what ``data_dir`` is scored against (``meta`` None: as far as the
    folder alone decides, for checking it before a model is loaded)."""
    kind = target_kind(data_dir)
    root = Path(data_dir)
    if kind == MASKS and (root / LABELS).is_dir() and meta is not None and meta.instances:
        return LABELS
    return kind


def open_eval_model(
    model_path: str | Path,
    data_dir: str | Path | None = None,
    *,
    backend: str = "auto",
    trust_model: bool = False,
    threads: int | None = None,
    warn: Callable[[str], None] | None = None,
    explain: Callable[[str], None] | None = None,
    activation: str | None = None,
    whole_frames: bool = False,
    **flags: Any,
) -> tuple[Backend, ModelMetadata, str]:
    """(backend, metadata, what runs it) for any model file, as `eval` scores it on
    ``data_dir``: :func:`edgeseg.session.open_any_model`, with ``--backend auto`` comparing
    the runtimes on frames the size of the set's first image."""
    from edgeseg.session import open_any_model

    return open_any_model(
        model_path,
        backend=backend,
        frame_size=None if data_dir is None else first_image_size(data_dir),
        trust_model=trust_model,
        threads=threads,
        warn=warn,
        explain=explain,
        activation=activation,
        whole_frames=whole_frames,
        **flags,
    )


def first_image_size(data_dir: str | Path) -> tuple[int, int] | None:
    """(H, W) of the first image of a labelled folder, or None when it has none."""
    pairs = find_pairs(data_dir, eval_targets(data_dir))
    if not pairs:
        return None
    image = read_frame(pairs[0][0])
    return int(image.shape[0]), int(image.shape[1])


def objects_of(labels: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """int32 object ids of a Segmenter label map: the ids of an instance model, else the
    8-connected components of the foreground (any class > 0)."""
    if meta.instances is not None:
        return np.asarray(labels, dtype=np.int32)
    fg = (np.asarray(labels) > 0).view(np.uint8)
    _, components = cv2().connectedComponents(fg, connectivity=8)
    return components.astype(np.int32, copy=False)


def evaluate(
    backend: Backend,
    meta: ModelMetadata,
    data_dir: str | Path,
    *,
    model_name: str = "model",
    overlap: int = DEFAULT_OVERLAP,
    progress: Callable[[int, int], None] | None = None,
    window: str | None = None,
) -> EvalReport:
    """Segment every image of ``data_dir/images`` and score it against ``data_dir/masks``
    (pixels) or ``data_dir/labels`` (objects and foreground pixels).

    Images go through the :class:`~edgeseg.core.segmenter.Segmenter`, as frames do in `run`.
    DICOM images are windowed by ``window``, else the model's ``dicom_window``, else their own.
    """
    start = time.perf_counter()
    window = window if window is not None else meta.dicom_window
    segmenter = Segmenter(backend, meta, overlap=overlap)
    kind = eval_targets(data_dir, meta)
    if kind == LABELS:
        return _evaluate_instances(segmenter, meta, data_dir, model_name, progress, start, window)
    pairs = find_pairs(data_dir)
    fg = [1] if meta.num_classes == 1 else list(range(1, meta.num_classes))
    names = [meta.class_names[0]] if meta.num_classes == 1 else [meta.class_names[c] for c in fg]
    pooled = [PooledScores() for _ in fg]
    per_image: list[list[tuple[str, Scores]]] = [[] for _ in fg]
    for i, (img_path, mask_path) in enumerate(pairs):
        image, mask = read_pair(img_path, mask_path, window)
        truth = mask_to_labels(mask, meta, mask_path.name)
        labels = segmenter.labels(image)
        if meta.instances is not None:  # object ids: every object is foreground
            labels = (labels > 0).astype(np.uint8)
        for j, c in enumerate(fg):
            per_image[j].append((img_path.stem, pooled[j].add(labels == c, truth == c)))
        if progress:
            progress(i + 1, len(pairs))
    classes = tuple(
        ClassReport(name, acc.result(), tuple(rows))
        for name, acc, rows in zip(names, pooled, per_image, strict=True)
    )
    return EvalReport(
        model=model_name,
        data=str(data_dir),
        n_images=len(pairs),
        classes=classes,
        seconds=time.perf_counter() - start,
    )


def _evaluate_instances(
    segmenter: Segmenter,
    meta: ModelMetadata,
    data_dir: str | Path,
    model_name: str,
    progress: Callable[[int, int], None] | None,
    start: float,
    window: str | None = None,
) -> EvalReport:
    pairs = find_pairs(data_dir, LABELS)
    pixels = PooledScores()
    pixel_rows: list[tuple[str, Scores]] = []
    rows: list[tuple[str, InstanceCounts]] = []
    for i, (img_path, label_path) in enumerate(pairs):
        image = read_frame(img_path, window)
        truth = read_instance_labels(label_path, image.shape)
        pred = objects_of(segmenter.labels(image), meta)
        pixel_rows.append((img_path.stem, pixels.add(pred > 0, truth > 0)))
        rows.append((img_path.stem, match_instances(pred, truth)))
        if progress:
            progress(i + 1, len(pairs))
    pooled = rows[0][1]
    for _, c in rows[1:]:
        pooled = pooled + c
    name = meta.class_names[0] if meta.num_classes == 1 else "foreground"
    return EvalReport(
        model=model_name,
        data=str(data_dir),
        n_images=len(pairs),
        classes=(ClassReport(name, pixels.result(), tuple(pixel_rows)),),
        seconds=time.perf_counter() - start,
        targets=LABELS,
        instances=InstanceReport(
            objects="instances" if meta.instances is not None else "8-connected components",
            pooled=pooled,
            per_image=tuple(rows),
            median_count_error=median_count_error([c for _, c in rows]),
        ),
    )
