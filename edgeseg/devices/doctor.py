"""`edgeseg doctor` as a library: what this machine has, and what to install for the rest.

Each check returns :class:`Check` records and never raises: a check that fails in an
unexpected way becomes a "warn" record saying so. Anything that loads native code the
machine may not survive (an interpreter, a delegate library, a camera driver) runs in a
child process with a timeout, so a broken library or a hung camera cannot take `doctor`
down with it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.child import run_python

__all__ = ["Check", "probe_model_bytes", "run_checks"]

OK, MISSING, WARN, INFO = "ok", "missing", "warn", "info"
_PROBE_TIMEOUT_S = 60.0
_CAMERA_TIMEOUT_S = 6.0
_MAX_CAMERAS = 4


@dataclass(frozen=True)
class Check:
    """One finding: ``status`` is ok, missing, warn or info; ``hint`` what to do about it."""

    section: str
    name: str
    status: str
    detail: str
    hint: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "section": self.section,
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "hint": self.hint,
        }


def probe_model_bytes() -> bytes:
    """A 300-byte float32 .tflite (one ADD of the input to itself, (1, 8, 8, 1) → same),
    built with the flatbuffer schema: enough to see a runtime and XNNPACK work."""
    import flatbuffers

    from edgeseg.core.tflite_file import TFLITE_IDENTIFIER, schema

    fb = schema()
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.ADD
    code.version = 1

    def tensor(name: str, buffer: int) -> Any:
        t = fb.TensorT()
        t.shape = [1, 8, 8, 1]
        t.type = fb.TensorType.FLOAT32
        t.buffer = buffer
        t.name = name
        return t

    op = fb.OperatorT()
    op.opcodeIndex = 0
    op.inputs = [0, 0]
    op.outputs = [1]
    op.builtinOptionsType = fb.BuiltinOptions.AddOptions
    op.builtinOptions = fb.AddOptionsT()
    graph = fb.SubGraphT()
    graph.tensors = [tensor("input", 1), tensor("output", 2)]
    graph.operators = [op]
    graph.inputs = [0]
    graph.outputs = [1]
    graph.name = "main"
    model = fb.ModelT()
    model.version = 3
    model.description = "edgeseg doctor probe"
    model.operatorCodes = [code]
    model.subgraphs = [graph]
    model.buffers = [fb.BufferT() for _ in range(3)]
    builder = flatbuffers.Builder(512)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


_XNNPACK_PROBE = """
import numpy as np
from edgeseg.devices.doctor import probe_model_bytes
from edgeseg.runtime.backends import interpreter_class
cls, name = interpreter_class()
it = cls(model_content=probe_model_bytes(), num_threads=1)
it.allocate_tensors()
d = it.get_input_details()[0]
it.set_tensor(d["index"], np.ones(d["shape"], np.float32))
it.invoke()
out = it.get_tensor(it.get_output_details()[0]["index"])
assert abs(float(out.sum()) - 128.0) < 1e-3, out.sum()
print(name)
"""

_EDGETPU_PROBE = """
from edgeseg.errors import EdgesegError
from edgeseg.runtime.backends import load_delegate
try:
    load_delegate("edgetpu")
    print("OK")
except EdgesegError as exc:
    print("ERR " + " ".join(str(exc).split()))
"""

_CAMERA_PROBE = """
import sys
import cv2
cap = cv2.VideoCapture(sys.argv[1], cv2.CAP_V4L2)
opened = cap.isOpened()
ok, frame = cap.read() if opened else (False, None)
cap.release()
print("frame %dx%d" % (frame.shape[1], frame.shape[0]) if ok and frame is not None
      else ("opened, no frame" if opened else "does not open"))
