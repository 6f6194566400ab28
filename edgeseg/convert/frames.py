"""Whole-frame artefacts: ``edgeseg convert MODEL --frame-size HxW`` (repeatable) or ``auto``.

A ``padding="same"`` U-Net is fully convolutional, so the weights it was trained with at its
tile size run on a whole camera frame in one invocation instead of a grid of overlapping
tiles. For each frame size (H, W), each recipe gets a second artefact
``<stem>_<recipe>_<H>x<W>.tflite`` (and ``<stem>_<H>x<W>.onnx`` with ``--onnx``) beside the
tiled one, which is always built. Its metadata records ``frame_size`` (H, W) and an
``input_size`` padded up to the model's multiple (the product of its downsampling strides,
2^depth for a U-Net): the runtime pads a frame of that size (centred, reflect) into the one
input tile and crops the output back, as it pads any frame smaller than a model's input.

Calibration: int8 whole-frame artefacts calibrate on whole frames of the calibration source
(the frames not held out, one padded input per frame), with about the same pixel budget as
the tile set (at least :data:`MIN_CALIBRATION_FRAMES` frames). With a prebuilt ``.npz`` set of
tiles there are no frames: the frame-size graph gets the activation ranges calibrated on the
tile-size graph (:class:`edgeseg.convert.tflite.FrameTarget`), which is exact for a fully
convolutional model, whose every tensor holds the same features over a larger area.

What keeps only the tiled artefact, with one line saying why (the convert still succeeds): a
valid-padding U-Net (its output shrinks), a SavedModel whose signature fixes its input size,
a model whose graph does not rebuild at the size, a frame size equal to the tile size (the
tiled artefact already runs such frames whole), and the Edge TPU recipe (``whole_frame =
false``: its compiler fails on the large activation tensors of camera frames).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from edgeseg.core.metadata import ModelMetadata
from edgeseg.errors import DataError, ModelError
from edgeseg.sizes import format_hw, parse_hw

__all__ = [
    "AUTO",
    "MIN_CALIBRATION_FRAMES",
    "FramePlan",
    "auto_frame_sizes",
    "calibration_frames",
    "edgetpu_refusal",
    "parse_frame_sizes",
    "plan_frames",
]

AUTO = "auto"
#: Fewest whole frames an int8 whole-frame artefact calibrates on (when the source has them).
MIN_CALIBRATION_FRAMES = 8
#: Frames of the calibration source looked at by ``--frame-size auto``.
AUTO_SAMPLE = 8
#: Largest frame side accepted (a sanity bound: 8192 is beyond any microscope camera here).
MAX_SIDE = 8192

FrameSize = tuple[int, int]


def parse_frame_sizes(values: Iterable[str | Sequence[int]]) -> tuple[FrameSize | str, ...]:
    """``--frame-size`` values: "HxW" (also "H×W") or "auto"; deduplicated, in order.

    Raises:
        DataError: one line naming the bad value.
    """
    out: list[FrameSize | str] = []
    for value in values:
        if isinstance(value, str) and value.strip().lower() == AUTO:
            item: FrameSize | str = AUTO
        else:
            item = parse_hw(
                value, what="--frame-size", square=False, maximum=MAX_SIDE, alternatives=(AUTO,)
            )
        if item not in out:
            out.append(item)
    return tuple(out)


def auto_frame_sizes(src: Any, sample: int = AUTO_SAMPLE) -> list[FrameSize]:
    """The distinct (H, W) of up to ``sample`` evenly spaced frames of a calibration source."""
    n = len(src)
    if n == 0:
        raise DataError(f"--frame-size auto: {src.description} has no frames")
    idx = sorted({round(i * (n - 1) / max(1, sample - 1)) for i in range(min(sample, n))})
    sizes: list[FrameSize] = []
    for i in idx:
        h, w = src.read(int(i)).shape[:2]
        if (h, w) not in sizes:
            sizes.append((int(h), int(w)))
    return sizes


@dataclass(frozen=True)
class FramePlan:
    """One frame size: the whole-frame artefacts' metadata and model, or why there are none.

    ``loaded``: the model rebuilt at ``input_size`` (a LoadedModel); ``refused``: one line
    saying why no whole-frame artefact is built (then ``meta`` and ``loaded`` are None). For
    an imported (ONNX) model: ``reference``, the float model at that size (onnxruntime on
    the source graph), and ``source_onnx``, that graph, prepared for the ONNX artefact.
    """

    frame_size: FrameSize
    input_size: FrameSize
    meta: ModelMetadata | None = None
    loaded: Any | None = None
    refused: str | None = None
    reference: Any | None = None
    source_onnx: Any | None = None

    @property
    def tag(self) -> str:
        return format_hw(self.frame_size)


def _multiple(loaded: Any, meta: ModelMetadata) -> FrameSize:
    """The input size must be a multiple of this: the model's total downsampling."""
    if loaded.keras_model is not None:
        from edgeseg.model.reshape import downsampling

        return downsampling(loaded.keras_model)
    # A SavedModel has no layers to read: the largest power of two dividing the tile size,
    # at most 2^6 (the deepest U-Net edgeseg builds).
    h, w = meta.input_size
    m = min(64, (h & -h), (w & -w))
    return (m, m)


