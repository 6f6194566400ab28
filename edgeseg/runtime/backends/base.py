"""What every runtime adapter shares: the image-model base classes and their checks.

An adapter is one class per runtime (one module each beside this one) that loads a model file
and offers :class:`~edgeseg.core.backend.Backend`. What they all do the same way lives here,
once: the (N, H, W, C) → (N, h, w, K) signature check of a freshly loaded model
(:func:`image_model_input`), the dtype/shape check of a raw invocation (:func:`check_raw`),
feeding float tiles to an integer model and reading its output back
(:class:`QuantizedModel`), and the one-line form of a runtime's own error (:func:`detail`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.backend import Backend
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.quant import TensorInfo, dequantize, quantize
from edgeseg.errors import DataError, ModelError
from edgeseg.sizes import format_shape, format_shapes

__all__ = [
    "CHOSEN_BY",
    "IMAGE_DTYPES",
    "ImageModel",
    "Opened",
    "QuantizedModel",
    "check_raw",
    "check_tiles",
    "detail",
    "image_model_input",
    "nominal_shapes",
    "onnx_metadata",
    "parse_metadata_json",
    "sized_tensors",
]

#: Dtypes an image input can have; anything else (bool, int32, strings) is not an image model.
IMAGE_DTYPES = ("float32", "float16", "int8", "uint8", "int16")

_MAX_DETAIL = 200


def detail(exc: BaseException) -> str:
    """The first line of a runtime's error, shortened, for a one-line message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def image_model_input(
    label: Any,
    shapes_in: list[tuple[int, ...]],
    shapes_out: list[tuple[int, ...]],
    dtypes_in: list[str],
    fix: str,
    accepted: tuple[str, ...] = IMAGE_DTYPES,
) -> tuple[int, int, int, int]:
    """The (N, H, W, C) input of a model with one image input and one mask output, or a
    one-line ModelError: another signature, an input type not in ``accepted``, or a dynamic
    height, width or channel count (``fix`` says how to export it fixed). N may be dynamic
    (-1)."""
    if (
        len(shapes_in) != 1
        or len(shapes_out) != 1
        or len(shapes_in[0]) != 4
        or len(shapes_out[0]) != 4
        or dtypes_in[0] not in accepted
    ):
        raise ModelError(
            f"{label} is not an image-to-mask model: input shape {format_shapes(shapes_in)}"
            f" ({', '.join(dtypes_in)}), output shape {format_shapes(shapes_out)}; edgeseg needs "
            "one (N, H, W, C) image input and one (N, h, w, K) mask output"
        )
    b, h, w, c = shapes_in[0]
    if min(h, w, c) < 1:
        raise ModelError(
            f"{label} has a dynamic input size {format_shape(shapes_in[0])}; edgeseg runs "
            f"fixed-size tiles: {fix}"
        )
    return b, h, w, c


def nominal_shapes(
    shapes_in: list[tuple[int, ...]],
    shapes_out: list[tuple[int, ...]],
    meta: ModelMetadata | None,
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]], bool]:
    """(inputs, outputs, dynamic): a model whose metadata says it takes whole frames of any
    size (``size_multiple``) with its dynamic H/W (-1) set to the metadata's nominal
    ``input_size``, output H/W alike (same-size output); other models as they are."""
    if meta is None or meta.size_multiple is None or len(shapes_in) != 1:
        return shapes_in, shapes_out, False
    if len(shapes_in[0]) != 4 or min(shapes_in[0][1:3]) >= 1:
        return shapes_in, shapes_out, False
    h, w = meta.input_size
    b, _, _, c = shapes_in[0]
    outs = [(o[0], h, w, o[3]) if len(o) == 4 and min(o[1:3]) < 1 else o for o in shapes_out]
    return [(b, h, w, c)], outs, True


def sized_tensors(
    inp: TensorInfo, out: TensorInfo, size: tuple[int, int]
) -> tuple[TensorInfo, TensorInfo]:
    """A dynamic-size model's input and output tensors described at ``size`` (H, W)."""
    h, w = int(size[0]), int(size[1])
    b, _, _, c = inp.shape
    return (
        TensorInfo(inp.name, inp.index, (b, h, w, c), inp.dtype, inp.scale, inp.zero_point),
        TensorInfo(
            out.name, out.index, (out.shape[0], h, w, out.shape[3]), out.dtype, out.scale,
            out.zero_point,
        ),
    )  # fmt: skip


