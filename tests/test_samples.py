"""Synthetic microscopy: determinism, types, ground truth, data set writing, live stream."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg.errors import DataError
from edgeseg.samples import SynthConfig, SyntheticStream, generate, generate_sample, write_dataset

cv2 = pytest.importorskip("cv2")
tifffile = pytest.importorskip("tifffile")

SMALL = SynthConfig(size=(96, 128))
KINDS = [(8, 1), (8, 3), (16, 1), (16, 3)]


def _nuclear_channel(image: np.ndarray) -> np.ndarray:
    """The channel that carries the nuclei: the image itself, or blue for RGB."""
    return image if image.ndim == 2 else image[..., 2]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_import_is_light() -> None:
    code = "import sys, edgeseg.samples; print('cv2' in sys.modules, 'tifffile' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(("bit_depth", "channels"), KINDS)
def test_same_seed_same_bytes_other_seed_differs(bit_depth: int, channels: int) -> None:
    cfg = SynthConfig(size=(64, 80), bit_depth=bit_depth, channels=channels)
    img_a, mask_a = generate_sample(7, cfg)
    img_b, mask_b = generate_sample(7, cfg)
    img_c, _ = generate_sample(8, cfg)
    assert img_a.tobytes() == img_b.tobytes()
    assert mask_a.tobytes() == mask_b.tobytes()
    assert img_a.tobytes() != img_c.tobytes()


@pytest.mark.parametrize(("bit_depth", "channels"), KINDS)
def test_types_and_shapes(bit_depth: int, channels: int) -> None:
    # Odd sizes exercise the half-resolution cytoplasm path.
    cfg = SynthConfig(size=(67, 91), bit_depth=bit_depth, channels=channels)
    image, mask = generate_sample(3, cfg)
    assert image.dtype == (np.uint8 if bit_depth == 8 else np.uint16)
    assert image.shape == ((67, 91) if channels == 1 else (67, 91, 3))
    assert image.flags.c_contiguous
    assert mask.dtype == np.uint8
    assert mask.shape == (67, 91)


def test_accepts_a_generator() -> None:
    a = generate_sample(np.random.default_rng(5), SMALL)
    b = generate_sample(np.random.default_rng(5), SMALL)
    assert np.array_equal(a[0], b[0])


@pytest.mark.parametrize(("bit_depth", "channels"), KINDS)
def test_masks_binary_and_match_the_image(bit_depth: int, channels: int) -> None:
    cfg = SynthConfig(bit_depth=bit_depth, channels=channels)
    fractions = []
    for image, mask in generate(6, cfg, seed=1):
        assert set(np.unique(mask).tolist()) <= {0, 255}
        fg = mask > 0
        fractions.append(fg.mean())
        x = _nuclear_channel(image).astype(np.float64)
        inside, outside = x[fg].mean(), x[~fg].mean()
        assert inside > 1.5 * outside, (inside, outside)
    assert all(0.01 < f < 0.6 for f in fractions), fractions


def test_sixteen_bit_uses_many_levels_but_not_the_full_range() -> None:
    for image, _ in generate(4, SynthConfig(bit_depth=16), seed=2):
        assert np.unique(image).size > 256
        # Default camera_bits=(12, 14): a 12- to 14-bit camera range inside uint16.
        assert image.max() < 2**14


def test_cell_count_scales_with_area() -> None:
    def fg(size: tuple[int, int]) -> float:
        cfg = SynthConfig(size=size)
        return float(np.mean([(m > 0).mean() for _, m in generate(6, cfg, seed=4)]))

    # Same density, so a similar foreground fraction at 4x the area.
    assert 0.5 < fg((256, 256)) / fg((128, 128)) < 2.0


def test_generate_has_the_prefix_property() -> None:
    five = list(generate(5, SMALL, seed=9))
    three = list(generate(3, SMALL, seed=9))
    for (img5, mask5), (img3, mask3) in zip(five[:3], three, strict=True):
        assert np.array_equal(img5, img3)
        assert np.array_equal(mask5, mask3)
    assert not np.array_equal(five[0][0], five[1][0])
    assert not np.array_equal(five[0][0], next(iter(generate(1, SMALL, seed=10)))[0])


@pytest.mark.parametrize(
    ("fmt", "bit_depth", "channels"),
    [("png", 8, 1), ("png", 8, 3), ("png", 16, 3), ("tif", 16, 1), ("tif", 8, 3)],
)
def test_write_dataset_round_trips(tmp_path: Path, fmt: str, bit_depth: int, channels: int) -> None:
    cfg = SynthConfig(size=(48, 64), bit_depth=bit_depth, channels=channels)
    seen: list[int] = []
    out = write_dataset(tmp_path / "data", 3, cfg, seed=4, fmt=fmt, progress=seen.append)
    assert out == tmp_path / "data"
    assert seen == [1, 2, 3]
    images = sorted((out / "images").iterdir())
    masks = sorted((out / "masks").iterdir())
    assert [p.name for p in images] == [f"000{i}.{fmt}" for i in range(3)]
    assert [p.name for p in masks] == [p.name for p in images]
    for (want_img, want_mask), img_path, mask_path in zip(
        generate(3, cfg, seed=4), images, masks, strict=True
    ):
        if fmt == "png":
            got = cv2.imread(str(img_path), cv2.IMREAD_UNCHANGED)
            if got.ndim == 3:
                got = cv2.cvtColor(got, cv2.COLOR_BGR2RGB)
            got_mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        else:
            got, got_mask = tifffile.imread(img_path), tifffile.imread(mask_path)
        assert got.dtype == want_img.dtype
        assert np.array_equal(got, want_img)
        assert np.array_equal(got_mask, want_mask)


def test_write_dataset_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    with pytest.raises(DataError, match="not a folder"):
        write_dataset(a_file, 1, SMALL)
    with pytest.raises(DataError):
        write_dataset(a_file / "below", 1, SMALL)
    with pytest.raises(DataError, match="at least 1"):
        write_dataset(tmp_path / "zero", 0, SMALL)
    with pytest.raises(DataError, match="format"):
        write_dataset(tmp_path / "jpeg", 1, SMALL, fmt="jpg")


def test_bad_arguments_raise_one_line_data_errors() -> None:
    bad_configs = [
        {"bit_depth": 12},
        {"channels": 2},
        {"size": (4, 4)},
        {"cells": (10, 5)},
        {"radius": (0.0, 3.0)},
        {"touching": 1.5},
        {"camera_bits": (12, 17)},
        {"illumination": (0.2, 1.0)},
    ]
    for kwargs in bad_configs:
        with pytest.raises(DataError) as info:
            SynthConfig(**kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(DataError):
        generate_sample(-1, SMALL)
    with pytest.raises(DataError):
        generate(-1, SMALL)


def test_config_normalizes_size_to_a_tuple() -> None:
    cfg = SynthConfig(size=[40, 50])  # type: ignore[arg-type]
    assert cfg.size == (40, 50)
    assert generate_sample(0, cfg)[0].shape == (40, 50)


@pytest.mark.parametrize(("bit_depth", "channels"), [(8, 1), (16, 3)])
def test_stream_moves_smoothly(bit_depth: int, channels: int) -> None:
    stream = SyntheticStream(size=(192, 256), seed=3, bit_depth=bit_depth, channels=channels)
    frames = [stream.read() for _ in range(12)]
    for frame, mask in frames:
        assert frame.dtype == (np.uint8 if bit_depth == 8 else np.uint16)
        assert frame.shape == ((192, 256) if channels == 1 else (192, 256, 3))
        assert mask.dtype == np.uint8 and mask.shape == (192, 256)
        assert set(np.unique(mask).tolist()) <= {0, 255}
        assert (mask > 0).mean() > 0.01
    for (_, prev), (_, mask) in itertools.pairwise(frames):
        assert 0.7 < _iou(prev, mask) < 1.0
    # Drifting: after a while the scene has moved on noticeably.
    assert _iou(frames[0][1], frames[-1][1]) < 0.9
    # The frame shows the mask's cells.
    frame, mask = frames[-1]
    x = _nuclear_channel(frame).astype(np.float64)
    assert x[mask > 0].mean() > 1.5 * x[mask == 0].mean()


def test_stream_is_deterministic_and_iterable() -> None:
    a = SyntheticStream(size=(64, 64), seed=11)
    b = SyntheticStream(size=(64, 64), seed=11)
    for (fa, ma), (fb, mb), _ in zip(a, b, range(3), strict=False):
        assert np.array_equal(fa, fb)
        assert np.array_equal(ma, mb)
    c = SyntheticStream(size=(64, 64), seed=12)
    assert not np.array_equal(a.read()[0], c.read()[0])


def test_stream_frames_are_new_arrays() -> None:
    stream = SyntheticStream(size=(64, 64), seed=1)
    f1, m1 = stream.read()
    keep = f1.copy(), m1.copy()
    stream.read()
    assert np.array_equal(f1, keep[0]) and np.array_equal(m1, keep[1])


def test_stream_size_comes_from_arguments_then_config() -> None:
    assert SyntheticStream().read()[0].shape == (512, 512)
    cfg = SynthConfig(size=(40, 72), channels=3)
    assert SyntheticStream(config=cfg).read()[0].shape == (40, 72, 3)
    assert SyntheticStream(size=(32, 48), config=cfg, channels=1).read()[0].shape == (32, 48)


def test_labelled_samples_match_the_plain_ones_and_separate_touching_nuclei() -> None:
    import cv2

    from edgeseg.samples import generate_labelled, generate_labelled_sample

    cfg = SynthConfig(size=(128, 128), touching=1.0, cells=(30, 30))
    image, mask, ids = generate_labelled_sample(3, cfg)
    plain_image, plain_mask = generate_sample(3, cfg)
    assert np.array_equal(image, plain_image) and np.array_equal(mask, plain_mask)
    assert ids.dtype == np.int32 and np.array_equal(ids > 0, mask > 0)
    assert sorted(np.unique(ids))[-1] == len(np.unique(ids)) - 1  # ids 1..N
    n_components = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=8)[0] - 1
    assert ids.max() > n_components  # touching nuclei are separate instances
    assert len(list(generate_labelled(2, cfg))) == 2


def test_write_dataset_writes_uint16_labels(tmp_path: Path) -> None:
    from edgeseg.imageio import read_image

    write_dataset(tmp_path, 2, SynthConfig(size=(64, 64)), seed=1, fmt="tif")
    for name in ("0000.tif", "0001.tif"):
        labels = read_image(tmp_path / "labels" / name)
        mask = read_image(tmp_path / "masks" / name)
        assert labels.dtype == np.uint16 and np.array_equal(labels > 0, mask > 0)
