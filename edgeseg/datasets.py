"""Labelled data sets: images/ + masks/ folders with matching names, or synthetic microscopy.

Images are prepared once (normalized per image, reduced to the model's channels) and kept in
memory as float32 (H, W, C); targets are uint8 (H, W) class indices (0/1 for one class).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.preprocess import prepare
from edgeseg.errors import DataError
from edgeseg.imageio import list_images, read_image


@dataclass(frozen=True)
class LabelledSet:
    """Prepared images (float32 (H, W, C)) and targets (uint8 (H, W)), with their names."""

    images: tuple[np.ndarray, ...]
    targets: tuple[np.ndarray, ...]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: list[int]) -> LabelledSet:
        return LabelledSet(
            tuple(self.images[i] for i in indices),
            tuple(self.targets[i] for i in indices),
            tuple(self.names[i] for i in indices),
        )


def find_pairs(data_dir: str | Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths from ``data_dir/images`` and ``data_dir/masks``, matched by stem."""
    root = Path(data_dir)
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise DataError(f"{root} has no {d.name}/ folder (expected images/ and masks/)")
    images = list_images(img_dir)
    if not images:
        raise DataError(f"no images (PNG, TIFF, JPEG, BMP) in {img_dir}")
    masks = {p.stem: p for p in list_images(mask_dir)}
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        shown = ", ".join(missing[:3]) + (" …" if len(missing) > 3 else "")
        raise DataError(f"{len(missing)} image(s) without a mask in {mask_dir}: {shown}")
    return [(p, masks[p.stem]) for p in images]


def read_pair(img_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and its mask, refusing pairs whose sizes differ."""
    img, mask = read_image(img_path), read_image(mask_path)
    if img.shape[:2] != mask.shape[:2]:
        raise DataError(
            f"{img_path.name}: image is {img.shape[1]}x{img.shape[0]} but its mask is "
            f"{mask.shape[1]}x{mask.shape[0]}"
        )
    return img, mask


def mask_to_labels(mask: np.ndarray, meta: ModelMetadata, name: str = "mask") -> np.ndarray:
    """A mask as read → uint8 (H, W) class indices.

    One class: 1 where the mask equals ``foreground_value``. K classes: the mask holds class
    indices 0..K-1 already. Colour masks are accepted when their channels are equal.
    """
    if mask.ndim == 3:
        if mask.shape[2] == 4:
            mask = mask[..., :3]
        if not all(np.array_equal(mask[..., 0], mask[..., c]) for c in range(1, mask.shape[2])):
            raise DataError(f"{name}: colour mask with differing channels; give a gray mask")
        mask = mask[..., 0]
    if meta.num_classes == 1:
        return (mask == meta.foreground_value).astype(np.uint8)
    if mask.max() >= meta.num_classes:
        raise DataError(
            f"{name}: mask value {int(mask.max())} is not a class index below "
            f"{meta.num_classes} (K-class masks hold 0..K-1)"
        )
    return mask.astype(np.uint8)


def load_labelled(
    data_dir: str | Path,
    meta: ModelMetadata,
    progress: Callable[[int, int], None] | None = None,
) -> LabelledSet:
    """Read, check and prepare every (image, mask) pair of ``data_dir``."""
    pairs = find_pairs(data_dir)
    images, targets, names = [], [], []
    seen_values: set[int] = set()
    for i, (img_path, mask_path) in enumerate(pairs):
        img, mask = read_pair(img_path, mask_path)
        if len(seen_values) < 16:
            seen_values.update(int(v) for v in np.unique(mask)[:16])
        images.append(prepare(img, meta))
        targets.append(mask_to_labels(mask, meta, mask_path.name))
        names.append(img_path.stem)
        if progress:
            progress(i + 1, len(pairs))
    if meta.num_classes == 1 and not any(t.any() for t in targets):
        values = ", ".join(str(v) for v in sorted(seen_values)[:8])
        raise DataError(
            f"no mask pixel equals the foreground value {meta.foreground_value} "
            f"(masks hold {values}); pass --foreground-value"
        )
    return LabelledSet(tuple(images), tuple(targets), tuple(names))


def synthetic_labelled(
    n: int, meta: ModelMetadata, seed: int = 0, bit_depth: int = 8
) -> LabelledSet:
    """``n`` synthetic microscopy images of the model's input size, prepared like real data."""
    from edgeseg.samples import SynthConfig, generate

    if meta.num_classes != 1:
        raise DataError("synthetic data has one foreground class; use --num-classes 1")
    cfg = SynthConfig(size=meta.input_size, bit_depth=bit_depth, channels=meta.channels)
    images, targets = [], []
    for img, mask in generate(n, cfg, seed=seed):
        images.append(prepare(img, meta))
        targets.append((mask > 0).astype(np.uint8))
    return LabelledSet(tuple(images), tuple(targets), tuple(f"synthetic{i:04d}" for i in range(n)))


def split(data: LabelledSet, val_fraction: float, seed: int = 0) -> tuple[LabelledSet, LabelledSet]:
    """Random train/validation split by image (never by pixel); at least one image each."""
    n = len(data)
    if n < 2:
        raise DataError(f"need at least 2 labelled images to hold some out for validation, got {n}")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"validation fraction must be in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return data.subset(sorted(order[n_val:].tolist())), data.subset(sorted(order[:n_val].tolist()))
