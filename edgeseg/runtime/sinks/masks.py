"""The mask sink: every frame's label map as a lossless file (:class:`MaskSink`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

import numpy as np

from edgeseg.core.labels import check_labels
from edgeseg.errors import DataError
from edgeseg.imageio import encode_mask, stored_labels
from edgeseg.optional import require
from edgeseg.paths import atomic_path
from edgeseg.runtime.sinks.base import (
    Record,
    SinkBase,
    os_reason,
    record_fields,
    remove_partials,
    stop_message,
)
from edgeseg.runtime.storage import Ring

__all__ = ["MaskSink"]


# Temporary names of masks being written: atomic_path's (".NAME.1a2b3c4d.partial.png"), and
# the ".000123.partial.png" of earlier versions, which a killed run of theirs may have left.
_PARTIAL_MASK = re.compile(r"\.(?:\d{6,}|.+\.[0-9a-f]{8})\.partial\.(?:png|tif)")


class MaskSink(SinkBase):
    """Lossless label maps, one file a frame: ``folder/000123.png`` (or ``.tif``), or named
    after the frame's file.

    The files hold the label values themselves (0 background, 1 the foreground of a one-class
    model, 1..K-1 the classes otherwise: uint8), or, for an instance model's id map (any
    integer map that is not uint8), the object ids 1..N as uint16 (ids above 65535: a TIFF
    keeps them as uint32, for tifffile to read; a PNG cannot, they are left out with a
    warning). They look black in an image viewer; :func:`edgeseg.imageio.read_image` and any
    image library read them back exactly.

    A frame whose record has a ``name`` that is a whole file (``"A06_s6.tif"``: the frames of
    image folders and glob patterns) is saved under that file's stem (``A06_s6.png``; a name
    with folders, ``"a/x.png"``, becomes ``a_x.png``); other frames (cameras, videos, pages of
    a stack: ``"clip.mp4#frame3"``) by their index. Two frames of one run with the same stem
    (``A.png`` and ``A.tif``) keep both: the later one is ``A-000012.png`` (with a warning).
    Each file is written under a temporary name and renamed, so a file either is complete or
    does not exist (leftover temporary files of a killed run are deleted at start).

    With ``max_bytes`` (bytes, ``"500M"``, ``"20%"``) the oldest mask files are deleted after
    each new one to stay within it: files of the index naming (``NNNNNN.png``, earlier runs'
    included) and the named files this run wrote; no other file is touched. A write that fails
    on disk stops saving masks with a warning (:attr:`stopped`) and never raises.
    """

    def __init__(
        self, folder: str | Path, fmt: str = "png", max_bytes: int | str | None = None
    ) -> None:
        self.folder = Path(folder)
        fmt = fmt.lower().lstrip(".")
        if fmt == "tiff":
            fmt = "tif"
        if fmt not in ("png", "tif"):
            raise DataError(f"mask format must be png or tif, got {fmt!r}")
        if fmt == "tif":
            require("tifffile")  # missing: a one-line error now, not at the first frame
        self.fmt = fmt
        self.frames = 0
        self.warnings: list[str] = []
        self.ring: Ring | None = None
        self._ours = _OwnMasks(fmt)
        self._stems: dict[str, int] = {}  # named masks of this run: stem → frame index
        if self.folder.exists() and not self.folder.is_dir():
            raise DataError(f"cannot save masks to {self.folder}: it is a file, not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create {self.folder}: {os_reason(exc)}") from exc
        remove_partials(self.folder, _PARTIAL_MASK, self.warnings)
        if max_bytes is not None:
            self.ring = Ring(
                self.folder, cast("re.Pattern[str]", self._ours), max_bytes, order=_mtime
            )

    def path_for(self, index: int, name: str | None = None) -> Path:
        """Where frame ``index`` (named ``name`` in its source, if it is) is saved."""
        stem = _mask_stem(name)
        if stem is None:
            return self.folder / f"{index:06d}.{self.fmt}"
        first = self._stems.get(stem, index)
        if first != index:
            stem = f"{stem}-{index:06d}"
        return self.folder / f"{stem}.{self.fmt}"

    def _stored(self, labels: np.ndarray, index: int) -> np.ndarray:
        """The array to save: uint8 classes as they are, object ids as uint16 (or uint32)."""
        if labels.dtype == np.uint8:
            return labels
        top = int(labels.max(initial=0))
        if labels.size and int(labels.min()) < 0:
            raise DataError(f"frame {index}: an instance map with negative ids")
        if top > 0xFFFF and self.fmt != "tif" and not any("65535" in w for w in self.warnings):
            self.warnings.append(
                f"frame {index} has object ids up to {top}: a 16-bit PNG holds 65535, the "
                "objects above are left out of its mask (and of later such frames'); "
                "--mask-format tif keeps them"
            )
        return stored_labels(labels, self.fmt)

    def write(self, index: int, rendered: np.ndarray, labels: np.ndarray, record: Record) -> None:
        self._check_open()
        labels = check_labels(labels, kind="any")
        if index < 0:
            raise DataError(f"frame index must be >= 0, got {index}")
        if self.stopped is not None:
            return
        data = encode_mask(self._stored(labels, index), self.fmt)
        name = record_fields(record).get("name")
        path = self.path_for(index, name if isinstance(name, str) else None)
        stem = _mask_stem(name if isinstance(name, str) else None)
        if stem is not None:
            if path.stem != stem and not any("same name" in w for w in self.warnings):
                self.warnings.append(
                    f"frames {self._stems[stem]} and {index} have the same name {stem!r}; "
                    f"the later mask is {path.name} (and so on for further ones)"
                )
            self._stems.setdefault(stem, index)
            self._ours.names.add(path.name)
        try:
            # Not durable: a mask is written every frame, and an fsync of the file and its
            # folder took 0.5-2.5 ms a mask (against 0.2 ms without) on an ext4 disk, on the
            # rendering thread; a power cut may cost the last few masks, as it always did.
            with atomic_path(path, durable=False) as tmp, open(tmp, "wb") as f:
                f.write(data)
            if self.ring is not None:
                self.ring.add(path)
                self.ring.enforce()
        except OSError as exc:
            self.stopped = stop_message("saving masks", exc)
            self.warnings.append(f"{self.stopped}; {self.frames} masks saved, inference goes on")
            return
        self.frames += 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.ring is not None:
            self.warnings += self.ring.warnings


class _OwnMasks:
    """Which files of a mask folder its ring counts and deletes (used as the ring's pattern):
    the index naming (any run's) and the files named after frames that this run wrote."""

    def __init__(self, fmt: str) -> None:
        self._index = re.compile(rf"\d{{6,}}\.{fmt}")
        self.names: set[str] = set()

    def fullmatch(self, name: str) -> bool:
        return name in self.names or self._index.fullmatch(name) is not None


_UNSAFE_STEM = re.compile(r"[^\w.\-+ ()\[\]]+")


def _mask_stem(name: str | None) -> str | None:
    """The file stem a frame named ``name`` gives its mask, or None (saved by index): only
    names of whole files have one (``"A06_s6.tif"`` → ``"A06_s6"``, ``"a/x.png"`` → ``"a_x"``)."""
    if not name or "#" in name:
        return None
    parts = [p for p in re.split(r"[\\/]+", name) if p and p not in (".", "..")]
    if not parts:
        return None
    parts[-1] = Path(parts[-1]).stem
    stem = _UNSAFE_STEM.sub("_", "_".join(parts)).lstrip(".")
    return stem or None


def _mtime(path: Path) -> tuple[int, str]:
    try:
        return path.stat().st_mtime_ns, path.name
    except OSError:
        return 0, path.name
