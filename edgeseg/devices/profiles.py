"""Device profiles: how to run edgeseg on a board, and what others measured there.

A profile is a TOML file a user can read and copy (``devices/profiles/<name>.toml``)::

    name = "rpi5"                    # what --device takes
    title = "Raspberry Pi 5"
    delegate = "cpu"                 # --delegate: cpu, edgetpu, auto or a library path
    recipe = "int8"                  # which `edgeseg convert` recipe to build for it
    threads = 4                      # --threads (omit: the runtime's choice)
    camera = "csi://0"               # the camera pipeline (a stream URI, see `edgeseg run`)
    notes = "..."
    int8_gmacs = 120.0               # effective int8 GMAC/s `edgeseg bench` measured there

    [match]                          # how a report's fingerprint is recognised as this device
    device_tree = ["Raspberry Pi 5"] # any of these in /proc/device-tree/model
    delegates = ["cpu"]              # only for reports measured with these delegates

    [[reference]]                    # a published figure, copied with its source
    model = "MobileNet v2 1.0"
    input = [224, 224]
    precision = "fp32"               # fp32, fp16 or int8
    delegate = "cpu"                 # cpu, edgetpu, gpu or tensorrt
    latency_ms = 46                  # or fps = 7.2 when the source gives frames per second
    threads = 4                      # optional
    measured_on = "Raspberry Pi 4 (BCM2711), 64-bit OS"
    source = "https://…"

``[match]`` keys (all given must hold): ``device_tree`` (substrings of the board name),
``machine`` (``platform.machine()`` values), ``edgetpu`` (``"usb"`` or ``"pci"``: such an
Edge TPU is attached), ``delegates``. When several profiles match, the most specific (most
keys) wins. Reference figures are never invented: each names its source, and a profile
without a published figure for a comparable model has none.

Lookup for ``--device NAME``: a path to a ``.toml`` file; else ``NAME.toml`` in
``./devices/profiles/`` (the user's own, which win); else the profiles shipped with edgeseg.

A microcontroller class (TensorFlow Lite Micro, `edgeseg convert --micro --device NAME`) has a
``[micro]`` table instead of a camera and a delegate (both optional there)::

    name = "cortex-m7"
    title = "Cortex-M7 class, 512 KB SRAM, 2 MB flash"
    recipe = "int8"

    [micro]
    core = "Arm Cortex-M7"
    sram_kb = 512                    # on-chip RAM: the tensor arena goes here
    flash_kb = 2048                  # the model's C array (and the firmware) goes here
    psram_kb = 0                     # external RAM an arena may use when SRAM is too small
    reserve_sram_kb = 64             # what the firmware keeps: stack, heap, buffers
    reserve_flash_kb = 256           # the firmware's code: TFLM, kernels, application

Such a profile is not a place to run ``edgeseg run`` or ``bench``; :func:`micro_fit` says
whether a model's flash and arena figures fit it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.errors import DataError
from edgeseg.paths import TOMLDecodeError, collect_tomls, load_named_toml, parse_toml

__all__ = [
    "DeviceProfile",
    "MicroFit",
    "MicroSpec",
    "Reference",
    "available_profiles",
    "detect_profile",
    "load_profile",
    "micro_fit",
]

USER_DIR = Path("devices") / "profiles"
_PARTS = ("devices", "profiles")  # under edgeseg/data: the shipped profiles
PRECISIONS = ("fp32", "fp16", "int8")
REFERENCE_DELEGATES = ("cpu", "edgetpu", "gpu", "tensorrt")
_PROFILE_KEYS = {
    "name",
    "title",
    "delegate",
    "recipe",
    "threads",
    "camera",
    "notes",
    "match",
    "int8_gmacs",
}
_REFERENCE_KEYS = {
    "model",
    "input",
    "precision",
    "delegate",
    "latency_ms",
    "fps",
    "threads",
    "measured_on",
    "source",
    "notes",
}
_MATCH_KEYS = {"device_tree", "machine", "edgetpu", "delegates"}
_MICRO_KEYS = {
    "core",
    "sram_kb",
    "flash_kb",
    "psram_kb",
    "reserve_sram_kb",
    "reserve_flash_kb",
}


@dataclass(frozen=True)
class Reference:
    """A published latency for one model on one device, with its source."""

    model: str
    input: tuple[int, int]
    precision: str
    delegate: str
    measured_on: str
    source: str
    latency_ms: float | None = None
    fps: float | None = None
    threads: int | None = None
    notes: str = ""

    @property
    def ms(self) -> float:
        """Milliseconds per inference (from ``fps`` when the source gives a frame rate)."""
        if self.latency_ms is not None:
            return float(self.latency_ms)
        assert self.fps is not None
        return 1000.0 / float(self.fps)

    def figure(self) -> str:
        """The figure as the source gives it: "46 ms" or "7.2 FPS"."""
        if self.latency_ms is not None:
            return f"{self.latency_ms:g} ms"
        return f"{self.fps:g} FPS"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input": list(self.input),
            "precision": self.precision,
            "delegate": self.delegate,
            "latency_ms": self.latency_ms,
            "fps": self.fps,
            "threads": self.threads,
            "measured_on": self.measured_on,
            "source": self.source,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class MicroSpec:
    """A microcontroller class: its memories in bytes, and what its firmware keeps."""

    core: str
    sram_bytes: int
    flash_bytes: int
    psram_bytes: int = 0
    reserve_sram_bytes: int = 0
    reserve_flash_bytes: int = 0

    @property
    def sram_for_arena(self) -> int:
        return max(0, self.sram_bytes - self.reserve_sram_bytes)

    @property
    def flash_for_model(self) -> int:
        return max(0, self.flash_bytes - self.reserve_flash_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "core": self.core,
            "sram_bytes": self.sram_bytes,
            "flash_bytes": self.flash_bytes,
            "psram_bytes": self.psram_bytes,
            "reserve_sram_bytes": self.reserve_sram_bytes,
            "reserve_flash_bytes": self.reserve_flash_bytes,
        }


@dataclass(frozen=True)
class MicroFit:
    """Whether a model's flash and arena figures fit a microcontroller class.

    ``arena_in``: "SRAM", "PSRAM" (too large for the SRAM left, small enough for the external
    RAM: slower) or None (fits neither). ``problems``: one phrase per figure that does not
    fit, naming what it needs against what the profile has.
    """

    profile: str
    flash_needed: int
    flash_available: int
    arena_needed: int
    sram_available: int
    psram_available: int
    arena_in: str | None
    problems: tuple[str, ...]

    @property
    def fits(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: "fits cortex-m7: model 120.0 KB of 1792.0 KB flash, arena … in SRAM"."""
        if not self.fits:
            return f"does not fit {self.profile}: " + "; ".join(self.problems)
        return (
            f"fits {self.profile}: model {kb(self.flash_needed)} of {kb(self.flash_available)} "
            f"flash, arena {kb(self.arena_needed)} in {self.arena_in} ("
            + (
                f"{kb(self.sram_available)} SRAM free"
                if self.arena_in == "SRAM"
                else f"{kb(self.psram_available)} PSRAM"
            )
            + ")"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "fits": self.fits,
            "flash_needed_bytes": self.flash_needed,
            "flash_available_bytes": self.flash_available,
            "arena_needed_bytes": self.arena_needed,
            "sram_available_bytes": self.sram_available,
            "psram_available_bytes": self.psram_available,
            "arena_in": self.arena_in,
            "problems": list(self.problems),
        }


