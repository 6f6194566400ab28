"""Equalize the ranges of concatenation inputs before int8 quantization.

TensorFlow's quantizer gives every input of a CONCATENATION the output's scale. In a U-Net
trained without batch norm the encoder skips can be far smaller than the decoder activations
they are concatenated with, and are then quantized to (almost) zero: the int8 model predicts
nonsense with no warning (measured: Dice 0.16 against 0.89 for the float model).

The fix is exact in float arithmetic. ReLU, max-pooling, cropping, dropout and upsampling are
positively homogeneous (f(s·x) = s·f(x) for s > 0) and act per channel, so multiplying the
output channels of the layer that produces a skip (a convolution's kernel and bias, or a batch
norm's gamma and beta) by s > 0 multiplies the skip by s, and dividing the matching *input*
channels of every linear layer that consumes it (convolutions; batch norms via their moving
statistics) by s leaves the model's output unchanged. Choosing s = range(largest input) /
range(skip) gives all inputs of a concatenation similar ranges, so the one shared scale fits
them all, with no extra ops in the converted model.

Models whose graph does not allow it (a skip that also feeds an Add, a sigmoid, a shared
layer, a nested model) are left unchanged for that skip, and the reason is reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeseg.optional import keras

# Below this ratio a skip is left alone: quantization already resolves it well.
MIN_RATIO = 1.5
# Largest allowed change of the model's output, in probability units.
TOLERANCE = 1e-4


@dataclass(frozen=True)
class Scaling:
    layer: str  # the producing layer whose output channels were scaled
    factor: float
    concat: str  # the concatenation it feeds
    range_before: float
    range_target: float


@dataclass(frozen=True)
class EqualizeResult:
    model: Any  # the equalized keras.Model (or the original when nothing was changed)
    scalings: tuple[Scaling, ...]
    skipped: tuple[str, ...]  # human-readable reasons, one per skip left unchanged
    max_abs_diff: float  # largest change of the output over the probe tiles

    @property
    def changed(self) -> bool:
        return bool(self.scalings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scalings": [s.__dict__ for s in self.scalings],
            "skipped": list(self.skipped),
            "max_abs_diff": self.max_abs_diff,
        }


def layer_kind(layer: Any) -> str:
    return type(layer).__name__


def _is_passthrough(layer: Any) -> bool:
    """Per-channel and positively homogeneous: f(s·x) = s·f(x) for any s > 0, per channel."""
    kind = layer_kind(layer)
    if kind == "ReLU":
        cfg = layer.get_config()
        return cfg.get("max_value") is None and not cfg.get("threshold")
    if kind == "Activation":
        return layer.get_config().get("activation") in ("relu", "linear")
    return kind in (
        "LeakyReLU",
        "PReLU",
        "Dropout",
        "SpatialDropout2D",
        "Cropping2D",
        "ZeroPadding2D",
        "MaxPooling2D",
        "AveragePooling2D",
        "UpSampling2D",
        "Identity",
    )


def _is_producer(layer: Any) -> bool:
    """A layer whose output channels can be scaled by changing its weights."""
    kind = layer_kind(layer)
    if kind in ("Conv2D", "Conv2DTranspose"):
        return layer.get_config().get("activation") in ("relu", "linear")
    if kind == "BatchNormalization":
        cfg = layer.get_config()
        return bool(cfg.get("scale", True) and cfg.get("center", True))
    return False


def _is_compensator(layer: Any) -> bool:
    return layer_kind(layer) in ("Conv2D", "Conv2DTranspose", "BatchNormalization")


class Graph:
    """Producers and consumers of each layer of a flat functional Keras model."""

    def __init__(self, model: Any) -> None:
        self.layers = {layer.name: layer for layer in model.layers}
        self.inputs: dict[str, list[str]] = {}
        self.consumers: dict[str, list[tuple[str, int]]] = {n: [] for n in self.layers}
        self.problem: str | None = None
        output_ops = {t._keras_history.operation.name for t in model.outputs}
        self.outputs = output_ops
        for name, layer in self.layers.items():
            if layer_kind(layer) == "InputLayer":
                self.inputs[name] = []
                continue
            if len(layer._inbound_nodes) != 1:
                self.problem = f"layer {name} is used more than once"
                return
            if hasattr(layer, "layers"):
                self.problem = f"layer {name} is a nested model"
                return
            srcs = [t._keras_history.operation.name for t in layer._inbound_nodes[0].input_tensors]
            self.inputs[name] = srcs
            for pos, src in enumerate(srcs):
                self.consumers.setdefault(src, []).append((name, pos))

    def channels(self, name: str) -> int:
        return int(self.layers[name].output.shape[-1])


def _producer_of(graph: Graph, name: str) -> str | None:
    """Walk back from a concatenation input through passthrough layers to its producer."""
    while True:
        layer = graph.layers[name]
        if _is_producer(layer):
            return name
        if not _is_passthrough(layer) or len(graph.inputs[name]) != 1:
            return None
        name = graph.inputs[name][0]


def _compensations(graph: Graph, producer: str) -> tuple[list[tuple[str, int, int]], str | None]:
    """Where the scaled channels of ``producer`` end up: (layer, first channel, count) to divide.

    Returns the list, or a reason why the output of ``producer`` reaches a layer that cannot
    absorb the scale.
    """
    actions: list[tuple[str, int, int]] = []
    n = graph.channels(producer)
    stack = [(producer, 0)]  # (layer whose output holds the scaled channels, offset in it)
    while stack:
        name, offset = stack.pop()
        if name in graph.outputs:
            return [], f"{name} is a model output"
        for consumer, pos in graph.consumers.get(name, []):
            layer = graph.layers[consumer]
            if layer_kind(layer) == "Concatenate":
                axis = layer.get_config().get("axis", -1)
                if axis not in (-1, 3):
                    return [], f"{consumer} concatenates along axis {axis}"
                before = sum(graph.channels(src) for src in graph.inputs[consumer][:pos])
                stack.append((consumer, offset + before))
            elif _is_passthrough(layer):
                stack.append((consumer, offset))
            elif _is_compensator(layer):
                actions.append((consumer, offset, n))
            else:
                return (
                    [],
                    f"{name} feeds {consumer} ({layer_kind(layer)}), which cannot absorb a scale",
                )
    return actions, None


def _concat_inputs(graph: Graph) -> list[tuple[str, list[str]]]:
    return [
        (name, graph.inputs[name])
        for name, layer in graph.layers.items()
        if layer_kind(layer) == "Concatenate"
    ]


#: Pixels per probe batch: 8 tiles of 256² (a whole 1080x1920 frame goes one at a time; eight
#: of them with every activation kept took 24 GB).
_BATCH_PIXELS = 8 * 256 * 256


def _batch(tiles: np.ndarray) -> int:
    """Tiles per forward pass, so that a batch holds about :data:`_BATCH_PIXELS` pixels."""
    return max(1, _BATCH_PIXELS // max(1, int(tiles.shape[1]) * int(tiles.shape[2])))


def _ranges(model: Any, names: list[str], tiles: np.ndarray) -> dict[str, float]:
    """max |activation| of each named layer's output over the probe tiles."""
    k = keras()
    batch = _batch(tiles)
    probe = k.Model(model.inputs, [model.get_layer(n).output for n in names])
    top = dict.fromkeys(names, 0.0)
    for i in range(0, len(tiles), batch):
        outs = probe(tiles[i : i + batch], training=False)
        outs = outs if isinstance(outs, list | tuple) else [outs]
        for n, o in zip(names, outs, strict=True):
            top[n] = max(top[n], float(np.max(np.abs(np.asarray(o)))))
    return top


