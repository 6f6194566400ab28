"""DICOM files and series as frame sources: what `run`, `eval`, `segment` and calibration read.

- a single-frame file: one frame, named by its file name (``CT_small.dcm``);
- a multi-frame file: one frame per frame, in frame order, named ``file.dcm#frame3``;
- a folder: its DICOM files (``.dcm``, or any file with the ``DICM`` preamble) grouped by
  Series Instance UID, each series sorted by slice position — Image Position (Patient)
  projected on the slice normal (the cross product of Image Orientation (Patient)'s row and
  column directions), else Instance Number, else file name — and its slices named by that
  order: ``CT-series3_slice0007`` (modality, series number, position index). Files are never
  named in frame names of a series; nothing that identifies a patient (names, IDs, dates) is
  read into names, descriptions or messages.

Every frame is the modality value (the rescale slope/intercept or modality LUT applied) put
through a window (:mod:`edgeseg.dicom.window`): uint16 (H, W), 0..65535, MONOCHROME1
inverted so that bright is dense. Colour images (RGB, YBR: converted to RGB by pydicom) are
returned as stored, uint8/uint16 (H, W, 3), without a window.

Compressed transfer syntaxes are decoded by the plugins installed with the ``dicom`` extra
(pylibjpeg with its libjpeg and openjpeg plugins, pyjpegls, and pydicom's own RLE and
deflate); a syntax none of them decodes is a one-line error naming the file.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.dicom.window import FILE, OUT_MAX, Window, apply_window
from edgeseg.errors import DataError
from edgeseg.optional import require

__all__ = [
    "DICOM_SUFFIXES",
    "DicomFile",
    "DicomSeries",
    "FrameGeometry",
    "dicom_files",
    "is_dicom",
    "open_dicom",
    "read_dicom_image",
    "series_label",
]

DICOM_SUFFIXES = (".dcm", ".dicom")
_UNSAFE = re.compile(r"[^\w.\-+]+")


def is_dicom(path: str | Path) -> bool:
    """A ``.dcm``/``.dicom`` file, or a file with DICOM's 128-byte preamble and ``DICM``."""
    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def dicom_files(folder: str | Path) -> list[Path]:
    """The DICOM files directly inside ``folder`` (see :func:`is_dicom`), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if is_dicom(p)), key=lambda p: p.name)


@dataclass(frozen=True)
class FrameGeometry:
    """Where a frame lies: ``spacing_mm`` (row, column pixel spacing), ``position_mm`` (its
    position along the slice normal, None when the file has none), ``thickness_mm``."""

    spacing_mm: tuple[float, float] | None
    position_mm: float | None
    thickness_mm: float | None = None

    @property
    def pixel_size_um(self) -> float | None:
        """The side of a square pixel of the same area, in µm (for areas in the tables)."""
        if self.spacing_mm is None:
            return None
        r, c = self.spacing_mm
        return math.sqrt(r * c) * 1000.0


def open_dicom(path: str | Path, window: Window | str | None = None) -> Any:
    """A file (:class:`DicomFile`) or a folder (:class:`DicomSeries` per series, in a
    :class:`~edgeseg.dicom.read.SeriesSet` when it holds several) as a frame source.

    ``window``: a :class:`Window` for every frame, or None / ``"file"`` for each file's own.

    Raises:
        DataError: not DICOM, a truncated header, no pixel data, mixed sizes in a series.
        MissingDependencyError: pydicom is not installed.
    """
    p = Path(path)
    if p.is_dir():
        series = find_series(p, window)
        return series[0] if len(series) == 1 else SeriesSet(series, str(p))
    return DicomFile(p, window)


def read_dicom_image(path: str | Path, window: Window | str | None = None) -> np.ndarray:
    """The one frame of a single-frame DICOM file (what ``eval`` reads for an image)."""
    f = DicomFile(path, window)
    if len(f) != 1:
        raise DataError(f"{path} has {len(f)} frames; give single-frame files here")
    return f.read(0)


# --------------------------------------------------------------------------------------------
# Reading


def _dcmread(path: Path, *, header_only: bool) -> Any:
    pydicom = require("pydicom")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), stop_before_pixels=header_only)
    except Exception as exc:  # pydicom raises many types for damaged files
        raise DataError(f"cannot read {path}: not a readable DICOM file ({_why(exc)})") from exc
    if "Rows" not in ds or "Columns" not in ds:
        what = str(getattr(ds, "SOPClassUID", "")) and ds.SOPClassUID.name
        raise DataError(f"{path}: no pixel data (a DICOM {what or 'object'}, not an image)")
    if not header_only and not any(
        k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    ):
        raise DataError(f"{path}: no pixel data")
    try:  # values pydicom reads lazily: a malformed one is an error here, not mid-run
        _check_values(ds)
    except (TypeError, ValueError) as exc:
        raise DataError(f"cannot read {path}: malformed header value ({_why(exc)})") from exc
    return ds


_INT_KEYS = ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated")
_INT_KEYS += ("InstanceNumber", "SeriesNumber")
_FLOAT_KEYS = ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient")
_FLOAT_KEYS += ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth")


def _check_values(ds: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key in _INT_KEYS:
            value = ds.get(key)
            if value not in (None, ""):
                int(value)
        for key in _FLOAT_KEYS:
            value = ds.get(key)
            if value not in (None, ""):
                [float(v) for v in (value if _multi(value) else [value])]


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _functional(ds: Any, frame: int, sequence: str) -> Any:
    """The item of functional group ``sequence`` that applies to ``frame`` (per-frame first,
    then shared), or None."""
    for group in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        items = ds.get(group)
        if not items:
            continue
        item = items[frame] if group.startswith("PerFrame") and frame < len(items) else items[0]
        inner = item.get(sequence)
        if inner:
            return inner[0]
    return None


def _geometry(ds: Any, frame: int) -> FrameGeometry:
    measures = _functional(ds, frame, "PixelMeasuresSequence")
    spacing = (measures or ds).get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    thickness = (measures or ds).get("SliceThickness")
    plane = _functional(ds, frame, "PlanePositionSequence")
    orient_item = _functional(ds, frame, "PlaneOrientationSequence")
    ipp = (plane or ds).get("ImagePositionPatient")
    iop = (orient_item or ds).get("ImageOrientationPatient")
    position = None
    if ipp is not None and iop is not None and len(ipp) == 3 and len(iop) == 6:
        row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
        position = float(np.dot(np.cross(row, col), np.asarray(ipp, float)))
    sp = None
    if spacing is not None and len(spacing) == 2 and all(float(s) > 0 for s in spacing):
        sp = (float(spacing[0]), float(spacing[1]))
    th = float(thickness) if thickness not in (None, "") and float(thickness) > 0 else None
    return FrameGeometry(sp, position, th)


def _file_window(ds: Any, frame: int, values: np.ndarray) -> np.ndarray:
    """A file's own VOI: its VOI LUT table, else its first Window Center/Width (with its VOI
    LUT Function), else the frame's minimum..maximum."""
    voi = _functional(ds, frame, "FrameVOILUTSequence") or ds
    lut = ds.get("VOILUTSequence")
    if lut:
        pixels = require("pydicom.pixels")
        out = np.asarray(pixels.apply_voi(values, ds), dtype=np.float64)
        bits = int(lut[0].LUTDescriptor[2]) or 16
        return np.clip(np.rint(out * (OUT_MAX / (2**bits - 1))), 0, OUT_MAX).astype(np.uint16)
    center, width = voi.get("WindowCenter"), voi.get("WindowWidth")
    if center is not None and width is not None:
        c = float(center[0] if _multi(center) else center)
        w = float(width[0] if _multi(width) else width)
        function = str(voi.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        return apply_window(values, Window(c, w, function))
    lo, hi = float(values.min()), float(values.max())
    return apply_window(values, Window((lo + hi) / 2.0, max(hi - lo, 1e-6), "LINEAR_EXACT"))


def _multi(value: Any) -> bool:
    return not isinstance(value, (str, bytes)) and hasattr(value, "__len__")


def _modality(ds: Any, frame: int, raw: np.ndarray) -> np.ndarray:
    """Stored values → modality values (float64): the rescale of the frame's Pixel Value
    Transformation (enhanced files) or the file's Rescale Slope/Intercept or Modality LUT."""
    item = _functional(ds, frame, "PixelValueTransformationSequence")
    if item is not None and "RescaleSlope" in item:
        return raw.astype(np.float64) * float(item.RescaleSlope) + float(item.RescaleIntercept)
    pixels = require("pydicom.pixels")
    return np.asarray(pixels.apply_modality_lut(raw, ds), dtype=np.float64)


def _decode(ds: Any, path: Path, index: int | None) -> np.ndarray:
    """Pixel data → stored values; a transfer syntax no decoder reads was refused at opening
    (:func:`_check_syntax`), so what fails here is damaged data."""
    pixels = require("pydicom.pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if index is None:
                return np.asarray(ds.pixel_array)
            return np.asarray(pixels.pixel_array(ds, index=index))
    except Exception as exc:  # decoders raise many types
        text = str(exc)
        if "less than expected" in text:
            raise DataError(f"cannot read {path}: pixel data truncated ({_why(exc)})") from exc
        syntax = _syntax(ds)
        how = f" ({syntax.name})" if syntax is not None else ""
        raise DataError(f"cannot decode {path}{how}: {_why(exc)}") from exc


def _frame_values(ds: Any, path: Path, raw: np.ndarray, frame: int, window: Any) -> np.ndarray:
    """One decoded frame → what edgeseg reads (see the module docstring)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if raw.ndim == 3:  # colour: as stored, no window
        if raw.dtype == np.uint8 or raw.dtype == np.uint16:
            return np.ascontiguousarray(raw)
        if np.issubdtype(raw.dtype, np.integer) and raw.min() >= 0 and raw.max() <= 65535:
            return raw.astype(np.uint16)
        raise DataError(f"{path}: unsupported colour pixel type {raw.dtype}")
    if not photometric.startswith("MONOCHROME") and photometric != "PALETTE COLOR":
        raise DataError(f"{path}: unsupported photometric interpretation {photometric}")
    values = _modality(ds, frame, raw)
    if isinstance(window, Window):
        out = apply_window(values, window)
    else:
        out = _file_window(ds, frame, values)
    if photometric == "MONOCHROME1":
        out = OUT_MAX - out
    return np.ascontiguousarray(out.astype(np.uint16, copy=False))


def _syntax(ds: Any) -> Any:
    meta = getattr(ds, "file_meta", None)
    return None if meta is None else meta.get("TransferSyntaxUID")


def _check_syntax(ds: Any, path: Path) -> None:
    """Refuse, at opening, a compressed transfer syntax that no installed decoder reads."""
    syntax = _syntax(ds)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if syntax is not None and (syntax.is_deflated or photometric.endswith("_422")):
        return  # sizes on disk differ from the pixel count; a damaged one fails on reading
    if syntax is None or not syntax.is_compressed:
        # Native pixels: a file shorter than its pixel data is truncated.
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.get("BitsAllocated") or 8)
        need = int(ds.Rows) * int(ds.Columns) * samples * frames * bits // 8
        if path.stat().st_size < need:
            raise DataError(
                f"cannot read {path}: truncated (the file has {path.stat().st_size} bytes, its "
                f"pixel data alone needs {need})"
            )
        return
    pixels = require("pydicom.pixels")
    try:
        decoder = pixels.get_decoder(syntax)
    except Exception:  # NotImplementedError: no decoder class for this syntax at all
        decoder = None
    if decoder is None or not decoder.is_available:
        raise DataError(
            f"{path}: unsupported transfer syntax {syntax.name} ({syntax}): no installed "
            "decoder reads it (pip install 'edgeseg[dicom]' brings JPEG, JPEG-LS, JPEG 2000 "
            "and RLE)"
        )


class DicomFile:
    """One DICOM file as a frame source (frames as the module docstring says).

    The header is read at opening (a file that is not DICOM, has no pixel data or a transfer
    syntax no decoder reads fails there); pixel data when a frame is read.
    """

    def __init__(self, path: str | Path, window: Window | str | None = None) -> None:
        self.path = str(path)
        self._path = Path(path)
        self.window = window if isinstance(window, Window) else FILE
        ds = _dcmread(self._path, header_only=False)
        _check_syntax(ds, self._path)
        self._n = int(ds.get("NumberOfFrames") or 1)
        syntax = _syntax(ds)
        photometric = str(ds.get("PhotometricInterpretation", "")).upper()
        native = syntax is None or not (syntax.is_compressed or syntax.is_deflated)
        if native and not photometric.endswith("_422") and "PixelData" in ds:
            need = self.size_bytes(ds)
            if len(ds.PixelData) < need:
                raise DataError(
                    f"cannot read {self._path}: pixel data truncated ({len(ds.PixelData)} of "
                    f"{need} bytes)"
                )
        self._ds: Any = ds
        self.geometry = [_geometry(ds, i) for i in range(self._n)]
        self.size = (int(ds.Rows), int(ds.Columns))
        modality = str(ds.get("Modality", "") or "DICOM")
        frames = f"{self._n} frames of " if self._n > 1 else ""
        self.description = f"DICOM {modality} {self._path} ({frames}{self.size[0]}x{self.size[1]})"

    def __len__(self) -> int:
        return self._n

    @property
    def fps(self) -> None:
        return None

    def read(self, i: int) -> np.ndarray:
        _check_index(i, self._n)
        if self._ds is None:
            self._ds = _dcmread(self._path, header_only=False)
        ds = self._ds
        raw = _decode(ds, self._path, None if self._n == 1 else i)
        if (
            self._n == 1
            and raw.ndim >= 3
            and raw.shape[0] == 1
            and raw.ndim == 3 + (raw.shape[-1] == 3)
        ):
            raw = raw[0]
        return _frame_values(ds, self._path, raw, i, self.window)

    def name(self, i: int) -> str:
        _check_index(i, self._n)
        return self._path.name if self._n == 1 else f"{self._path.name}#frame{i}"

    def frame_geometry(self, i: int) -> FrameGeometry:
        _check_index(i, self._n)
        return self.geometry[i]

    @staticmethod
    def size_bytes(ds: Any) -> int:
        """Bytes of native (uncompressed) pixel data the header announces."""
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.get("BitsAllocated") or 8)
        return (int(ds.Rows) * int(ds.Columns) * samples * frames * bits + 7) // 8

    def close(self) -> None:
        self._ds = None


@dataclass(frozen=True)
class _Slice:
    path: Path
    position: float | None
    instance: int | None
    geometry: FrameGeometry


class DicomSeries:
    """One series of single-frame files (a CT or MR stack) as a frame source, in slice
    position order (see the module docstring). ``label`` (``CT-series3``) names its frames;
    ``series_uid`` and ``study_uid`` are the series' and study's UIDs (for a SEG)."""

    def __init__(
        self,
        slices: Sequence[_Slice],
        *,
        label: str,
        series_uid: str,
        study_uid: str,
        folder: str,
        window: Window | str | None = None,
        size: tuple[int, int],
        modality: str,
    ) -> None:
        self.slices = list(slices)
        self.label = label
        self.series_uid = series_uid
        self.study_uid = study_uid
        self.path = folder
        self.size = size
        self.window = window if isinstance(window, Window) else FILE
        order = "slice position" if self.slices[0].position is not None else "instance number"
        self.description = (
            f"DICOM {modality} series {label} in {folder} ({len(self.slices)} slices of "
            f"{size[0]}x{size[1]}, by {order})"
        )

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def fps(self) -> None:
        return None

    @property
    def files(self) -> list[Path]:
        """The slices' files, in slice order (a SEG references them)."""
        return [s.path for s in self.slices]

    def read(self, i: int) -> np.ndarray:
        _check_index(i, len(self))
        path = self.slices[i].path
        ds = _dcmread(path, header_only=False)
        if (int(ds.Rows), int(ds.Columns)) != self.size:
            raise DataError(f"{path}: {ds.Rows}x{ds.Columns}, not the series' {self._hw}")
        raw = _decode(ds, path, None)
        return _frame_values(ds, path, raw, 0, self.window)

    def name(self, i: int) -> str:
        _check_index(i, len(self))
        return f"{self.label}_slice{i:0{max(4, len(str(len(self) - 1)))}d}"

    def frame_geometry(self, i: int) -> FrameGeometry:
        _check_index(i, len(self))
        return self.slices[i].geometry

    @property
    def _hw(self) -> str:
        return f"{self.size[0]}x{self.size[1]}"

    def close(self) -> None:
        pass


class SeriesSet:
    """Several series of one folder, one after another (by series number)."""

    def __init__(self, series: Sequence[DicomSeries], path: str) -> None:
        self.parts = list(series)
        self.path = path
        self._starts = np.cumsum([0, *(len(s) for s in self.parts)])
        n = int(self._starts[-1])
        self.description = f"DICOM folder {path} ({len(self.parts)} series, {n} slices)"

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def fps(self) -> None:
        return None

    def _locate(self, i: int) -> tuple[DicomSeries, int]:
        _check_index(i, len(self))
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self.parts[k], i - int(self._starts[k])

    def read(self, i: int) -> np.ndarray:
        s, j = self._locate(i)
        return s.read(j)

    def name(self, i: int) -> str:
        s, j = self._locate(i)
        return s.name(j)

    def frame_geometry(self, i: int) -> FrameGeometry:
        s, j = self._locate(i)
        return s.frame_geometry(j)

    def close(self) -> None:
        pass


def find_series(folder: str | Path, window: Window | str | None = None) -> list[DicomSeries]:
    """The image series of a folder's DICOM files, by series number, each sorted by slice
    position. Objects without pixel data (a SEG, a structured report) are left out; a
    multi-frame file in a folder is refused (give it as a file).

    Raises:
        DataError: no DICOM image in the folder, a file that is not readable DICOM, a series
            whose files differ in size (naming the first file that differs).
    """
    folder = Path(folder)
    files = dicom_files(folder)
    if not files:
        raise DataError(f"no DICOM files in folder {folder}")
    groups: dict[str, list[tuple[Path, Any]]] = {}
    for f in files:
        try:
            ds = _dcmread(f, header_only=True)
        except DataError as exc:
            if "no pixel data" in str(exc):
                continue  # a SEG, SR or RT object beside the images
            raise
        if int(ds.get("NumberOfFrames") or 1) > 1:
            raise DataError(f"{f} is a multi-frame file in a series folder; give it on its own")
        _check_syntax(ds, f)
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((f, ds))
    if not groups:
        raise DataError(f"no DICOM images in folder {folder} (only objects without pixels)")
    out: list[DicomSeries] = []
    labels: set[str] = set()
    for uid, members in groups.items():
        first = members[0][1]
        size = (int(first.Rows), int(first.Columns))
        slices = []
        for f, ds in members:
            if (int(ds.Rows), int(ds.Columns)) != size:
                raise DataError(
                    f"{f}: {ds.Rows}x{ds.Columns} pixels, but series {series_label(first)} in "
                    f"{folder} has {size[0]}x{size[1]} (mixed sizes in one series)"
                )
            geo = _geometry(ds, 0)
            number = ds.get("InstanceNumber")
            slices.append(
                _Slice(f, geo.position_mm, None if number in (None, "") else int(number), geo)
            )
        if all(s.position is not None for s in slices):
            slices.sort(key=lambda s: (s.position, s.path.name))
        elif all(s.instance is not None for s in slices):
            slices.sort(key=lambda s: (s.instance, s.path.name))
        label = series_label(first)
        candidate, n = label, 1
        while candidate in labels:
            n += 1
            candidate = f"{label}-{n}"
        labels.add(candidate)
        out.append(
            DicomSeries(
                slices,
                label=candidate,
                series_uid=uid,
                study_uid=str(first.get("StudyInstanceUID", "")),
                folder=str(folder),
                window=window,
                size=size,
                modality=str(first.get("Modality", "") or "DICOM"),
            )
        )
    out.sort(key=lambda s: s.label)
    return out


def series_label(ds: Any) -> str:
    """``CT-series3``: modality and series number, never a description a person typed."""
    modality = _UNSAFE.sub("", str(ds.get("Modality", "") or "")) or "DICOM"
    number = ds.get("SeriesNumber")
    return f"{modality}-series{int(number)}" if number not in (None, "") else f"{modality}-series"


def _check_index(i: int, n: int) -> None:
    if not 0 <= i < n:
        raise IndexError(f"frame {i} out of range for a source of {n} frame(s)")
