"""Blocks of a large frame, and one object id across them (pure numpy).

A frame (one Y-X plane of an array) is cut along its Zarr chunks into **blocks**. Each block
is segmented with a **halo** of ``halo`` pixels around its **core** (clipped at the frame's
edges), so every core pixel sees the context the model's receptive field needs; only the core
is kept. With a halo that covers the receptive field (plus, for instance models, the largest
object), a core equals the whole-frame segmentation there.

Objects that cross a core's edge get one id, as in Cellpose's distributed evaluation:

- instance models: block A also labelled the part of its halo that is its neighbour N's
  core. Where A's objects (those with pixels in A's core) and N's core objects cover the same
  pixels there with an IoU above one half, they are one object (:func:`overlap_links`).
  Touching objects stay apart: each overlaps itself, not its neighbour.
- semantic models: objects are 8-connected components of one class. Components of each core
  are linked to those of the neighbouring core whose pixels touch across the shared edge with
  the same class (:func:`adjacent_links`): exact for connected components. Only the ids on
  the four edges of each core are needed (:func:`core_edges`, :func:`edge_links`).

The links of all blocks go into a union-find (:func:`merge_ids`), which numbers the objects
of a whole array 1..N. Measurements of the parts of an object in several blocks are merged
(:func:`partial_stats`, :func:`merge_stats`) into the columns `edgeseg run --objects` writes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgeseg.core.instances import columns_from_sums

__all__ = [
    "SIDES",
    "STAT_FIELDS",
    "Block",
    "adjacent_links",
    "core_edges",
    "edge_links",
    "face_pairs",
    "merge_ids",
    "merge_stats",
    "overlap_links",
    "partial_stats",
    "plan_blocks",
]

#: Columns of a block's partial measurements (one row per object part).
STAT_FIELDS = ("id", "area", "sum_y", "sum_x", "y0", "x0", "y1", "x1", "sum_i")


@dataclass(frozen=True)
class Block:
    """One block of a frame: ``grid`` (row, column) in the block grid, its ``core`` and its
    halo-extended region ``ext`` as (y0, y1, x0, x1), frame coordinates, ends exclusive."""

    grid: tuple[int, int]
    core: tuple[int, int, int, int]
    ext: tuple[int, int, int, int]

    @property
    def core_in_ext(self) -> tuple[slice, slice]:
        """The core as slices of the extended region."""
        y0, y1, x0, x1 = self.core
        ey0, _, ex0, _ = self.ext
        return slice(y0 - ey0, y1 - ey0), slice(x0 - ex0, x1 - ex0)


def plan_blocks(shape: tuple[int, int], block: tuple[int, int], halo: int) -> list[Block]:
    """Blocks of ``block`` (h, w) pixels (the last ones smaller) covering a frame of ``shape``
    (H, W), each with ``halo`` pixels of context, row-major."""
    h, w = shape
    bh, bw = block
    if bh < 1 or bw < 1 or halo < 0:
        raise ValueError(f"bad block plan: block {block}, halo {halo}")
    blocks = []
    for by in range(math.ceil(h / bh)):
        for bx in range(math.ceil(w / bw)):
            y0, x0 = by * bh, bx * bw
            y1, x1 = min(y0 + bh, h), min(x0 + bw, w)
            ext = (max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo))
            blocks.append(Block((by, bx), (y0, y1, x0, x1), ext))
    return blocks


def _intersect(
    a: tuple[int, int, int, int], b: tuple[int, int, int, int]
) -> tuple[int, int, int, int] | None:
    y0, y1 = max(a[0], b[0]), min(a[1], b[1])
    x0, x1 = max(a[2], b[2]), min(a[3], b[3])
    return (y0, y1, x0, x1) if y0 < y1 and x0 < x1 else None


def face_pairs(blocks: Sequence[Block]) -> Iterator[tuple[int, int, tuple[int, int, int, int]]]:
    """(i, j, region) for every block i and each other block j whose core meets block i's
    halo: ``region`` (frame coordinates) is that meeting, where both labelled the pixels."""
    for i, a in enumerate(blocks):
        for j, b in enumerate(blocks):
            if i == j or max(abs(a.grid[0] - b.grid[0]), abs(a.grid[1] - b.grid[1])) != 1:
                continue
            region = _intersect(a.ext, b.core)
            if region is not None:
                yield i, j, region


def overlap_links(a: np.ndarray, b: np.ndarray, min_iou: float = 0.5) -> np.ndarray:
    """(k, 2) int64 pairs (id in ``a``, id in ``b``) of objects that are one: two labellings
    of the same pixels whose objects overlap with an IoU above ``min_iou`` (0: background)."""
    a = np.asarray(a).ravel().astype(np.int64)
    b = np.asarray(b).ravel().astype(np.int64)
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.zeros((0, 2), np.int64)
    na = np.bincount(a)
    nb = np.bincount(b)
    pairs, counts = np.unique(np.stack([a[both], b[both]], axis=1), axis=0, return_counts=True)
    union = na[pairs[:, 0]] + nb[pairs[:, 1]] - counts
    return pairs[counts > min_iou * union]


def adjacent_links(
    a_line: np.ndarray, b_line: np.ndarray, a_classes: np.ndarray, b_classes: np.ndarray
) -> np.ndarray:
    """(k, 2) pairs (id in a, id in b) of components that touch across a shared edge: pixel i
    of ``a_line`` touches pixels i-1, i and i+1 of ``b_line`` (8-connectivity); ids touch
    when both are objects of the same class (``*_classes[id]``)."""
    a_line = np.asarray(a_line).ravel().astype(np.int64)
    b_line = np.asarray(b_line).ravel().astype(np.int64)
    n = len(a_line)
    found = []
    for d in (-1, 0, 1):
        lo, hi = max(0, -d), min(n, n - d)
        if lo >= hi:
            continue
        a = a_line[lo:hi]
        b = b_line[lo + d : hi + d]
        ok = (a > 0) & (b > 0)
        a, b = a[ok], b[ok]
        same = a_classes[a] == b_classes[b]
        found.append(np.stack([a[same], b[same]], axis=1))
    if not found:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(found), axis=0)


#: The sides of a block's core whose ids :func:`edge_links` needs, in this order.
SIDES = ("top", "bottom", "left", "right")


def core_edges(ids: np.ndarray) -> dict[str, np.ndarray]:
    """The ids on the four sides of a block's core (:data:`SIDES`), for :func:`edge_links`."""
    return {
        "top": ids[0].copy(),
        "bottom": ids[-1].copy(),
        "left": ids[:, 0].copy(),
        "right": ids[:, -1].copy(),
    }


