"""What a model needs to be run: the one definition every step reads and writes.

`train` writes it beside the model as a sidecar ``<stem>.edgeseg.json``; `convert` embeds it
in every artefact. For a model that has none (anyone else's U-Net), it is inferred from the
model's tensor shapes and completed by command-line flags, with defaults that suit 8-bit
microscopy.

Conventions, fixed here so that every stage agrees:

- Images flow through edgeseg in RGB order (or gray); OpenCV reads BGR, and the readers
  convert at the edge.
- ``normalization`` turns a frame into float32 in about [0, 1] *before* tiling, on the whole
  frame:
  ``"scale"`` divides by ``input_max`` (None: the dtype's maximum, 255 for 8-bit frames and
  65535 for 16-bit ones; set ``input_max=4095`` for a 12-bit camera stored in 16 bits);
  ``"percentile"`` maps the frame's ``percentiles`` (low, high) to 0 and 1 (robust to bit
  depth and exposure, the usual choice for fluorescence microscopy);
  ``"minmax"`` maps the frame's minimum and maximum to 0 and 1.
- ``num_classes == 1``: a sigmoid output, foreground where the probability exceeds
  ``threshold``; a binary training mask marks foreground with ``foreground_value`` (255 for
  most data sets, 0 for ISBI 2012's membranes). ``num_classes >= 2``: a softmax output over
  K classes, masks hold class indices 0..K-1, and the label is the argmax.
- ``output_border``: pixels lost on each side by a valid-padding U-Net (its output is the
  input minus ``2 * output_border`` in each dimension, centred).
- ``instances`` (schema version 2): an instance model, whose two sigmoid outputs
  (foreground, interior) become one id per object (:mod:`edgeseg.core.instances`); None for
  a semantic model. Version 1 files (no instances) still read.
- ``frame_size`` (schema version 2): a *whole-frame* artefact, built with a static input for
  camera frames of this (H, W). ``input_size`` is that size padded up to the model's multiple
  (2^depth); the padding is centred reflect padding, as :func:`edgeseg.core.tiling.plan_tiles`
  pads any frame smaller than the model input, and the output is cropped back at run time.
  None for an artefact built at the training tile size.
- ``size_multiple``: a model with dynamic H/W run on *whole frames of any size* (a source
  ONNX adapted by :mod:`edgeseg.runtime.foreign_onnx`): each frame is padded up to this
  multiple (2^depth), centred reflect padding as above, and cropped back. ``input_size`` is
  then only a nominal size (what a measurement without a frame uses). None for a model of
  one input size; left out of the JSON when None.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeseg.core.instances import InstanceSpec
from edgeseg.errors import DataError, ModelError

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
SIDECAR_SUFFIX = ".edgeseg.json"
NORMALIZATIONS = ("scale", "percentile", "minmax", "meanstd")
# torchvision's ImageNet statistics (RGB), what most PyTorch encoders were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHANNEL_ORDERS = ("GRAY", "RGB", "BGR")


@dataclass(frozen=True)
class ModelMetadata:
    """Everything needed to feed a model frames and read masks back (schema version 2)."""

    input_size: tuple[int, int]
    channels: int = 1
    channel_order: str = "GRAY"
    normalization: str = "scale"
    input_max: float | None = None
    percentiles: tuple[float, float] = (1.0, 99.8)
    num_classes: int = 1
    class_names: tuple[str, ...] = ("foreground",)
    foreground_value: int | None = 255
    threshold: float = 0.5
    output_border: int = 0
    pixel_size_um: float | None = None
    # How instances are recovered (InstanceSpec.to_dict()), or None for a semantic model.
    instances: dict[str, Any] | None = None
    # The camera frame (H, W) a whole-frame artefact was built for, or None for a tiled one.
    frame_size: tuple[int, int] | None = None
    # The DICOM window (edgeseg.dicom.window: "CENTER,WIDTH" or "file") the model was
    # calibrated with, so `run` windows DICOM frames as `convert` did; None: not DICOM.
    dicom_window: str | None = None
    # Free-form provenance (training data, source model hash, recipe); JSON-serialisable.
    provenance: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    # normalization "meanstd" (PyTorch models): after "scale", (x - mean) / std per channel,
    # in the model's channel order; None otherwise (and then left out of the JSON).
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # Whole frames of any size, padded up to this multiple (a dynamic-H/W source ONNX); None:
    # the model takes input_size only. Left out of the JSON when None.
    size_multiple: int | None = None

    def __post_init__(self) -> None:
        h, w = self.input_size
        problems = []
        if h <= 0 or w <= 0:
            problems.append(f"input_size must be positive, got {self.input_size}")
        if self.channels not in (1, 3):
            problems.append(f"channels must be 1 or 3, got {self.channels}")
        if self.channel_order not in CHANNEL_ORDERS:
            problems.append(f"channel_order must be one of {CHANNEL_ORDERS}")
        if (self.channels == 1) != (self.channel_order == "GRAY"):
            problems.append(
                f"channel_order {self.channel_order} does not fit {self.channels} channel(s)"
            )
        if self.normalization not in NORMALIZATIONS:
            problems.append(f"normalization must be one of {NORMALIZATIONS}")
        if (self.normalization == "meanstd") != (self.mean is not None and self.std is not None):
            problems.append("normalization meanstd goes with mean and std (and only it)")
        elif self.mean is not None and self.std is not None:
            if len(self.mean) != self.channels or len(self.std) != self.channels:
                problems.append(
                    f"mean and std need {self.channels} value(s), one per channel, got "
                    f"{len(self.mean)} and {len(self.std)}"
                )
            if not all(math.isfinite(v) and v > 0 for v in self.std):
                problems.append("std values must be positive")
        if self.input_max is not None and not self.input_max > 0:
            problems.append("input_max must be positive")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            problems.append(f"percentiles must satisfy 0 <= low < high <= 100, got {lo}, {hi}")
        if self.num_classes < 1:
            problems.append("num_classes must be >= 1")
        expected_names = 1 if self.num_classes == 1 else self.num_classes
        if len(self.class_names) != expected_names:
            problems.append(
                f"{len(self.class_names)} class name(s) for {self.num_classes} class(es)"
            )
        if not 0.0 < self.threshold < 1.0:
            problems.append(f"threshold must be in (0, 1), got {self.threshold}")
        if self.output_border < 0 or 2 * self.output_border >= min(h, w):
            problems.append(f"output_border {self.output_border} does not fit the input size")
        if self.pixel_size_um is not None and not (
            math.isfinite(self.pixel_size_um) and self.pixel_size_um > 0
        ):
            problems.append("pixel_size_um must be a positive number")
        if self.frame_size is not None:
            fh, fw = self.frame_size
            if not (0 < fh <= h and 0 < fw <= w):
                problems.append(
                    f"frame_size {self.frame_size} must be positive and fit the input size"
                )
        if self.instances is not None:
            try:
                InstanceSpec.from_dict(self.instances)
            except DataError as exc:
                problems.append(str(exc))
            if self.num_classes != 1:
                problems.append("an instance model has one object class (num_classes 1)")
        if self.size_multiple is not None and not (
            isinstance(self.size_multiple, int) and self.size_multiple >= 1
        ):
            problems.append(f"size_multiple must be a positive integer, got {self.size_multiple}")
        if self.dicom_window is not None and not isinstance(self.dicom_window, str):
            problems.append("dicom_window must be a string (CENTER,WIDTH or file)")
        if problems:
            raise ModelError("invalid model metadata: " + "; ".join(problems))

    @property
    def instance_spec(self) -> InstanceSpec | None:
        """How instances are recovered, or None for a semantic model."""
        return None if self.instances is None else InstanceSpec.from_dict(self.instances)

    @property
    def output_channels(self) -> int:
        """Channels of the model output: 2 for an instance model, else ``num_classes``."""
        return 2 if self.instances is not None else self.num_classes

    @property
    def output_size(self) -> tuple[int, int]:
        """(h, w) of the model output."""
        b = 2 * self.output_border
        return (self.input_size[0] - b, self.input_size[1] - b)

    def with_updates(self, **changes: Any) -> ModelMetadata:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["percentiles"] = list(self.percentiles)
        d["class_names"] = list(self.class_names)
        if self.frame_size is not None:
            d["frame_size"] = list(self.frame_size)
        for key in ("mean", "std"):  # left out when unset: older readers refuse new keys
            if d[key] is None:
                del d[key]
            else:
                d[key] = list(d[key])
        if d["size_multiple"] is None:
            del d["size_multiple"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        if not isinstance(data, dict):
            raise ModelError("invalid model metadata: expected a JSON object")
        version = data.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise ModelError(
                f"model metadata has schema version {version!r}; this edgeseg reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))} (upgrade edgeseg, or pass the "
                "metadata as flags)"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"invalid model metadata: unknown field(s) {', '.join(unknown)}")
        try:
            kwargs = dict(data)
            kwargs["input_size"] = _int_pair(kwargs["input_size"])
            if kwargs.get("frame_size") is not None:
                kwargs["frame_size"] = _int_pair(kwargs["frame_size"])
            if "percentiles" in kwargs:
                kwargs["percentiles"] = tuple(float(p) for p in kwargs["percentiles"])
            for key in ("mean", "std"):
                if kwargs.get(key) is not None:
                    kwargs[key] = tuple(float(v) for v in kwargs[key])
            if "class_names" in kwargs:
                kwargs["class_names"] = tuple(str(n) for n in kwargs["class_names"])
            kwargs["schema_version"] = SCHEMA_VERSION  # read as this version: a superset
            return cls(**kwargs)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"invalid model metadata: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelMetadata:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"model metadata is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def _int_pair(value: Any) -> tuple[int, int]:
    h, w = value
    return (int(h), int(w))


def sidecar_path(model_path: str | Path) -> Path:
    """``unet.keras`` → ``unet.edgeseg.json``; a SavedModel dir ``unet/`` → the same name."""
    p = Path(model_path)
    if p.is_dir() or not p.suffix:
        return p.parent / (p.name + SIDECAR_SUFFIX)
    return p.with_name(p.stem + SIDECAR_SUFFIX)


def write_sidecar(meta: ModelMetadata, model_path: str | Path) -> Path:
    path = sidecar_path(model_path)
    path.write_text(meta.to_json() + "\n")
    return path


def read_sidecar(model_path: str | Path) -> ModelMetadata | None:
    """The sidecar's metadata, or None when the model has none."""
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    try:
        return ModelMetadata.from_json(path.read_bytes())
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc


def class_names_for(num_classes: int, names: list[str] | None = None) -> tuple[str, ...]:
    """Default class names: ("foreground",) for a binary model, class0..classK-1 otherwise."""
    if names:
        return tuple(names)
    if num_classes == 1:
        return ("foreground",)
    return ("background", *(f"class{i}" for i in range(1, num_classes)))


def infer_metadata(
    input_shape: tuple[int | None, ...],
    output_shape: tuple[int | None, ...],
    **overrides: Any,
) -> ModelMetadata:
    """Metadata for a model without any, from its tensor shapes plus user flags.

    ``input_shape`` is (batch, H, W, C) and ``output_shape`` (batch, h, w, K). Defaults suit
    8-bit microscopy: gray or RGB, divide by the dtype's maximum, threshold 0.5.
    """
    _, h, w, c = input_shape
    _, oh, ow, k = output_shape
    if h is None or w is None:
        if "input_size" not in overrides:
            raise ModelError(
                "the model accepts any image size; give the tile size with --input-size HxW"
            )
        h, w = overrides["input_size"]
    if c not in (1, 3):
        raise ModelError(f"the model takes {c}-channel images; edgeseg supports 1 or 3 channels")
    border = 0
    if oh is not None and ow is not None and (oh, ow) != (h, w):
        if h - oh != w - ow or (h - oh) % 2:
            raise ModelError(f"model output {oh}x{ow} is not a centred crop of its input {h}x{w}")
        border = (h - oh) // 2
    num_classes = int(k or 1)
    defaults: dict[str, Any] = {
        "input_size": (int(h), int(w)),
        "channels": int(c),
        "channel_order": "GRAY" if c == 1 else "RGB",
        "num_classes": num_classes,
        "class_names": class_names_for(num_classes),
        "foreground_value": 255 if num_classes == 1 else None,
        "output_border": border,
    }
    defaults.update({k_: v for k_, v in overrides.items() if v is not None})
    return ModelMetadata(**defaults)