def _scale_output(layer: Any, s: np.ndarray) -> None:
    w = layer.get_weights()
    kind = layer_kind(layer)
    if kind == "Conv2D":
        w[0] = w[0] * s  # kernel (kh, kw, in, out)
        if layer.use_bias:
            w[1] = w[1] * s
    elif kind == "Conv2DTranspose":
        w[0] = w[0] * s[:, None]  # kernel (kh, kw, out, in)
        if layer.use_bias:
            w[1] = w[1] * s
    else:  # BatchNormalization: gamma, beta, moving mean, moving variance
        w[0], w[1] = w[0] * s, w[1] * s
    layer.set_weights(w)


def _divide_input(layer: Any, first: int, count: int, s: float) -> bool:
    w = layer.get_weights()
    sl = slice(first, first + count)
    kind = layer_kind(layer)
    if kind == "Conv2D":
        w[0][:, :, sl, :] /= s
    elif kind == "Conv2DTranspose":
        w[0][:, :, :, sl] /= s
    else:
        # BN(s·x) = BN'(x) needs mean' = s·mean and var' = s²(var + eps) - eps.
        eps = float(layer.get_config().get("epsilon", 1e-3))
        var = s * s * (w[3][sl] + eps) - eps
        if np.any(var < 0):
            return False
        w[2][sl] = w[2][sl] * s
        w[3][sl] = var
    layer.set_weights(w)
    return True