def check_raw(x: np.ndarray, model: TensorInfo, name: str) -> np.ndarray:
    """``x`` for one raw invocation: exactly the input's dtype and shape (B, H, W, C), else a
    one-line DataError."""
    x = np.asarray(x)
    if x.dtype != np.dtype(model.dtype) or x.shape != model.shape:
        raise DataError(
            f"{name} takes {model.dtype} of shape {format_shape(model.shape)}, "
            f"got {x.dtype} of shape {format_shape(x.shape)}"
        )
    return x


def check_tiles(tiles: np.ndarray, model: TensorInfo, name: str) -> np.ndarray:
    """``tiles`` as (n, H, W, C) for the input ``model``, else a one-line DataError."""
    tiles = np.asarray(tiles)
    _, h, w, c = model.shape
    if tiles.ndim != 4 or tiles.shape[1:] != (h, w, c):
        raise DataError(
            f"{name} takes tiles of shape (n, {h}, {w}, {c}), got {format_shape(tiles.shape)}"
        )
    return tiles


#: How the runtime was chosen (``Opened.chosen_by``).
CHOSEN_BY = (
    "file",  # no --backend: the file's own runtime
    "asked",  # --backend named it
    "auto: measured",  # --backend auto measured the installed runtimes just now
    "auto: cached",  # ... earlier on this machine, for this model, versions and threads
    "auto: only",  # ... one installed runtime reads the file: nothing to measure
    "auto: delegate",  # ... a delegate or an Edge TPU model belongs to one runtime
)


@dataclass(frozen=True)
class Opened:
    """What was opened: the backend and, as data, how it runs (what ``run`` prints, what
    ``bench`` reports, what the session decides worker pools by).

    Attributes:
        backend: The loaded model.
        runtime: The registry name of its runtime, e.g. "litert".
        model: The file that runs (with ``--fallback``, an Edge TPU model's CPU sibling).
        device: Where it computes: "CPU", "Edge TPU", "GPU", or a delegate library's name.
        accelerator: What accelerates it there: "XNNPACK", "edgetpu (libedgetpu.so.1)", an
            onnxruntime provider ("TensorRT", "CUDA"), or None (the runtime's own kernels).
        threads: The threads asked for (None: the runtime's default).
        chosen_by: How the runtime was chosen: one of :data:`CHOSEN_BY`.
        fallback: Why the CPU runs instead of the delegate asked for (``--fallback``), or None.
    """

    backend: Backend
    runtime: str
    model: Path
    device: str
    accelerator: str | None = None
    threads: int | None = None
    chosen_by: str = "file"
    fallback: str | None = None

    @property
    def cpu(self) -> bool:
        """Whether it runs on the CPU (so a pool of interpreters can share the cores)."""
        return self.device == "CPU"

    @property
    def picked_by_auto(self) -> bool:
        """Whether ``--backend auto`` measured (now or earlier) to pick it."""
        return self.chosen_by in ("auto: measured", "auto: cached")

    def describe(self, *, workers: int = 1, threads_each: int | None = None) -> str:
        """The one line ``run``, ``eval`` and ``bench`` print, e.g. "CPU (XNNPACK, 2 threads)
        via ai-edge-litert 2.3.0", "edgetpu (libedgetpu.so.1) via ai-edge-litert 2.3.0", or
        for a pool "CPU (XNNPACK), 2 interpreters x 1 thread(s) via …"."""
        label = self.backend.runtime
        if self.fallback is not None:
            where = f"CPU fallback ({self.accelerator}) for {self.model.name}"
        elif self.cpu and workers > 1:
            engine = f" ({self.accelerator})" if self.accelerator else ""
            where = f"CPU{engine}, {workers} interpreters x {threads_each} thread(s)"
        elif self.cpu:
            engine = f"{self.accelerator}, " if self.accelerator else ""
            where = f"CPU ({engine}{self.threads or 'default'} threads)"
        else:
            where = self.accelerator or self.device
        how = self.chosen_by.removeprefix("auto: ")
        picked = f", picked by auto ({how})" if self.picked_by_auto else ""
        return f"{where} via {label}{picked}"