def kb(n: int) -> str:
    """Bytes as kilobytes (1024 bytes) with one decimal: "118.3 KB"."""
    return f"{n / 1024:.1f} KB"


def micro_fit(profile: DeviceProfile, flash_bytes: int, arena_bytes: int) -> MicroFit:
    """Whether a model of ``flash_bytes`` (its .tflite, the C array) and a tensor arena of
    ``arena_bytes`` fit ``profile`` (a microcontroller class; DataError otherwise).

    The model goes to flash beside the firmware (``reserve_flash_kb``); the arena to the SRAM
    the firmware leaves (``reserve_sram_kb``), else to PSRAM when the profile has enough.
    """
    spec = profile.micro
    if spec is None:
        raise DataError(f"{profile.name} is not a microcontroller profile (it has no [micro])")
    problems = []
    if flash_bytes > spec.flash_for_model:
        problems.append(
            f"the model needs {kb(flash_bytes)} of flash, {profile.name} has "
            f"{kb(spec.flash_for_model)} ({kb(spec.flash_bytes)} less "
            f"{kb(spec.reserve_flash_bytes)} kept for the firmware)"
        )
    arena_in: str | None = None
    if arena_bytes <= spec.sram_for_arena:
        arena_in = "SRAM"
    elif arena_bytes <= spec.psram_bytes:
        arena_in = "PSRAM"
    else:
        psram = f" and {kb(spec.psram_bytes)} of PSRAM" if spec.psram_bytes else ""
        problems.append(
            f"the tensor arena needs {kb(arena_bytes)} of RAM, {profile.name} has "
            f"{kb(spec.sram_for_arena)} of SRAM ({kb(spec.sram_bytes)} less "
            f"{kb(spec.reserve_sram_bytes)} kept for the firmware){psram}"
        )
    return MicroFit(
        profile=profile.name,
        flash_needed=flash_bytes,
        flash_available=spec.flash_for_model,
        arena_needed=arena_bytes,
        sram_available=spec.sram_for_arena,
        psram_available=spec.psram_bytes,
        arena_in=arena_in,
        problems=tuple(problems),
    )


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    title: str
    delegate: str
    recipe: str
    camera: str
    threads: int | None = None
    notes: str = ""
    match: dict[str, Any] = field(default_factory=dict)
    references: tuple[Reference, ...] = ()
    source: str = ""
    micro: MicroSpec | None = None  # a microcontroller class (TensorFlow Lite Micro)
    # Effective int8 GMAC/s of a U-Net there, as `edgeseg bench` reports it (its "compute"
    # figure for an int8 model); `edgeseg distill --device` predicts latency from it.
    int8_gmacs: float | None = None

    def matches(self, device: Mapping[str, Any], delegate: str) -> int:
        """How many ``[match]`` keys hold for a fingerprint dict and delegate (0: no match)."""
        if not self.match:
            return 0
        board = str(device.get("board") or "")
        checks = []
        if "device_tree" in self.match:
            checks.append(any(s in board for s in self.match["device_tree"]))
        if "machine" in self.match:
            checks.append(str(device.get("machine") or "") in self.match["machine"])
        if "edgetpu" in self.match:
            kinds = {t.get("kind") for t in device.get("edgetpus") or [] if isinstance(t, dict)}
            checks.append(self.match["edgetpu"] in kinds)
        if "delegates" in self.match:
            checks.append(delegate_class(delegate) in self.match["delegates"])
        return len(checks) if all(checks) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "delegate": self.delegate,
            "recipe": self.recipe,
            "threads": self.threads,
            "camera": self.camera,
            "notes": self.notes,
            "references": [r.to_dict() for r in self.references],
            **({"micro": self.micro.to_dict()} if self.micro is not None else {}),
            "int8_gmacs": self.int8_gmacs,
        }


