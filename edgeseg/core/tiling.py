"""Segment frames larger than the model input by cutting overlapping tiles and stitching them.

A model with a fixed input size (th, tw) sees the frame one tile at a time; the image is never
resized, so the model always works at the pixel scale it was trained on. Models built with
'valid' padding return an output smaller than their input by ``border`` pixels on every side;
the plan pads the image (reflect) so that the *output* tiles still cover every image pixel.

Where output tiles overlap they are blended with a separable weight window that is 1 in the
tile centre and falls with a squared-cosine ramp across each overlap with a neighbour. The
ramps of two neighbours sum to one, the weight never reaches 0 inside a tile, and the sides of
a tile that lie on the image edge are not ramped. Predictions near a tile edge (where a
'same'-padded model sees zeros instead of context) therefore get almost no weight, e.g.
sin^2(pi / (4 * v)) ~ 6e-4 for the outermost pixel of an overlap of v = 32.

Everything here is pure numpy: it runs on the edge device, in ``edgeseg eval`` and during
calibration. The per-axis weights are computed once per grid and cached.

Coordinates: "image" coordinates are pixel indices of the original frame; "padded"
coordinates index the reflect-padded frame that input tiles are cut from. An output tile whose
input tile starts at padded (y, x) starts at image (y + border - pad_top, x + border - pad_left).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from edgeseg.errors import DataError

__all__ = [
    "TileGrid",
    "extract_tiles",
    "plan_tiles",
    "predict_tiles",
    "segment_tiled",
    "stitch_tiles",
]


@dataclass(frozen=True)
class TileGrid:
    """Where to cut input tiles from an image and where their outputs go back.

    Built by :func:`plan_tiles`; the tiles form a regular grid (every row of tiles uses the
    same column origins), listed row-major.

    Attributes:
        image_shape: (H, W) of the original image.
        tile_shape: (th, tw), the model input size.
        border: pixels the model loses on each side (0 for 'same' padding); the output tile
            is (th - 2*border, tw - 2*border), centred on the input tile.
        overlap: minimum overlap between neighbouring output tiles, in pixels.
        origins: top-left (y, x) of each input tile in the padded image, row-major.
        pad: ((top, bottom), (left, right)) reflect padding applied before cutting.
    """

    image_shape: tuple[int, int]
    tile_shape: tuple[int, int]
    border: int
    overlap: int
    origins: tuple[tuple[int, int], ...]
    pad: tuple[tuple[int, int], tuple[int, int]]

    @property
    def n_tiles(self) -> int:
        """Number of tiles N."""
        return len(self.origins)

    @property
    def out_tile_shape(self) -> tuple[int, int]:
        """(oh, ow) of one model output tile: the tile shape minus the border on each side."""
        return (self.tile_shape[0] - 2 * self.border, self.tile_shape[1] - 2 * self.border)

    @property
    def padded_shape(self) -> tuple[int, int]:
        """(Hp, Wp) of the padded image the input tiles are cut from."""
        (top, bottom), (left, right) = self.pad
        return (self.image_shape[0] + top + bottom, self.image_shape[1] + left + right)

    @property
    def rows(self) -> tuple[int, ...]:
        """Distinct y origins of the input tiles in the padded image, ascending."""
        return tuple(sorted({y for y, _ in self.origins}))

    @property
    def cols(self) -> tuple[int, ...]:
        """Distinct x origins of the input tiles in the padded image, ascending."""
        return tuple(sorted({x for _, x in self.origins}))

    @property
    def out_origins(self) -> tuple[tuple[int, int], ...]:
        """Top-left (y, x) of each output tile in image coordinates (negative when an image
        smaller than the output tile was padded), in the order of :attr:`origins`."""
        dy = self.border - self.pad[0][0]
        dx = self.border - self.pad[1][0]
        return tuple((y + dy, x + dx) for y, x in self.origins)


def plan_tiles(
    image_shape: Sequence[int],
    tile_shape: Sequence[int],
    overlap: int = 32,
    border: int = 0,
) -> TileGrid:
    """Plan the fewest tiles whose outputs cover the image with at least ``overlap`` between
    neighbours.

    Along each axis of length L with output tile length o = t - 2*border, an image no longer
    than o gets one tile (centred, the rest is reflect padding); a longer one gets
    n = 1 + ceil((L - o) / (o - overlap)) tiles, the minimum for which n tiles with pairwise
    overlaps >= ``overlap`` can span L. Their starts are spread evenly (gaps differ by at most
    one pixel) with the first flush with the top/left and the last flush with the bottom/right
    edge of the image, so no tile is a sliver.

    Args:
        image_shape: (H, W) of the image (pass ``image.shape[:2]`` for a colour image).
        tile_shape: (th, tw), the model input size.
        overlap: minimum overlap between neighbouring output tiles, 0 <= overlap < o.
        border: pixels lost per side by a 'valid'-padding model, 0 <= 2*border < th, tw.

    Raises:
        DataError: for non-positive sizes, a negative overlap, an overlap not smaller than the
            output tile, or a border that leaves no output.
    """
    height, width = _positive_pair(image_shape, "image_shape")
    tile_h, tile_w = _positive_pair(tile_shape, "tile_shape")
    overlap = _int(overlap, "overlap")
    border = _int(border, "border")
    if border < 0:
        raise DataError(f"border must be >= 0, got {border}")
    if 2 * border >= min(tile_h, tile_w):
        raise DataError(
            f"border {border} leaves no output for tile {tile_h}x{tile_w} (need 2*border < tile)"
        )
    out_h, out_w = tile_h - 2 * border, tile_w - 2 * border
    if overlap < 0:
        raise DataError(f"overlap must be >= 0, got {overlap}")
    if overlap >= min(out_h, out_w):
        raise DataError(f"overlap {overlap} must be smaller than the output tile {out_h}x{out_w}")

    ys = _axis_starts(height, out_h, overlap)
    xs = _axis_starts(width, out_w, overlap)
    # Input tiles start `border` before their outputs; padding makes the first one start at 0.
    pad = (
        (border - ys[0], ys[-1] + out_h + border - height),
        (border - xs[0], xs[-1] + out_w + border - width),
    )
    origins = tuple((y - ys[0], x - xs[0]) for y in ys for x in xs)
    return TileGrid(
        image_shape=(height, width),
        tile_shape=(tile_h, tile_w),
        border=border,
        overlap=overlap,
        origins=origins,
        pad=pad,
    )


def extract_tiles(image: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Cut the input tiles of ``grid`` from ``image``.

    Args:
        image: (H, W) or (H, W, C) array of any dtype, (H, W) == ``grid.image_shape``.
        grid: plan from :func:`plan_tiles`.

    Returns:
        (N, th, tw, C) array of the image's dtype (C = 1 for a 2-D image), tiles in the order
        of ``grid.origins``.

    Raises:
        DataError: if the image is not 2-D/3-D or its size does not match the grid.
    """
    padded = _pad_image(_as_hwc(image, grid), grid.pad)
    return _cut(padded, grid, 0, grid.n_tiles)


