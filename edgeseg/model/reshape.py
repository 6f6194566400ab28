"""A fully convolutional model at another input size, with the same weights (whole frames).

A ``padding="same"`` U-Net runs on any input whose sides are multiples of its total
downsampling (2^depth for a U-Net of depth d). :func:`rebuild_at` takes the model's Keras
config, sets every image ``InputLayer`` to a static batch-1 shape of the new size, rebuilds it
with ``from_config`` and copies the weights, then checks that the output has the input's size
(a valid-padding U-Net's output shrinks). LiteRT's ``resize_tensor_input`` is no substitute:
it fails on converted U-Nets.

What cannot be rebuilt (a SavedModel whose signature fixes the image size, a subclassed
model, a valid-padding U-Net, a graph whose shapes do not fit the new size) is a one-line
:class:`~edgeseg.errors.ModelError` saying why; the caller keeps the tiled artefact.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from edgeseg.errors import ModelError
from edgeseg.optional import require

__all__ = ["downsampling", "padded_size", "rebuild_at", "rebuild_keras"]

# Layers that reduce the spatial size by their strides.
_POOLS = ("MaxPooling2D", "AveragePooling2D", "MaxPool2D", "AvgPool2D")
_STRIDED = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D")


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    a, b = value
    return (int(a), int(b))


def _walk(model: Any) -> Iterator[Any]:
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):
            yield from _walk(layer)


def downsampling(model: Any) -> tuple[int, int]:
    """(fy, fx): the product of the strides of every pooling and strided convolution.

    A U-Net of depth d gives (2^d, 2^d); a size that is a multiple of it keeps every level
    even. (Downsampling branches side by side would give a larger product than needed, which
    is still a valid multiple.)
    """
    fy = fx = 1
    for layer in _walk(model):
        kind = type(layer).__name__
        if kind in _POOLS:
            sy, sx = _pair(layer.strides if layer.strides is not None else layer.pool_size)
        elif kind in _STRIDED:
            sy, sx = _pair(layer.strides)
        else:
            continue
        fy, fx = fy * sy, fx * sx
    return fy, fx


def padded_size(frame: tuple[int, int], multiple: tuple[int, int]) -> tuple[int, int]:
    """``frame`` (H, W) rounded up to multiples of ``multiple`` (my, mx)."""
    return (
        math.ceil(frame[0] / multiple[0]) * multiple[0],
        math.ceil(frame[1] / multiple[1]) * multiple[1],
    )


def _set_inputs(node: Any, shape: list[int], channels: int) -> int:
    """Set every image InputLayer of a Keras config (nested models too) to ``shape``."""
    count = 0
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("class_name") == "InputLayer" and isinstance(item.get("config"), dict):
                cfg = item["config"]
                old = cfg.get("batch_shape") or cfg.get("batch_input_shape")
                if old is not None and len(old) == 4 and old[-1] in (None, channels):
                    cfg.pop("batch_input_shape", None)
                    cfg.pop("input_shape", None)
                    cfg["batch_shape"] = list(shape)
                    count += 1
            built = item.get("build_input_shape")
            if isinstance(built, list) and len(built) == 4:
                item["build_input_shape"] = list(shape)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


@contextlib.contextmanager
def _deserialization(trust_model: bool) -> Iterator[None]:
    """Keras safe mode off for models the user trusts (Lambda layers), as at load time."""
    if not trust_model:
        yield
        return
    from keras.src.saving.serialization_lib import SafeModeScope

    with SafeModeScope(False):
        yield


def rebuild_keras(model: Any, size: tuple[int, int], *, trust_model: bool = False) -> Any:
    """A Keras functional or sequential ``model`` rebuilt with a static (1, H, W, C) input.

    Raises:
        ModelError: one line saying why the model cannot run at ``size`` with the same weights.
    """
    kind = type(model).__name__
    if kind not in ("Functional", "Sequential"):
        raise ModelError(f"a {kind} Keras model has no config to rebuild at another input size")
    h, w = size
    channels = int(model.inputs[0].shape[-1])
    try:
        config = model.get_config()
    except Exception as exc:  # custom layers without get_config
        raise ModelError(f"the model's config cannot be read ({_first(exc)})") from exc
    if not _set_inputs(config, [1, h, w, channels], channels):
        raise ModelError("the model's config has no image input layer to resize")
    try:
        with _deserialization(trust_model):
            new = type(model).from_config(config)
        new.set_weights(model.get_weights())
    except Exception as exc:  # shape mismatches at concatenations, custom layers, …
        raise ModelError(f"the model does not rebuild at {h}x{w} ({_first(exc)})") from exc
    out = tuple(new.outputs[0].shape) if len(new.outputs) == 1 else ()
    if len(out) != 4 or tuple(out[1:3]) != (h, w):
        shown = "x".join(str(d) for d in out[1:3]) if len(out) == 4 else str(out)
        raise ModelError(
            f"rebuilt at {h}x{w} its output is {shown}, not the input's size (a valid-padding "
            "or cropping model): it cannot run whole frames"
        )
    return new


def rebuild_at(loaded: Any, size: tuple[int, int], *, trust_model: bool = False) -> Any:
    """A :class:`~edgeseg.model.loading.LoadedModel` that takes (1, H, W, C) = ``size``.

    A Keras model is rebuilt (:func:`rebuild_keras`); a SavedModel is kept as it is when its
    signature leaves height and width open, and refused when it fixes them.
    """
    h, w = size
    if loaded.keras_model is None:
        _, sh, sw, _ = loaded.input_shape
        if sh is not None or sw is not None:
            raise ModelError(
                f"a SavedModel's signature fixes its input at {sh}x{sw}; it cannot be rebuilt at "
                "another size (convert the Keras model, .keras or .h5, for whole frames)"
            )
        require("tensorflow")
        out = (1, h, w, loaded.output_shape[-1])
        return replace(loaded, input_shape=(1, h, w, loaded.input_shape[-1]), output_shape=out)
    model = rebuild_keras(loaded.keras_model, size, trust_model=trust_model)
    return replace(
        loaded,
        keras_model=model,
        input_shape=tuple(model.inputs[0].shape),
        output_shape=tuple(model.outputs[0].shape),
    )


def _first(exc: BaseException, limit: int = 200) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