def edge_links(
    blocks: Sequence[Block],
    edges: Sequence[Mapping[str, np.ndarray]],
    classes: Sequence[np.ndarray],
) -> list[tuple[int, int, int, int]]:
    """(block i, id, block j, id) of a semantic model's components that touch across the
    edges between neighbouring cores of one frame (each edge once, 8-connectivity, same
    class): ``edges[i]`` are block i's :func:`core_edges`, ``classes[i]`` the class of each
    of its ids."""
    at = {b.grid: i for i, b in enumerate(blocks)}
    found: list[tuple[int, int, int, int]] = []
    for i, a in enumerate(blocks):
        for (dy, dx), mine, theirs in (
            ((0, 1), lambda e: e["right"], lambda e: e["left"]),
            ((1, 0), lambda e: e["bottom"], lambda e: e["top"]),
            ((1, 1), lambda e: e["bottom"][-1:], lambda e: e["top"][:1]),
            ((1, -1), lambda e: e["bottom"][:1], lambda e: e["top"][-1:]),
        ):
            j = at.get((a.grid[0] + dy, a.grid[1] + dx))
            if j is None:
                continue
            pairs = adjacent_links(mine(edges[i]), theirs(edges[j]), classes[i], classes[j])
            found += [(i, int(u), j, int(v)) for u, v in pairs]
    return found


