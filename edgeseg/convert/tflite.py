"""Keras / SavedModel → TFLite (fp32, fp16, full-integer int8) with TensorFlow's converter.

Every artefact has a static batch-1 input of the metadata's tile size: dynamic shapes bring
SHAPE/STRIDED_SLICE ops that accelerators reject, and the runtime feeds one tile at a time.
int8 artefacts are calibrated on a representative set prepared exactly as the runtime
prepares frames; for `equalize` recipes, concatenation input ranges are equalized first
(see :mod:`edgeseg.convert.equalize`).

For Edge TPU recipes (``edgetpu = true``) Keras 3's nearest ``UpSampling2D`` layers are
rewritten as one nearest-neighbour resize (it otherwise becomes EXPAND_DIMS/TILE/RESHAPE on
6-D tensors, which the Edge TPU rejects), and a model whose shapes stay dynamic after the
batch-1 wrapper is refused. ``depth_to_space`` recipes turn non-overlapping up-convolutions
into 1x1 CONV_2D + DEPTH_TO_SPACE, which XNNPACK runs much faster (see
:mod:`edgeseg.convert.rewrite`). ``keep_float`` names layers to leave in float (TensorFlow's
calibrate-then-quantize path with ``denylisted_nodes``, as its QuantizationDebugger does).
``float_twin`` also converts the very graph that was quantized (equalized, rewritten) to
fp32, with the same tensor names, for the per-layer quantization error.

Whole frames (``--frame-size``): the caller passes a model rebuilt at the frame's padded size
(:func:`edgeseg.model.reshape.rebuild_at`) with its metadata and whole-frame calibration
inputs, and everything above applies unchanged. With only tiles to calibrate on (a prebuilt
``.npz`` set), ``frame`` (:class:`FrameTarget`) builds the frame-size graph and gives it the
activation ranges calibrated on the tile-size graph (:func:`transplant_ranges`): the same
weights and the same ranges, so the frame artefact quantizes every tensor exactly as the tiled
artefact does (the default quantizer only; the legacy one calibrates inside TensorFlow).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeseg.convert.edgetpu import check_recipe
from edgeseg.convert.equalize import EqualizeResult, equalize
from edgeseg.convert.recipes import Recipe
from edgeseg.convert.rewrite import rewrite_transpose_conv, rewrite_upsampling
from edgeseg.core.metadata import ModelMetadata
from edgeseg.errors import DataError, EdgesegError, ModelError
from edgeseg.optional import require


@dataclass(frozen=True)
class FrameTarget:
    """Convert at a frame's size with the activation ranges of the tile-size calibration.

    ``meta``: the whole-frame artefact's metadata (``input_size`` the padded frame size);
    ``rebuild``: the Keras model at the tile size → the same weights at ``meta.input_size``
    (identity for a SavedModel whose signature leaves the size open).
    """

    meta: ModelMetadata
    rebuild: Callable[[Any], Any]


@dataclass(frozen=True)
class Conversion:
    recipe: Recipe
    tflite: bytes
    equalization: EqualizeResult | None
    seconds: float
    float_twin: bytes | None = None  # the quantized graph in fp32, same tensor names
    rewritten: tuple[str, ...] = ()  # UpSampling2D layers rewritten as one resize
    depth_to_space: tuple[str, ...] = ()  # Conv2DTranspose layers rewritten (1x1 + d2s)
    kept_float: tuple[str, ...] = ()  # tensors left in float by keep_float
    notes: tuple[str, ...] = ()


def _converter(loaded: Any, meta: ModelMetadata, keras_model: Any | None) -> Any:
    """A TFLiteConverter for the model with a static batch-1 input of the tile size."""
    return _converters(loaded, meta, keras_model)()


def _converters(loaded: Any, meta: ModelMetadata, keras_model: Any | None) -> Callable[[], Any]:
    """A factory of TFLiteConverters over one batch-1 graph (same tensor names every time)."""
    tf = require("tensorflow")
    h, w = meta.input_size
    if keras_model is not None:
        k = require("keras")
        # Wrapping the model in a batch-1 functional model fixes every shape; the converter
        # freezes the variables of a Keras model (a bare concrete function would keep them
        # as resources that the int8 calibrator cannot read).
        inp = k.Input((h, w, meta.channels), batch_size=1, name="image")
        wrapper = k.Model(inp, keras_model(inp, training=False), name=keras_model.name)
        return lambda: tf.lite.TFLiteConverter.from_keras_model(wrapper)
    signature = loaded.saved_model.signatures["serving_default"]
    in_name, out_name = loaded.input_name, loaded.output_name
    spec = tf.TensorSpec((1, h, w, meta.channels), tf.float32, name="image")

    @tf.function(input_signature=[spec])
    def serve(x: Any) -> Any:
        return signature(**{in_name: x})[out_name]

    concrete = serve.get_concrete_function()
    return lambda: tf.lite.TFLiteConverter.from_concrete_functions([concrete], loaded.saved_model)


def _probe_tiles(meta: ModelMetadata) -> np.ndarray:
    """Two random tiles in [0, 1] to prove a float rewrite changes nothing (no calibration)."""
    shape = (2, *meta.input_size, meta.channels)
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def _representative(tiles: np.ndarray) -> Any:
    def gen() -> Any:
        for t in tiles:
            yield [t[None].astype(np.float32)]

    return gen


def convert(
    loaded: Any,
    meta: ModelMetadata,
    recipe: Recipe,
    calibration: np.ndarray | Iterable[np.ndarray] | None = None,
    *,
    keep_float: Iterable[str] = (),
    float_twin: bool = False,
    frame: FrameTarget | None = None,
) -> Conversion:
    """Convert a loaded model (see :func:`edgeseg.model.loading.load_model`) by ``recipe``.

    ``calibration``: float32 tiles (N, H, W, C) of the model's input size, required for int8.
    ``keep_float``: layer (or tensor) names whose ops stay float in an int8 model.
    ``float_twin``: also convert the graph that was quantized to fp32 (see the module doc).
    ``frame``: build at the frame size of ``frame.meta`` instead, int8 ranges taken from the
    tile-size ``calibration`` (see the module doc); the float twin is then frame-sized too.
    """
    require("tensorflow")
    start = time.perf_counter()
    tiles = None
    if recipe.needs_calibration:
        if calibration is None:
            raise DataError(f"recipe {recipe.name} needs a calibration set (--calib)")
        tiles = _as_tiles(calibration)
        expected = (*meta.input_size, meta.channels)
        if tiles.shape[1:] != expected:
            raise DataError(f"calibration tiles are {tiles.shape[1:]}, the model takes {expected}")
    check_recipe(recipe)
    if frame is not None and recipe.precision == "int8" and recipe.quantizer == "legacy":
        raise DataError(
            "the legacy quantizer calibrates inside TensorFlow, so a whole-frame "
            "artefact cannot reuse tile ranges; pass the frames themselves (--calib FOLDER, "
            "video or stack)"
        )
    keep_float = tuple(dict.fromkeys(keep_float))
    if keep_float and recipe.precision != "int8":
        raise DataError(f"--keep-float applies to int8 recipes, not {recipe.name}")
    if keep_float and recipe.quantizer == "legacy":
        raise DataError(f"--keep-float needs the default quantizer; {recipe.name} uses legacy")
    keras_model = loaded.keras_model
    notes: list[str] = []
    if recipe.float_ends:
        ends, why = float_end_layers(keras_model) if keras_model is not None else ((), "")
        if ends:
            keep_float = tuple(dict.fromkeys((*keep_float, *ends)))
        else:
            notes.append(
                "float_ends: " + (why or "a SavedModel has no Keras graph") + "; all ops int8"
            )
    if keep_float and keras_model is not None:
        _check_layer_names(keras_model, keep_float)  # before anything slow
    eq = None
    if recipe.equalize and tiles is not None:
        if keras_model is None:
            eq = EqualizeResult(None, (), ("a SavedModel has no Keras graph to equalize",), 0.0)
        else:
            eq = equalize(keras_model, tiles)
            keras_model = eq.model
    frame_model = None
    if frame is not None and keras_model is not None:
        frame_model = frame.rebuild(keras_model)  # the equalized weights, at the frame size
    rewritten: tuple[str, ...] = ()
    if recipe.edgetpu:
        if keras_model is None:
            notes.append("a SavedModel has no Keras graph: UpSampling2D layers were not rewritten")
        else:
            keras_model, rewritten = rewrite_upsampling(keras_model, tiles)
            if frame_model is not None:
                frame_model, _ = rewrite_upsampling(frame_model, _probe_tiles(frame.meta))
    d2s: tuple[str, ...] = ()
    if recipe.depth_to_space:
        if keras_model is None:
            notes.append(
                "a SavedModel has no Keras graph: any Conv2DTranspose stays TRANSPOSE_CONV"
            )
        else:
            keras_model, d2s = rewrite_transpose_conv(keras_model, tiles if tiles is not None
                                                      else _probe_tiles(meta))  # fmt: skip
            if frame_model is not None:
                frame_model, _ = rewrite_transpose_conv(frame_model, _probe_tiles(frame.meta))
    make = _converters(loaded, meta, keras_model)
    if frame is not None:
        make = _converters(loaded, frame.meta, frame_model)
    conv = _configured(make(), recipe, tiles)
    kept: tuple[str, ...] = ()
    with _converter_errors(recipe.name):
        if frame is not None and recipe.precision == "int8":
            assert tiles is not None  # needs_calibration, checked above
            # The frame graph is calibrated on one padded tile only for its structure; every
            # range then comes from the tile-size graph calibrated on all the tiles.
            conv.representative_dataset = _representative(_padded(tiles[:1], frame.meta))
            tile_conv = _configured(_converters(loaded, meta, keras_model)(), recipe, tiles)
            data, kept = _quantize_calibrated(conv, recipe, keep_float, ranges_from=tile_conv)
        elif keep_float:
            data, kept = _quantize_calibrated(conv, recipe, keep_float)
        else:
            data = conv.convert()
    if recipe.edgetpu:
        _check_static(bytes(data), recipe.name)
    twin = None
    if float_twin:
        with _converter_errors(f"{recipe.name}, float twin"):
            twin = bytes(make().convert())
    return Conversion(
        recipe,
        bytes(data),
        eq,
        time.perf_counter() - start,
        float_twin=twin,
        rewritten=rewritten,
        depth_to_space=d2s,
        kept_float=kept,
        notes=tuple(notes),
    )


@contextlib.contextmanager
def _converter_errors(what: str) -> Iterator[None]:
    """Turn whatever the converter raises (ConverterError, ValueError, …) into one line."""
    try:
        yield
    except EdgesegError:
        raise
    except Exception as exc:
        text = str(exc).strip()
        first = text.splitlines()[0][:300] if text else type(exc).__name__
        raise ModelError(f"TFLite conversion ({what}) failed: {first}") from exc


# --------------------------------------------------------------------------------------------
# Edge TPU: static shapes
# --------------------------------------------------------------------------------------------


def _check_static(data: bytes, recipe: str) -> None:
    """ModelError when a tensor of the converted model still has a dynamic dimension."""
    from edgeseg.core.tflite_file import as_list, as_text, parse_bytes

    model = parse_bytes(data, f"the {recipe} model")
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            sig = as_list(t.shapeSignature)
            if any(int(d) < 0 for d in sig):
                shape = "(" + ", ".join(str(int(d)) for d in sig) + ")"
                raise ModelError(
                    f"{recipe}: the model's shapes cannot be made static for the Edge TPU: "
                    f"tensor {as_text(t.name).split(';')[-1]} is {shape} even with a batch-1 "
                    "input of fixed size (a layer computes a shape from the data)"
                )


# --------------------------------------------------------------------------------------------
# Keeping named layers in float
# --------------------------------------------------------------------------------------------


def _configured(conv: Any, recipe: Recipe, tiles: np.ndarray | None) -> Any:
    """``conv`` set up for the recipe's precision (int8: calibrated on ``tiles``)."""
    tf = require("tensorflow")
    if recipe.precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif recipe.precision == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = _representative(tiles)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[recipe.io]
        conv.inference_input_type = io
        conv.inference_output_type = io
        if recipe.quantizer == "legacy":
            conv.experimental_new_quantizer = False
    return conv


