"""Labelled data sets: images/ + masks/ (or labels/) folders with matching names, or
synthetic microscopy.

Images are prepared once (normalized per image, reduced to the model's channels) and kept in
memory as float32 (H, W, C). Targets are uint8 (H, W) class indices (0/1 for one class) for a
``masks/`` folder, or int32 (H, W) instance ids for a ``labels/`` folder: one integer id per
object, 0 background (uint8/uint16 PNG or TIFF, the format of StarDist, Cellpose, BBBC039).
A folder with only ``labels/`` is an instance set; with both ``masks/`` and ``labels/`` the
masks are used unless instances are asked for.

Held-out images are chosen by group (:func:`split`): images of one group (by default the part
of the file name before the first ``_``, e.g. the well of ``A06_s6_B957``) look alike, so a
group goes to training or to validation whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.preprocess import prepare
from edgeseg.errors import DataError
from edgeseg.imageio import IMAGE_SUFFIXES, list_images, natural_key, read_image

MASKS, LABELS = "masks", "labels"


@dataclass(frozen=True)
class LabelledSet:
    """Prepared images (float32 (H, W, C)) and targets, with their names.

    Targets are uint8 (H, W) class indices, or int32 (H, W) instance ids when ``instances``.
    """

    images: tuple[np.ndarray, ...]
    targets: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    instances: bool = False

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: list[int]) -> LabelledSet:
        return LabelledSet(
            tuple(self.images[i] for i in indices),
            tuple(self.targets[i] for i in indices),
            tuple(self.names[i] for i in indices),
            self.instances,
        )


def target_kind(data_dir: str | Path, instances: bool | None = None) -> str:
    """ "masks" or "labels": which targets of ``data_dir`` to use.

    ``instances=None``: labels/ when it is the only one present, else masks/. True: labels/
    (which must exist); False: masks/ (which must exist).
    """
    root = Path(data_dir)
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    has_masks, has_labels = (root / MASKS).is_dir(), (root / LABELS).is_dir()
    if not (root / "images").is_dir() or not (has_masks or has_labels):
        missing = "images/" if not (root / "images").is_dir() else "masks/ or labels/"
        raise DataError(
            f"{root} has no {missing} folder (expected images/ and masks/, or images/ and "
            "labels/ with one id per object)"
        )
    if instances is None:
        return LABELS if has_labels and not has_masks else MASKS
    if instances and not has_labels:
        raise DataError(f"{root} has no labels/ folder (instance labels, one id per object)")
    if not instances and not has_masks:
        raise DataError(f"{root} has no masks/ folder (it has labels/: use instances)")
    return LABELS if instances else MASKS


def find_pairs(data_dir: str | Path, kind: str = MASKS) -> list[tuple[Path, Path]]:
    """(image, target) paths from ``data_dir/images`` and ``data_dir/<kind>``, matched by stem.

    ``kind`` is "masks" or "labels" (see :func:`target_kind`).
    """
    root = Path(data_dir)
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    img_dir, mask_dir = root / "images", root / kind
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise DataError(f"{root} has no {d.name}/ folder (expected images/ and {kind}/)")
    images = list_images(img_dir)
    images = sorted([*images, *_dicom_images(img_dir)], key=natural_key)
    if not images:
        raise DataError(f"no images (PNG, TIFF, JPEG, BMP, DICOM) in {img_dir}")
    masks = {p.stem: p for p in list_images(mask_dir)}
    missing = [p.name for p in images if p.stem not in masks]
    what = "a mask" if kind == MASKS else "a label image"
    if missing:
        shown = ", ".join(missing[:3]) + (" …" if len(missing) > 3 else "")
        raise DataError(f"{len(missing)} image(s) without {what} in {mask_dir}: {shown}")
    if kind == LABELS:
        stems = {p.stem for p in images}
        extra = [p.name for p in masks.values() if p.stem not in stems]
        if extra:
            raise DataError(
                f"{len(extra)} label image(s) without an image in {img_dir}: {sorted(extra)[0]}"
            )
    return [(p, masks[p.stem]) for p in images]


def read_instance_labels(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A label image (one integer id per object, 0 background) → int32 (H, W) ids.

    Refuses float images, colour images with differing channels and, given the image's
    ``shape``, a label image of another size.
    """
    labels = read_image(path)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path.name}: label images must hold integer ids (uint8/uint16, 0 background), "
            f"got {labels.dtype}"
        )
    if labels.ndim == 3:
        if not all(np.array_equal(labels[..., 0], labels[..., c]) for c in range(1, 3)):
            raise DataError(f"{path.name}: colour label image; give one integer id per object")
        labels = labels[..., 0]
    if shape is not None and labels.shape != tuple(shape[:2]):
        raise DataError(
            f"{path.name}: image is {shape[1]}x{shape[0]} but its label image is "
            f"{labels.shape[1]}x{labels.shape[0]}"
        )
    return labels.astype(np.int32)


def _dicom_images(folder: Path) -> list[Path]:
    """Single DICOM images among ``folder``'s files (those that are no PNG/TIFF/…)."""
    from edgeseg.dicom import dicom_files

    return [p for p in dicom_files(folder) if p.suffix.lower() not in IMAGE_SUFFIXES]


