"""What the INPUT arguments of `edgeseg segment` name: files with frames, and Zarr arrays.

- An image folder, a glob pattern or a file: image files (one frame each) and TIFF stacks
  (one frame per plane, as `edgeseg run` reads them: :class:`~edgeseg.runtime.sources.
  TiffStack`, OME-TIFF axes included). Frames are numbered within their argument in
  natural file order, and named as `run` names them (``A06.tif``, ``stack.tif#page5``).
- A Zarr array, or a Zarr group holding OME-Zarr ``multiscales`` (its full-resolution
  array is used): the axes come from the OME metadata where present, else from ``--axes``
  (a 2-D array without either is ``YX``). Y and X must be the last two axes, optionally
  followed by C; a C axis (at most 4) holds the frame's channels; every other axis (T, Z…)
  indexes frames.

A file that cannot be read (a damaged TIFF header) is returned as a :class:`BadInput`, to be
reported and skipped; an argument that names nothing usable is a one-line DataError.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.errors import DataError
from edgeseg.imageio import IMAGE_SUFFIXES, list_images, natural_key

__all__ = [
    "AXIS_NAMES",
    "ArrayInput",
    "BadInput",
    "FileInput",
    "FrameRef",
    "discover",
    "is_zarr",
    "parse_axes",
]

#: Axis letters ``--axes`` takes: time, depth, channel, rows, columns, and Q (anything else).
AXIS_NAMES = "TZCQYX"
_TIFF = (".tif", ".tiff")
_GLOB_CHARS = ("*", "?", "[")
_UNSAFE_STEM = re.compile(r"[^\w.\-+ ()\[\]]+")
_MAX_CHANNELS = 4


@dataclass(frozen=True)
class FrameRef:
    """One frame of a file input: page ``page`` of ``path``, frame ``index`` of its argument,
    named ``name`` (as `edgeseg run` names it)."""

    path: str
    page: int
    index: int
    name: str
    # µm per pixel from the file (DICOM Pixel Spacing), for areas; None: the run's.
    pixel_size_um: float | None = None


@dataclass(frozen=True)
class FileInput:
    """An image file (one frame) or a TIFF stack (``stack``: several frames).

    ``identity`` (path, size, modification time) keys its results in the restart ledger;
    ``stem`` names its output (``stem.png`` / ``stem.tif``).
    """

    path: str
    frames: tuple[FrameRef, ...]
    stack: bool
    identity: str
    stem: str
    # A DICOM file or series folder (frames read by edgeseg.dicom, in slice order).
    dicom: bool = False

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass(frozen=True)
class ArrayInput:
    """A Zarr array: ``store`` (the folder opened) and ``array_path`` inside it ("" for the
    array itself), its ``axes`` (one letter per dimension), shape, chunks and dtype.

    The label array has the same axes without C, its shape and chunking.
    """

    store: str
    array_path: str
    axes: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    identity: str
    stem: str

    @property
    def name(self) -> str:
        return Path(self.store).name + (f"/{self.array_path}" if self.array_path else "")

    @property
    def lead_axes(self) -> str:
        """The axes that index frames (all but Y, X and C)."""
        return "".join(a for a in self.axes if a not in "YXC")

    @property
    def lead_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[self.axes.index(a)] for a in self.lead_axes)

    @property
    def lead_chunks(self) -> tuple[int, ...]:
        return tuple(self.chunks[self.axes.index(a)] for a in self.lead_axes)

    @property
    def plane_shape(self) -> tuple[int, int]:
        return (self.shape[self.axes.index("Y")], self.shape[self.axes.index("X")])

    @property
    def plane_chunks(self) -> tuple[int, int]:
        return (self.chunks[self.axes.index("Y")], self.chunks[self.axes.index("X")])

    @property
    def n_frames(self) -> int:
        return math.prod(self.lead_shape)

    @property
    def label_axes(self) -> str:
        return self.axes.replace("C", "")

    @property
    def label_shape(self) -> tuple[int, ...]:
        return tuple(s for a, s in zip(self.axes, self.shape, strict=True) if a != "C")

    @property
    def label_chunks(self) -> tuple[int, ...]:
        return tuple(c for a, c in zip(self.axes, self.chunks, strict=True) if a != "C")

    def frame_name(self, lead: Sequence[int]) -> str:
        """``mosaic.zarr`` for a 2-D array, ``movie.zarr#T=3,Z=0`` for a plane of a larger one."""
        if not self.lead_axes:
            return self.name
        where = ",".join(f"{a}={i}" for a, i in zip(self.lead_axes, lead, strict=True))
        return f"{self.name}#{where}"


