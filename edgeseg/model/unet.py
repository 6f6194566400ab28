"""The U-Net of Ronneberger et al. (2015), configurable in the ways users' models differ.

Two 3x3 convolutions per level, max-pooling down, a transposed convolution (or nearest
upsampling followed by a 2x2 convolution, which maps better to the Edge TPU) up, skip
connections by concatenation, a 1x1 convolution head: sigmoid for one class, softmax for K,
or ``sigmoid_outputs`` independent sigmoid channels (an instance model's foreground and
interior: no softmax, which the Edge TPU would leave to the CPU).

Edge architectures (``arch``), all built from standard Keras layers (no Lambda, so the safe
loader takes them and ``model/reshape`` rebuilds them at a frame size), all full-int8 on the
Edge TPU:

* ``unet``: the above.
* ``separable``: every 3x3 convolution becomes a MobileNet-style depthwise-separable block,
  DepthwiseConv2D 3x3 + batch norm + ReLU, then a 1x1 Conv2D + batch norm + ReLU (about 8x
  fewer multiply-accumulates per block at 16+ channels). Plain ReLU, not ReLU6: the int8
  recipes' range equalization needs a positively homogeneous activation.
* ``attention``: Attention U-Net gates (Oktay et al. 2018) on the skip connections: the skip
  and the upsampled decoder feature each go through a 1x1 convolution, are added, ReLU, a 1x1
  convolution to one channel, sigmoid; the skip is multiplied by that map before the
  concatenation (ADD, LOGISTIC and MUL: all Edge TPU ops).

``width`` multiplies every level's filters (``round(base_filters * width) * 2**level``, at
least 1): the knob ``edgeseg distill`` turns to fit a latency budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgeseg.errors import ModelError
from edgeseg.optional import keras

DECODERS = ("transpose", "upsample")
ARCHS = ("unet", "separable", "attention")
PADDINGS = ("same", "valid")


@dataclass(frozen=True)
class UNetConfig:
    input_size: tuple[int, int] = (256, 256)
    channels: int = 1
    num_classes: int = 1
    base_filters: int = 16
    depth: int = 4  # number of 2x poolings
    decoder: str = "transpose"
    batch_norm: bool = True
    dropout: float = 0.0  # applied at the bottleneck (as in the paper) when > 0
    padding: str = "same"
    # > 0: that many independent sigmoid output channels (one class; 2 for an instance model).
    sigmoid_outputs: int = 0
    arch: str = "unet"  # unet, separable (depthwise-separable blocks) or attention (gates)
    width: float = 1.0  # multiplies every level's filters

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ModelError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.padding not in PADDINGS:
            raise ModelError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if not 1 <= self.depth <= 6:
            raise ModelError(f"depth must be between 1 and 6, got {self.depth}")
        if self.base_filters < 1:
            raise ModelError("base_filters must be >= 1")
        if self.arch not in ARCHS:
            raise ModelError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if not 0.0 < self.width <= 8.0:
            raise ModelError(f"width must be in (0, 8], got {self.width}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelError("dropout must be in [0, 1)")
        if self.channels not in (1, 3):
            raise ModelError(f"channels must be 1 or 3, got {self.channels}")
        if self.num_classes < 1:
            raise ModelError("num_classes must be >= 1")
        if self.sigmoid_outputs < 0 or (self.sigmoid_outputs and self.num_classes != 1):
            raise ModelError("sigmoid_outputs must be >= 0, and > 0 only with num_classes 1")
        self.output_size()  # validates the input size against depth and padding

    def output_size(self) -> tuple[int, int]:
        """(h, w) of the output; smaller than the input for a valid-padding U-Net."""
        return tuple(_output_side(s, self.depth, self.padding) for s in self.input_size)

    @property
    def top_filters(self) -> int:
        """Filters of the first level: ``base_filters`` scaled by ``width``, at least 1."""
        return max(1, round(self.base_filters * self.width))

    @property
    def output_channels(self) -> int:
        return self.sigmoid_outputs or self.num_classes

    @property
    def output_border(self) -> int:
        return (self.input_size[0] - self.output_size()[0]) // 2

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


def _output_side(n: int, depth: int, padding: str) -> int:
    if padding == "same":
        if n % (2**depth):
            raise ModelError(
                f"input size {n} must be a multiple of {2**depth} for a U-Net of depth {depth}"
            )
        return n
    size = n
    for _ in range(depth):
        size -= 4
        if size <= 0 or size % 2:
            raise ModelError(
                f"input size {n} does not fit a valid-padding U-Net of depth {depth} "
                "(every level before pooling must be even); try 572 for depth 4"
            )
        size //= 2
    size -= 4
    for _ in range(depth):
        size = size * 2 - 4
        if size <= 0:
            raise ModelError(f"input size {n} is too small for a valid-padding U-Net")
    return size


def build_unet(config: UNetConfig = UNetConfig(), name: str = "unet") -> Any:
    """Build an uncompiled ``keras.Model`` mapping float32 (N, H, W, C) to (N, h, w, K)."""
    k = keras()
    layers = k.layers
    f = config.top_filters

    def block(x: Any, filters: int, tag: str) -> Any:
        if config.arch == "separable":
            return separable_block(x, filters, tag)
        for i in (1, 2):
            x = layers.Conv2D(
                filters,
                3,
                padding=config.padding,
                use_bias=not config.batch_norm,
                kernel_initializer="he_normal",
                name=f"{tag}_conv{i}",
            )(x)
            if config.batch_norm:
                x = layers.BatchNormalization(name=f"{tag}_bn{i}")(x)
            x = layers.ReLU(name=f"{tag}_relu{i}")(x)
        return x

    def separable_block(x: Any, filters: int, tag: str) -> Any:
        for i in (1, 2):
            x = layers.DepthwiseConv2D(
                3,
                padding=config.padding,
                use_bias=not config.batch_norm,
                depthwise_initializer="he_normal",
                name=f"{tag}_dw{i}",
            )(x)
            if config.batch_norm:
                x = layers.BatchNormalization(name=f"{tag}_dwbn{i}")(x)
            x = layers.ReLU(name=f"{tag}_dwrelu{i}")(x)
            x = layers.Conv2D(
                filters,
                1,
                use_bias=not config.batch_norm,
                kernel_initializer="he_normal",
                name=f"{tag}_pw{i}",
            )(x)
            if config.batch_norm:
                x = layers.BatchNormalization(name=f"{tag}_bn{i}")(x)
            x = layers.ReLU(name=f"{tag}_relu{i}")(x)
        return x

    def gate(skip: Any, g: Any, filters: int, tag: str) -> Any:
        """The skip weighted by a one-channel attention map computed from it and ``g``."""
        inter = max(1, filters // 2)
        theta = layers.Conv2D(inter, 1, use_bias=False, name=f"{tag}_gate_x")(skip)
        phi = layers.Conv2D(inter, 1, name=f"{tag}_gate_g")(g)
        a = layers.ReLU(name=f"{tag}_gate_relu")(layers.Add(name=f"{tag}_gate_add")([theta, phi]))
        alpha = layers.Conv2D(1, 1, activation="sigmoid", name=f"{tag}_gate_psi")(a)
        return layers.Multiply(name=f"{tag}_gate")([skip, alpha])

    inputs = k.Input(shape=(*config.input_size, config.channels), name="image")
    x = inputs
    skips = []
    for level in range(config.depth):
        x = block(x, f * 2**level, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = block(x, f * 2**config.depth, "bottleneck")
    if config.dropout > 0:
        x = layers.Dropout(config.dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(config.depth)):
        filters = f * 2**level
        if config.decoder == "transpose":
            x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"dec{level}_up")(x)
        else:
            x = layers.UpSampling2D(2, interpolation="nearest", name=f"dec{level}_up")(x)
            x = layers.Conv2D(filters, 2, padding="same", name=f"dec{level}_upconv")(x)
        skip = skips[level]
        if config.padding == "valid":
            crop = (skip.shape[1] - x.shape[1]) // 2
            skip = layers.Cropping2D(crop, name=f"dec{level}_crop")(skip)
        if config.arch == "attention":
            skip = gate(skip, x, filters, f"dec{level}")
        x = layers.Concatenate(name=f"dec{level}_concat")([skip, x])
        x = block(x, filters, f"dec{level}")
    activation = "sigmoid" if config.num_classes == 1 else "softmax"
    # The head stays float32 under a mixed-precision policy: probabilities near 0 and 1 are
    # not representable in bfloat16, and the loss takes their logarithm.
    outputs = layers.Conv2D(
        config.output_channels, 1, activation=activation, name="head", dtype="float32"
    )(x)
    return k.Model(inputs, outputs, name=name)
