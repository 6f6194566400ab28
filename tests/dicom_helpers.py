"""DICOM test data: synthetic CT-like series from edgeseg's synthetic generator, with exact
masks, written with pydicom (the pydicom test files that ship in its wheel are used too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

# Hounsfield units of the synthetic series: objects (the generator's cells) at +60 HU and
# background at -60 HU, with the generator's texture added within +-10 HU, so any window
# centred near 0 HU splits them exactly; stored with intercept -1024 (a rescale is needed).
OBJECT_HU, BACKGROUND_HU, INTERCEPT = 60, -60, -1024


def ct_series(
    folder: Path,
    n: int = 5,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
    spacing: float = 0.7,
    thickness: float = 2.5,
    study_uid: str | None = None,
) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Write ``n`` single-frame CT slices into ``folder``: (files in slice-position order,
    HU volume (n, H, W) int16 in that order, exact masks (n, H, W) uint8 0/1).

    File names and instance numbers run against slice position (``slice_0.dcm`` is the top
    slice), so anything that sorts by name gets the order wrong.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from edgeseg.samples import SyntheticStream

    folder.mkdir(parents=True, exist_ok=True)
    gen = SyntheticStream(size=size, seed=seed, bit_depth=16)
    study = study_uid or generate_uid()
    series, frame_of_ref = generate_uid(), generate_uid()
    volume, masks, files = [], [], []
    for _ in range(n):
        frame, mask = gen.read()
        texture = np.rint(20 * (frame.astype(np.float64) / max(int(frame.max()), 1) - 0.5))
        hu = np.where(mask > 0, OBJECT_HU, BACKGROUND_HU) + texture.astype(np.int16)
        volume.append(hu.astype(np.int16))
        masks.append((mask > 0).astype(np.uint8))
    for k in range(n):  # position k (z = k * thickness) goes to file slice_{n-1-k}
        name = folder / f"slice_{n - 1 - k}.dcm"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = "Synthetic^Patient"
        ds.PatientID = "SYNTH-0001"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyDate = "20260101"
        ds.StudyTime = "120000"
        ds.AccessionNumber = "ACC0001"
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SeriesNumber = 3
        ds.Modality = "CT"
        ds.Manufacturer = "edgeseg-tests"
        ds.FrameOfReferenceUID = frame_of_ref
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = n - k  # against position as well
        ds.ImagePositionPatient = [0.0, 0.0, float(k * thickness)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = thickness
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = INTERCEPT
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PixelData = (volume[k].astype(np.int32) - INTERCEPT).astype(np.uint16).tobytes()
        ds.save_as(str(name), enforce_file_format=True)
        files.append(name)
    return files, np.stack(volume), np.stack(masks)


def window_model(path: Path, window: str = "0,200") -> Path:
    """A 1x1-conv sigmoid (.tflite) marking pixels whose normalized value exceeds 0.5, scale
    normalization, calibrated (metadata ``dicom_window``) with ``window``: on
    :func:`ct_series` with a window centred near 0 HU its masks are exact."""
    tf = pytest.importorskip("tensorflow")
    from helpers import _bright_keras

    from edgeseg.core.metadata import ModelMetadata
    from edgeseg.core.tflite_file import embed_metadata

    data = tf.lite.TFLiteConverter.from_keras_model(_bright_keras((64, 64))).convert()
    meta = ModelMetadata(input_size=(64, 64), normalization="scale", dicom_window=window)
    path.write_bytes(embed_metadata(data, meta))
    return path