def stitch_tiles(outputs: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Blend model outputs of the tiles of ``grid`` into one image-sized map.

    Args:
        outputs: (N, oh, ow, K) real array, (oh, ow) == ``grid.out_tile_shape``, tiles in the
            order of ``grid.origins``. A 3-D (N, oh, ow) array is taken as K = 1.
        grid: the plan the tiles were cut with.

    Returns:
        (H, W, K) float32 (or (H, W) for 3-D ``outputs``): the weighted average of the
        overlapping outputs at every pixel. Overlaps are blended in float64, so identical values
        from every tile come back bit-exact.

    Raises:
        DataError: if the number or shape of the outputs does not match the grid.
    """
    outputs = np.asarray(outputs)
    squeeze = outputs.ndim == 3
    if squeeze:
        outputs = outputs[..., None]
    _check_outputs(outputs, grid)
    result = _stitch(outputs, grid)
    return result[..., 0] if squeeze else result


def predict_tiles(
    tiles: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
    out_shape: tuple[int, int],
    batch_size: int = 8,
) -> np.ndarray:
    """Run ``predict`` over (N, th, tw, C) tiles ``batch_size`` at a time.

    ``predict`` maps (n, th, tw, C) tiles to (n, oh, ow, K) outputs (or (n, oh, ow) for K = 1)
    with (oh, ow) == ``out_shape``. Returns (N, oh, ow, K), at least float32.

    Raises:
        DataError: for a bad batch size or predictor outputs of the wrong shape or type.
    """
    batch_size = _int(batch_size, "batch_size")
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    out_h, out_w = out_shape
    n = len(tiles)
    outputs: np.ndarray | None = None
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        out = np.asarray(predict(tiles[start:stop]))
        if out.ndim == 3:
            out = out[..., None]
        if out.ndim != 4 or out.shape[:3] != (stop - start, out_h, out_w):
            raise DataError(
                f"predict returned shape {out.shape} for {stop - start} tiles, expected "
                f"({stop - start}, {out_h}, {out_w}, K)"
            )
        if not (np.issubdtype(out.dtype, np.number) or out.dtype == np.bool_):
            raise DataError(f"predict returned dtype {out.dtype}, expected numbers")
        if outputs is None:
            # At least float32, so a later batch in a wider type is not truncated.
            dtype = np.result_type(out.dtype, np.float32)
            if stop == n:  # one batch: no copy
                return out.astype(dtype, copy=False)
            outputs = np.empty((n, *out.shape[1:]), dtype=dtype)
        elif out.shape[3] != outputs.shape[3]:
            raise DataError(
                f"predict returned {out.shape[3]} channels, earlier batches had {outputs.shape[3]}"
            )
        outputs[start:stop] = out
    assert outputs is not None  # a grid always has at least one tile
    return outputs


def segment_tiled(
    image: np.ndarray,
    grid_or_tile_shape: TileGrid | Sequence[int],
    predict: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 8,
    overlap: int = 32,
    border: int = 0,
) -> np.ndarray:
    """Run ``predict`` over an image of any size, tile by tile, and stitch the outputs.

    The three steps :class:`edgeseg.core.segmenter.Segmenter` times separately:
    :func:`extract_tiles`, :func:`predict_tiles`, :func:`stitch_tiles`.

    Args:
        image: (H, W) or (H, W, C) array of any dtype; tiles are passed to ``predict`` in that
            dtype (normalisation is the predictor's job).
        grid_or_tile_shape: a :class:`TileGrid` planned for this image size, or the model input
            (th, tw) to plan one with ``overlap`` and ``border`` (both ignored for a grid).
        predict: maps (n, th, tw, C) tiles to (n, oh, ow, K) outputs (or (n, oh, ow) for K = 1)
            with (oh, ow) = (th - 2*border, tw - 2*border).
        batch_size: tiles per ``predict`` call (the last call may get fewer).

    Returns:
        (H, W, K) float32 map.

    Raises:
        DataError: for a grid planned for another image size, a bad batch size, or predictor
            outputs of the wrong shape.
    """
    arr = np.asarray(image)
    if isinstance(grid_or_tile_shape, TileGrid):
        grid = grid_or_tile_shape
    else:
        if arr.ndim not in (2, 3):
            raise DataError(f"image must be (H, W) or (H, W, C), got shape {arr.shape}")
        grid = plan_tiles(arr.shape[:2], grid_or_tile_shape, overlap=overlap, border=border)
    tiles = extract_tiles(arr, grid)  # predict_tiles checks batch_size
    outputs = predict_tiles(tiles, predict, grid.out_tile_shape, batch_size)
    _check_outputs(outputs, grid)
    return _stitch(outputs, grid)


# --------------------------------------------------------------------------------------------
# Internals


def _int(value: object, name: str) -> int:
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(f"{name} must be an integer, got {value!r}") from None


def _positive_pair(shape: Sequence[int], name: str) -> tuple[int, int]:
    try:
        values = tuple(shape)
    except TypeError:
        raise DataError(f"{name} must be a pair (height, width), got {shape!r}") from None
    if len(values) != 2:
        raise DataError(f"{name} must be a pair (height, width), got {shape!r}")
    first, second = (_int(v, name) for v in values)
    if first <= 0 or second <= 0:
        raise DataError(f"{name} must be positive, got {first}x{second}")
    return first, second


def _axis_starts(length: int, out: int, overlap: int) -> list[int]:
    """Starts (image coordinates) of the output tiles along one axis."""
    if length <= out:
        # Centre the image in the tile so the model sees the same amount of context each side.
        return [-((out - length) // 2)]
    n = 1 + -(-(length - out) // (out - overlap))
    span = length - out
    # round(i * span / (n - 1)) in integers; every gap is <= ceil(span / (n - 1)) <= out - overlap.
    return [(2 * i * span + (n - 1)) // (2 * (n - 1)) for i in range(n)]


def _as_hwc(image: np.ndarray, grid: TileGrid) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    elif image.ndim != 3:
        raise DataError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    if image.shape[:2] != tuple(grid.image_shape):
        raise DataError(
            f"image is {image.shape[0]}x{image.shape[1]} but the tile grid was planned for "
            f"{grid.image_shape[0]}x{grid.image_shape[1]}"
        )
    return image


def _pad_image(image: np.ndarray, pad: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """Reflect-pad an (H, W, C) image; numpy keeps reflecting when a pad is wider than the
    image, and an axis of length 1 has nothing to reflect, so it repeats its pixel instead."""
    if not any(pad[0]) and not any(pad[1]):
        return image
    if image.shape[0] > 1 and image.shape[1] > 1:
        return np.pad(image, (pad[0], pad[1], (0, 0)), mode="reflect")
    out = image
    for axis in (0, 1):
        widths = [(0, 0), (0, 0), (0, 0)]
        widths[axis] = pad[axis]
        out = np.pad(out, widths, mode="reflect" if image.shape[axis] > 1 else "edge")
    return out


def _cut(padded: np.ndarray, grid: TileGrid, start: int, stop: int) -> np.ndarray:
    """Tiles ``start:stop`` of ``grid`` from the padded (Hp, Wp, C) image -> (n, th, tw, C)."""
    tile_h, tile_w = grid.tile_shape
    tiles = np.empty((stop - start, tile_h, tile_w, padded.shape[2]), dtype=padded.dtype)
    for i, (y, x) in enumerate(grid.origins[start:stop]):
        tiles[i] = padded[y : y + tile_h, x : x + tile_w]
    return tiles


def _ramp_weights(starts: tuple[int, ...], out: int) -> tuple[np.ndarray, ...]:
    """Normalised 1-D blending weights (length ``out``, float64) of the tiles along one axis.

    Each tile ramps with sin^2 up across the overlap with its previous neighbour and with
    cos^2 down across the overlap with its next one, evaluated at pixel centres so no weight is
    0; sides without a neighbour (the image edges) stay at 1. Dividing by the sum over tiles
    makes the weights a partition of unity even where three tiles overlap.
    """
    n = len(starts)
    raw = np.ones((n, out), dtype=np.float64)
    for i in range(n):
        if i > 0:
            width = starts[i - 1] + out - starts[i]
            if width > 0:
                phase = (np.arange(width) + 0.5) * (np.pi / (2 * width))
                raw[i, :width] *= np.sin(phase) ** 2
        if i < n - 1:
            width = starts[i] + out - starts[i + 1]
            if width > 0:
                phase = (np.arange(width) + 0.5) * (np.pi / (2 * width))
                raw[i, out - width :] *= np.cos(phase) ** 2
    first = starts[0]
    total = np.zeros(starts[-1] + out - first, dtype=np.float64)
    for i, s in enumerate(starts):
        total[s - first : s - first + out] += raw[i]
    weights = []
    for i, s in enumerate(starts):
        w = raw[i] / total[s - first : s - first + out]
        w.flags.writeable = False  # shared through the cache
        weights.append(w)
    return tuple(weights)


@dataclass(frozen=True)
class _Segment:
    """A run [lo, hi) of image pixels along one axis covered by the same set of tiles.

    ``covers`` holds, per covering tile, its index along the axis, the offset of ``lo`` inside
    that tile's output, and its normalised weights over the run (float64, length hi - lo).
    """

    lo: int
    hi: int
    covers: tuple[tuple[int, int, np.ndarray], ...]


@lru_cache(maxsize=64)
def _axis_segments(starts: tuple[int, ...], out: int, length: int) -> tuple[_Segment, ...]:
    """Split one image axis into runs with a constant set of covering output tiles."""
    weights = _ramp_weights(starts, out)
    cuts = sorted({0, length} | {min(max(c, 0), length) for s in starts for c in (s, s + out)})
    segments = []
    for lo, hi in itertools.pairwise(cuts):
        covers = []
        for i, s in enumerate(starts):
            if s <= lo and hi <= s + out:
                w = weights[i][lo - s : hi - s]
                w.flags.writeable = False  # shared through the cache
                covers.append((i, lo - s, w))
        segments.append(_Segment(lo, hi, tuple(covers)))
    return tuple(segments)


def _grid_segments(grid: TileGrid) -> tuple[tuple[_Segment, ...], tuple[_Segment, ...], int]:
    """Row segments, column segments and the number of tile columns of a grid (cached per axis)."""
    out_h, out_w = grid.out_tile_shape
    height, width = grid.image_shape
    dy, dx = grid.border - grid.pad[0][0], grid.border - grid.pad[1][0]
    rows, cols = grid.rows, grid.cols
    if grid.origins != tuple(itertools.product(rows, cols)):
        raise DataError("tile grid is not a regular row-major grid; build it with plan_tiles")
    row_segments = _axis_segments(tuple(y + dy for y in rows), out_h, height)
    col_segments = _axis_segments(tuple(x + dx for x in cols), out_w, width)
    return row_segments, col_segments, len(cols)


def _stitch(outputs: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Blend (N, oh, ow, K) tile outputs into an (H, W, K) float32 map."""
    row_segments, col_segments, n_cols = _grid_segments(grid)
    channels = outputs.shape[-1]
    result = np.empty((*grid.image_shape, channels), dtype=np.float32)
    for rs in row_segments:
        for cs in col_segments:
            h, w = rs.hi - rs.lo, cs.hi - cs.lo
            # Work on (h, w*K) views: with few channels, a trailing axis of length K makes
            # numpy's inner loops too short to be fast. `result` is C-contiguous, so this
            # reshape is always a view and writes land in it.
            dst = result[rs.lo : rs.hi, cs.lo : cs.hi].reshape(h, w * channels)
            if len(rs.covers) == 1 and len(cs.covers) == 1:
                # Only one tile covers this block, so its weight is exactly 1: copy, no maths.
                (iy, oy, _), (ix, ox, _) = rs.covers[0], cs.covers[0]
                dst[...] = outputs[iy * n_cols + ix, oy : oy + h, ox : ox + w].reshape(h, -1)
                continue
            # float64 keeps the blend of values shared by all tiles bit-exact after the cast.
            acc = np.zeros(dst.shape, dtype=np.float64)
            for ix, ox, wx in cs.covers:
                wx_k = np.repeat(wx, channels)
                for iy, oy, wy in rs.covers:
                    tile = outputs[iy * n_cols + ix, oy : oy + h, ox : ox + w].reshape(h, -1)
                    # A lone cover along one axis has weight exactly 1 there: broadcast the
                    # other axis' weights instead of forming the 2-D product.
                    if len(rs.covers) == 1:
                        acc += tile * wx_k
                    elif len(cs.covers) == 1:
                        acc += tile * wy[:, None]
                    else:
                        acc += tile * np.multiply.outer(wy, wx_k)
            dst[...] = acc
    return result


def _check_outputs(outputs: np.ndarray, grid: TileGrid) -> None:
    out_h, out_w = grid.out_tile_shape
    if outputs.ndim != 4 or outputs.shape[1:3] != (out_h, out_w):
        raise DataError(
            f"tile outputs have shape {outputs.shape}, expected (N, {out_h}, {out_w}, K) "
            "for this grid"
        )
    if outputs.shape[0] != grid.n_tiles:
        raise DataError(f"got {outputs.shape[0]} tile outputs for a grid of {grid.n_tiles} tiles")
    if not (np.issubdtype(outputs.dtype, np.number) or outputs.dtype == np.bool_):
        raise DataError(f"tile outputs must be numeric, got dtype {outputs.dtype}")
    if np.iscomplexobj(outputs):
        raise DataError("tile outputs must be real, got a complex array")