class ImageModel:
    """What every backend shares: the attributes of :class:`~edgeseg.core.backend.Backend`,
    where ``input`` (B, H, W, C) describes the tiles it takes. A subclass sets ``path``,
    ``runtime``, ``input`` and ``output``, and says how it reads its metadata
    (``_read_metadata``) and runs once (``invoke``)."""

    path: Path
    runtime: str
    input: TensorInfo
    output: TensorInfo

    @property
    def batch_size(self) -> int:
        """How many tiles one invocation takes (1 for nearly every model)."""
        return self.input.shape[0]

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the model input."""
        return (self.input.shape[1], self.input.shape[2])

    _metadata: ModelMetadata | None = None
    _metadata_read = False

    def metadata(self) -> ModelMetadata | None:
        """The edgeseg metadata the file carries, or None; read once."""
        if not self._metadata_read:
            self._metadata = self._read_metadata()
            self._metadata_read = True
        return self._metadata

    def _read_metadata(self) -> ModelMetadata | None:
        raise NotImplementedError

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One raw inference: ``x`` in the input's dtype and exact shape (B, H, W, C).

        Returns a copy of the raw output, (B, h, w, K) in the output's dtype.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, runtime={self.runtime!r}, "
            f"input={self.input.dtype}{format_shape(self.input.shape)}, "
            f"output={self.output.dtype}{format_shape(self.output.shape)})"
        )


class QuantizedModel(ImageModel):
    """A model fed and read at its own dtypes (LiteRT, OpenVINO): float tiles are quantized
    at the input and outputs dequantized, around the subclass's raw ``invoke``."""

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """float32 (n, H, W, C) tiles → float32 (n, h, w, K) model outputs (probabilities).

        Quantizes the input for integer models, runs the model ``batch_size`` tiles at a time
        (the last batch padded with zeros), and dequantizes the output.
        """
        tiles = check_tiles(tiles, self.input, self.path.name)
        if not self.input.quantized and self.input.dtype not in ("float32", "float16"):
            raise ModelError(
                f"{self.path}: its {self.input.dtype} input has no quantization parameters, "
                "so float tiles cannot be mapped to it"
            )
        return self.predict_raw(quantize(tiles, self.input))

    def predict_raw(self, tiles: np.ndarray) -> np.ndarray:
        """Tiles already in the model's input dtype (n, H, W, C) → float32 (n, h, w, K).

        For callers that quantize frames straight to the model's integer input (a lookup
        table per frame, :func:`edgeseg.core.preprocess.prepare_quantized`).
        """
        _, h, w, c = self.input.shape
        n, b = len(tiles), self.batch_size
        result = np.empty((n, *self.output.shape[1:]), dtype=np.float32)
        for start in range(0, n, b):
            chunk = tiles[start : start + b]
            k = len(chunk)
            if k < b:
                chunk = np.concatenate([chunk, np.zeros((b - k, h, w, c), chunk.dtype)])
            raw = self.invoke(chunk)
            result[start : start + k] = dequantize(raw[:k], self.output)
        return result


def parse_metadata_json(text: str | None, path: Path) -> ModelMetadata | None:
    """The edgeseg metadata of an ONNX ``metadata_props`` value (key ``edgeseg``), or None."""
    if not text:
        return None
    try:
        return ModelMetadata.from_dict(json.loads(text)["metadata"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: unreadable edgeseg metadata: {exc}") from exc


def onnx_metadata(path: Path) -> ModelMetadata | None:
    """edgeseg metadata from an .onnx file's ``metadata_props`` (key ``edgeseg``), read from
    the file's top-level fields without parsing the graph (no ``onnx`` package needed)."""
    from edgeseg.core.onnx_props import read_metadata_props

    props = read_metadata_props(path)
    if props is None:
        raise ModelError(f"{path}: unreadable ONNX metadata: not an ONNX (protobuf) file")
    return parse_metadata_json(props.get("edgeseg"), path)
