"""Shared fixtures: the real ISBI 2012 data (skipped when absent) and tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"


@pytest.fixture(scope="session")
def isbi() -> Path:
    """../shared/data/isbi2012 (30 labelled 512² EM slices); skip when it is not there."""
    if not (ISBI / "images").is_dir():
        pytest.skip(f"ISBI 2012 data not found at {ISBI}")
    return ISBI


@pytest.fixture(scope="session")
def tiny_unet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 32x32 U-Net (4 filters, depth 2) saved as .keras with its sidecar."""
    pytest.importorskip("keras")
    from edgeseg.core.metadata import ModelMetadata, write_sidecar
    from edgeseg.model.unet import UNetConfig, build_unet

    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    model = build_unet(UNetConfig(input_size=(32, 32), base_filters=4, depth=2))
    model.save(path)
    write_sidecar(ModelMetadata(input_size=(32, 32)), path)
    return path


def write_pairs(
    root: Path,
    n: int = 3,
    size: tuple[int, int] = (48, 40),
    image_dtype: type = np.uint8,
    channels: int = 1,
    suffix: str = ".png",
    mask_values: tuple[int, ...] = (0, 255),
    seed: int = 0,
) -> Path:
    """Write ``n`` random image/mask pairs under root/images and root/masks."""
    from edgeseg.imageio import write_image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    top = np.iinfo(image_dtype).max
    shape = size if channels == 1 else (*size, channels)
    for i in range(n):
        img = rng.integers(0, top, size=shape, dtype=image_dtype)
        mask = rng.choice(np.array(mask_values, dtype=np.uint8), size=size)
        write_image(root / "images" / f"{i}{suffix}", img)
        write_image(root / "masks" / f"{i}.png", mask)
    return root


def write_video(path: Path, n: int, size: tuple[int, int] = (48, 64)) -> Path:
    """MJPG .avi at 10 fps whose frame i is red i*8 with a white bar i+1 pixels wide."""
    cv2 = pytest.importorskip("cv2")
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    assert writer.isOpened()
    for i in range(n):
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0] = i * 8
        rgb[:, : i + 1] = 255
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path
