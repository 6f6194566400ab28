"""Representative sets for int8 calibration: built from frames, hashed, saved, loaded, checked.

A set holds model-input tiles, preprocessed exactly as the runtime preprocesses frames for that
model: :func:`~edgeseg.core.preprocess.prepare` on the whole frame (normalisation, then
channels), then the frame is cut into model-sized tiles by the runtime's own tiling
(:func:`~edgeseg.core.tiling.plan_tiles` + :func:`~edgeseg.core.tiling.extract_tiles`;
frames smaller than the model input are padded the same way). The int8 ranges the converter
derives from these tiles are therefore the ranges the model will see on the device.

Tiles are chosen for diversity, not taken from the first frames: each candidate tile gets a
cheap descriptor (an 8x8 per-channel thumbnail, five intensity quantiles and the mean absolute
gradient along y and x) and greedy farthest-point (k-center) selection, started from the tile
nearest the mean descriptor, picks ``n`` of them. Memory stays bounded for long videos and
large microscope frames: candidate frames are subsampled evenly to ``max_candidate_frames``, a
first pass keeps only descriptors, a second pass re-reads just the frames whose tiles were
picked.

On disk a set is ``set.npz`` (the float32 tiles and the manifest as a JSON string) with a
readable copy of the manifest beside it, ``set.manifest.json``. The manifest records the
source, the frames held out, the preprocessing (the model metadata), the selection rule and a
SHA-256 of the tiles, which :meth:`CalibrationSet.load` verifies.

Named sets (:class:`NamedSet`) are TOML recipes for a set, in the project's
``calibration/sets/`` (shipped under ``edgeseg/data``; ``./calibration/sets/NAME.toml`` wins,
as for conversion recipes): a name, a source and how many tiles to keep. A source may also be
``synthetic://?size=HxW&seed=S&bit_depth=B&channels=C&frames=N`` (:class:`SyntheticStills`).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.preprocess import prepare
from edgeseg.core.segmenter import effective_overlap, frame_tiles
from edgeseg.errors import DataError
from edgeseg.paths import (
    TOMLDecodeError,
    atomic_path,
    atomic_write,
    collect_tomls,
    ensure_writable_dir,
    load_named_toml,
    parse_toml,
)
from edgeseg.runtime.sources import FrameSource, TiffStack, VideoFile, open_file_source
from edgeseg.sizes import format_hw

__all__ = [
    "FORMAT",
    "SELECTION",
    "SETS_USER_DIR",
    "CalibrationSet",
    "NamedSet",
    "SyntheticStills",
    "available_sets",
    "build_calibration",
    "check_output_path",
    "describe_tiles",
    "load_named_set",
    "manifest_path",
    "named_set_for",
    "open_calibration_source",
    "select_k_center",
    "split_holdout",
    "tiles_sha256",
]

FORMAT = "edgeseg-calibration-set"
FORMAT_VERSION = 1
SELECTION = (
    "k-center greedy on tile descriptors (8x8 per-channel thumbnail, intensity quantiles "
    "5/25/50/75/95 %, mean absolute gradient in y and x), starting from the tile nearest the "
    "mean descriptor"
)
_THUMB = 8
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_SETS = ("calibration", "sets")  # under edgeseg/data: the shipped named sets
SETS_USER_DIR = Path("calibration") / "sets"


@dataclass(frozen=True, eq=False)
class CalibrationSet:
    """Model-input tiles for calibration and the manifest that says where they came from.

    Attributes:
        tiles: float32 array of shape (N, H, W, C), model input (already normalised).
        manifest: JSON-able dict: source, n, frames_seen, frames_used, holdout, preprocessing,
            tiling, selection, tile_origins ([frame name, tile index] per tile), seed, sha256,
            edgeseg version, created.
    """

    tiles: np.ndarray
    manifest: dict[str, Any]

    def __post_init__(self) -> None:
        t = self.tiles
        if not isinstance(t, np.ndarray) or t.ndim != 4 or t.dtype != np.float32:
            shape = getattr(t, "shape", None)
            raise DataError(
                f"calibration tiles must be a float32 (N, H, W, C) array, got {shape} "
                f"{getattr(t, 'dtype', type(t).__name__)}"
            )
        if t.shape[0] < 1:
            raise DataError("a calibration set needs at least one tile")

    def __len__(self) -> int:
        return int(self.tiles.shape[0])

    def __iter__(self) -> Iterator[np.ndarray]:
        """float32 (1, H, W, C) arrays, one tile at a time (a representative dataset)."""
        for i in range(len(self)):
            yield self.tiles[i : i + 1]

    @property
    def sha256(self) -> str:
        return str(self.manifest.get("sha256", ""))

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.npz``) and ``<stem>.manifest.json`` beside it; returns ``path``.

        Raises:
            DataError: a path not ending in .npz, an unwritable location, or tiles changed
                since the manifest's hash was computed.
        """
        path = check_output_path(path)
        digest = tiles_sha256(self.tiles)
        if self.manifest.get("sha256") != digest:
            raise DataError("calibration tiles no longer match the manifest's sha256; rebuild")
        text = json.dumps(self.manifest, indent=2, sort_keys=True)
        sidecar = manifest_path(path)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, tiles=self.tiles, manifest=np.array(text))
            atomic_write(sidecar, text + "\n")
        except OSError as exc:
            raise DataError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path

    @classmethod
    def load(cls, path: str | Path) -> CalibrationSet:
        """Read a set written by :meth:`save` and verify its hash.

        Raises:
            DataError: missing file, not an .npz, not an edgeseg set, or tiles whose SHA-256
                differs from the manifest's ("modified or corrupt").
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"calibration set not found: {path}")
        if not zipfile.is_zipfile(path):
            raise DataError(f"cannot read calibration set {path}: corrupt or not an .npz")
        try:
            with np.load(path, allow_pickle=False) as data:
                if "tiles" not in data.files or "manifest" not in data.files:
                    raise DataError(f"{path} is not an edgeseg calibration set (no tiles/manifest)")
                tiles = data["tiles"]
                text = str(data["manifest"][()])
        except DataError:
            raise
        except Exception as exc:  # zipfile, numpy and OS errors for damaged files
            # numpy's advice for pickled arrays is to allow pickle: never for a data file.
            detail = "holds pickled objects" if "pickle" in str(exc) else f"{exc}"
            raise DataError(
                f"cannot read calibration set {path}: corrupt or not an .npz "
                f"({type(exc).__name__}: {detail})"
            ) from exc
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: calibration manifest is not valid JSON: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise DataError(f"{path} is not an edgeseg calibration set")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"{path}: calibration set format version {manifest.get('format_version')!r}; "
                f"this edgeseg reads version {FORMAT_VERSION}"
            )
        if tiles.ndim != 4 or tiles.dtype != np.float32:
            raise DataError(f"{path}: tiles are {tiles.dtype} {tiles.shape}, not float32 (N,H,W,C)")
        if tiles_sha256(tiles) != manifest.get("sha256"):
            raise DataError(
                f"{path}: tiles do not match the manifest's sha256, the set is modified or "
                "corrupt; rebuild it with `edgeseg calib build`"
            )
        if manifest.get("n") != tiles.shape[0]:
            raise DataError(
                f"{path}: manifest says {manifest.get('n')} tiles, the file has {tiles.shape[0]}"
            )
        return cls(tiles=tiles, manifest=manifest)

    def check_fits(self, meta: ModelMetadata) -> None:
        """Raise DataError unless the tiles are what ``meta``'s model takes, prepared its way.

        Compared: tile size and channels, and the preprocessing recorded in the manifest
        (input size, channels, channel order, normalisation with its input_max or
        percentiles).
        """
        _, h, w, c = self.tiles.shape
        mh, mw = meta.input_size
        problems = []
        if (h, w) != (mh, mw):
            problems.append(f"tiles are {h}x{w}, the model takes {mh}x{mw}")
        if c != meta.channels:
            problems.append(f"tiles have {c} channel(s), the model takes {meta.channels}")
        pre = self.manifest.get("preprocessing")
        if not isinstance(pre, dict):
            problems.append("the manifest records no preprocessing")
            pre = {}
        recorded = {
            "input_size": tuple(pre.get("input_size") or ()),
            "channels": pre.get("channels"),
            "channel_order": pre.get("channel_order"),
            "normalization": pre.get("normalization"),
        }
        wanted = {
            "input_size": tuple(meta.input_size),
            "channels": meta.channels,
            "channel_order": meta.channel_order,
            "normalization": meta.normalization,
        }
        if meta.normalization == "scale" and pre.get("normalization") == "scale":
            recorded["input_max"] = pre.get("input_max")
            wanted["input_max"] = meta.input_max
        if meta.normalization == "meanstd" and pre.get("normalization") == "meanstd":
            for key in ("mean", "std"):
                recorded[key] = tuple(pre.get(key) or ())
                wanted[key] = tuple(getattr(meta, key) or ())
        if meta.normalization == "percentile" and pre.get("normalization") == "percentile":
            recorded["percentiles"] = tuple(pre.get("percentiles") or ())
            wanted["percentiles"] = tuple(meta.percentiles)
        for key, value in wanted.items():
            if recorded[key] != value:
                problems.append(
                    f"{key} is {_show(recorded[key])} in the set, {_show(value)} for the model"
                )
        if problems:
            raise DataError("calibration set does not fit the model: " + "; ".join(problems))


def split_holdout(
    n_frames: int, fraction: float, seed: int, *, contiguous: bool = False
) -> tuple[list[int], list[int]]:
    """Split frame indices 0..n_frames-1 into (calibration, held out), both ascending.

    ``contiguous`` holds out one block of consecutive frames (at a random place) instead of
    scattered ones: for videos and time-lapse stacks, whose neighbouring frames are nearly
    identical, scattered held-out frames would be all but seen in calibration.

    Deterministic for a seed. ``round(fraction * n_frames)`` frames are held out, at least one
    when ``fraction > 0`` and ``n_frames >= 2``, and, unless ``fraction == 1``, at least one
    frame is left for calibration. ``fraction == 0`` holds out nothing.

    Raises:
        DataError: a fraction outside [0, 1] or a negative frame count.
    """
    if n_frames < 0:
        raise DataError(f"frame count must be >= 0, got {n_frames}")
    if not 0.0 <= fraction <= 1.0:
        raise DataError(f"holdout must be a fraction in [0, 1], got {fraction}")
    k = round(fraction * n_frames)
    if fraction > 0 and n_frames >= 2:
        k = max(k, 1)
    if fraction < 1:
        k = min(k, max(n_frames - 1, 0))
    rng = np.random.default_rng(seed)
    if contiguous:
        first = int(rng.integers(0, n_frames - k + 1)) if n_frames else 0
        held = list(range(first, first + k))
        kept = [i for i in range(n_frames) if not first <= i < first + k]
        return kept, held
    perm = rng.permutation(n_frames)
    held = sorted(int(i) for i in perm[:k])
    kept = sorted(int(i) for i in perm[k:])
    return kept, held


def build_calibration(
    source: str | Path | FrameSource,
    meta: ModelMetadata,
    n: int = 200,
    *,
    holdout: float = 0.0,
    seed: int = 0,
    max_candidate_frames: int = 500,
    progress: Callable[[int, int], None] | None = None,
    named: NamedSet | None = None,
) -> tuple[CalibrationSet, list[int]]:
    """Pick ``n`` diverse model-input tiles from a source's frames.

    Args:
        source: a path, pattern or ``synthetic://`` URI for :func:`open_calibration_source`,
            or an open FrameSource.
        meta: metadata of the model being calibrated (input size, channels, normalisation).
        n: tiles to keep (fewer when the candidate frames hold fewer tiles).
        holdout: fraction of frames held out (see :func:`split_holdout`); their tiles are
            never candidates, so they can score the quantized model honestly.
        seed: seed of the holdout split.
        max_candidate_frames: at most this many frames, evenly spaced over the frames not held
            out, are looked at.
        progress: called as ``progress(done, total)`` after each frame read (two passes; the
            total is exact once the first pass has chosen the frames to re-read).
        named: the named set the source and ``n`` came from, recorded in the manifest.

    Returns:
        The set, and the indices of the frames held out.

    Raises:
        DataError: n < 1, an empty source, every frame held out, a frame that cannot be read or
            reduced to the model's channels (the message names the frame).
    """
    if n < 1:
        raise DataError(f"the calibration set needs at least 1 tile, got n={n}")
    if max_candidate_frames < 1:
        raise DataError(f"max_candidate_frames must be >= 1, got {max_candidate_frames}")
    opened = not _is_frame_source(source)
    src: Any = open_calibration_source(source) if opened else source  # type: ignore[arg-type]
    try:
        calib, held = _build(src, meta, n, holdout, seed, max_candidate_frames, progress)
    finally:
        if opened:
            src.close()
    if named is not None:
        calib.manifest["named_set"] = {"name": named.name, "from": named.origin}
    return calib, held


def _build(
    src: Any,
    meta: ModelMetadata,
    n: int,
    holdout: float,
    seed: int,
    max_candidate_frames: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[CalibrationSet, list[int]]:
    n_frames = len(src)
    if n_frames == 0:
        raise DataError(f"{src.description} has no frames")
    # Frames of one video or stack are a time series: hold out a block, not scattered frames.
    series = isinstance(src, VideoFile | TiffStack)
    kept, held = split_holdout(n_frames, holdout, seed, contiguous=series)
    if not kept:
        raise DataError(
            f"every frame of {src.description} is held out (holdout {holdout}); lower --holdout"
        )
    m = min(len(kept), max_candidate_frames)
    # Evenly spaced over the kept frames, first and last included, in integers (no duplicates).
    picks = [0] if m == 1 else [(j * (len(kept) - 1)) // (m - 1) for j in range(m)]
    candidates = [kept[p] for p in picks]

    # Pass 1: descriptors only.
    descriptors: list[np.ndarray] = []
    owners: list[tuple[int, int]] = []  # (position in candidates, tile index in its frame)
    tiles_per_frame: list[int] = []
    expected_total = m + min(m, n)
    for pos, frame_index in enumerate(candidates):
        tiles = _frame_tiles(src, frame_index, meta)
        descriptors.append(describe_tiles(tiles))
        owners.extend((pos, t) for t in range(tiles.shape[0]))
        tiles_per_frame.append(tiles.shape[0])
        if progress:
            progress(pos + 1, expected_total)
    chosen = select_k_center(np.concatenate(descriptors), n)
    del descriptors

    # Pass 2: re-read only the frames whose tiles were chosen.
    by_frame: dict[int, list[tuple[int, int]]] = {}
    for slot, k in enumerate(chosen):
        pos, t = owners[k]
        by_frame.setdefault(pos, []).append((slot, t))
    tile_h, tile_w = meta.input_size
    out = np.empty((len(chosen), tile_h, tile_w, meta.channels), dtype=np.float32)
    origin: list[Any] = [None] * len(chosen)
    total = m + len(by_frame)
    for done, pos in enumerate(sorted(by_frame), start=1):
        frame_index = candidates[pos]
        tiles = _frame_tiles(src, frame_index, meta)
        if tiles.shape[0] != tiles_per_frame[pos]:
            raise DataError(f"frame {src.name(frame_index)} changed while building the set")
        for slot, t in by_frame[pos]:
            out[slot] = tiles[t]
            origin[slot] = [src.name(frame_index), t]
        if progress:
            progress(m + done, total)

    digest = tiles_sha256(out)
    from edgeseg import __version__

    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": {"description": src.description, "path": getattr(src, "path", None)},
        "n": len(chosen),
        "n_requested": n,
        "tile_shape": [tile_h, tile_w, meta.channels],
        "frames_total": n_frames,
        "frames_seen": m,
        "frames_used": len(by_frame),
        "candidate_tiles": len(owners),
        "holdout_fraction": holdout,
        "holdout": [src.name(i) for i in held],
        "preprocessing": meta.to_dict(),
        "tiling": {"overlap": effective_overlap(meta), "border": meta.output_border},
        "selection": SELECTION,
        "tile_origins": origin,
        "seed": seed,
        "sha256": digest,
        "edgeseg": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return CalibrationSet(tiles=out, manifest=manifest), held


def describe_tiles(tiles: np.ndarray) -> np.ndarray:
    """Cheap descriptors of (N, H, W, C) float tiles → float32 (N, D).

    D = 8*8*C thumbnail means + 5 intensity quantiles + 2 mean absolute gradients; each group
    is divided by the square root of its size, so each adds a root-mean-square distance in
    intensity units and no group outweighs the others by its length.
    """
    tiles = np.asarray(tiles, dtype=np.float32)
    n, h, w, c = tiles.shape
    gy, gx = min(_THUMB, h), min(_THUMB, w)
    ys = np.linspace(0, h, gy + 1).astype(int)
    xs = np.linspace(0, w, gx + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(tiles, ys[:-1], axis=1), xs[:-1], axis=2)
    area = np.outer(np.diff(ys), np.diff(xs)).astype(np.float32)[None, :, :, None]
    thumb = (sums / area).reshape(n, -1) / np.float32(np.sqrt(gy * gx * c))
    sample = tiles[:, ::2, ::2, :].reshape(n, -1)
    quant = np.quantile(sample, _QUANTILES, axis=1).T.astype(np.float32)
    quant /= np.float32(np.sqrt(len(_QUANTILES)))
    grad_y = np.abs(np.diff(tiles, axis=1)).mean(axis=(1, 2, 3)) if h > 1 else np.zeros(n)
    grad_x = np.abs(np.diff(tiles, axis=2)).mean(axis=(1, 2, 3)) if w > 1 else np.zeros(n)
    grads = np.stack([grad_y, grad_x], axis=1).astype(np.float32) / np.float32(np.sqrt(2))
    return np.concatenate([thumb, quant, grads], axis=1).astype(np.float32)


def select_k_center(descriptors: np.ndarray, n: int) -> list[int]:
    """Greedy farthest-point selection of ``min(n, N)`` rows of a (N, D) array.

    Starts from the row nearest the mean, then repeatedly adds the row farthest from those
    chosen (ties: the lowest index). Returns row indices in the order chosen.
    """
    d = np.asarray(descriptors, dtype=np.float64)
    count = min(int(n), d.shape[0])
    first = int(np.argmin(((d - d.mean(axis=0)) ** 2).sum(axis=1)))
    chosen = [first]
    dist = ((d - d[first]) ** 2).sum(axis=1)
    dist[first] = -1.0
    while len(chosen) < count:
        k = int(np.argmax(dist))
        chosen.append(k)
        dist = np.minimum(dist, ((d - d[k]) ** 2).sum(axis=1))
        dist[chosen] = -1.0
    return chosen


def tiles_sha256(tiles: np.ndarray) -> str:
    """SHA-256 (hex) of the tiles' shape and their little-endian float32 bytes."""
    arr = np.ascontiguousarray(tiles, dtype="<f4")
    digest = hashlib.sha256(json.dumps([int(s) for s in arr.shape]).encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def manifest_path(set_path: str | Path) -> Path:
    """``build/set.npz`` → ``build/set.manifest.json``."""
    p = Path(set_path)
    return p.with_name(p.stem + ".manifest.json")


def check_output_path(path: str | Path) -> Path:
    """Check (before a long build) that a set can be written to ``path``; creates its folder.

    Raises:
        DataError: a name not ending in .npz, a folder, or a location that cannot be written
            (a path under a file, a read-only folder).
    """
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise DataError(f"calibration set file must end in .npz, got {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a file name ending in .npz")
    ensure_writable_dir(path.parent, for_file=path)
    return path


# --------------------------------------------------------------------------------------------
# Named sets and synthetic stills


@dataclass(frozen=True)
class NamedSet:
    """A named calibration-set recipe from ``calibration/sets/NAME.toml``.

    Attributes:
        name: what ``edgeseg calib build NAME`` takes.
        source: a calibration source (folder, glob, video, TIFF stack, ``synthetic://``).
        n: tiles to keep.
        holdout: share of frames held out of the set.
        description: one line for ``edgeseg calib list``.
        origin: where the recipe was read (``edgeseg:NAME`` for a shipped one, else a path).
    """

    name: str
    source: str
    n: int = 200
    holdout: float = 0.0
    description: str = ""
    origin: str = ""


def available_sets(user_dir: Path = SETS_USER_DIR) -> dict[str, NamedSet]:
    """Every named set by name: the shipped ones, overridden by ``user_dir/*.toml``."""
    return dict(sorted(collect_tomls(_SETS, user_dir, _named_set).items()))


def load_named_set(name_or_path: str, user_dir: Path = SETS_USER_DIR) -> NamedSet | None:
    """A named set by ``.toml`` path or by name (the user's own first); None if unknown."""
    return load_named_toml(name_or_path, _SETS, user_dir, _named_set, "calibration set")


def named_set_for(source: str, user_dir: Path = SETS_USER_DIR) -> NamedSet | None:
    """The named set ``source`` names; None when it is a path, a pattern or a URI.

    A ``.toml`` path is read as a named set; an existing file or folder, a glob pattern or a
    ``scheme://`` URI is a source of its own (a folder called like a set wins).

    Raises:
        DataError: none of these, naming the named sets there are.
    """
    if source.lower().endswith(".toml"):
        return load_named_set(source, user_dir)
    if "://" in source or any(c in source for c in "*?[") or Path(source).expanduser().exists():
        return None
    found = load_named_set(source, user_dir)
    if found is None:
        names = ", ".join(available_sets(user_dir)) or "none"
        raise DataError(
            f"source not found: {source} (no such file, folder or pattern, nor a named "
            f"calibration set; named sets: {names})"
        )
    return found


def open_calibration_source(source: str | Path, *, window: Any = None) -> Any:
    """A FrameSource: ``synthetic://…`` as :class:`SyntheticStills`, anything else through
    :func:`~edgeseg.runtime.sources.open_file_source` (``window``: of DICOM frames)."""
    text = str(source)
    if text.lower().startswith("synthetic:"):
        return SyntheticStills(text)
    return open_file_source(source, window=window)


class SyntheticStills:
    """``synthetic://?size=HxW&seed=S&bit_depth=B&channels=C&frames=N`` as a finite source.

    N independent stills of the built-in synthetic microscopy: frame i is sample i of
    :func:`edgeseg.samples.generate` with that size, bit depth, channels and seed, i.e. the
    image ``edgeseg samples`` (and the demo) writes as the i-th file. Defaults: 512x512, seed
    0, 8-bit, 1 channel, 200 frames. Frames are made on demand (the same bytes every time).
    """

    def __init__(self, uri: str) -> None:
        from edgeseg.runtime.uri import parse_uri
        from edgeseg.samples import SynthConfig

        parsed = parse_uri(uri)
        if parsed.scheme != "synthetic":
            raise DataError(f"not a synthetic:// source: {uri}")
        p = parsed.params
        live = [k for k in ("fps", "speed") if k in p]
        if live:
            raise DataError(
                f"{uri}: {' and '.join(live)} belong to the live stream; calibration takes "
                "stills (size, seed, bit_depth, channels, frames)"
            )
        self.config = SynthConfig(
            size=p.get("size", (512, 512)),
            bit_depth=p.get("bit_depth", 8),
            channels=p.get("channels", 1),
        )
        self.seed = int(p.get("seed", 0))
        self.frames = int(p.get("frames", 200))
        self.path = parsed.uri
        h, w = self.config.size
        self.description = (
            f"synthetic microscopy stills ({h}x{w}, {self.config.bit_depth}-bit, "
            f"{self.config.channels} channel(s), seed {self.seed}, {self.frames} frames)"
        )

    def __len__(self) -> int:
        return self.frames

    def read(self, i: int) -> np.ndarray:
        from edgeseg.samples import generate_sample

        if not 0 <= i < self.frames:
            raise IndexError(f"frame {i} of {self.frames}")
        image, _mask = generate_sample(np.random.default_rng((self.seed, i)), self.config)
        return image

    def name(self, i: int) -> str:
        return f"synthetic#{i}"

    def close(self) -> None:
        return None


def _named_set(text: str, origin: str) -> NamedSet:
    try:
        data = parse_toml(text)
    except TOMLDecodeError as exc:
        raise DataError(f"calibration set {origin} is not valid TOML: {exc}") from exc
    known = {"name", "source", "n", "holdout", "description"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DataError(f"calibration set {origin}: unknown key(s) {', '.join(unknown)}")
    if not isinstance(data.get("name"), str) or not isinstance(data.get("source"), str):
        raise DataError(f"calibration set {origin}: needs 'name' and 'source' (strings)")
    n, holdout = data.get("n", 200), data.get("holdout", 0.0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"calibration set {origin}: n must be a positive integer, got {n!r}")
    if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 <= holdout < 1:
        raise DataError(f"calibration set {origin}: holdout must be in [0, 1), got {holdout!r}")
    return NamedSet(
        name=data["name"],
        source=data["source"],
        n=n,
        holdout=float(holdout),
        description=str(data.get("description", "")),
        origin=origin,
    )


# --------------------------------------------------------------------------------------------
# Internals


def _frame_tiles(src: Any, i: int, meta: ModelMetadata) -> np.ndarray:
    """Frame ``i`` prepared for the model and cut into float32 (T, th, tw, C) input tiles."""
    try:
        x = prepare(src.read(i), meta)
    except DataError as exc:
        name = src.name(i)
        message = str(exc)
        if name not in message:
            message = f"frame {name} of {src.description}: {message}"
        raise DataError(message) from exc
    return frame_tiles(x, meta)


def _is_frame_source(obj: object) -> bool:
    return not isinstance(obj, (str, Path)) and isinstance(obj, FrameSource)


def _show(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return format_hw(value)
    return "none" if value is None else str(value)