def delegate_class(delegate: str) -> str:
    """What a report's delegate description comes down to: "cpu", "edgetpu" or "other"."""
    text = delegate.lower()
    if "edgetpu" in text or "edge tpu" in text:
        return "edgetpu"
    if text.startswith(("cpu", "auto")) or "xnnpack" in text:
        return "cpu"
    return "other"


# --------------------------------------------------------------------------------------------
# Reading


def _fail(where: str, why: str) -> DataError:
    return DataError(f"device profile {where}: {why}")


def _from_toml(text: str, where: str) -> DeviceProfile:
    try:
        data = parse_toml(text)
    except TOMLDecodeError as exc:
        raise _fail(where, f"not valid TOML ({exc})") from exc
    refs = data.pop("reference", [])
    micro = _micro(data.pop("micro"), where) if "micro" in data else None
    unknown = sorted(set(data) - _PROFILE_KEYS)
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(unknown)}")
    if micro is not None:  # a microcontroller runs no camera pipeline and no delegate
        data.setdefault("delegate", "cpu")
        data.setdefault("camera", "none")
    for key in ("name", "title", "delegate", "recipe", "camera"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise _fail(where, f"needs a text value for {key!r}")
    threads = data.get("threads")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise _fail(where, f"threads must be a whole number >= 1, got {threads!r}")
    gmacs = data.get("int8_gmacs")
    if gmacs is not None and (
        isinstance(gmacs, bool) or not isinstance(gmacs, int | float) or gmacs <= 0
    ):
        raise _fail(where, f"int8_gmacs must be a positive number, got {gmacs!r}")
    match = data.get("match", {})
    if not isinstance(match, dict) or set(match) - _MATCH_KEYS:
        raise _fail(where, f"[match] takes only {', '.join(sorted(_MATCH_KEYS))}")
    if not isinstance(refs, list):
        raise _fail(where, "[[reference]] must be a list of tables")
    return DeviceProfile(
        name=data["name"],
        title=data["title"],
        delegate=data["delegate"],
        recipe=data["recipe"],
        camera=data["camera"],
        threads=threads,
        notes=str(data.get("notes", "")).strip(),
        match=match,
        references=tuple(_reference(r, f"{where} reference {i + 1}") for i, r in enumerate(refs)),
        source=where,
        micro=micro,
        int8_gmacs=float(gmacs) if gmacs is not None else None,
    )


def _micro(data: Any, where: str) -> MicroSpec:
    if not isinstance(data, dict):
        raise _fail(where, "[micro] must be a table")
    unknown = sorted(set(data) - _MICRO_KEYS)
    if unknown:
        raise _fail(where, f"[micro] has unknown key(s) {', '.join(unknown)}")
    if not isinstance(data.get("core"), str) or not data["core"].strip():
        raise _fail(where, "[micro] needs a text value for 'core'")
    sizes = {}
    for key in sorted(_MICRO_KEYS - {"core"}):
        value = data.get(key, 0)
        required = key in ("sram_kb", "flash_kb")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise _fail(where, f"[micro] {key} must be a number of kilobytes >= 0")
        if required and (key not in data or value <= 0):
            raise _fail(where, f"[micro] needs {key}, a positive number of kilobytes")
        sizes[key] = int(value * 1024)
    return MicroSpec(
        core=data["core"].strip(),
        sram_bytes=sizes["sram_kb"],
        flash_bytes=sizes["flash_kb"],
        psram_bytes=sizes["psram_kb"],
        reserve_sram_bytes=sizes["reserve_sram_kb"],
        reserve_flash_bytes=sizes["reserve_flash_kb"],
    )


def _reference(data: Any, where: str) -> Reference:
    if not isinstance(data, dict):
        raise _fail(where, "must be a table")
    unknown = sorted(set(data) - _REFERENCE_KEYS)
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(unknown)}")
    for key in ("model", "measured_on", "source"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise _fail(where, f"needs a text value for {key!r}")
    if data.get("precision") not in PRECISIONS:
        raise _fail(where, f"precision must be one of {', '.join(PRECISIONS)}")
    if data.get("delegate") not in REFERENCE_DELEGATES:
        raise _fail(where, f"delegate must be one of {', '.join(REFERENCE_DELEGATES)}")
    size = data.get("input")
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(v, int) and v > 0 for v in size)
    ):
        raise _fail(where, "input must be [height, width]")
    has_ms, has_fps = data.get("latency_ms") is not None, data.get("fps") is not None
    if has_ms == has_fps:
        raise _fail(where, "give exactly one of latency_ms and fps")
    value = data.get("latency_ms", data.get("fps"))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise _fail(where, "latency_ms / fps must be a positive number")
    return Reference(
        model=data["model"],
        input=(size[0], size[1]),
        precision=data["precision"],
        delegate=data["delegate"],
        measured_on=data["measured_on"],
        source=data["source"],
        latency_ms=float(data["latency_ms"]) if has_ms else None,
        fps=float(data["fps"]) if has_fps else None,
        threads=data.get("threads"),
        notes=str(data.get("notes", "")).strip(),
    )


def available_profiles(user_dir: Path = USER_DIR) -> dict[str, DeviceProfile]:
    """Every profile by name: the shipped ones, overridden by the user's own."""
    return dict(sorted(collect_tomls(_PARTS, user_dir, _from_toml).items()))


def load_profile(name_or_path: str, user_dir: Path = USER_DIR) -> DeviceProfile:
    """A profile by file path or by name; an unknown name lists the known ones."""
    found = load_named_toml(name_or_path, _PARTS, user_dir, _from_toml, "device profile")
    if found is not None:
        return found
    names = ", ".join(available_profiles(user_dir)) or "(none found)"
    raise DataError(f"unknown device profile {name_or_path!r}; known profiles: {names}")


def detect_profile(
    device: Mapping[str, Any],
    delegate: str,
    profiles: Mapping[str, DeviceProfile] | None = None,
) -> str | None:
    """The name of the profile a fingerprint dict (and delegate) is, or None."""
    profiles = available_profiles() if profiles is None else profiles
    scored = [(p.matches(device, delegate), name) for name, p in profiles.items()]
    scored = [s for s in scored if s[0] > 0]
    if not scored:
        return None
    return sorted(scored, key=lambda s: (-s[0], s[1]))[0][1]