def merge_ids(n: int, links: np.ndarray) -> np.ndarray:
    """Union-find over nodes 0..n-1 joined by ``links`` (k, 2): int64 (n,) ids 1..K, one per
    connected set, numbered in the order of each set's first node."""
    parent = np.arange(n, dtype=np.int64)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = int(parent[root])
        while parent[x] != root:  # path compression
            parent[x], x = root, int(parent[x])
        return root

    for u, v in np.asarray(links, dtype=np.int64).reshape(-1, 2):
        ru, rv = find(int(u)), find(int(v))
        if ru != rv:  # the smaller index becomes the root: it is the set's first node
            parent[max(ru, rv)] = min(ru, rv)
    while True:  # every node straight to its root
        grand = parent[parent]
        if np.array_equal(grand, parent):
            break
        parent = grand
    _, ids = np.unique(parent, return_inverse=True)
    return ids.astype(np.int64) + 1


def partial_stats(
    labels: np.ndarray, image: np.ndarray | None, origin: tuple[int, int]
) -> np.ndarray:
    """float64 (k, len(STAT_FIELDS)) measurements of the objects of a block core: ``labels``
    (h, w) ids, ``image`` the raw core (alpha dropped; channels averaged) or None, ``origin``
    the core's (y, x) in the frame, so that coordinates are the frame's."""
    labels = np.asarray(labels)
    h, w = labels.shape
    flat = labels.ravel()
    fg = np.flatnonzero(flat)
    if fg.size == 0:
        return np.zeros((0, len(STAT_FIELDS)))
    ids_all = flat[fg].astype(np.int64)
    uniq, ids = np.unique(ids_all, return_inverse=True)
    n = len(uniq)
    ys, xs = np.divmod(fg, w)
    ys = ys + origin[0]
    xs = xs + origin[1]
    out = np.zeros((n, len(STAT_FIELDS)))
    out[:, 0] = uniq
    out[:, 1] = np.bincount(ids, minlength=n)
    out[:, 2] = np.bincount(ids, weights=ys, minlength=n)
    out[:, 3] = np.bincount(ids, weights=xs, minlength=n)
    for col, fn, start, v in ((4, np.minimum, np.inf, ys), (5, np.minimum, np.inf, xs),
                              (6, np.maximum, -1.0, ys), (7, np.maximum, -1.0, xs)):  # fmt: skip
        acc = np.full(n, start)
        fn.at(acc, ids, v)
        out[:, col] = acc
    if image is not None:
        values = np.asarray(image).reshape(h * w, -1)[fg].astype(np.float64).mean(axis=1)
        out[:, 8] = np.bincount(ids, weights=values, minlength=n)
    return out


def merge_stats(
    parts: Sequence[np.ndarray],
    shape: tuple[int, int],
    pixel_size_um: float | None = None,
    has_intensity: bool = True,
) -> dict[str, np.ndarray]:
    """The object columns (:func:`~edgeseg.core.instances.object_columns`) of a frame of
    ``shape`` from its blocks' partial measurements, in id order."""
    rows = [np.asarray(p, np.float64).reshape(-1, len(STAT_FIELDS)) for p in parts]
    rows = [p for p in rows if len(p)]
    if not rows:
        return columns_from_sums(None, shape, pixel_size_um)
    table = np.concatenate(rows)
    uniq, inv = np.unique(table[:, 0].astype(np.int64), return_inverse=True)
    n = len(uniq)
    sums = {c: np.bincount(inv, weights=table[:, c], minlength=n) for c in (1, 2, 3, 8)}
    y0 = np.full(n, np.inf)
    x0 = np.full(n, np.inf)
    y1 = np.full(n, -1.0)
    x1 = np.full(n, -1.0)
    np.minimum.at(y0, inv, table[:, 4])
    np.minimum.at(x0, inv, table[:, 5])
    np.maximum.at(y1, inv, table[:, 6])
    np.maximum.at(x1, inv, table[:, 7])
    area = np.rint(sums[1]).astype(np.int64)
    bbox = [np.rint(v).astype(np.int64) for v in (y0, x0, y1, x1)]
    columns = columns_from_sums(
        (uniq, area, sums[2], sums[3], *bbox, sums[8]), shape, pixel_size_um
    )
    if not has_intensity:
        columns["mean_intensity"] = np.full(n, np.nan)
        columns["integrated_intensity"] = np.full(n, np.nan)
    return columns