"""


def _python(code: str, *args: str, timeout: float) -> tuple[int | None, str, str]:
    """(return code or None on timeout, stdout, stderr) of ``python -c code args``."""
    try:
        done = run_python(["-c", code, *args], timeout=timeout)
    except OSError as exc:
        return 1, "", str(exc)
    if done.timed_out:
        return None, "", ""
    return done.returncode, done.stdout.strip(), done.stderr.strip()


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= 200 else line[:199] + "…"


def _child_failure(code: int | None, stderr: str) -> str:
    """Why a probe child failed: it timed out, or its last line of stderr, or its exit code."""
    return "timed out" if code is None else (_last_line(stderr) or f"exit code {code}")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------------
# Checks


def check_system() -> Iterator[Check]:
    from edgeseg.devices.fingerprint import fingerprint, memory_mb

    fp = fingerprint()
    yield Check("system", "machine", INFO, f"{fp.describe()}; device slug {fp.slug}")
    if fp.jetson_release:
        yield Check("system", "Jetson", INFO, fp.jetson_release)
    yield Check("system", "Python", INFO, f"{fp.python} ({sys.executable})")
    clock = f"{fp.thermal.cpu_mhz:.0f} MHz now" if fp.thermal.cpu_mhz else "clock unknown"
    if fp.cpu_max_mhz:
        clock += f", max {fp.cpu_max_mhz:.0f} MHz"
    governor = fp.governor or "no cpufreq"
    status, hint = INFO, ""
    if fp.governor in ("powersave", "conservative"):
        status = WARN
        hint = (
            "for steady latency set the performance governor: "
            "echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"
        )
    yield Check("system", "CPU clock", status, f"governor {governor}, {clock}", hint)
    temp = fp.thermal.max_temperature_c
    yield Check(
        "system",
        "temperature",
        WARN if temp is not None and temp >= 80 else INFO,
        f"{temp:.1f} °C (hottest zone)" if temp is not None else "no thermal sensors readable",
    )
    if fp.thermal.throttled is not None:
        now = [f for f in fp.thermal.throttled_flags if f.endswith("now")]
        yield Check(
            "system",
            "throttling",
            WARN if now else (INFO if fp.thermal.throttled_flags else OK),
            f"vcgencmd get_throttled = {fp.thermal.throttled}"
            + (f" ({', '.join(fp.thermal.throttled_flags)})" if fp.thermal.throttled_flags else ""),
            "use the official power supply and a cooler" if now else "",
        )
    mem = memory_mb()
    if mem:
        avail = mem.get("MemAvailable")
        yield Check(
            "system",
            "memory",
            WARN if avail is not None and avail < 300 else OK,
            f"{avail if avail is not None else '?'} MB available of {mem.get('MemTotal', '?')} MB",
            "close other programs or add swap" if avail is not None and avail < 300 else "",
        )
    try:
        free = shutil.disk_usage(Path.cwd()).free / 1e9
        yield Check("system", "disk", OK if free > 1 else WARN, f"{free:.1f} GB free here")
    except OSError:
        pass


def check_runtimes() -> Iterator[Check]:
    litert = _version("ai-edge-litert")
    tflite = _version("tflite-runtime")
    tf = _version("tensorflow") or _version("tensorflow-cpu")
    ort = _version("onnxruntime") or _version("onnxruntime-gpu")
    numpy = _version("numpy")
    yield Check(
        "runtimes",
        "LiteRT (ai-edge-litert)",
        OK if litert else MISSING,
        litert or "not installed",
        "" if litert else "pip install 'edgeseg[runtime]' (LiteRT, the runtime edgeseg prefers)",
    )
    if tflite:
        old_numpy = numpy is not None and int(numpy.split(".")[0]) >= 2
        yield Check(
            "runtimes",
            "tflite-runtime",
            WARN if old_numpy else INFO,
            tflite + (f" (with numpy {numpy}: it cannot load models under numpy 2)" * old_numpy),
            "prefer LiteRT: pip install ai-edge-litert" if old_numpy else "",
        )
    else:
        yield Check("runtimes", "tflite-runtime", INFO, "not installed (LiteRT replaces it)")
    yield Check(
        "runtimes",
        "TensorFlow",
        OK if tf else INFO,
        tf or "not installed (needed only to train and convert)",
        "" if tf else "to convert models here: pip install 'edgeseg[convert]'",
    )
    if ort:
        try:
            import onnxruntime

            providers = ", ".join(onnxruntime.get_available_providers())
        except Exception as exc:  # a broken install is reported, not raised
            providers = f"cannot import ({type(exc).__name__}: {exc})"
        yield Check("runtimes", "onnxruntime", OK, f"{ort}; providers: {providers}")
    else:
        yield Check(
            "runtimes",
            "onnxruntime",
            INFO,
            "not installed (the Jetson GPU path: ONNX + TensorRT/CUDA providers)",
            "for ONNX models: pip install 'edgeseg[onnx]'",
        )
    yield from _check_openvino()
    yield from _check_registered()
    if litert or tflite or tf:
        code, stdout, stderr = _python(_XNNPACK_PROBE, timeout=_PROBE_TIMEOUT_S)
        if code == 0:
            applied = "XNNPACK delegate" in stderr
            yield Check(
                "delegates",
                "CPU / XNNPACK",
                OK if applied else WARN,
                f"{_last_line(stdout)} runs a model"
                + ("; XNNPACK applied" if applied else "; the runtime did not report XNNPACK"),
                "" if applied else "this runtime build may lack XNNPACK: install ai-edge-litert",
            )
        else:
            why = _child_failure(code, stderr)
            yield Check(
                "delegates",
                "CPU / XNNPACK",
                MISSING,
                f"the runtime cannot run a model: {why}",
                "reinstall the runtime: pip install --force-reinstall ai-edge-litert",
            )


# OpenVINO's version, its devices and the CPU's capabilities, as one JSON line (a child: a
# GPU or NPU plugin that hangs or crashes while probed must not take doctor with it).
_OPENVINO_PROBE = """
import json, openvino as ov
core = ov.Core()
devices = {}
for d in core.available_devices:
    try:
        name = core.get_property(d, "FULL_DEVICE_NAME")
    except Exception:
        name = d
    try:
        caps = list(core.get_property(d, "OPTIMIZATION_CAPABILITIES"))
    except Exception:
        caps = []
    devices[d] = {"name": str(name), "capabilities": [str(c) for c in caps]}