def apply_flags(
    meta: ModelMetadata | None,
    input_shape: tuple[int | None, ...],
    output_shape: tuple[int | None, ...],
    **flags: Any,
) -> ModelMetadata:
    """``meta`` (or metadata inferred from the tensor shapes when None) with the flags given.

    Flags left at None change nothing; ``channel_order`` is upper-cased.
    """
    overrides = {k: v for k, v in flags.items() if v is not None}
    if "normalization" in overrides:
        overrides.update(parse_normalization(overrides["normalization"]))
    if "channel_order" in overrides:
        overrides["channel_order"] = str(overrides["channel_order"]).upper()
    if meta is None:
        return infer_metadata(input_shape, output_shape, **overrides)
    return meta.with_updates(**overrides) if overrides else meta


def parse_normalization(value: str) -> dict[str, Any]:
    """The metadata fields of a ``--normalization`` value: ``scale``, ``percentile``,
    ``minmax``, ``imagenet`` (meanstd with torchvision's ImageNet statistics) or
    ``mean=M1[,M2,M3],std=S1[,S2,S3]`` (meanstd, values for pixels scaled to [0, 1]).

    Raises:
        DataError: a value of none of these forms.
    """
    text = str(value).strip()
    low = text.lower()
    if low == "imagenet":
        return {"normalization": "meanstd", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    if low.startswith("mean="):
        body = text[len("mean=") :]
        mean_txt, sep, std_txt = body.partition(",std=")
        try:
            if not sep:
                raise ValueError
            mean = tuple(float(v) for v in mean_txt.split(","))
            std = tuple(float(v) for v in std_txt.split(","))
        except ValueError:
            raise DataError(
                f"--normalization {text!r}: write mean=M1,M2,M3,std=S1,S2,S3 (or one value "
                "each for a gray model)"
            ) from None
        return {"normalization": "meanstd", "mean": mean, "std": std}
    if low in ("scale", "percentile", "minmax"):
        return {"normalization": low}
    if low == "meanstd":
        return {"normalization": low}
    raise DataError(
        f"--normalization must be scale, percentile, minmax, imagenet or mean=…,std=…, got {text!r}"
    )