@dataclass(frozen=True)
class BadInput:
    """An input that cannot be read, and why (one line)."""

    path: str
    reason: str


def parse_axes(text: str, ndim: int, what: str = "--axes") -> str:
    """``"tyx"`` → ``"TYX"``, checked against an array of ``ndim`` dimensions.

    Raises:
        DataError: unknown or repeated letters, a length other than ``ndim``, or Y and X not
            the last two axes (optionally followed by C).
    """
    axes = text.strip().upper()
    bad = sorted(set(axes) - set(AXIS_NAMES))
    if bad or not axes:
        raise DataError(
            f"{what} {text!r}: use the letters {', '.join(AXIS_NAMES)} (one per dimension)"
        )
    if len(set(axes)) != len(axes):
        raise DataError(f"{what} {text!r} names an axis twice")
    if len(axes) != ndim:
        raise DataError(f"{what} {text!r} has {len(axes)} letters for a {ndim}-D array")
    if not (axes.endswith("YX") or axes.endswith("YXC")):
        raise DataError(f"{what} {text!r}: Y and X must be the last two axes (or before C)")
    return axes


def discover(
    args: Sequence[str | Path], axes: str | None = None
) -> tuple[list[Any], list[BadInput]]:
    """The inputs the arguments name, in order (files of a folder or pattern in natural
    order), and the files among them that cannot be read.

    Raises:
        DataError: an argument that names nothing (missing path, empty folder, a pattern
            matching nothing), an unsupported file type, a Zarr array that cannot be opened,
            or axes that do not fit.
    """
    if not args:
        raise DataError("no input: give image folders, globs, TIFF stacks or Zarr arrays")
    found: list[Any] = []
    bad: list[BadInput] = []
    stems: set[str] = set()
    for arg in args:
        text = str(arg)
        path = Path(text).expanduser()
        if path.is_dir() and is_zarr(path):
            found.append(_open_array(path, axes, stems))
            continue
        if _dicom_arg(path):
            item = _dicom_input(path, 0, stems)
            if isinstance(item, BadInput):
                bad.append(item)
            else:
                found.append(item)
            continue
        if path.is_dir():
            files = list_images(path)
            if not files:
                raise DataError(
                    f"no images in folder {path} (looked for {', '.join(IMAGE_SUFFIXES)})"
                )
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(
                    f"unsupported input {path}: give images ({', '.join(IMAGE_SUFFIXES)}), "
                    "TIFF stacks, folders of them, or Zarr arrays"
                )
            if not os.access(path, os.R_OK):
                raise DataError(f"cannot read {path}: permission denied")
            files = [path]
        elif any(ch in text for ch in _GLOB_CHARS):
            matches = [Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True)]
            zarrs = sorted((p for p in matches if p.is_dir() and is_zarr(p)), key=natural_key)
            for z in zarrs:
                found.append(_open_array(z, axes, stems))
            files = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if not files and not zarrs:
                what = (
                    f"{len(matches)} match(es), none an image or Zarr array"
                    if matches
                    else "nothing"
                )
                raise DataError(f"pattern {text} matches {what}")
            files.sort(
                key=lambda p: (tuple(natural_key(Path(q)) for q in p.parent.parts), natural_key(p))
            )
        else:
            raise DataError(f"input not found: {text}")
        index = 0
        for f in files:
            item = _file_input(f, index, stems)
            if isinstance(item, BadInput):
                bad.append(item)
                continue
            found.append(item)
            index += len(item.frames)
    return found, bad


