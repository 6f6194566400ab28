"""What hardware this machine has: the board, Edge TPUs, cameras and what OpenCV can do.

The one place that reads the system for them; the runtime (CSI pipelines, the Edge TPU
delegate's errors, windows), ``edgeseg doctor`` and the device fingerprint all ask here.
Files are read under a ``root`` (``/`` normally; a test points it at a fake tree), and
anything that cannot be read counts as absent, never as an error. Only the OpenCV functions
import OpenCV, when called; the rest is the standard library.

Sources:

- board: ``/proc/device-tree/model`` (else ``/sys/firmware/devicetree/base/model``): the
  Raspberry Pi, Jetson or Coral Dev Board model; ``/etc/nv_tegra_release`` marks a Jetson.
- Edge TPUs: USB devices 1a6e:089a / 18d1:9302 under ``/sys/bus/usb/devices`` with their link
  speed (``speed``: 480 is USB 2, 5000 and up USB 3), PCIe ``/dev/apex_*``.
- cameras: ``/dev/video*``, and their stable names under ``/dev/v4l/by-id`` (udev's symlinks
  named after the USB device, which survive a camera coming back at another index).
- OpenCV: ``cv2.getBuildInformation()`` and its videoio registry.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.optional import cv2

__all__ = [
    "EDGETPU_USB_IDS",
    "EdgeTPU",
    "board_family",
    "board_model",
    "edgetpu_ids_text",
    "edgetpus",
    "first_line",
    "jetson_release",
    "opencv_capabilities",
    "opencv_has_backend",
    "opencv_has_gui",
    "parse_opencv_build_information",
    "read_text",
    "v4l_by_id",
    "video_devices",
]

# USB ids of the Coral USB Accelerator: before (1a6e:089a) and after (18d1:9302) its firmware
# is loaded by the first inference.
EDGETPU_USB_IDS = (("1a6e", "089a"), ("18d1", "9302"))
_APEX = "apex_*"  # PCIe Edge TPUs (M.2, mini PCIe, the Dev Board) under /dev
_MODEL_FILES = ("proc/device-tree/model", "sys/firmware/devicetree/base/model")
_JETSON_RELEASE = "etc/nv_tegra_release"


# --------------------------------------------------------------------------------------------
# Reading system files


def read_text(path: Path) -> str | None:
    """A system file's text (NUL bytes of device-tree strings dropped), or None if unreadable."""
    try:
        return path.read_bytes().decode("utf-8", "replace").replace("\x00", "")
    except OSError:
        return None


def first_line(text: str | None) -> str | None:
    """The first non-blank line, stripped, or None."""
    if not text:
        return None
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return None


# --------------------------------------------------------------------------------------------
# Board


def board_model(root: str | Path = "/") -> str | None:
    """The device tree's model, e.g. ``"Raspberry Pi 5 Model B Rev 1.0"``; None without one
    (x86 machines, containers, macOS)."""
    for rel in _MODEL_FILES:
        model = first_line(read_text(Path(root) / rel))
        if model:
            return model
    return None


def jetson_release(root: str | Path = "/") -> str | None:
    """The first line of ``/etc/nv_tegra_release`` (a Jetson's L4T release), or None."""
    return first_line(read_text(Path(root) / _JETSON_RELEASE))


def board_family(root: str | Path = "/") -> str:
    """``"jetson"`` (``/etc/nv_tegra_release`` exists), ``"raspberrypi"`` (the device tree model
    names a Raspberry Pi) or ``"other"``: what decides a CSI camera's pipeline."""
    if (Path(root) / _JETSON_RELEASE).exists():
        return "jetson"
    return "raspberrypi" if "Raspberry Pi" in (board_model(root) or "") else "other"


# --------------------------------------------------------------------------------------------
# Edge TPUs and cameras


@dataclass(frozen=True)
class EdgeTPU:
    """An attached Edge TPU: ``kind`` "usb" or "pci", ``id`` (USB port and ids, or /dev node)
    and, for USB, the negotiated link speed in Mbit/s (480 = USB 2: about 7x slower transfers)."""

    kind: str
    id: str
    usb_speed_mbps: int | None = None

    @property
    def name(self) -> str:
        """``"usb:2-1 (18d1:9302)"`` or ``"pci:/dev/apex_0"``."""
        return f"{self.kind}:{self.id}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "usb_speed_mbps": self.usb_speed_mbps}


def edgetpu_ids_text() -> str:
    """Where :func:`edgetpus` looks, for messages: ``"USB 1a6e:089a / 18d1:9302 and
    /dev/apex_*"``."""
    ids = " / ".join(f"{vendor}:{product}" for vendor, product in EDGETPU_USB_IDS)
    return f"USB {ids} and /dev/{_APEX}"


def edgetpus(root: str | Path = "/") -> list[EdgeTPU]:
    """Edge TPUs attached: USB accelerators (with their link speed) and PCIe ``/dev/apex_*``."""
    root = Path(root)
    found: list[EdgeTPU] = []
    usb = root / "sys/bus/usb/devices"
    if usb.is_dir():
        for dev in sorted(usb.iterdir()):
            vendor = first_line(read_text(dev / "idVendor"))
            product = first_line(read_text(dev / "idProduct"))
            if (vendor, product) not in EDGETPU_USB_IDS:
                continue
            speed = first_line(read_text(dev / "speed"))
            try:
                mbps = int(float(speed)) if speed else None
            except ValueError:
                mbps = None
            found.append(EdgeTPU("usb", f"{dev.name} ({vendor}:{product})", mbps))
    dev_dir = root / "dev"
    if dev_dir.is_dir():
        found += [EdgeTPU("pci", f"/dev/{p.name}") for p in sorted(dev_dir.glob(_APEX))]
    return found


