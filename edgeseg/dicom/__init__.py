"""DICOM in and out: files and series as frame sources (:mod:`~edgeseg.dicom.read`), windows
(:mod:`~edgeseg.dicom.window`), Segmentation objects (:mod:`~edgeseg.dicom.seg`) and a
DICOMweb server as a source and a store (:mod:`~edgeseg.dicom.web`).

pydicom, highdicom and the decoder plugins are imported inside the functions that need them
(the ``dicom`` extra); importing this package imports none of them.
"""

from edgeseg.dicom.read import (
    DICOM_SUFFIXES,
    DicomFile,
    DicomSeries,
    FrameGeometry,
    dicom_files,
    find_series,
    is_dicom,
    open_dicom,
    read_dicom_image,
)
from edgeseg.dicom.window import FILE, PRESETS, Window, apply_window, parse_window, window_spec

__all__ = [
    "DICOM_SUFFIXES",
    "FILE",
    "PRESETS",
    "DicomFile",
    "DicomSeries",
    "FrameGeometry",
    "Window",
    "apply_window",
    "dicom_files",
    "find_series",
    "is_dicom",
    "open_dicom",
    "parse_window",
    "read_dicom_image",
    "window_spec",
]
