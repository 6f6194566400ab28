"""Named conversion targets, read from TOML files a user can open and copy.

Naming: ``<precision>[-<variant>]``. ``precision`` is ``fp32``, ``fp16`` or ``int8``
(full-integer); a variant names what differs: ``uint8io`` (uint8 input/output tensors),
``legacy`` (TensorFlow's older quantizer), ``edgetpu`` (constraints of the Coral compiler).
Outputs are named ``<model stem>_<recipe name>.tflite``.

Lookup for ``--recipe NAME``: a path to a ``.toml`` file; else ``NAME.toml`` in
``./converters/recipes/`` (the user's own recipes, which win); else the recipes shipped with
edgeseg (the project's ``converters/recipes/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.errors import DataError
from edgeseg.paths import TOMLDecodeError, collect_tomls, load_named_toml, parse_toml

PRECISIONS = ("fp32", "fp16", "int8")
IO_TYPES = ("float32", "int8", "uint8")
QUANTIZERS = ("default", "legacy")
USER_DIR = Path("converters") / "recipes"
_PARTS = ("converters", "recipes")  # under edgeseg/data: the shipped recipes


@dataclass(frozen=True)
class Recipe:
    name: str
    precision: str
    description: str = ""
    io: str = "float32"
    equalize: bool = False
    quantizer: str = "default"
    min_dice_agreement: float | None = None
    # The gate of an instance model: AP@0.5 of the artefact's objects, the float model's
    # objects taken as truth (see convert/parity.py); None: DEFAULT_MIN_AP_AGREEMENT when the
    # recipe gates at all (has min_dice_agreement), else ungated.
    min_ap_agreement: float | None = None
    edgetpu: bool = False
    # Non-overlapping Conv2DTranspose as 1x1 CONV_2D + DEPTH_TO_SPACE (see convert/rewrite.py)
    depth_to_space: bool = False
    # Keep the first convolution(s) and the head float in an int8 model (see convert/tflite.py)
    float_ends: bool = False
    # Whether `--frame-size` may build a whole-frame artefact with this recipe (see
    # convert/frames.py); the Edge TPU's recipe says false, and the report says why.
    whole_frame: bool = True
    source: str = ""

    def __post_init__(self) -> None:
        where = f"recipe {self.name!r}" + (f" ({self.source})" if self.source else "")
        for key in ("equalize", "edgetpu", "depth_to_space", "float_ends", "whole_frame"):
            if not isinstance(getattr(self, key), bool):
                raise DataError(f"{where}: {key} must be true or false")
        if self.precision not in PRECISIONS:
            raise DataError(f"{where}: precision must be one of {PRECISIONS}")
        if self.io not in IO_TYPES:
            raise DataError(f"{where}: io must be one of {IO_TYPES}")
        if self.precision != "int8" and self.io != "float32":
            raise DataError(f"{where}: integer I/O needs precision int8")
        if self.quantizer not in QUANTIZERS:
            raise DataError(f"{where}: quantizer must be one of {QUANTIZERS}")
        if self.edgetpu and self.precision != "int8":
            raise DataError(f"{where}: the Edge TPU runs full-integer int8 models only")
        if self.edgetpu and self.depth_to_space:
            raise DataError(f"{where}: the Edge TPU has no DEPTH_TO_SPACE; drop depth_to_space")
        if self.float_ends and (self.precision != "int8" or self.edgetpu):
            raise DataError(f"{where}: float_ends applies to CPU int8 recipes only")
        if self.float_ends and self.quantizer != "default":
            raise DataError(f"{where}: float_ends needs the default quantizer")
        if self.min_dice_agreement is not None and not 0 <= self.min_dice_agreement <= 1:
            raise DataError(f"{where}: min_dice_agreement must be in [0, 1]")
        if self.min_ap_agreement is not None and not 0 <= self.min_ap_agreement <= 1:
            raise DataError(f"{where}: min_ap_agreement must be in [0, 1]")

    @property
    def needs_calibration(self) -> bool:
        return self.precision == "int8"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "source"}


def _from_toml(text: str, source: str) -> Recipe:
    try:
        data = parse_toml(text)
    except TOMLDecodeError as exc:
        raise DataError(f"recipe {source} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(Recipe.__dataclass_fields__) - {"source"})
    if unknown:
        raise DataError(f"recipe {source}: unknown key(s) {', '.join(unknown)}")
    if "name" not in data or "precision" not in data:
        raise DataError(f"recipe {source}: needs at least 'name' and 'precision'")
    try:
        return Recipe(**data, source=source)
    except TypeError as exc:
        raise DataError(f"recipe {source}: {exc}") from exc


def available(user_dir: Path = USER_DIR) -> dict[str, Recipe]:
    """Every recipe by name: the built-in ones, overridden by the user's own."""
    return collect_tomls(_PARTS, user_dir, _from_toml)


def load_recipe(name_or_path: str, user_dir: Path = USER_DIR) -> Recipe:
    """A recipe by file path or by name (see the module docstring for the lookup order)."""
    found = load_named_toml(name_or_path, _PARTS, user_dir, _from_toml, "recipe")
    if found is not None:
        return found
    names = ", ".join(sorted(available(user_dir)))
    raise DataError(f"unknown recipe {name_or_path!r}; available: {names}")