def read_frame(path: Path, window: str | None = None) -> np.ndarray:
    """An image file as :func:`~edgeseg.imageio.read_image` reads it, or a single-frame DICOM
    file windowed by ``window`` (``CENTER,WIDTH``, ``file`` or a preset; None: the file's)."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        from edgeseg.dicom import is_dicom, parse_window, read_dicom_image

        if is_dicom(path):
            return read_dicom_image(path, parse_window(window))
    return read_image(path)


def read_pair(
    img_path: Path, mask_path: Path, window: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read an image (DICOM too, windowed by ``window``) and its mask, refusing pairs whose
    sizes differ."""
    img, mask = read_frame(img_path, window), read_image(mask_path)
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
    instances: bool | None = False,
) -> LabelledSet:
    """Read, check and prepare every (image, mask) pair of ``data_dir``.

    ``instances``: False reads masks/ (class indices), True labels/ (instance ids), None
    whichever :func:`target_kind` picks.
    """
    if instances is not False and target_kind(data_dir, instances) == LABELS:
        return _load_instances(data_dir, meta, progress)
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


def _load_instances(
    data_dir: str | Path, meta: ModelMetadata, progress: Callable[[int, int], None] | None
) -> LabelledSet:
    pairs = find_pairs(data_dir, LABELS)
    images, targets, names = [], [], []
    for i, (img_path, label_path) in enumerate(pairs):
        img = read_image(img_path)
        targets.append(read_instance_labels(label_path, img.shape))
        images.append(prepare(img, meta))
        names.append(img_path.stem)
        if progress:
            progress(i + 1, len(pairs))
    if not any(t.any() for t in targets):
        raise DataError(f"every label image in {Path(data_dir) / LABELS} is empty (all 0)")
    return LabelledSet(tuple(images), tuple(targets), tuple(names), instances=True)


def synthetic_labelled(
    n: int, meta: ModelMetadata, seed: int = 0, bit_depth: int = 8, instances: bool = False
) -> LabelledSet:
    """``n`` synthetic microscopy images of the model's input size, prepared like real data;
    with ``instances``, the targets are their int32 instance ids."""
    from edgeseg.samples import SynthConfig, generate_labelled

    if meta.num_classes != 1:
        raise DataError("synthetic data has one foreground class; use --num-classes 1")
    cfg = SynthConfig(size=meta.input_size, bit_depth=bit_depth, channels=meta.channels)
    images, targets = [], []
    for img, mask, ids in generate_labelled(n, cfg, seed=seed):
        images.append(prepare(img, meta))
        targets.append(ids.astype(np.int32) if instances else (mask > 0).astype(np.uint8))
    names = tuple(f"synthetic{i:04d}" for i in range(n))
    return LabelledSet(tuple(images), tuple(targets), names, instances=instances)


def group_of(name: str, pattern: str | None = None) -> str:
    """The group of an image name: by default the part before the first ``_`` (the whole name
    when there is none); with a regular expression ``pattern``, its first group (or its match)
    at the start of the name, or the whole name when it does not match."""
    if pattern is None:
        return name.split("_", 1)[0]
    m = _compile(pattern).match(name)
    if m is None:
        return name
    return m.group(1) if m.groups() else m.group(0)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise DataError(f"invalid group pattern {pattern!r}: {exc}") from None


@dataclass(frozen=True)
class Split:
    train: LabelledSet
    val: LabelledSet
    val_groups: tuple[str, ...]
    n_groups: int


def split_groups(
    data: LabelledSet,
    val_fraction: float,
    seed: int = 0,
    *,
    pattern: str | None = None,
    val_groups: Sequence[str] | None = None,
) -> Split:
    """Train/validation split by group of images (never by pixel, never inside a group).

    ``val_groups`` names the groups to hold out; otherwise whole groups are drawn in a seeded
    random order until at least ``val_fraction`` of the images are held out, keeping at least
    one group for training. When every image is a group of its own (or there is only one
    group), this is a split by image. Group names come from :func:`group_of`.
    """
    n = len(data)
    if n < 2:
        raise DataError(f"need at least 2 labelled images to hold some out for validation, got {n}")
    if pattern is not None:
        _compile(pattern)
    groups = [group_of(name, pattern) for name in data.names]
    order_groups = list(dict.fromkeys(groups))  # in order of first appearance
    if val_groups is not None:
        wanted = [g.strip() for g in val_groups if g.strip()]
        unknown = [g for g in wanted if g not in order_groups]
        if not wanted or unknown:
            known = ", ".join(order_groups[:8]) + (" …" if len(order_groups) > 8 else "")
            raise DataError(
                f"validation group {unknown[0] if unknown else '(none)'!r} not found; "
                f"groups are {known}"
            )
        held = set(wanted)
        if len(held) == len(order_groups):
            raise DataError("every group is held out for validation; leave one for training")
    else:
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"validation fraction must be in (0, 1), got {val_fraction}")
        if len(order_groups) < 2:  # one group: no choice but to split its images
            groups = list(data.names)
            order_groups = list(dict.fromkeys(groups))
        target = min(n - 1, max(1, round(n * val_fraction)))
        sizes = {g: 0 for g in order_groups}
        for g in groups:
            sizes[g] += 1
        held, count = set(), 0
        for k in np.random.default_rng(seed).permutation(len(order_groups)):
            if count >= target or len(held) == len(order_groups) - 1:
                break
            held.add(order_groups[k])
            count += sizes[order_groups[k]]
    val_idx = [i for i, g in enumerate(groups) if g in held]
    train_idx = [i for i, g in enumerate(groups) if g not in held]
    return Split(
        data.subset(train_idx),
        data.subset(val_idx),
        tuple(g for g in order_groups if g in held),
        len(order_groups),
    )


def split(data: LabelledSet, val_fraction: float, seed: int = 0) -> tuple[LabelledSet, LabelledSet]:
    """Train/validation split by group (see :func:`split_groups`); at least one image each."""
    s = split_groups(data, val_fraction, seed)
    return s.train, s.val
