"""What machine this is, read from the system: the name a latency report carries.

Everything is read from files under a root (``/`` normally; a test points it at a fake
tree) and from two optional tools run with a short timeout (``vcgencmd`` on a Raspberry Pi,
``dpkg-query`` for the Edge TPU library's version). Nothing here imports a runtime: versions
come from the installed distributions' metadata. Anything that cannot be read is None, never
an error: a fingerprint must work on any Linux board, in a container and on macOS.

Sources, per field:

- board: the device tree's model (Raspberry Pi, Jetson, Coral Dev Board), else
  ``/etc/nv_tegra_release`` (a Jetson without a device tree model), else None; read by
  :mod:`edgeseg.hardware`, like the Edge TPUs.
- CPU: ``/proc/cpuinfo`` ("model name" on x86; on ARM the implementer/part codes, decoded
  for the cores found on the boards edgeseg targets), cores from ``os.cpu_count()``.
- Edge TPUs: :func:`edgeseg.hardware.edgetpus` (USB accelerators with their link speed, PCIe).
- clock and governor: ``/sys/devices/system/cpu/cpu0/cpufreq``; temperatures:
  ``/sys/class/thermal/thermal_zone*``; throttling: ``vcgencmd get_throttled`` (a Pi).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.hardware import EdgeTPU, board_model, edgetpus, first_line, jetson_release, read_text

__all__ = [
    "THROTTLE_BITS",
    "Fingerprint",
    "Thermal",
    "decode_throttled",
    "fingerprint",
    "slugify",
    "thermal_snapshot",
]

# Python distributions whose versions a report names (the runtime actually used is named by
# the measurement itself).
_DISTRIBUTIONS = (
    "ai-edge-litert",
    "tflite-runtime",
    "tensorflow",
    "tensorflow-cpu",
    "onnxruntime",
    "onnxruntime-gpu",
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "numpy",
)
# ARM "CPU part" codes (implementer 0x41, Arm Ltd) of the cores on the boards edgeseg targets.
_ARM_PARTS = {
    0xD03: "Cortex-A53",
    0xD04: "Cortex-A35",
    0xD05: "Cortex-A55",
    0xD07: "Cortex-A57",
    0xD08: "Cortex-A72",
    0xD09: "Cortex-A73",
    0xD0A: "Cortex-A75",
    0xD0B: "Cortex-A76",
    0xD0C: "Neoverse-N1",
    0xD0D: "Cortex-A77",
    0xD41: "Cortex-A78",
    0xD42: "Cortex-A78AE",
    0xD4B: "Cortex-A78C",
}
# `vcgencmd get_throttled` bits, as the Raspberry Pi documentation lists them.
THROTTLE_BITS = {
    0: "under-voltage now",
    1: "ARM frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage has occurred",
    17: "ARM frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}
_TOOL_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Thermal:
    """The state that changes during a run: temperatures, clock, throttling."""

    temperatures_c: dict[str, float] = field(default_factory=dict)  # zone type → °C
    cpu_mhz: float | None = None  # cpu0's current clock
    throttled: str | None = None  # raw `vcgencmd get_throttled` value, e.g. "0x50000"
    throttled_flags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "temperatures_c": dict(self.temperatures_c),
            "cpu_mhz": self.cpu_mhz,
            "throttled": self.throttled,
            "throttled_flags": list(self.throttled_flags),
        }

    @property
    def max_temperature_c(self) -> float | None:
        return max(self.temperatures_c.values()) if self.temperatures_c else None


@dataclass(frozen=True)
class Fingerprint:
    """A machine as a report names it. ``slug`` is the folder name of its reports."""

    slug: str
    board: str | None
    cpu_model: str
    cores: int
    machine: str
    os: str
    kernel: str
    python: str
    memory_total_mb: int | None
    jetson_release: str | None
    edgetpus: tuple[EdgeTPU, ...]
    libedgetpu: str | None
    governor: str | None
    cpu_max_mhz: float | None
    distributions: dict[str, str]
    thermal: Thermal

    def to_dict(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "board": self.board,
            "cpu_model": self.cpu_model,
            "cores": self.cores,
            "machine": self.machine,
            "os": self.os,
            "kernel": self.kernel,
            "python": self.python,
            "memory_total_mb": self.memory_total_mb,
            "jetson_release": self.jetson_release,
            "edgetpus": [t.to_dict() for t in self.edgetpus],
            "libedgetpu": self.libedgetpu,
            "governor": self.governor,
            "cpu_max_mhz": self.cpu_max_mhz,
            "distributions": dict(self.distributions),
            "thermal": self.thermal.to_dict(),
        }

    def describe(self) -> str:
        """One line: board or CPU, cores, OS."""
        what = self.board or self.cpu_model
        return f"{what} ({self.cores} cores, {self.machine}), {self.os}"


# --------------------------------------------------------------------------------------------


def fingerprint(root: str | Path = "/", *, run_tools: bool | None = None) -> Fingerprint:
    """Read this machine's fingerprint (or the one of a fake tree at ``root``).

    ``run_tools``: run ``vcgencmd``/``dpkg-query`` when found (default: only for the real
    root ``/``).
    """
    root = Path(root)
    real = root == Path("/")
    tools = real if run_tools is None else run_tools
    cpuinfo = read_text(root / "proc/cpuinfo") or ""
    board = board_model(root)
    machine = platform.machine() if real else (_cpuinfo_machine(cpuinfo) or "unknown")
    listed = len(re.findall(r"^processor\s*:", cpuinfo, re.M))
    cores = (os.cpu_count() or 1) if real else max(1, listed)
    cpu_model = _cpu_model(cpuinfo, cores)
    os_name = _os_release(root) or (platform.platform() if real else "unknown")
    kernel = platform.release() if real else (read_text(root / "proc/sys/kernel/osrelease") or "")
    jetson = jetson_release(root)
    if board is None and jetson:
        board = "NVIDIA Jetson"
    freq = root / "sys/devices/system/cpu/cpu0/cpufreq"
    return Fingerprint(
        slug=_slug(board, machine, cpu_model, cores),
        board=board,
        cpu_model=cpu_model,
        cores=cores,
        machine=machine,
        os=os_name,
        kernel=kernel.strip(),
        python=platform.python_version() if real else "",
        memory_total_mb=_meminfo(root).get("MemTotal"),
        jetson_release=jetson,
        edgetpus=tuple(edgetpus(root)),
        libedgetpu=_libedgetpu_version() if tools else None,
        governor=first_line(read_text(freq / "scaling_governor")),
        cpu_max_mhz=_khz_to_mhz(read_text(freq / "cpuinfo_max_freq")),
        distributions=_distributions() if real else {},
        thermal=thermal_snapshot(root, run_tools=tools),
    )


def thermal_snapshot(root: str | Path = "/", *, run_tools: bool | None = None) -> Thermal:
    """Temperatures, cpu0's clock and (on a Pi) the throttling state, now."""
    root = Path(root)
    tools = (root == Path("/")) if run_tools is None else run_tools
    temps: dict[str, float] = {}
    zones = root / "sys/class/thermal"
    if zones.is_dir():
        for zone in sorted(zones.glob("thermal_zone*")):
            raw = read_text(zone / "temp")
            if raw is None:
                continue
            try:
                value = int(raw.strip()) / 1000.0
            except ValueError:
                continue
            name = first_line(read_text(zone / "type")) or zone.name
            if name in temps:
                name = f"{name}-{zone.name}"
            temps[name] = round(value, 1)
    cur = _khz_to_mhz(read_text(root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"))
    if cur is None:  # no cpufreq (a VM, some x86 kernels): /proc/cpuinfo's "cpu MHz"
        mhz = _cpuinfo_fields(read_text(root / "proc/cpuinfo") or "").get("cpu MHz")
        try:
            cur = round(float(mhz), 1) if mhz else None
        except ValueError:
            cur = None
    raw = _vcgencmd_throttled() if tools else None
    return Thermal(
        temperatures_c=temps,
        cpu_mhz=cur,
        throttled=raw,
        throttled_flags=decode_throttled(raw) if raw else (),
    )


def decode_throttled(value: str) -> tuple[str, ...]:
    """``"0x50005"`` → the names of the bits set, as in :data:`THROTTLE_BITS`."""
    try:
        bits = int(value, 16) if value.lower().startswith("0x") else int(value)
    except ValueError:
        return ()
    return tuple(name for bit, name in THROTTLE_BITS.items() if bits & (1 << bit))


def slugify(text: str) -> str:
    """``"Raspberry Pi 5 Model B Rev 1.0"`` → ``"raspberry-pi-5-model-b-rev-1-0"``."""
    text = re.sub(r"\((?:R|TM|C)\)", "", text, flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


# --------------------------------------------------------------------------------------------
# Readers


def _slug(board: str | None, machine: str, cpu_model: str, cores: int) -> str:
    if board:
        # "Raspberry Pi 5 Model B Rev 1.0": the board revision does not change the speed.
        return slugify(re.sub(r"\s+Rev\s+[\w.]+$", "", board))
    cpu = re.sub(r"\bCPU\b|@\s*[\d.]+\s*GHz|\bProcessor\b", "", cpu_model, flags=re.I)
    return slugify(f"{machine} {cpu} {cores}c")


def _cpuinfo_fields(cpuinfo: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def _cpu_model(cpuinfo: str, cores: int) -> str:
    fields = _cpuinfo_fields(cpuinfo)
    if fields.get("model name") and not fields["model name"].startswith("ARMv"):
        return " ".join(fields["model name"].split())
    parts = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "CPU part":
            try:
                parts.add(int(value.strip(), 16))
            except ValueError:
                continue
    names = sorted({_ARM_PARTS.get(p, f"ARM part {p:#x}") for p in parts})
    if names:
        return "ARM " + " + ".join(names)
    return fields.get("Hardware") or fields.get("model name") or platform.processor() or "unknown"


def _cpuinfo_machine(cpuinfo: str) -> str | None:
    fields = _cpuinfo_fields(cpuinfo)
    if "CPU part" in fields:
        return "aarch64"
    if "model name" in fields:
        return "x86_64"
    return None


def _os_release(root: Path) -> str | None:
    text = read_text(root / "etc/os-release")
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def _meminfo(root: Path) -> dict[str, int]:
    """MemTotal, MemAvailable… in MB."""
    out: dict[str, int] = {}
    for line in (read_text(root / "proc/meminfo") or "").splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) // 1024
    return out


def memory_mb(root: str | Path = "/") -> dict[str, int]:
    """``{"MemTotal": …, "MemAvailable": …}`` in MB (empty when /proc/meminfo is absent)."""
    return _meminfo(Path(root))


def _khz_to_mhz(text: str | None) -> float | None:
    line = first_line(text)
    if not line:
        return None
    try:
        return round(int(line) / 1000.0, 1)
    except ValueError:
        return None


def _distributions() -> dict[str, str]:
    found = {}
    for dist in _DISTRIBUTIONS:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _run_tool(args: list[str]) -> str | None:
    """stdout of a short system tool, or None (absent, failed, or too slow)."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _vcgencmd_throttled() -> str | None:
    out = _run_tool(["vcgencmd", "get_throttled"])  # "throttled=0x0"
    if not out or "=" not in out:
        return None
    return out.split("=", 1)[1].strip()


def _libedgetpu_version() -> str | None:
    """ "libedgetpu1-std 16.0" from dpkg, else the library file found, else None."""
    for package in ("libedgetpu1-std", "libedgetpu1-max"):
        version = _run_tool(["dpkg-query", "-W", "-f", "${Version}", package])
        if version:
            return f"{package} {version}"
    import ctypes.util

    name = ctypes.util.find_library("edgetpu")
    return name or None


def python_description() -> str:
    """``"CPython 3.11.2"``."""
    return f"{platform.python_implementation()} {platform.python_version()} ({sys.platform})"
