"""Tiling: planning, exact reconstruction, equivariance with whole-image processing, errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from edgeseg.core.tiling import (
    TileGrid,
    extract_tiles,
    plan_tiles,
    segment_tiled,
    stitch_tiles,
)
from edgeseg.errors import DataError

RNG = np.random.default_rng(1234)


def _random_image(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        return RNG.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    return RNG.random(shape).astype(dtype)


def _crop_border(tiles: np.ndarray, border: int) -> np.ndarray:
    """The identity 'model' of a valid-padding network: drop `border` pixels per side."""
    if border == 0:
        return tiles
    return tiles[:, border:-border, border:-border]


def _box_filter_same(x: np.ndarray, radius: int) -> np.ndarray:
    """(..., H, W, K) mean over a (2r+1)^2 window with zero padding ('same' output size)."""
    pad = [(0, 0)] * (x.ndim - 3) + [(radius, radius), (radius, radius), (0, 0)]
    return _box_filter_valid(np.pad(x, pad), radius)


def _box_filter_valid(x: np.ndarray, radius: int) -> np.ndarray:
    """(..., H, W, K) mean over a (2r+1)^2 window, 'valid' output (H - 2r, W - 2r)."""
    size = 2 * radius + 1
    h, w = x.shape[-3] - 2 * radius, x.shape[-2] - 2 * radius
    out = np.zeros((*x.shape[:-3], h, w, x.shape[-1]), dtype=np.float64)
    for dy, dx in itertools.product(range(size), range(size)):
        out += x[..., dy : dy + h, dx : dx + w, :]
    return out / size**2


# --- planning --------------------------------------------------------------------------------


def _axis_starts(grid: TileGrid) -> tuple[list[int], list[int]]:
    """Output tile starts along y and x in image coordinates."""
    ys = sorted({y for y, _ in grid.out_origins})
    xs = sorted({x for _, x in grid.out_origins})
    return ys, xs


def _min_tiles(length: int, out: int, overlap: int) -> int:
    """Brute force: the smallest n such that n tiles overlapping by >= overlap span length."""
    n = 1
    while out + (n - 1) * (out - overlap) < length:
        n += 1
    return n


@pytest.mark.parametrize(
    ("image", "tile", "overlap", "border", "expected"),
    [
        ((512, 512), (256, 256), 32, 0, 9),  # 256 + 224 < 512 <= 256 + 2*224: 3 per axis
        ((512, 512), (256, 256), 0, 0, 4),
        ((256, 256), (256, 256), 32, 0, 1),
        ((100, 100), (256, 256), 32, 0, 1),
        ((2048, 2048), (256, 256), 32, 0, 81),
        ((480, 480), (256, 256), 32, 0, 4),  # 256 + 224 == 480: exactly two per axis
        ((481, 256), (256, 256), 32, 0, 3),
        ((256, 256), (256, 256), 0, 8, 4),  # output tile 240 < 256: two per axis
    ],
)
def test_plan_counts(image, tile, overlap, border, expected) -> None:
    assert plan_tiles(image, tile, overlap=overlap, border=border).n_tiles == expected


def test_exact_fit_has_no_padding() -> None:
    grid = plan_tiles((256, 320), (256, 320), overlap=16)
    assert grid.n_tiles == 1
    assert grid.pad == ((0, 0), (0, 0))
    assert grid.origins == ((0, 0),)
    assert grid.padded_shape == (256, 320)


@pytest.mark.parametrize("length", [*range(1, 80), 127, 128, 129, 300, 511, 512, 513, 1000])
@pytest.mark.parametrize(("out", "overlap"), [(32, 0), (32, 8), (32, 31), (20, 5)])
def test_plan_axis_is_minimal_covering_and_even(length: int, out: int, overlap: int) -> None:
    border = 3
    tile = out + 2 * border
    grid = plan_tiles((length, 7), (tile, tile), overlap=overlap, border=border)
    ys, _ = _axis_starts(grid)
    assert len(ys) == _min_tiles(length, out, overlap)
    # Output tiles cover [0, length) and the padded image holds every input tile.
    assert ys[0] <= 0 and ys[-1] + out >= length
    hp, wp = grid.padded_shape
    for y, x in grid.origins:
        assert y >= 0 and y + tile <= hp
        assert x >= 0 and x + tile <= wp
    if len(ys) > 1:
        # Flush with both image edges (no sliver), gaps even to one pixel, overlaps honoured.
        assert ys[0] == 0 and ys[-1] + out == length
        gaps = np.diff(ys)
        assert gaps.max() - gaps.min() <= 1
        assert (out - gaps).min() >= overlap
    else:
        # A single tile is centred on an image no longer than it.
        assert ys[0] <= 0 and abs((ys[0] + out - length) + ys[0]) <= 1


@pytest.mark.parametrize(
    ("shape", "tile", "overlap", "border"),
    [((1000, 700), (256, 256), 32, 0), ((70, 1), (64, 48), 8, 4), ((33, 600), (64, 64), 20, 10)],
)
def test_every_pixel_covered(shape, tile, overlap, border) -> None:
    grid = plan_tiles(shape, tile, overlap=overlap, border=border)
    oh, ow = grid.out_tile_shape
    count = np.zeros(shape, dtype=int)
    for y, x in grid.out_origins:
        count[max(y, 0) : y + oh, max(x, 0) : x + ow] += 1
    assert count.min() >= 1
    # Input tiles lie inside the padded image and row-major order is kept.
    hp, wp = grid.padded_shape
    assert all(0 <= y <= hp - tile[0] and 0 <= x <= wp - tile[1] for y, x in grid.origins)
    assert list(grid.origins) == sorted(grid.origins)
    assert grid.origins == tuple(itertools.product(grid.rows, grid.cols))


def test_grid_is_hashable_and_frozen() -> None:
    grid = plan_tiles((300, 300), (128, 128))
    assert hash(grid) == hash(plan_tiles((300, 300), (128, 128)))
    with pytest.raises(AttributeError):
        grid.border = 3  # type: ignore[misc]


# --- reconstruction ----------------------------------------------------------------------------

SHAPES = [(50, 70), (64, 64), (64, 100), (200, 333), (1, 300), (300, 1), (1, 1), (127, 65)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("border", "overlap"), [(0, 0), (0, 16), (4, 8), (8, 30)])
@pytest.mark.parametrize(("channels", "dtype"), [(None, np.uint8), (3, np.uint16), (1, np.float32)])
def test_identity_model_reconstructs_exactly(shape, border, overlap, channels, dtype) -> None:
    full_shape = shape if channels is None else (*shape, channels)
    image = _random_image(full_shape, dtype)
    grid = plan_tiles(shape, (64, 64), overlap=overlap, border=border)
    tiles = extract_tiles(image, grid)
    assert tiles.dtype == image.dtype
    assert tiles.shape == (grid.n_tiles, 64, 64, channels or 1)
    stitched = stitch_tiles(_crop_border(tiles, border).astype(np.float32), grid)
    assert stitched.dtype == np.float32
    expected = image.reshape(*shape, channels or 1).astype(np.float32)
    np.testing.assert_array_equal(stitched, expected)


def test_extract_uses_reflect_padding() -> None:
    image = np.arange(5 * 6, dtype=np.int32).reshape(5, 6)
    grid = plan_tiles(image.shape, (9, 10), overlap=0, border=2)
    (top, bottom), (left, right) = grid.pad
    padded = np.pad(image, ((top, bottom), (left, right)), mode="reflect")
    tiles = extract_tiles(image, grid)
    for tile, (y, x) in zip(tiles, grid.origins, strict=True):
        np.testing.assert_array_equal(tile[..., 0], padded[y : y + 9, x : x + 10])


def test_pointwise_nonlinearity_commutes_with_tiling() -> None:
    image = RNG.random((301, 257)).astype(np.float32)

    def predict(tiles: np.ndarray) -> np.ndarray:
        t = tiles.astype(np.float32)
        return np.concatenate([np.tanh(3 * t) + t**2, np.exp(-t)], axis=-1)

    got = segment_tiled(image, (96, 80), predict, batch_size=5, overlap=24)
    expected = predict(image[None, ..., None])[0]
    assert got.shape == (301, 257, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("radius", [1, 2])
def test_valid_filter_with_border_equals_whole_image_filter(radius: int) -> None:
    """A 'valid' filter with border == its radius is reproduced exactly, image edges included
    (the whole-image reference sees the same reflect padding)."""
    image = RNG.random((150, 203, 2))

    def predict(tiles: np.ndarray) -> np.ndarray:
        return _box_filter_valid(tiles, radius)

    got = segment_tiled(image, (48, 40), predict, overlap=6, border=radius)
    expected = _box_filter_valid(
        np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect"), radius
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_same_filter_stitched_matches_whole_image_filter_away_from_border() -> None:
    """A 'same' filter is wrong within its radius of every tile edge; the blend gives those
    pixels at most sin^2(pi / (4 * overlap)) of the weight per axis, so the seams all but
    vanish."""
    radius, overlap = 1, 32
    image = RNG.random((384, 256, 1))

    def predict(tiles: np.ndarray) -> np.ndarray:
        return _box_filter_same(tiles, radius)

    expected = _box_filter_same(image, radius)
    inner = (slice(radius, -radius), slice(radius, -radius))
    got = segment_tiled(image, (128, 128), predict, overlap=overlap)
    error = np.abs(got - expected)[inner].max()
    # A zero-padded pixel of a [0, 1] image is off by < 1; it can sit on a tile edge in y and
    # in x at once, hence twice the per-axis edge weight.
    assert error <= 2 * math.sin(math.pi / (4 * overlap)) ** 2
    # Tiles that merely abut (384 = 3 * 128, 256 = 2 * 128) leave plainly visible seams.
    hard = segment_tiled(image, (128, 128), predict, overlap=0)
    assert np.abs(hard - expected)[inner].max() > 100 * error


def test_blend_weights_positive_one_in_centre_and_at_image_edges() -> None:
    grid = plan_tiles((200, 170), (64, 64), overlap=20, border=2)
    oh, ow = grid.out_tile_shape
    count = np.zeros(grid.image_shape, dtype=int)
    for y, x in grid.out_origins:
        count[y : y + oh, x : x + ow] += 1
    for index, (y, x) in enumerate(grid.out_origins):
        indicator = np.zeros((grid.n_tiles, oh, ow, 1))
        indicator[index] = 1.0
        weight = stitch_tiles(indicator, grid)[..., 0]
        inside = np.zeros(grid.image_shape, dtype=bool)
        inside[y : y + oh, x : x + ow] = True
        assert (weight[inside] > 0).all()  # never exactly 0 inside the tile
        assert (weight[~inside] == 0).all()
        np.testing.assert_array_equal(weight[inside & (count == 1)], 1.0)
        assert weight[y + oh // 2, x + ow // 2] == 1.0
    # The weights sum to one everywhere.
    total = stitch_tiles(np.ones((grid.n_tiles, oh, ow)), grid)
    np.testing.assert_array_equal(total, 1.0)


def test_blend_is_smooth_across_a_seam() -> None:
    """Two tiles predicting different constants meet through a monotone ramp, not a step."""
    grid = plan_tiles((64, 112), (64, 64), overlap=16)
    assert grid.n_tiles == 2
    got = stitch_tiles(np.stack([np.zeros((64, 64)), np.ones((64, 64))]), grid)
    row = got[10]
    assert row[:48].max() == 0.0 and row[64:].min() == 1.0
    ramp = row[48:64]
    assert (np.diff(ramp) > 0).all() and ramp.min() > 0 and ramp.max() < 1
    assert np.diff(ramp).max() < 0.15


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_segment_tiled_matches_extract_and_stitch(batch_size: int) -> None:
    image = _random_image((130, 190, 3), np.uint8)
    grid = plan_tiles(image.shape[:2], (64, 64), overlap=10, border=3)
    calls: list[int] = []

    def predict(tiles: np.ndarray) -> np.ndarray:
        calls.append(len(tiles))
        return _crop_border(tiles, 3)[..., :2].astype(np.float32) / 255

    got = segment_tiled(image, grid, predict, batch_size=batch_size)
    # Full batches, then the remainder.
    full, rest = divmod(grid.n_tiles, batch_size)
    assert calls == [batch_size] * full + ([rest] if rest else [])
    expected = stitch_tiles(predict(extract_tiles(image, grid)), grid)
    np.testing.assert_array_equal(got, expected)


def test_segment_tiled_accepts_3d_predictions() -> None:
    image = RNG.random((90, 90))
    got = segment_tiled(image, (64, 64), lambda t: t[..., 0], overlap=8)
    assert got.shape == (90, 90, 1)
    np.testing.assert_array_equal(got[..., 0], image.astype(np.float32))


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "tile", "overlap", "border"),
    [
        ((100, 100), (64, 64), -1, 0),
        ((100, 100), (64, 64), 64, 0),
        ((100, 100), (64, 64), 48, 8),  # output tile is 48
        ((100, 100), (64, 64), 0, 32),
        ((100, 100), (64, 20), 0, 10),
        ((100, 100), (64, 64), 0, -1),
        ((0, 100), (64, 64), 0, 0),
        ((100, 100), (64, -64), 0, 0),
        ((100, 100, 3), (64, 64), 0, 0),
        ((100, 100), (64,), 0, 0),
        ((100, 100), (64, 64), 1.5, 0),
    ],
)
def test_plan_rejects_bad_arguments(image, tile, overlap, border) -> None:
    with pytest.raises(DataError):
        plan_tiles(image, tile, overlap=overlap, border=border)


def test_shape_mismatches_raise() -> None:
    grid = plan_tiles((100, 120), (64, 64), overlap=8, border=2)
    oh, ow = grid.out_tile_shape
    with pytest.raises(DataError):
        extract_tiles(np.zeros((100, 121)), grid)
    with pytest.raises(DataError):
        extract_tiles(np.zeros((1, 100, 120, 1)), grid)
    with pytest.raises(DataError):
        stitch_tiles(np.zeros((grid.n_tiles - 1, oh, ow, 1)), grid)
    with pytest.raises(DataError):
        stitch_tiles(np.zeros((grid.n_tiles, 64, 64, 1)), grid)
    with pytest.raises(DataError):
        stitch_tiles(np.zeros((grid.n_tiles, oh)), grid)
    with pytest.raises(DataError):
        segment_tiled(np.zeros((100, 120)), grid, lambda t: t, batch_size=4)
    with pytest.raises(DataError):
        segment_tiled(np.zeros((100, 120)), grid, lambda t: t[:, 2:-2, 2:-2], batch_size=0)
    with pytest.raises(DataError):
        segment_tiled(np.zeros((99, 120)), grid, lambda t: t[:, 2:-2, 2:-2])