print(json.dumps({"version": ov.get_version().split("-")[0], "devices": devices}))
"""


def _check_registered() -> Iterator[Check]:
    """Runtimes other distributions registered (the ``edgeseg.runtimes`` entry points), and
    the entry points that could not be registered."""
    from edgeseg.runtime.backends.registry import plugins, registry_problems

    for name, runtime in plugins().items():
        installed = runtime.installed()
        yield Check(
            "runtimes",
            f"{runtime.title or name} (registered: --backend {name})",
            OK if installed else MISSING,
            f"{runtime.version()}; reads {', '.join(runtime.reads)}"
            if installed
            else "not importable",
            "" if installed else runtime.install,
        )
    for problem in registry_problems():
        yield Check("runtimes", "runtime registry", WARN, problem, "fix or uninstall that package")


def _check_openvino() -> Iterator[Check]:
    """OpenVINO: installed or not, its version, the devices it sees."""
    version = _version("openvino")
    if not version:
        yield Check(
            "runtimes",
            "OpenVINO",
            INFO,
            "not installed (reads .tflite, int8 included, and .onnx; often the fastest on "
            "x86-64 CPUs: `run --backend auto` measures)",
            "for x86-64 CPUs and Intel GPUs/NPUs: pip install 'edgeseg[openvino]'",
        )
        return
    code, stdout, stderr = _python(_OPENVINO_PROBE, timeout=_PROBE_TIMEOUT_S)
    try:
        found = json.loads(stdout.splitlines()[-1]) if code == 0 else None
    except (ValueError, IndexError):
        found = None
    if not isinstance(found, dict):
        why = _child_failure(code, stderr)
        yield Check(
            "runtimes",
            "OpenVINO",
            WARN,
            f"{version} installed but cannot list its devices: {why}",
            "reinstall it: pip install --force-reinstall openvino",
        )
        return
    devices = found.get("devices") or {}
    parts = []
    for name, info in devices.items():
        caps = ", ".join(info.get("capabilities") or [])
        parts.append(f"{name} ({info.get('name', name)}{'; ' + caps if caps else ''})")
    yield Check(
        "runtimes",
        "OpenVINO",
        OK if devices else WARN,
        f"{found.get('version', version)}; devices: " + ("; ".join(parts) or "none"),
        "" if devices else "OpenVINO sees no device: check its plugins",
    )


def check_edgetpu() -> Iterator[Check]:
    import ctypes.util

    from edgeseg.hardware import edgetpu_ids_text, edgetpus
    from edgeseg.runtime.backends import EDGETPU_INSTALL_HINT

    library = ctypes.util.find_library("edgetpu")
    devices = edgetpus()
    names = ", ".join(
        t.id + (f" at {t.usb_speed_mbps} Mbit/s" if t.usb_speed_mbps else "") for t in devices
    )
    yield Check(
        "delegates",
        "Edge TPU devices",
        OK if devices else INFO,
        names or f"none attached (looked for {edgetpu_ids_text()})",
    )
    slow = [t for t in devices if t.usb_speed_mbps is not None and t.usb_speed_mbps < 5000]
    if slow:
        yield Check(
            "delegates",
            "Edge TPU USB speed",
            WARN,
            f"{slow[0].id} is on a USB 2 link ({slow[0].usb_speed_mbps} Mbit/s)",
            "plug the Coral into a USB 3 (blue) port",
        )
    if not library:
        yield Check(
            "delegates",
            "Edge TPU library",
            WARN if devices else INFO,
            "libedgetpu not found",
            EDGETPU_INSTALL_HINT if devices else "",
        )
        return
    if not devices:
        yield Check("delegates", "Edge TPU library", INFO, f"{library} (no device to load it)")
        return
    code, stdout, stderr = _python(_EDGETPU_PROBE, timeout=_PROBE_TIMEOUT_S)
    if code == 0 and stdout.startswith("OK"):
        yield Check("delegates", "Edge TPU delegate", OK, f"{library} loads")
    else:
        why = "timed out" if code is None else (stdout[4:] or _last_line(stderr))
        yield Check("delegates", "Edge TPU delegate", WARN, f"{library} does not load: {why}")


def _gpu_libraries() -> list[str]:
    names = (
        "libtensorflowlite_gpu_delegate.so",
        "libLiteRtGpuAccelerator.so",
        "libLiteRtWebGpuAccelerator.so",
        "libLiteRtOpenClAccelerator.so",
    )
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    dirs += [
        "/usr/lib",
        "/usr/local/lib",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
    ]
    spec = importlib.util.find_spec("ai_edge_litert")
    if spec is not None and spec.submodule_search_locations:
        dirs += list(spec.submodule_search_locations)
    found = []
    for d in dirs:
        for name in names:
            p = Path(d) / name
            if p.is_file() and str(p) not in found:
                found.append(str(p))
    return found


def check_gpu() -> Iterator[Check]:
    from edgeseg.hardware import board_family

    found = _gpu_libraries()
    jetson = board_family() == "jetson"
    yield Check(
        "delegates",
        "GPU delegate",
        INFO,
        ("found " + ", ".join(found) + " (not loaded: doctor does not initialise GPUs)")
        if found
        else "no TFLite GPU delegate library found (optional)",
        "on a Jetson use ONNX with onnxruntime's TensorRT/CUDA providers: the TFLite GPU "
        "delegate is slower than the CPU on a Jetson Nano"
        if jetson
        else "",
    )


def check_video() -> Iterator[Check]:
    from edgeseg.errors import EdgesegError
    from edgeseg.hardware import opencv_capabilities, video_devices

    try:
        caps = opencv_capabilities()
    except EdgesegError as exc:
        yield Check("video", "OpenCV", MISSING, str(exc), "pip install 'edgeseg[runtime]' (OpenCV)")
        caps = None
    if caps is not None:
        flags = ", ".join(
            f"{k} {'yes' if caps.get(k) else 'no'}" for k in ("gstreamer", "ffmpeg", "v4l2", "gui")
        )
        yield Check("video", "OpenCV", OK, f"{caps.get('version')}: {flags}")
        if not caps.get("gstreamer"):
            yield Check(
                "video",
                "CSI cameras",
                INFO,
                "this OpenCV has no GStreamer: csi:// and gst: sources will not open",
                "for a Pi or Jetson CSI camera use the system OpenCV (Debian: sudo apt install "
                "python3-opencv, in a venv made with --system-site-packages) or picamera2",
            )
    if importlib.util.find_spec("picamera2") is not None:
        yield Check("video", "picamera2", OK, "installed (csi:// on a Raspberry Pi)")
    nodes = video_devices()
    if not nodes:
        yield Check("video", "cameras", INFO, "no /dev/video* device")
    for node in nodes[:_MAX_CAMERAS]:
        if caps is None:
            yield Check("video", str(node), INFO, "present (OpenCV missing: not probed)")
            continue
        code, stdout, stderr = _python(_CAMERA_PROBE, str(node), timeout=_CAMERA_TIMEOUT_S)
        if code is None:
            yield Check("video", str(node), WARN, f"no answer within {_CAMERA_TIMEOUT_S:g} s")
        elif code == 0:
            yield Check("video", str(node), OK if stdout.startswith("frame") else INFO, stdout)
        else:
            yield Check("video", str(node), WARN, _last_line(stderr) or f"exit code {code}")
    if len(nodes) > _MAX_CAMERAS:
        more = ", ".join(p.name for p in nodes[_MAX_CAMERAS:])
        yield Check("video", "more cameras", INFO, f"not probed: {more}")
    for tool in ("rpicam-hello", "libcamera-hello"):
        if shutil.which(tool):
            code, stdout, stderr = _python(
                "import subprocess,sys;"
                "r=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
                "print((r.stdout+r.stderr).strip())",
                tool,
                "--list-cameras",
                timeout=_CAMERA_TIMEOUT_S,
            )
            text = " ".join(stdout.split())[:200] if code == 0 else "no answer"
            yield Check("video", "libcamera", INFO, text or "no camera listed")
            break
    display = os.environ.get("WAYLAND_DISPLAY") or os.environ.get("DISPLAY")
    gui = bool(caps and caps.get("gui"))
    if display and gui:
        yield Check("video", "display", OK, f"{display}: windows can open")
    else:
        why = [] if display else ["no DISPLAY or WAYLAND_DISPLAY"]
        if caps is not None and not gui:
            why.append("OpenCV without GUI (headless wheel)")
        yield Check(
            "video",
            "display",
            INFO,
            "; ".join(why) + ": run with --headless and --record/--stream/--save-masks",
            "for windows: pip install 'edgeseg[gui]' on a machine with a display"
            if caps is not None and not gui
            else "",
        )


CHECKS: tuple[Callable[[], Iterator[Check]], ...] = (
    check_system,
    check_runtimes,
    check_edgetpu,
    check_gpu,
    check_video,
)


def run_checks(checks: tuple[Callable[[], Iterator[Check]], ...] | None = None) -> list[Check]:
    """Every check's findings; a check that breaks is one "warn" finding, never an exception."""
    found: list[Check] = []
    for check in CHECKS if checks is None else checks:
        try:
            for finding in check():
                found.append(finding)
        except Exception as exc:  # doctor must always finish: report the broken check
            name = check.__name__.removeprefix("check_")
            text = " ".join(str(exc).split())[:200]
            found.append(Check(name, name, WARN, f"check failed: {type(exc).__name__}: {text}"))
    return found