def equalize(
    model: Any, tiles: Iterable[np.ndarray] | np.ndarray, max_tiles: int = 64
) -> EqualizeResult:
    """Equalize concatenation input ranges of a functional Keras model (see module docstring).

    ``tiles``: float32 model inputs, (N, H, W, C) or an iterable of (1, H, W, C) arrays, used to
    measure activation ranges and to verify that the output is unchanged. The input model is
    not modified.
    """
    k = keras()
    probe = _stack(tiles, max_tiles)
    graph = Graph(model)
    if graph.problem:
        return EqualizeResult(model, (), (f"not equalized: {graph.problem}",), 0.0)
    skipped: list[str] = []
    wanted: dict[str, list[tuple[str, str]]] = {}  # concat -> [(input layer, producer)]
    for concat, srcs in _concat_inputs(graph):
        pairs = []
        for src in srcs:
            producer = _producer_of(graph, src)
            if producer is None:
                skipped.append(f"{concat}: input {src} has no scalable producer")
            pairs.append((src, producer))
        wanted[concat] = pairs
    if not wanted:
        return EqualizeResult(model, (), ("no concatenation to equalize",), 0.0)
    ranges = _ranges(model, sorted({src for pairs in wanted.values() for src, _ in pairs}), probe)

    factors: dict[str, tuple[float, str, float, float]] = {}
    for concat, pairs in wanted.items():
        target = max(ranges[src] for src, _ in pairs)
        for src, producer in pairs:
            r = ranges[src]
            if producer is None or r <= 0 or target / r < MIN_RATIO:
                continue
            s = target / r
            if producer not in factors or s < factors[producer][0]:
                factors[producer] = (s, concat, r, target)

    clone = k.models.clone_model(model)
    clone.set_weights(model.get_weights())
    cgraph = Graph(clone)
    scalings: list[Scaling] = []
    for producer, (s, concat, r, target) in sorted(factors.items()):
        actions, reason = _compensations(cgraph, producer)
        if reason:
            skipped.append(f"{producer}: {reason}")
            continue
        before = [cgraph.layers[n].get_weights() for n, _, _ in actions]
        if not all(_divide_input(cgraph.layers[n], a, c, s) for n, a, c in actions):
            for (n, _, _), w in zip(actions, before, strict=True):
                cgraph.layers[n].set_weights(w)
            skipped.append(f"{producer}: a batch norm after it cannot absorb the scale")
            continue
        _scale_output(cgraph.layers[producer], np.full(cgraph.channels(producer), s, np.float32))
        scalings.append(Scaling(producer, float(s), concat, float(r), float(target)))
    if not scalings:
        return EqualizeResult(model, (), tuple(skipped) or ("ranges already balanced",), 0.0)
    diff = _max_diff(model, clone, probe)
    if not diff <= TOLERANCE:
        return EqualizeResult(
            model,
            (),
            (*skipped, f"not equalized: the output changed by {diff:.2e} (> {TOLERANCE})"),
            diff,
        )
    return EqualizeResult(clone, tuple(scalings), tuple(skipped), diff)


def _stack(tiles: Iterable[np.ndarray] | np.ndarray, limit: int) -> np.ndarray:
    if isinstance(tiles, np.ndarray):
        return tiles[:limit].astype(np.float32, copy=False)
    out = []
    for t in tiles:
        out.append(np.asarray(t, np.float32).reshape((-1, *np.shape(t)[-3:])))
        if sum(len(o) for o in out) >= limit:
            break
    return np.concatenate(out)[:limit]


def _max_diff(a: Any, b: Any, tiles: np.ndarray) -> float:
    worst = 0.0
    batch = _batch(tiles)
    for i in range(0, len(tiles), batch):
        x = tiles[i : i + batch]
        pa, pb = np.asarray(a(x, training=False)), np.asarray(b(x, training=False))
        worst = max(worst, float(np.max(np.abs(pa - pb))))
    return worst
