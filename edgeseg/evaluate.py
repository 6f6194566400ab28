"""Score a model on a labelled set: Dice, IoU, precision, recall, pixel accuracy, HD95.

Each image is segmented whole (tiled with overlap when larger than the model input, never
squashed); scores are pooled over all pixels of the set, HD95 is the mean over images.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.core.backend import Backend
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.metrics import PooledScores, Scores
from edgeseg.core.segmenter import DEFAULT_OVERLAP, Segmenter
from edgeseg.datasets import find_pairs, mask_to_labels, read_pair


@dataclass(frozen=True)
class ClassReport:
    name: str
    pooled: Scores
    per_image: tuple[tuple[str, Scores], ...]


@dataclass(frozen=True)
class EvalReport:
    model: str
    data: str
    n_images: int
    classes: tuple[ClassReport, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.data,
            "n_images": self.n_images,
            "seconds": round(self.seconds, 3),
            "classes": {
                c.name: {
                    "pooled": c.pooled.as_dict(),
                    "per_image": {name: s.as_dict() for name, s in c.per_image},
                }
                for c in self.classes
            },
        }


def evaluate(
    backend: Backend,
    meta: ModelMetadata,
    data_dir: str | Path,
    *,
    model_name: str = "model",
    overlap: int = DEFAULT_OVERLAP,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Segment every image of ``data_dir/images`` and score it against ``data_dir/masks``.

    Images go through the :class:`~edgeseg.core.segmenter.Segmenter`, as frames do in `run`.
    """
    start = time.perf_counter()
    segmenter = Segmenter(backend, meta, overlap=overlap)
    pairs = find_pairs(data_dir)
    fg = [1] if meta.num_classes == 1 else list(range(1, meta.num_classes))
    names = [meta.class_names[0]] if meta.num_classes == 1 else [meta.class_names[c] for c in fg]
    pooled = [PooledScores() for _ in fg]
    per_image: list[list[tuple[str, Scores]]] = [[] for _ in fg]
    for i, (img_path, mask_path) in enumerate(pairs):
        image, mask = read_pair(img_path, mask_path)
        truth = mask_to_labels(mask, meta, mask_path.name)
        labels = segmenter.labels(image)
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
