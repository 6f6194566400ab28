"""Keras / SavedModel → TFLite (fp32, fp16, full-integer int8) with TensorFlow's converter.

Every artefact has a static batch-1 input of the metadata's tile size: dynamic shapes bring
SHAPE/STRIDED_SLICE ops that accelerators reject, and the runtime feeds one tile at a time.
int8 artefacts are calibrated on a representative set prepared exactly as the runtime
prepares frames; for `equalize` recipes, concatenation input ranges are equalized first
(see :mod:`edgeseg.convert.equalize`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeseg._optional import require
from edgeseg.convert.equalize import EqualizeResult, equalize
from edgeseg.convert.recipes import Recipe
from edgeseg.errors import DataError, ModelError
from edgeseg.model.metadata import ModelMetadata


@dataclass(frozen=True)
class Conversion:
    recipe: Recipe
    tflite: bytes
    equalization: EqualizeResult | None
    seconds: float


def _converter(loaded: Any, meta: ModelMetadata, keras_model: Any | None) -> Any:
    """A TFLiteConverter for the model with a static batch-1 input of the tile size."""
    tf = require("tensorflow")
    h, w = meta.input_size
    if keras_model is not None:
        k = require("keras")
        # Wrapping the model in a batch-1 functional model fixes every shape; the converter
        # freezes the variables of a Keras model (a bare concrete function would keep them
        # as resources that the int8 calibrator cannot read).
        inp = k.Input((h, w, meta.channels), batch_size=1, name="image")
        wrapper = k.Model(inp, keras_model(inp, training=False), name=keras_model.name)
        return tf.lite.TFLiteConverter.from_keras_model(wrapper)
    signature = loaded.saved_model.signatures["serving_default"]
    in_name, out_name = loaded.input_name, loaded.output_name
    spec = tf.TensorSpec((1, h, w, meta.channels), tf.float32, name="image")

    @tf.function(input_signature=[spec])
    def serve(x: Any) -> Any:
        return signature(**{in_name: x})[out_name]

    return tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], loaded.saved_model
    )


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
) -> Conversion:
    """Convert a loaded model (see :func:`edgeseg.model.loading.load_model`) by ``recipe``.

    ``calibration``: float32 tiles (N, H, W, C) of the model's input size, required for int8.
    """
    tf = require("tensorflow")
    start = time.perf_counter()
    tiles = None
    if recipe.needs_calibration:
        if calibration is None:
            raise DataError(f"recipe {recipe.name} needs a calibration set (--calib)")
        tiles = _as_tiles(calibration)
        expected = (*meta.input_size, meta.channels)
        if tiles.shape[1:] != expected:
            raise DataError(f"calibration tiles are {tiles.shape[1:]}, the model takes {expected}")
    keras_model = loaded.keras_model
    eq = None
    if recipe.equalize and tiles is not None:
        if keras_model is None:
            eq = EqualizeResult(None, (), ("a SavedModel has no Keras graph to equalize",), 0.0)
        else:
            eq = equalize(keras_model, tiles)
            keras_model = eq.model
    conv = _converter(loaded, meta, keras_model)
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
    try:
        data = conv.convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError…
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"TFLite conversion ({recipe.name}) failed: {first}") from exc
    return Conversion(recipe, bytes(data), eq, time.perf_counter() - start)


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
