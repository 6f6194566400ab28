"""Graph rewrites before conversion that leave the float model's outputs unchanged.

- ``rewrite_upsampling`` (Edge TPU recipes): Keras 3's nearest ``UpSampling2D`` converts to
  EXPAND_DIMS/TILE/RESHAPE on 6-D tensors, which the Edge TPU rejects; one nearest-neighbour
  resize selects the same pixels.
- ``rewrite_transpose_conv`` (``depth_to_space`` recipes): a ``Conv2DTranspose`` whose kernel
  equals its stride (the U-Net's 2x2, stride-2 up-convolution) never overlaps its outputs, so
  it is exactly a 1x1 convolution to ``k*k*C`` channels followed by DEPTH_TO_SPACE. LiteRT's
  XNNPACK runs that pair far faster than TRANSPOSE_CONV, above all in int8 at full
  resolution with few channels (measured on x86-64 with LiteRT 2.3, 2 threads: the last
  up-convolution of a 16-filter U-Net at 256², int8, 9.1 ms as TRANSPOSE_CONV, 0.4 ms as
  CONV_2D + DEPTH_TO_SPACE). The Edge TPU has no DEPTH_TO_SPACE, so its recipe keeps
  TRANSPOSE_CONV.

Each rewrite clones the functional graph (nested functional models too) with copies of every
other layer, so the original model is left exactly as it was, and, given probe tiles, proves
the outputs unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgeseg.errors import ModelError
from edgeseg.optional import require

# Largest output change a rewrite may cause on the probe tiles: exact for the resize; the 1x1
# convolution sums the same products in another order.
_TOLERANCE = {"upsampling": 1e-6, "transpose_conv": 1e-4}


def is_graph_model(model: Any) -> bool:
    """A functional or sequential Keras model (one that clone_model can rebuild)."""
    return type(model).__name__ in ("Functional", "Sequential")


def _rewrite(
    model: Any,
    applies: Callable[[Any], bool],
    replace: Callable[[Any], Any],
    probe: np.ndarray | None,
    what: str,
    advice: str,
) -> tuple[Any, tuple[str, ...]]:
    """Clone ``model`` with ``replace(layer)`` for every layer where ``applies(layer)``."""
    k = require("keras")
    rewritten: list[str] = []

    def wanted(layer: Any) -> bool:
        if isinstance(layer, k.Model):
            return any(wanted(x) for x in layer.layers)
        return applies(layer)

    copies: list[tuple[Any, Any]] = []  # (new layer, original) whose weights to copy

    def visit(m: Any) -> Any:
        def clone(layer: Any) -> Any:
            if isinstance(layer, k.Model):
                return visit(layer) if is_graph_model(layer) else layer
            if applies(layer):
                rewritten.append(layer.name)
                return replace(layer)
            # A fresh copy, not the layer itself: calling a shared layer on the clone's inputs
            # would give it a second inbound node, and graph walks (equalize, float ends) on
            # the original model would then refuse it as "used more than once".
            new = layer.__class__.from_config(layer.get_config())
            copies.append((new, layer))
            return new

        if not any(wanted(layer) for layer in m.layers):
            return m
        return k.models.clone_model(m, clone_function=clone)

    if not is_graph_model(model):
        return model, ()
    out = visit(model)
    if not rewritten:
        return model, ()
    for new, layer in copies:
        new.set_weights(layer.get_weights())
    if probe is not None and len(probe):
        x = np.asarray(probe[:2], np.float32)
        diff = float(np.max(np.abs(np.asarray(model(x)) - np.asarray(out(x)))))
        if diff > _TOLERANCE[what]:
            raise ModelError(
                f"rewriting {', '.join(rewritten)} changed the model's output by {diff:.3g}; "
                f"{advice}"
            )
    return out, tuple(rewritten)


# --------------------------------------------------------------------------------------------
# UpSampling2D as one resize (Edge TPU)
# --------------------------------------------------------------------------------------------

_CLASSES: dict[str, type] = {}


def _nearest_upsample_class() -> type:
    """A Keras layer: nearest-neighbour upsampling by integer factors as one resize op.

    ``align_corners=False, half_pixel_centers=False``: the TFLite op version the Edge TPU
    compiler accepts; for integer factors it selects the same pixels as ``UpSampling2D``.
    """
    if "upsample" in _CLASSES:
        return _CLASSES["upsample"]
    k = require("keras")
    tf = require("tensorflow")

    class NearestUpsample2D(k.layers.Layer):
        def __init__(self, size: tuple[int, int] = (2, 2), **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.size = (int(size[0]), int(size[1]))

        def call(self, x: Any) -> Any:
            h, w = x.shape[1], x.shape[2]
            return tf.raw_ops.ResizeNearestNeighbor(
                images=x,
                size=(h * self.size[0], w * self.size[1]),
                align_corners=False,
                half_pixel_centers=False,
            )

        def compute_output_shape(self, shape: tuple[Any, ...]) -> tuple[Any, ...]:
            h = None if shape[1] is None else shape[1] * self.size[0]
            w = None if shape[2] is None else shape[2] * self.size[1]
            return (shape[0], h, w, shape[3])

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "size": list(self.size)}

    _CLASSES["upsample"] = NearestUpsample2D
    return NearestUpsample2D


def rewrite_upsampling(model: Any, probe: np.ndarray | None = None) -> tuple[Any, tuple[str, ...]]:
    """(model with nearest ``UpSampling2D`` as one resize op, names of the layers rewritten).

    Bilinear or channels-first upsampling is left alone; ``model`` itself is not changed.
    With ``probe`` tiles, the rewritten model must give exactly the original's outputs
    (ModelError otherwise).
    """
    k = require("keras")

    def applies(layer: Any) -> bool:
        if not isinstance(layer, k.layers.UpSampling2D):
            return False
        cfg = layer.get_config()
        return (
            cfg.get("interpolation", "nearest") == "nearest"
            and cfg.get("data_format", "channels_last") == "channels_last"
        )

    def replace(layer: Any) -> Any:
        return _nearest_upsample_class()(tuple(layer.size), name=layer.name)

    return _rewrite(
        model, applies, replace, probe, "upsampling", "convert without the Edge TPU recipe"
    )


# --------------------------------------------------------------------------------------------
# Conv2DTranspose (kernel == stride) as a 1x1 convolution and DEPTH_TO_SPACE (CPU recipes)
# --------------------------------------------------------------------------------------------


def _depth_to_space_conv_class() -> type:
    """A Keras layer: 1x1 convolution to ``block² * filters`` channels, then depth-to-space.

    It holds the up-convolution's weights rearranged; the converter lowers it to CONV_2D (bias
    and activation fused) and DEPTH_TO_SPACE.
    """
    if "d2s" in _CLASSES:
        return _CLASSES["d2s"]
    k = require("keras")
    tf = require("tensorflow")

    class DepthToSpaceConv2D(k.layers.Layer):
        def __init__(
            self, filters: int, block: int, activation: Any = None, use_bias: bool = True,
            **kwargs: Any,
        ) -> None:  # fmt: skip
            super().__init__(**kwargs)
            self.filters, self.block, self.use_bias = int(filters), int(block), bool(use_bias)
            self.activation = k.activations.get(activation)

        def build(self, shape: tuple[Any, ...]) -> None:
            n = self.block * self.block * self.filters
            self.kernel = self.add_weight(shape=(1, 1, int(shape[-1]), n), name="kernel")
            self.bias = self.add_weight(shape=(n,), name="bias") if self.use_bias else None

        def call(self, x: Any) -> Any:
            y = tf.nn.conv2d(x, tf.cast(self.kernel, x.dtype), strides=1, padding="VALID")
            if self.bias is not None:
                y = tf.nn.bias_add(y, tf.cast(self.bias, x.dtype))
            y = self.activation(y)
            return tf.nn.depth_to_space(y, self.block)

        def compute_output_shape(self, shape: tuple[Any, ...]) -> tuple[Any, ...]:
            h = None if shape[1] is None else shape[1] * self.block
            w = None if shape[2] is None else shape[2] * self.block
            return (shape[0], h, w, self.filters)

        def get_config(self) -> dict[str, Any]:
            return {
                **super().get_config(),
                "filters": self.filters,
                "block": self.block,
                "activation": k.activations.serialize(self.activation),
                "use_bias": self.use_bias,
            }

    _CLASSES["d2s"] = DepthToSpaceConv2D
    return DepthToSpaceConv2D


def _non_overlapping_up_conv(layer: Any, k: Any) -> bool:
    """A built channels-last ``Conv2DTranspose`` with a square kernel equal to its stride."""
    if not isinstance(layer, k.layers.Conv2DTranspose) or not layer.built:
        return False
    cfg = layer.get_config()
    kh, kw = (int(v) for v in cfg["kernel_size"])
    return (
        kh == kw
        and tuple(int(v) for v in cfg["strides"]) == (kh, kw)
        and tuple(int(v) for v in cfg.get("dilation_rate", (1, 1))) == (1, 1)
        and cfg.get("output_padding") is None
        and cfg.get("data_format", "channels_last") == "channels_last"
        and cfg.get("padding", "valid") in ("same", "valid")
    )


def _as_depth_to_space(layer: Any) -> Any:
    """The 1x1 convolution + depth-to-space layer equal to a non-overlapping up-convolution."""
    cfg = layer.get_config()
    kh, kw = (int(v) for v in cfg["kernel_size"])
    weights = layer.get_weights()
    # Kernel (kh, kw, filters, in): output (k*i + a, k*j + b, c) += x[i, j] · W[a, b, c].
    kernel = weights[0]
    filters, channels = kernel.shape[2], kernel.shape[3]
    # DEPTH_TO_SPACE puts channel (a*k + b)*filters + c at offset (a, b) of each block.
    new_kernel = kernel.transpose(3, 0, 1, 2).reshape(1, 1, channels, kh * kw * filters)
    new = _depth_to_space_conv_class()(
        filters,
        kh,
        activation=cfg.get("activation"),
        use_bias=bool(cfg.get("use_bias", True)),
        name=layer.name,
        dtype=layer.dtype_policy,
    )
    new.build((None, None, None, channels))
    new.set_weights([new_kernel] + ([np.tile(weights[1], kh * kw)] if len(weights) > 1 else []))
    return new


def rewrite_transpose_conv(
    model: Any, probe: np.ndarray | None = None
) -> tuple[Any, tuple[str, ...]]:
    """(model with each non-overlapping ``Conv2DTranspose`` as 1x1 conv + depth-to-space,
    names of the layers rewritten).

    Overlapping up-convolutions (kernel larger than stride) are left alone; ``model`` itself is
    not changed. With ``probe`` tiles, the outputs must agree to 1e-4 (ModelError otherwise).
    """
    k = require("keras")
    return _rewrite(
        model,
        lambda layer: _non_overlapping_up_conv(layer, k),
        _as_depth_to_space,
        probe,
        "transpose_conv",
        "use a recipe with depth_to_space = false",
    )
