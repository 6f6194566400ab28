"""Training-time augmentation on (image, target) pairs: numpy and OpenCV.

Geometric transforms move image and target together (targets with nearest-neighbour
interpolation, so class indices and instance ids stay exact); intensity transforms touch the
image only. Instance training augments the id map and derives its targets from the result.
The elastic deformation is the one of the U-Net paper: random displacements on a coarse
3x3 grid (10 px standard deviation) interpolated bicubically to a smooth field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeseg.optional import cv2


@dataclass(frozen=True)
class AugmentConfig:
    flips: bool = True
    rotate90: bool = True
    elastic_prob: float = 0.5
    elastic_std: float = 10.0
    elastic_grid: int = 3
    brightness: float = 0.1  # additive shift, in normalized units
    contrast: float = 0.2  # multiplicative range around 1


def random_crop(
    image: np.ndarray, target: np.ndarray, size: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random (size) window of float (H, W, C) image and (H, W) target; reflect-pads if small."""
    th, tw = size
    h, w = target.shape
    if h < th or w < tw:
        ph, pw = max(0, th - h), max(0, tw - w)
        pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        image = np.pad(image, (*pads, (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
        target = np.pad(target, pads, mode="reflect" if min(h, w) > 1 else "edge")
        h, w = target.shape
    y = int(rng.integers(0, h - th + 1))
    x = int(rng.integers(0, w - tw + 1))
    return image[y : y + th, x : x + tw], target[y : y + th, x : x + tw]


def elastic(
    image: np.ndarray,
    target: np.ndarray,
    rng: np.random.Generator,
    std: float = 10.0,
    grid: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random deformation of float32 (h, w, C) image and integer (h, w) target (uint8
    class indices, or int32 instance ids: warped through float32, exact up to 2**24)."""
    cv = cv2()
    h, w = target.shape
    coarse = rng.normal(0.0, std, size=(2, grid, grid)).astype(np.float32)
    dx = cv.resize(coarse[0], (w, h), interpolation=cv.INTER_CUBIC)
    dy = cv.resize(coarse[1], (w, h), interpolation=cv.INTER_CUBIC)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + dx, gy + dy
    warped = cv.remap(image, mx, my, cv.INTER_LINEAR, borderMode=cv.BORDER_REFLECT_101)
    if warped.ndim == 2:
        warped = warped[..., None]
    src = target if target.dtype in (np.uint8, np.uint16) else target.astype(np.float32)
    warped_t = cv.remap(src, mx, my, cv.INTER_NEAREST, borderMode=cv.BORDER_REFLECT_101)
    return warped, warped_t.astype(target.dtype, copy=False)


def augment(
    image: np.ndarray,
    target: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig = AugmentConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one float32 (h, w, C) image and its integer (h, w) target."""
    if config.flips:
        if rng.random() < 0.5:
            image, target = image[:, ::-1], target[:, ::-1]
        if rng.random() < 0.5:
            image, target = image[::-1], target[::-1]
    if config.rotate90 and image.shape[0] == image.shape[1]:
        k = int(rng.integers(0, 4))
        image, target = np.rot90(image, k), np.rot90(target, k)
    image = np.ascontiguousarray(image)
    target = np.ascontiguousarray(target)
    if config.elastic_prob > 0 and rng.random() < config.elastic_prob:
        image, target = elastic(image, target, rng, config.elastic_std, config.elastic_grid)
    if config.brightness or config.contrast:
        c = 1.0 + rng.uniform(-config.contrast, config.contrast)
        b = rng.uniform(-config.brightness, config.brightness)
        mean = float(image.mean())
        image = (image - mean) * np.float32(c) + np.float32(mean + b)
    return image.astype(np.float32, copy=False), target