def plan_frames(
    loaded: Any,
    meta: ModelMetadata,
    sizes: Iterable[FrameSize],
    *,
    trust_model: bool = False,
    multiple: FrameSize | None = None,
    rebuild: Callable[[FrameSize], tuple[Any, dict[str, Any]]] | None = None,
) -> list[FramePlan]:
    """A :class:`FramePlan` per frame size: rebuild the model there, or say why not.

    ``multiple`` and ``rebuild`` replace, for a model that is not rebuilt from Keras layers
    (an imported ONNX model), the downsampling read from ``loaded`` and
    :func:`~edgeseg.model.reshape.rebuild_at`: ``rebuild(padded)`` gives the model at that
    input size and the plan's other fields, or raises ModelError saying why not.
    """
    from edgeseg.model.reshape import padded_size, rebuild_at

    plans: list[FramePlan] = []
    multiple = multiple or _multiple(loaded, meta)
    for size in sizes:
        padded = padded_size(size, multiple)
        if meta.output_border > 0:
            why = (
                f"a valid-padding U-Net (output_border {meta.output_border}) loses pixels at "
                "every level, so it cannot run a whole frame in one input"
            )
            plans.append(FramePlan(size, padded, refused=why))
            continue
        if padded == tuple(meta.input_size):
            why = (
                f"{format_hw(size)} pads to the model's own input size "
                f"{format_hw(meta.input_size)}: the tiled artefact already runs it whole"
            )
            plans.append(FramePlan(size, padded, refused=why))
            continue
        try:
            if rebuild is None:
                rebuilt, extra = rebuild_at(loaded, padded, trust_model=trust_model), {}
            else:
                rebuilt, extra = rebuild(padded)
        except ModelError as exc:
            plans.append(FramePlan(size, padded, refused=str(exc)))
            continue
        frame_meta = meta.with_updates(input_size=padded, frame_size=size)
        plans.append(FramePlan(size, padded, frame_meta, rebuilt, **extra))
    return plans


def calibration_frames(n: int, tile: FrameSize, padded: FrameSize) -> int:
    """Whole frames to calibrate on: about the pixels of ``n`` tiles, at least
    :data:`MIN_CALIBRATION_FRAMES`, at most ``n``."""
    budget = math.ceil(n * tile[0] * tile[1] / (padded[0] * padded[1]))
    return max(1, min(n, max(MIN_CALIBRATION_FRAMES, budget)))


def edgetpu_refusal(recipe: Any, plan: FramePlan, tiled: bytes | None) -> str:
    """Why an Edge TPU recipe keeps only its tiled artefact at this frame size (one line)."""
    grow = (plan.input_size[0] * plan.input_size[1]) / max(1, _tile_pixels(tiled))
    largest = _largest_activation(tiled) if tiled else 0
    size = ""
    if largest:
        size = (
            f"; its largest activation, {largest / 2**20:.2f} MiB per tile, would be "
            f"{largest * grow / 2**20:.2f} MiB at {format_hw(plan.input_size)}"
        )
    return (
        f"{recipe.name} keeps its tiled artefact for {plan.tag}: the Edge TPU holds each "
        f"layer's activations in its ~8 MiB on-chip memory, and edgetpu_compiler fails on the "
        f"large activation tensors of whole camera frames (google-coral/edgetpu#439){size}"
    )


def _tile_pixels(data: bytes | None) -> int:
    if not data:
        return 1
    from edgeseg.core.tflite_file import tensor_summary

    shape = tensor_summary(data).inputs[0].shape
    return int(shape[1]) * int(shape[2])


def _largest_activation(data: bytes) -> int:
    """Bytes of the largest tensor an op produces (not a constant) in a .tflite model."""
    import numpy as np

    from edgeseg.core.tflite_file import as_list, dtype_name, parse_bytes

    model = parse_bytes(data)
    sg = model.subgraphs[0]
    largest = 0
    for op in sg.operators or []:
        for i in as_list(op.outputs):
            t = sg.tensors[i]
            n = math.prod(int(d) for d in as_list(t.shape))
            try:
                width = np.dtype(dtype_name(t.type)).itemsize
            except TypeError:
                width = 1
            largest = max(largest, n * width)
    return largest
