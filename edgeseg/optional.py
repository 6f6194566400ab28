"""Import optional heavy dependencies inside the functions that need them.

Each helper raises :class:`MissingDependencyError` naming the extra to install, instead of
an ImportError traceback.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from edgeseg.errors import MissingDependencyError

_EXTRA_FOR = {
    "tensorflow": ("convert", "TensorFlow"),
    "keras": ("convert", "Keras (comes with TensorFlow)"),
    "h5py": ("convert", "h5py"),
    "cv2": ("runtime", "OpenCV"),
    "tifffile": ("runtime", "tifffile"),
    "ai_edge_litert": ("runtime", "LiteRT"),
    "av": ("runtime", "PyAV (FFmpeg, for recording video)"),
    "onnxruntime": ("onnx", "onnxruntime"),
    "tf2onnx": ("onnx", "tf2onnx"),
    "openvino": ("openvino", "OpenVINO"),
    "onnx": ("onnx", "onnx"),
    "onnxsim": ("onnx-import", "onnxsim"),
    "dask": ("batch", "Dask"),
    "distributed": ("batch", "dask.distributed"),
    "zarr": ("batch", "Zarr"),
    "pyarrow": ("batch", "pyarrow"),
    "pydicom": ("dicom", "pydicom"),
    "highdicom": ("dicom", "highdicom"),
    "dicomweb_client": ("dicom", "dicomweb-client"),
    "requests": ("dicom", "requests"),
    "prometheus_client": ("runtime", "prometheus_client"),
    "tflite_micro": ("micro", "TensorFlow Lite Micro (tflite-micro; PyPI has x86-64 wheels only)"),
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise a one-line error naming the edgeseg extra that provides it."""
    if module in ("tensorflow", "keras"):
        # Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra, what = _EXTRA_FOR.get(module.split(".")[0], ("all", module))
        raise MissingDependencyError(
            f"{what} is not installed ({exc}); install it with: pip install 'edgeseg[{extra}]'"
        ) from exc


def cv2() -> ModuleType:
    return require("cv2")


def tensorflow() -> ModuleType:
    return require("tensorflow")


def keras() -> ModuleType:
    return require("keras")