def _dicom_arg(path: Path) -> bool:
    """A DICOM file, or a folder of DICOM files without other images."""
    from edgeseg.dicom import dicom_files, is_dicom

    if path.is_file():
        return path.suffix.lower() not in IMAGE_SUFFIXES and is_dicom(path)
    return path.is_dir() and not list_images(path) and bool(dicom_files(path))


def _dicom_input(path: Path, start: int, stems: set[str]) -> FileInput | BadInput:
    """A DICOM file or series folder: its frames in slice order, named by position (a
    folder's series one after another); unreadable: a BadInput naming the file."""
    from edgeseg.dicom import open_dicom

    try:
        source = open_dicom(path)
    except DataError as exc:
        return BadInput(str(path), str(exc))
    n = len(source)
    frames = tuple(
        FrameRef(str(path), i, start + i, source.name(i), source.frame_geometry(i).pixel_size_um)
        for i in range(n)
    )
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    key = hashlib.sha256("|".join(_identity(f) for f in files).encode()).hexdigest()[:16]
    return FileInput(
        path=str(path),
        frames=frames,
        stack=n > 1 or path.is_dir(),
        identity=f"{path.resolve()}|{key}",
        stem=_unique_stem(path.name, stems),
        dicom=True,
    )


def first_frame_size(found: Sequence[Any]) -> tuple[int, int] | None:
    """(H, W) the model first sees among ``found`` (from :func:`discover`): the first frame
    of the first file (read from its header where TIFF has one), or the plane of a Zarr
    array's first block (its Y/X chunk); None for no input or an unreadable first file."""
    for item in found:
        if isinstance(item, ArrayInput):
            h, w = item.plane_chunks
            ph, pw = item.plane_shape
            return min(h, ph), min(w, pw)
        if isinstance(item, FileInput) and item.frames and item.dicom:
            from edgeseg.dicom import open_dicom

            try:
                source = open_dicom(item.path)
                return tuple(source.read(0).shape[:2])  # type: ignore[return-value]
            except DataError:
                return None
        if isinstance(item, FileInput) and item.frames:
            try:
                return _file_frame_size(item.path, item.frames[0].page)
            except (OSError, ValueError, DataError):
                return None
    return None


def _file_frame_size(path: str, page: int) -> tuple[int, int]:
    if Path(path).suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            shape = tif.pages[page].shape
        return int(shape[0]), int(shape[1])
    from edgeseg.imageio import read_image

    image = read_image(path)
    return int(image.shape[0]), int(image.shape[1])


def is_zarr(path: Path) -> bool:
    """A folder that is a Zarr array or group (v2 or v3)."""
    return path.suffix.lower() == ".zarr" or any(
        (path / name).is_file() for name in ("zarr.json", ".zarray", ".zgroup")
    )


def _unique_stem(name: str, stems: set[str]) -> str:
    stem = _UNSAFE_STEM.sub("_", Path(name).stem).lstrip(".") or "input"
    candidate, n = stem, 1
    while candidate in stems:
        n += 1
        candidate = f"{stem}-{n}"
    stems.add(candidate)
    return candidate


