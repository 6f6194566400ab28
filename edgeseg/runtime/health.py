"""What the device says of its own health: temperatures, throttling, free disk.

- :func:`temperatures`: every thermal zone of ``/sys/class/thermal`` (a Pi's ``cpu-thermal``,
  a Jetson's ``CPU-therm``/``GPU-therm``, a PC's ``x86_pkg_temp``), in °C. ``root`` stands for
  ``/`` (tests plant a sysfs tree there).
- :func:`throttled`: a Raspberry Pi's throttling flags, from ``vcgencmd get_throttled``
  (``throttled=0x50005``), decoded by :data:`THROTTLE_FLAGS`; None where there is no
  ``vcgencmd`` or it does not answer.
- :func:`disk_free`: free bytes of the file system holding a path.

Each reading is best-effort: what the device does not report is left out, never an error.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["THROTTLE_FLAGS", "Temperature", "disk_free", "temperatures", "throttled"]

#: The bits of ``vcgencmd get_throttled`` (Raspberry Pi documentation, "get_throttled"): the
#: low bits say what holds now, bits 16-19 what happened since boot.
THROTTLE_FLAGS: dict[int, str] = {
    0: "under_voltage",
    1: "arm_frequency_capped",
    2: "throttled",
    3: "soft_temperature_limit",
    16: "under_voltage_occurred",
    17: "arm_frequency_capping_occurred",
    18: "throttling_occurred",
    19: "soft_temperature_limit_occurred",
}
_THROTTLED = re.compile(r"throttled=(0x[0-9a-fA-F]+|\d+)")


@dataclass(frozen=True)
class Temperature:
    """One thermal zone: its sysfs name (``thermal_zone0``), its type (``cpu-thermal``) and
    its temperature in °C."""

    zone: str
    type: str
    celsius: float


def temperatures(root: str | Path = "/") -> list[Temperature]:
    """Every readable thermal zone under ``root``/sys/class/thermal, by zone name."""
    base = Path(root) / "sys" / "class" / "thermal"
    out: list[Temperature] = []
    try:
        zones = sorted(p for p in base.iterdir() if p.name.startswith("thermal_zone"))
    except OSError:
        return out
    for zone in zones:
        try:
            raw = (zone / "temp").read_text().strip()
            millis = int(raw)
        except (OSError, ValueError):
            continue  # a zone that is off, or not ours to read
        kind = ""
        with contextlib.suppress(OSError):
            kind = (zone / "type").read_text().strip()
        out.append(Temperature(zone.name, kind or zone.name, millis / 1000.0))
    return out


def throttled(vcgencmd: str | None = None, timeout: float = 2.0) -> int | None:
    """The flags word of ``vcgencmd get_throttled`` (``vcgencmd``: its path, default the one
    on PATH); None where it is missing or does not answer."""
    exe = vcgencmd or shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, "get_throttled"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = _THROTTLED.search(done.stdout or "")
    if done.returncode != 0 or match is None:
        return None
    return int(match.group(1), 0)


def disk_free(path: str | Path) -> int | None:
    """Free bytes (for an unprivileged user) of the file system holding ``path``, or of its
    nearest existing parent; None when none can be read."""
    p = Path(os.path.abspath(path))
    for candidate in (p, *p.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(candidate).free
    return None