def video_devices(root: str | Path = "/") -> list[Path]:
    """The ``/dev/video*`` nodes, in number order (``video2`` before ``video10``)."""
    dev_dir = Path(root) / "dev"
    if not dev_dir.is_dir():
        return []
    return sorted(dev_dir.glob("video*"), key=lambda p: (len(p.name), p.name))


def v4l_by_id(device: str | Path, root: str | Path = "/") -> Path | None:
    """The stable name of a V4L2 device node: the ``/dev/v4l/by-id/…`` symlink that points to
    ``device`` (``/dev/video0``, or any symlink to it), or None when there is none (no udev, a
    CSI or virtual camera, another system).

    A USB camera that is unplugged and comes back may get another ``/dev/videoN``; its by-id
    name (``usb-Logitech_C920_1234-video-index0``) stays. ``device`` is a path on the system
    below ``root``; the answer is too (``root/dev/v4l/by-id/…``). A device already named by id
    is its own answer. When several links point to the node, the first by name is taken.
    """
    root = Path(root)
    by_id = root / "dev/v4l/by-id"
    node = _under(root, Path(device))
    try:
        if node.parent == by_id and node.is_symlink():
            return node if _resolve(node, root) is not None else None
        target = _resolve(node, root)
        if target is None or not by_id.is_dir():
            return None
        for link in sorted(by_id.iterdir()):
            if link.is_symlink() and _resolve(link, root) == target:
                return link
    except OSError:  # an unreadable /dev counts as absent
        return None
    return None


def _under(root: Path, path: Path) -> Path:
    """A system path as seen below ``root``."""
    return root / path.relative_to(path.anchor) if path.is_absolute() else root / path


def _resolve(path: Path, root: Path, depth: int = 8) -> Path | None:
    """Follow symlinks below ``root`` (absolute link targets are taken below it too): the
    existing file they end at, or None."""
    for _ in range(depth):
        if not path.is_symlink():
            return Path(os.path.realpath(path)) if path.exists() else None
        target = Path(os.readlink(path))
        path = _under(root, target) if target.is_absolute() else path.parent / target
    return None


# --------------------------------------------------------------------------------------------
# OpenCV


def opencv_capabilities(cv: Any = None) -> dict[str, Any]:
    """What the installed OpenCV (or the module ``cv``) can do, from its build information:
    ``{"version": "4.12.0", "gstreamer": bool, "ffmpeg": bool, "v4l2": bool, "gui": bool}``
    (``gui``: a HighGUI backend other than NONE, so windows can open).

    Raises:
        MissingDependencyError: OpenCV is not installed.
    """
    cv = cv2() if cv is None else cv
    caps = parse_opencv_build_information(cv.getBuildInformation())
    caps = {"version": str(cv.__version__), **caps}
    # A videoio plugin loaded at run time counts too.
    for key, attr in (("gstreamer", "CAP_GSTREAMER"), ("ffmpeg", "CAP_FFMPEG")):
        if not caps[key] and opencv_has_backend(cv, attr):
            caps[key] = True
    return caps


def opencv_has_gui(cv: Any = None) -> bool:
    """Whether OpenCV was built with a HighGUI backend (the headless wheels are not)."""
    cv = cv2() if cv is None else cv
    return parse_opencv_build_information(cv.getBuildInformation())["gui"]


def opencv_has_backend(cv: Any, attr: str) -> bool:
    """Whether the videoio backend ``cv.<attr>`` (``"CAP_FFMPEG"``, ``"CAP_V4L2"``…) is
    available, built in or as a plugin (builds without a registry: whether it is defined)."""
    registry = getattr(cv, "videoio_registry", None)
    api = getattr(cv, attr, None)
    if registry is None or api is None:
        return api is not None
    try:
        return bool(registry.hasBackend(api))
    except Exception:  # very old builds
        return True


def parse_opencv_build_information(text: str) -> dict[str, bool]:
    """The flags of :func:`opencv_capabilities` from build information text. Handles both
    ``GUI: GTK3`` / ``GStreamer: YES (1.20)`` and older blocks whose header has no value and
    whose sub-lines say ``GTK+: YES`` or ``base: YES``."""
    entries = []  # (indent, key, value)
    for line in text.splitlines():
        m = re.match(r"^(\s*)([^:]+?):\s*(.*?)\s*$", line)
        if m:
            entries.append((len(m.group(1)), m.group(2).strip().lower(), m.group(3)))

    def block(i: int) -> Iterator[tuple[int, str, str]]:
        indent = entries[i][0]
        for entry in entries[i + 1 :]:
            if entry[0] <= indent:
                return
            yield entry

    def yes(value: str) -> bool:
        return value.upper().startswith("YES")

    def flag(section: str, keys: tuple[str, ...]) -> bool:
        for i, (_, key, _) in enumerate(entries):
            if key == section:
                for j, (_, sub, value) in enumerate(entries[i + 1 :], start=i + 1):
                    if entries[j][0] <= entries[i][0]:
                        break
                    if sub in keys:
                        return yes(value) or (not value and any(yes(v) for *_, v in block(j)))
        return False

    gui = False
    for i, (_, key, value) in enumerate(entries):
        if key == "gui":
            if value:
                gui = value.upper() not in ("NONE", "NO")
            else:
                backends = ("gtk+", "gtk", "gtk2", "gtk3", "qt", "win32 ui", "cocoa", "wayland")
                gui = any(k in backends and yes(v) for _, k, v in block(i))
            break
    return {
        "gstreamer": flag("video i/o", ("gstreamer",)),
        "ffmpeg": flag("video i/o", ("ffmpeg",)),
        "v4l2": flag("video i/o", ("v4l/v4l2", "v4l2", "v4l")),
        "gui": gui,
    }