def _identity(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _file_input(path: Path, start: int, stems: set[str]) -> FileInput | BadInput:
    """One image or TIFF stack; a TIFF whose header cannot be read is a BadInput."""
    n = 1
    if path.suffix.lower() in _TIFF:
        from edgeseg.runtime.sources import TiffStack

        try:
            stack = TiffStack(path)
        except DataError as exc:
            return BadInput(str(path), str(exc))
        n = len(stack)
        stack.close()
    if n == 1:
        frames = (FrameRef(str(path), 0, start, path.name),)
    else:
        frames = tuple(FrameRef(str(path), i, start + i, f"{path.name}#page{i}") for i in range(n))
    return FileInput(
        path=str(path),
        frames=frames,
        stack=n > 1,
        identity=_identity(path),
        stem=_unique_stem(path.name, stems),
    )


def _ome_axes(attrs: dict[str, Any], array_path: str) -> tuple[str | None, str]:
    """(axes, dataset path) from OME-Zarr ``multiscales`` attributes (0.4 or 0.5 layout)."""
    ome = attrs.get("ome", attrs) if isinstance(attrs, dict) else {}
    scales = ome.get("multiscales") if isinstance(ome, dict) else None
    if not scales or not isinstance(scales, list):
        return None, array_path
    first = scales[0]
    datasets = first.get("datasets") or []
    paths = [str(d.get("path")) for d in datasets if isinstance(d, dict)]
    if not array_path:
        if not paths:
            return None, array_path
        array_path = paths[0]
    names = []
    for axis in first.get("axes") or []:
        names.append(str(axis.get("name") if isinstance(axis, dict) else axis))
    if not names:
        return None, array_path
    return "".join(n[:1].upper() for n in names), array_path


def _open_array(path: Path, axes: str | None, stems: set[str]) -> ArrayInput:
    """A Zarr array (or an OME-Zarr group's full-resolution array) with its axes."""
    from edgeseg.batch.deps import need

    zarr = need("zarr")
    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as exc:  # zarr raises many types for damaged or foreign stores
        raise DataError(f"cannot open Zarr {path}: {type(exc).__name__}: {exc}") from exc
    array_path = ""
    ome_axes: str | None = None
    if isinstance(node, zarr.Group):
        ome_axes, array_path = _ome_axes(dict(node.attrs), "")
        if not array_path:
            raise DataError(
                f"{path} is a Zarr group without OME multiscales; give the array inside it"
            )
        try:
            array = node[array_path]
        except KeyError as exc:
            raise DataError(
                f"{path}: OME multiscales name array {array_path!r}, not found"
            ) from exc
    else:
        array = node
        parent = path.parent
        if is_zarr(parent):  # an OME-Zarr resolution level given directly
            try:
                group = zarr.open_group(store=str(parent), mode="r")
                ome_axes, _ = _ome_axes(dict(group.attrs), path.name)
            except Exception:  # not a group after all: no OME axes
                ome_axes = None
    ndim = len(array.shape)
    if ome_axes is not None:
        found = parse_axes(ome_axes, ndim, what=f"{path}: OME axes")
        if axes is not None and parse_axes(axes, ndim) != found:
            raise DataError(f"--axes {axes} contradicts the OME axes {found} of {path}")
    elif axes is not None:
        found = parse_axes(axes, ndim)
    elif ndim == 2:
        found = "YX"
    else:
        raise DataError(
            f"{path} is a {ndim}-D array without OME axes: say what they are with --axes "
            f"(e.g. --axes {'TYX' if ndim == 3 else 'TZYX'})"
        )
    if "C" in found and array.shape[found.index("C")] > _MAX_CHANNELS:
        raise DataError(
            f"{path}: its C axis has {array.shape[found.index('C')]} channels; a frame takes at "
            f"most {_MAX_CHANNELS} (give one channel's array)"
        )
    if not (array.dtype.kind in "uif" or array.dtype == bool):
        raise DataError(f"{path}: unsupported pixel type {array.dtype}")
    shape = tuple(int(s) for s in array.shape)
    chunks = tuple(int(c) for c in array.chunks)
    if min(shape, default=0) < 1:
        raise DataError(f"{path} is empty (shape {shape})")
    key = hashlib.sha256(
        f"{path.resolve()}|{array_path}|{shape}|{chunks}|{array.dtype}".encode()
    ).hexdigest()[:16]
    return ArrayInput(
        store=str(path),
        array_path=array_path,
        axes=found,
        shape=shape,
        chunks=chunks,
        dtype=str(array.dtype),
        identity=key,
        stem=_unique_stem(path.name, stems),
    )
