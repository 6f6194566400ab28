"""Reading and writing microscopy images: PNG, TIFF, JPEG, BMP; 8/16-bit; gray, RGB, RGBA.

Readers return RGB order (OpenCV's BGR is converted here, at the edge) and keep the bit
depth: uint8 or uint16 arrays of shape (H, W), (H, W, 3) or (H, W, 4).

Label maps (mask files) are stored losslessly by :func:`encode_mask`, as
:func:`stored_labels` says: what ``run --save-masks`` and ``segment`` both write.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edgeseg.errors import DataError
from edgeseg.optional import cv2, require

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
_TIFF = (".tif", ".tiff")


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (natural order for numbers)."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder}")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=natural_key)


def natural_key(p: Path) -> tuple:
    stem = p.stem
    return (0, int(stem), p.suffix) if stem.isdigit() else (1, stem, p.suffix)


def read_image(path: str | Path) -> np.ndarray:
    """Read one image: uint8/uint16 (or float32 for float TIFFs) array, (H, W) or (H, W, C), RGB.

    A multi-page TIFF is refused here (it is a stack, not an image).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    if path.suffix.lower() in _TIFF:
        tifffile = require("tifffile")
        try:
            img = tifffile.imread(path)
        except Exception as exc:  # tifffile raises many types for damaged files
            raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
        img = np.asarray(img)
        if img.ndim == 3 and img.shape[0] in (3, 4) and img.shape[-1] not in (1, 3, 4):
            img = np.moveaxis(img, 0, -1)  # channel-first TIFF (C, H, W)
        if img.ndim == 3 and img.shape[-1] not in (1, 3, 4):
            raise DataError(f"{path} is a stack of {img.shape[0]} pages; give single images here")
        if img.ndim not in (2, 3):
            raise DataError(f"{path} has unsupported shape {img.shape}")
    else:
        cv = cv2()
        data = np.fromfile(path, dtype=np.uint8)
        img = cv.imdecode(data, cv.IMREAD_UNCHANGED) if data.size else None
        if img is None:
            raise DataError(f"cannot read {path}: not a valid image file")
        if img.ndim == 3 and img.shape[2] == 3:
            img = cv.cvtColor(img, cv.COLOR_BGR2RGB)
        elif img.ndim == 3 and img.shape[2] == 4:
            img = cv.cvtColor(img, cv.COLOR_BGRA2RGBA)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        if np.issubdtype(img.dtype, np.integer) and img.min() >= 0 and img.max() <= 65535:
            img = img.astype(np.uint16)
        else:
            raise DataError(f"{path}: unsupported pixel type {img.dtype}")
    return img


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB/gray uint8 or uint16 image losslessly (PNG via OpenCV, TIFF via tifffile)."""
    path = Path(path)
    if path.suffix.lower() in _TIFF:
        require("tifffile").imwrite(path, image)
        return path
    cv = cv2()
    out = image
    if image.ndim == 3 and image.shape[2] == 3:
        out = cv.cvtColor(image, cv.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        out = cv.cvtColor(image, cv.COLOR_RGBA2BGRA)
    if not cv.imwrite(str(path), out):
        raise DataError(f"cannot write {path}")
    return path


def stored_labels(labels: np.ndarray, fmt: str) -> np.ndarray:
    """The array a mask file stores: uint8 classes as they are, object ids as uint16 (uint32
    in a TIFF when ids pass 65535; a PNG drops those objects)."""
    labels = np.asarray(labels)
    if labels.dtype == np.uint8:
        return labels
    top = int(labels.max(initial=0))
    if top <= 0xFFFF:
        return labels.astype(np.uint16)
    if fmt == "tif":
        return labels.astype(np.uint32)
    return np.where(labels <= 0xFFFF, labels, 0).astype(np.uint16)


def encode_mask(labels: np.ndarray, fmt: str) -> bytes:
    """PNG or TIFF (``fmt``) bytes of a label map, stored as :func:`stored_labels` says."""
    stored = np.ascontiguousarray(stored_labels(labels, fmt))
    if fmt == "tif":
        buf = io.BytesIO()
        require("tifffile").imwrite(buf, stored)
        return buf.getvalue()
    ok, png = cv2().imencode(".png", stored)
    if not ok:
        raise DataError("cannot encode a label map as PNG")
    return png.tobytes()