def _padded(tiles: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """Tiles reflect-padded (centred) to ``meta.input_size``, as the runtime pads a small frame."""
    from edgeseg.core.segmenter import frame_tiles

    return np.concatenate([frame_tiles(t, meta) for t in tiles])


def transplant_ranges(source: bytes, target: bytes) -> bytes:
    """``target`` (a calibrated, not yet quantized model) with the activation ranges of
    ``source``, the same graph calibrated at another input size.

    The two graphs must match tensor for tensor (same count, same names up to Keras' ``_N``
    suffixes, ranges on the same tensors); DataError otherwise.
    """
    from edgeseg.core.tflite_file import TFLITE_IDENTIFIER, aligned_builder, as_text, parse_bytes

    src = parse_bytes(bytes(source), "the tile-size calibrated model")
    dst = parse_bytes(bytes(target), "the frame-size calibrated model")
    if len(src.subgraphs) != len(dst.subgraphs):
        raise DataError("the frame-size graph differs from the tile-size graph (subgraphs)")
    for sa, sb in zip(src.subgraphs, dst.subgraphs, strict=True):
        ta, tb = sa.tensors or [], sb.tensors or []
        if len(ta) != len(tb):
            raise DataError(
                f"the frame-size graph has {len(tb)} tensors, the tile-size graph {len(ta)}"
            )
        for a, b in zip(ta, tb, strict=True):
            ra, rb = _has_range(a), _has_range(b)
            if ra != rb or _plain(as_text(a.name)) != _plain(as_text(b.name)):
                raise DataError(
                    "the frame-size graph differs from the tile-size graph at tensor "
                    f"{as_text(b.name)!r}"
                )
            if rb:
                b.quantization.min = np.array(a.quantization.min, np.float32)
                b.quantization.max = np.array(a.quantization.max, np.float32)
    builder = aligned_builder()(len(target) + 1024)
    builder.Finish(dst.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _has_range(tensor: Any) -> bool:
    q = tensor.quantization
    return q is not None and q.min is not None and len(q.min) > 0


def _plain(name: str) -> str:
    return re.sub(r"_\d+(?=/|;|$)", "", name)


def _quantize_calibrated(
    conv: Any, recipe: Recipe, keep_float: tuple[str, ...], ranges_from: Any | None = None
) -> tuple[bytes, tuple[str, ...]]:
    """Calibrate, then quantize all but the ops whose output tensors match ``keep_float``.

    This is the path of TensorFlow's QuantizationDebugger (``denylisted_nodes``): calibrate
    only, then ``mlir_quantize`` with the converter's own input/output types. ``ranges_from``:
    another converter of the same graph (at the tile size) whose calibrated ranges replace
    those of ``conv`` (see :func:`transplant_ranges`).
    """
    tf = require("tensorflow")
    from tensorflow.lite.python.convert import mlir_quantize

    conv._experimental_calibrate_only = True
    calibrated = conv.convert()
    if ranges_from is not None:
        ranges_from._experimental_calibrate_only = True
        calibrated = transplant_ranges(ranges_from.convert(), calibrated)
    names = _activation_names(calibrated)
    nodes = []
    for wanted in keep_float:
        hits = [n for n in names if _names_layer(n, wanted)]
        if not hits:
            some = ", ".join(sorted({_layer_of(n) for n in names})[:8])
            raise DataError(
                f"--keep-float {wanted}: no layer or tensor of that name in the model "
                f"(layers include {some})"
            )
        nodes += hits
    io = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[recipe.io]
    data = mlir_quantize(
        calibrated,
        disable_per_channel=conv._experimental_disable_per_channel,
        input_data_type=io,
        output_data_type=io,
        denylisted_nodes=list(dict.fromkeys(nodes)),
    )
    return bytes(data), tuple(dict.fromkeys(nodes))


def float_end_layers(model: Any) -> tuple[tuple[str, ...], str]:
    """(names of the first convolution(s) and of the head convolution(s), or why there are none).

    The first convolutions are those the input reaches through weightless single-input layers;
    the head convolutions those the outputs come from the same way (an activation or softmax
    layer after the last convolution is walked through). On XNNPACK these full-resolution,
    few-channel convolutions are faster in float than in int8, and they hold the least
    compute of a U-Net, so keeping them float costs almost nothing and often gains time.
    """
    from edgeseg.convert.equalize import Graph, layer_kind

    graph = Graph(model)
    if graph.problem:
        return (), f"cannot follow the graph ({graph.problem})"

    def is_conv(name: str) -> bool:
        return layer_kind(graph.layers[name]) in ("Conv2D", "Conv2DTranspose")

    def weightless(name: str) -> bool:
        return not graph.layers[name].weights and len(graph.inputs[name]) <= 1

    first: list[str] = []
    stack = [n for n, srcs in graph.inputs.items() if layer_kind(graph.layers[n]) == "InputLayer"]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        for consumer, _ in graph.consumers.get(name, []):
            if consumer in seen:
                continue
            seen.add(consumer)
            if is_conv(consumer):
                first.append(consumer)
            elif weightless(consumer):
                stack.append(consumer)
    heads: list[str] = []
    for name in sorted(graph.outputs):
        while name in graph.layers and not is_conv(name) and weightless(name):
            srcs = graph.inputs[name]
            if not srcs:
                break
            name = srcs[0]
        if name in graph.layers and is_conv(name):
            heads.append(name)
    names = tuple(dict.fromkeys(first + heads))
    return names, "" if names else "no convolution next to the input or the output"


def _check_layer_names(model: Any, wanted: tuple[str, ...]) -> None:
    """DataError for a --keep-float name that is neither a layer of ``model`` nor a tensor path."""
    names: list[str] = []

    def walk(m: Any) -> None:
        for layer in getattr(m, "layers", []):
            names.append(layer.name)
            walk(layer)

    walk(model)
    for w in wanted:
        if w not in names and "/" not in w:
            raise DataError(
                f"--keep-float {w}: no layer of that name in the model "
                f"(layers include {', '.join(names[:8])}{', …' if len(names) > 8 else ''})"
            )


def _activation_names(data: bytes) -> list[str]:
    """Names of the tensors that ops produce (not constants), in execution order."""
    from edgeseg.core.tflite_file import as_list, as_text, parse_bytes

    model = parse_bytes(bytes(data), "the calibrated model")
    sg = model.subgraphs[0]
    return [as_text(sg.tensors[i].name) for op in sg.operators or [] for i in as_list(op.outputs)]


def _names_layer(tensor: str, layer: str) -> bool:
    """Does the tensor name come from Keras layer ``layer`` (or is it exactly that tensor)?"""
    if tensor == layer:
        return True
    pattern = re.compile(rf"{re.escape(layer)}(_\d+)?")
    return any(pattern.fullmatch(seg) for part in tensor.split(";") for seg in part.split("/"))


def _layer_of(tensor: str) -> str:
    """The Keras layer a tensor name comes from: 'unet_1/unet_1/head_1/Sigmoid' → 'head'."""
    segs = tensor.split(";")[0].split("/")
    seg = segs[-2] if len(segs) >= 2 else segs[0]
    return re.sub(r"_\d+$", "", seg)


def _as_tiles(calibration: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
    if isinstance(calibration, np.ndarray):
        tiles = calibration
    else:
        parts = [np.asarray(t, np.float32).reshape((-1, *np.shape(t)[-3:])) for t in calibration]
        if not parts:
            raise DataError("the calibration set is empty")
        tiles = np.concatenate(parts)
    if tiles.ndim != 4 or len(tiles) == 0:
        raise DataError(f"calibration tiles must be (N, H, W, C) with N >= 1, got {tiles.shape}")
    return tiles.astype(np.float32, copy=False)
