"""`edgeseg bench`: report content and naming, one process per model, bad models (a fuzz test
over corrupted copies), native crashes and timeouts, fingerprints and device profiles."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error, probe_model
from typer.testing import CliRunner

from edgeseg.cli.main import app

runner = CliRunner()
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def bench(*args: str):
    """`edgeseg bench` on LiteRT alone (one report a model) unless ``--backend`` is given."""
    extra = [] if "--backend" in args else ["--backend", "litert"]
    return runner.invoke(app, ["bench", *args, *extra])


def only_report(folder: Path) -> dict:
    (path,) = sorted(folder.rglob("*.json"))
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------
# Reports


def test_report_json_markdown_and_file_naming(tmp_path: Path) -> None:
    from edgeseg.devices.fingerprint import fingerprint

    model = probe_model(tmp_path / "probe_fp32.tflite", recipe="fp32")
    out = tmp_path / "reports"
    result = bench(str(model), "--runs", "7", "--warmup", "2", "--threads", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    slug = fingerprint().slug
    (json_path,) = sorted(out.rglob("*.json"))
    # OUT/<device slug>/<model>-<precision>-<runtime>-<date>.json, the recipe suffix taken off
    # the stem
    assert json_path.parent == out / slug
    name, label, kind, date = json_path.stem.split("-", 3)
    assert (name, label, kind) == ("probe", "fp32", "litert") and DATE.match(date)
    assert rep_backend(json_path) == "litert"
    rep = json.loads(json_path.read_text())
    assert rep["schema"] == "edgeseg.bench/1"
    assert rep["created"].startswith(date)
    assert rep["device"]["slug"] == slug and rep["device"]["cores"] >= 1
    assert rep["device"]["distributions"]["ai-edge-litert"]
    data = model.read_bytes()
    assert rep["model"]["size_bytes"] == len(data)
    assert rep["model"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert rep["model"]["input"] == {"shape": [1, 8, 8, 1], "dtype": "float32"}
    assert (rep["model"]["precision"], rep["model"]["recipe"]) == ("fp32", "fp32")
    lat = rep["latency_ms"]
    assert lat["runs"] == 7 and len(rep["warmup_ms"]) == 2
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"] and lat["std"] >= 0
    # cold start is reported apart from the sustained runs
    assert rep["cold"]["load_ms"] > 0 and rep["cold"]["first_ms"] > 0
    assert rep["throughput"]["inferences_per_s"] == pytest.approx(1000 / lat["mean"], rel=0.01)
    assert rep["memory"]["peak_rss_mb"] >= rep["memory"]["rss_before_load_mb"] > 0
    assert rep["runtime"]["threads"] == 1 and "XNNPACK" in rep["runtime"]["delegate"]
    assert "own process" in rep["method"]["isolation"]
    assert rep["e2e"] is None
    md = json_path.with_suffix(".md").read_text()
    assert slug in md and "probe fp32" in md and "Cold start" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| sustained"))
    from edgeseg.bench.report import _ms

    assert (
        row
        == "| sustained | "
        + " | ".join(_ms(lat[k]) for k in ("min", "mean", "p50", "p90", "p99", "max", "std"))
        + " |"
    )


def rep_backend(path: Path) -> str:
    return json.loads(path.read_text())["runtime"]["backend"]


def test_bench_measures_every_installed_runtime_side_by_side(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    model = probe_model(tmp_path / "probe_fp32.tflite", recipe="fp32")
    out = tmp_path / "reports"
    result = runner.invoke(
        app, ["bench", str(model), "--runs", "3", "--warmup", "0", "--threads", "1", "--out",
              str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    paths = sorted(out.rglob("*.json"))
    kinds = {rep_backend(p): p for p in paths}
    assert set(kinds) == {"litert", "openvino"}
    for kind, path in kinds.items():
        assert path.stem.startswith(f"probe-fp32-{kind}-")
    reps = {k: json.loads(p.read_text()) for k, p in kinds.items()}
    assert reps["openvino"]["runtime"]["name"].startswith("openvino ")
    assert reps["litert"]["method"]["pid"] != reps["openvino"]["method"]["pid"]
    assert "fastest" in result.stdout  # the side-by-side line
    # `report` reads them, and a report of the old naming (no runtime) beside them
    old = kinds["litert"].with_name("probe-fp32-2020-01-01.json")
    legacy = dict(reps["litert"], created="2020-01-01T00:00:00Z")
    legacy["runtime"] = {k: v for k, v in legacy["runtime"].items() if k != "backend"}
    old.write_text(json.dumps(legacy))
    shown = runner.invoke(app, ["report", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "openvino" in shown.stdout


def test_bench_backend_and_delegate_that_cannot_work_is_one_line_error(tmp_path: Path) -> None:
    model = probe_model(tmp_path / "m.tflite")
    one_line_error(
        bench(str(model), "--backend", "openvino", "--delegate", "edgetpu"), "openvino", "edgetpu"
    )
    one_line_error(bench(str(model), "--backend", "onnxruntime"), "onnxruntime", ".onnx")
    one_line_error(bench(str(model), "--backend", "tensorrt"), "tensorrt")


def test_several_models_each_in_its_own_process(tmp_path: Path) -> None:
    import os

    a = probe_model(tmp_path / "a.tflite")
    b = probe_model(tmp_path / "b_int8.tflite", recipe="int8", precision="int8")
    out = tmp_path / "r"
    result = bench(str(a), str(b), "--runs", "3", "--warmup", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    reports = [json.loads(p.read_text()) for p in sorted(out.rglob("*.json"))]
    assert [(r["model"]["name"], r["model"]["label"]) for r in reports] == [
        ("a", "fp32"),
        ("b", "int8"),
    ]
    pids = {r["method"]["pid"] for r in reports}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all("2 models" in r["method"]["isolation"] for r in reports)


def test_bench_is_a_library_call_without_the_cli(tmp_path: Path) -> None:
    """`bench_models` plans, measures, names the profile and writes the reports; what the
    CLI prints is what it hears (progress on ``say``, results on ``tell``), and a fresh
    interpreter runs it without importing edgeseg.cli."""
    from helpers import imported_after

    from edgeseg.bench.run import BenchOptions, bench_models

    a = probe_model(tmp_path / "a.tflite")
    b = probe_model(tmp_path / "b_int8.tflite", recipe="int8", precision="int8")
    options = BenchOptions(
        models=(a, b), backend="litert", runs=2, warmup=0, threads=1, out=tmp_path / "o"
    )
    said: list[str] = []
    told: list[str] = []
    results = bench_models(options, say=said.append, tell=told.append)
    assert [(r.path, r.runtime) for r in results] == [(a, "litert"), (b, "litert")]
    for r in results:
        assert r.json_path.is_file() and r.md_path.is_file()
        assert json.loads(r.json_path.read_text()) == json.loads(json.dumps(r.report))
    assert said[0].startswith("device: ")
    assert said[1:] == [
        "[1/2] measuring a.tflite (fp32) on litert, 2 runs, 1 thread(s), in its own process",
        "[2/2] measuring b_int8.tflite (int8) on litert, 2 runs, 1 thread(s), in its own process",
    ]
    assert told == [r.line() for r in results]
    assert told[0].startswith("a fp32 on litert: p50 ") and told[0].endswith(
        str(results[0].json_path)
    )
    # The CLI prints the same lines.
    cli = bench(
        str(a), "--runs", "2", "--warmup", "0", "--threads", "1", "--out", str(tmp_path / "c")
    )
    assert cli.exit_code == 0, cli.output
    assert "a fp32 on litert: p50 " in cli.stdout
    loaded = imported_after(
        "from pathlib import Path\n"
        "from edgeseg.bench.run import BenchOptions, bench_models\n"
        f"bench_models(BenchOptions(models=(Path({str(a)!r}),), backend='litert', runs=2, "
        f"warmup=0, threads=1, out=Path({str(tmp_path / 'p')!r})))\n"
    )
    assert "edgeseg.bench.run" in loaded
    assert not [m for m in loaded if m == "edgeseg.cli" or m.startswith("edgeseg.cli.")]
    assert len(list((tmp_path / "p").rglob("*.json"))) == 1


def test_side_by_side_line_names_the_fastest_runtime() -> None:
    from edgeseg.bench.run import RuntimeComparison

    class Info:
        name, label = "m", "fp32"

    line = RuntimeComparison(Info(), {"litert": 2.0, "openvino": 1.0}).line()
    assert line == (
        "m fp32: fastest openvino (1.000 ms p50); 2.00x litert slower (separate processes, "
        "one after another)"
    )


def test_second_report_of_a_day_does_not_overwrite(tmp_path: Path) -> None:
    model = probe_model(tmp_path / "m.tflite")
    for _ in range(2):
        result = bench(str(model), "--runs", "2", "--warmup", "0", "--out", str(tmp_path / "o"))
        assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "o").rglob("*.json"))) == 2
    assert len(list((tmp_path / "o").rglob("*.md"))) == 2


def test_e2e_times_each_stage_of_the_real_pipeline(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    model = probe_model(tmp_path / "m.tflite", recipe="fp32")
    result = bench(
        str(model), "--runs", "3", "--warmup", "0", "--out", str(tmp_path / "o"),
        "--e2e", "synthetic://?size=40x24&frames=50&seed=1", "--e2e-frames", "6",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    e2e = only_report(tmp_path / "o")["e2e"]
    assert e2e["frames"] == 6 and e2e["frame_size"] == [40, 24] and e2e["mode"] == "tiles"
    assert set(e2e["stages_ms"]) == {"preprocess", "inference", "postprocess", "render"}
    for stats in e2e["stages_ms"].values():
        assert 0 <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    assert e2e["latency_ms"]["p50"] > 0
    md = next((tmp_path / "o").rglob("*.md")).read_text()
    assert "## End to end" in md and "| inference |" in md


def test_bad_e2e_source_fails_before_measuring(tmp_path: Path) -> None:
    model = probe_model(tmp_path / "m.tflite")
    result = bench(str(model), "--e2e", "nosuch://x", "--out", str(tmp_path / "o"))
    one_line_error(result, "nosuch")
    assert not (tmp_path / "o").exists()


def test_model_names_and_labels(tmp_path: Path) -> None:
    from edgeseg.bench.latency import model_info

    info = model_info(probe_model(tmp_path / "unet_int8-legacy.tflite", "int8-legacy", "int8"))
    assert (info.name, info.precision, info.label) == ("unet", "int8", "int8-legacy")
    info = model_info(probe_model(tmp_path / "plain.tflite"))
    assert (info.name, info.precision, info.label, info.recipe) == ("plain", "fp32", "fp32", None)


# --------------------------------------------------------------------------------------------
# Bad models


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty"),
        (b"PK\x03\x04" + b"\x00" * 60, "zip"),
        (b"not a model at all, just text" * 4, "TFL3"),
    ],
)
def test_bad_model_is_one_line_error(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    one_line_error(bench(str(path), "--out", str(tmp_path / "o")), "bad.tflite", needle)
    assert not (tmp_path / "o").exists()


def test_truncated_model_is_one_line_error(tmp_path: Path) -> None:
    data = probe_model(tmp_path / "m.tflite").read_bytes()
    (tmp_path / "cut.tflite").write_bytes(data[: len(data) // 2])
    one_line_error(bench(str(tmp_path / "cut.tflite")), "cut.tflite")


def test_missing_model_and_wrong_suffix(tmp_path: Path) -> None:
    one_line_error(bench(str(tmp_path / "nope.tflite")), "nope.tflite", "not found")
    (tmp_path / "m.keras").write_bytes(b"PK\x03\x04")
    one_line_error(bench(str(tmp_path / "m.keras")), "m.keras", "edgeseg convert")


def test_native_crash_in_the_child_is_one_line_error(tmp_path: Path, monkeypatch) -> None:
    """A model that passes every check but crashes the C++ interpreter: the measuring child
    dies by a signal, `edgeseg bench` says so in one line and keeps earlier reports."""
    import edgeseg.bench.latency as latency

    good, bad = probe_model(tmp_path / "good.tflite"), probe_model(tmp_path / "bad.tflite")
    real = latency._child_command

    def command(config_path: str, result_path: str) -> list[str]:
        if json.loads(Path(config_path).read_text())["model"].endswith("bad.tflite"):
            crash = (
                "import os, signal, sys; open(sys.argv[1] + '.stage', 'w')"
                ".write('the first inference'); os.kill(os.getpid(), signal.SIGSEGV)"
            )
            return [sys.executable, "-c", crash, result_path]
        return real(config_path, result_path)

    monkeypatch.setattr(latency, "_child_command", command)
    out = tmp_path / "o"
    result = bench(str(good), str(bad), "--runs", "2", "--warmup", "0", "--out", str(out))
    one_line_error(result, "bad.tflite", "crashed (SIGSEGV)", "during the first inference")
    assert [p.stem.split("-")[0] for p in out.rglob("*.json")] == ["good"]


def test_missing_delegate_is_one_line_error(tmp_path: Path) -> None:
    """No libedgetpu here (or no Edge TPU): the child's typed error reaches the user as is."""
    import ctypes.util

    if ctypes.util.find_library("edgetpu"):
        pytest.skip("libedgetpu is installed here")
    model = probe_model(tmp_path / "m.tflite")
    result = bench(str(model), "--delegate", "edgetpu", "--out", str(tmp_path / "o"))
    one_line_error(result, "libedgetpu", "coral.ai")
    assert result.exit_code == 3  # MissingDependencyError
    assert not (tmp_path / "o").exists()


def test_timeout_kills_the_child(tmp_path: Path, monkeypatch) -> None:
    import edgeseg.bench.latency as latency

    monkeypatch.setattr(
        latency,
        "_child_command",
        lambda c, r: [sys.executable, "-c", "import time; time.sleep(60)"],
    )
    model = probe_model(tmp_path / "slow.tflite")
    result = bench(str(model), "--timeout", "1", "--out", str(tmp_path / "o"))
    one_line_error(result, "slow.tflite", "did not finish within 1 s")


FUZZ = r"""
import json, sys
from pathlib import Path
import numpy as np
from edgeseg.bench.latency import model_info
from edgeseg.errors import EdgesegError
from edgeseg.runtime.backends import TFLiteBackend

for path in sorted(Path(sys.argv[1]).glob("*.tflite")):
    print(json.dumps({"case": path.name, "outcome": "started"}), flush=True)
    try:
        # What `edgeseg bench` does: validate in Python, then load and run in the runtime.
        model_info(path)
        backend = TFLiteBackend(path, threads=1)
        x = np.zeros(backend.input.shape, backend.input.dtype)
        for _ in range(2):
            backend.invoke(x)
        row = {"case": path.name, "outcome": "ok"}
    except EdgesegError as exc:
        row = {"case": path.name, "outcome": "error", "message": str(exc)}
    except Exception as exc:  # anything else would reach the user as a traceback
        row = {"case": path.name, "outcome": "unexpected", "message": repr(exc)}
    print(json.dumps(row), flush=True)
print(json.dumps({"outcome": "done"}), flush=True)
"""


def _mutants(data: bytes, n: int, seed: int) -> list[bytes]:
    """Truncations, bit flips, overwritten words, zeroed spans and spliced chunks."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        b = bytearray(data)
        kind = i % 5
        if kind == 0:
            b = b[: int(rng.integers(0, len(b)))]
        elif kind == 1:
            for _ in range(int(rng.integers(1, 9))):
                pos = int(rng.integers(0, len(b)))
                b[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:
            for _ in range(int(rng.integers(1, 4))):
                pos = int(rng.integers(0, len(b) - 4))
                b[pos : pos + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        elif kind == 3:
            start = int(rng.integers(8, len(b) - 1))
            stop = min(len(b), start + int(rng.integers(1, 64)))
            b[start:stop] = bytes(stop - start)
        else:
            start = int(rng.integers(0, len(b) - 16))
            chunk = b[start : start + int(rng.integers(4, 64))]
            pos = int(rng.integers(8, len(b)))
            b[pos : pos + len(chunk)] = chunk
        out.append(bytes(b))
    return out


def int8_conv_model(path: Path) -> Path:
    """A 16x16 int8 model (3x3 conv, ReLU, 1x1 conv, sigmoid) with int8 I/O and per-channel
    weights, as TensorFlow's converter writes it, with edgeseg metadata."""
    tf = pytest.importorskip("tensorflow")
    import keras

    from edgeseg.core.metadata import ModelMetadata
    from edgeseg.core.tflite_file import embed_metadata

    inp = keras.Input((16, 16, 1), batch_size=1)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    out = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    conv = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, out))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: (
        [rng.random((1, 16, 16, 1), dtype=np.float32)] for _ in range(8)
    )
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    extra = {"recipe": {"name": "int8", "precision": "int8"}}
    path.write_bytes(embed_metadata(conv.convert(), ModelMetadata(input_size=(16, 16)), extra))
    return path


@pytest.mark.parametrize("kind", ["probe-fp32", "conv-int8"])
def test_fuzz_corrupted_models_are_errors_or_results_never_crashes(
    tmp_path: Path, kind: str
) -> None:
    """Many corrupted copies of a small model with metadata: every case is a one-line
    EdgesegError or a normal result. Run in a subprocess: a native crash fails this test
    (naming the case) instead of killing pytest."""
    if kind == "probe-fp32":
        base = probe_model(tmp_path / "base.tflite", recipe="fp32").read_bytes()
    else:
        base = int8_conv_model(tmp_path / "base.tflite").read_bytes()
    cases = tmp_path / "cases"
    cases.mkdir()
    for i, data in enumerate(_mutants(base, 250, seed=6)):
        (cases / f"m{i:03d}.tflite").write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", FUZZ, str(cases)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    rows = [json.loads(ln) for ln in done.stdout.splitlines() if ln.startswith("{")]
    last = rows[-1] if rows else {}
    assert done.returncode == 0 and last.get("outcome") == "done", (
        f"the fuzz process died (code {done.returncode}) on {last.get('case')}: "
        f"{done.stderr[-2000:]}"
    )
    results = [r for r in rows if r.get("outcome") in ("ok", "error", "unexpected")]
    assert len(results) == 250
    unexpected = [r for r in results if r["outcome"] == "unexpected"]
    assert not unexpected, unexpected[:5]
    errors = [r for r in results if r["outcome"] == "error"]
    assert len(errors) >= 50  # the mutations do break many copies
    for r in errors:
        assert "\n" not in r["message"].strip() and len(r["message"]) < 400, r


# --------------------------------------------------------------------------------------------
# Fingerprints and device profiles


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_fingerprint_of_a_raspberry_pi_with_a_coral_on_usb2(tmp_path: Path) -> None:
    from edgeseg.devices.fingerprint import fingerprint
    from edgeseg.devices.profiles import detect_profile

    root = tmp_path
    _write(root, "proc/device-tree/model", "Raspberry Pi 5 Model B Rev 1.0\x00")
    cpu = "".join(
        f"processor\t: {i}\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n\n" for i in range(4)
    )
    _write(root, "proc/cpuinfo", cpu)
    _write(root, "proc/meminfo", "MemTotal:        8245632 kB\nMemAvailable:    7000000 kB\n")
    _write(root, "etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    _write(root, "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    _write(root, "sys/class/thermal/thermal_zone0/temp", "61250\n")
    freq = "sys/devices/system/cpu/cpu0/cpufreq/"
    _write(root, freq + "scaling_governor", "ondemand\n")
    _write(root, freq + "cpuinfo_max_freq", "2400000\n")
    _write(root, freq + "scaling_cur_freq", "1500000\n")
    usb = "sys/bus/usb/devices/1-1/"
    _write(root, usb + "idVendor", "1a6e\n")
    _write(root, usb + "idProduct", "089a\n")
    _write(root, usb + "speed", "480\n")
    fp = fingerprint(root)
    assert fp.board == "Raspberry Pi 5 Model B Rev 1.0"
    assert fp.slug == "raspberry-pi-5-model-b"
    assert (fp.cpu_model, fp.cores, fp.machine) == ("ARM Cortex-A76", 4, "aarch64")
    assert fp.memory_total_mb == 8052 and fp.os.startswith("Debian")
    assert (fp.governor, fp.cpu_max_mhz, fp.thermal.cpu_mhz) == ("ondemand", 2400.0, 1500.0)
    assert fp.thermal.temperatures_c == {"cpu-thermal": 61.2}
    assert [(t.kind, t.usb_speed_mbps) for t in fp.edgetpus] == [("usb", 480)]
    device = fp.to_dict()
    json.dumps(device)
    assert detect_profile(device, "CPU (XNNPACK, 4 threads) via ai-edge-litert 2.3.0") == "rpi5"
    assert detect_profile(device, "edgetpu (libedgetpu.so.1) via ai-edge-litert") == "coral-usb"


def test_fingerprint_of_a_jetson_and_throttle_bits(tmp_path: Path) -> None:
    from edgeseg.devices.fingerprint import decode_throttled, fingerprint
    from edgeseg.devices.profiles import detect_profile

    _write(tmp_path, "proc/device-tree/model", "NVIDIA Jetson Orin Nano Developer Kit\x00")
    _write(tmp_path, "etc/nv_tegra_release", "# R36 (release), REVISION: 4.0, GCID: 1\n")
    _write(tmp_path, "proc/cpuinfo", "processor\t: 0\nCPU part\t: 0xd42\n")
    fp = fingerprint(tmp_path)
    assert fp.slug == "nvidia-jetson-orin-nano-developer-kit"
    assert fp.jetson_release.startswith("# R36") and fp.cpu_model == "ARM Cortex-A78AE"
    assert detect_profile(fp.to_dict(), "CPU (XNNPACK, 6 threads)") == "jetson-orin-nano"
    assert decode_throttled("0x50005") == (
        "under-voltage now",
        "throttled now",
        "under-voltage has occurred",
        "throttling has occurred",
    )
    assert decode_throttled("0x0") == () and decode_throttled("garbage") == ()


def test_empty_root_gives_a_fingerprint_not_an_error(tmp_path: Path) -> None:
    from edgeseg.devices.fingerprint import fingerprint

    fp = fingerprint(tmp_path)
    assert fp.board is None and fp.edgetpus == () and fp.thermal.temperatures_c == {}
    assert fp.slug


def test_shipped_profiles_are_complete_and_sourced() -> None:
    from edgeseg.convert.recipes import available
    from edgeseg.devices.profiles import available_profiles

    profiles = available_profiles()
    expected = {"rpi4", "rpi5", "jetson-orin-nano", "coral-usb", "coral-devboard", "x86-64"}
    assert expected <= set(profiles)
    recipes = available()
    for name, p in profiles.items():
        assert p.name == name and p.title and p.camera and p.notes
        assert p.recipe in recipes, (name, p.recipe)
        assert p.delegate in ("cpu", "edgetpu", "auto")
        for ref in p.references:
            assert ref.source and ref.measured_on and ref.ms > 0
    # Figures copied from their sources (see the profiles' source fields).
    usb = {(r.model, r.input, r.ms) for r in profiles["coral-usb"].references}
    assert ("U-Net MobileNet v2", (128, 128), 3.3) in usb
    rpi4 = {(r.precision, r.ms) for r in profiles["rpi4"].references if r.input == (224, 224)}
    assert rpi4 == {("fp32", 46.0), ("int8", 17.0)}


def test_unknown_device_profile_lists_the_known_ones(tmp_path: Path) -> None:
    model = probe_model(tmp_path / "m.tflite")
    for result in (
        bench(str(model), "--device", "rpi9"),
        runner.invoke(app, ["run", str(model), "--device", "rpi9", "--headless"]),
    ):
        one_line_error(result, "'rpi9'", "rpi4", "rpi5", "coral-usb", "x86-64")


def test_malformed_profile_file_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "mine.toml"
    bad.write_text('name = "mine"\ntitle = "x"\n[[reference]]\nmodel = "m"\n')
    model = probe_model(tmp_path / "m.tflite")
    one_line_error(bench(str(model), "--device", str(bad)), "mine.toml")


def test_device_profile_sets_delegate_threads_and_is_recorded(tmp_path: Path) -> None:
    model = probe_model(tmp_path / "m.tflite")
    result = bench(str(model), "--device", "rpi4", "--runs", "2", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    rep = only_report(tmp_path / "o")
    assert rep["runtime"]["threads"] == 4 and rep["runtime"]["requested_delegate"] == "cpu"
    assert (rep["device"]["profile"], rep["device"]["profile_from"]) == ("rpi4", "--device")
    # Explicit flags win over the profile.
    result = bench(
        str(model), "--device", "rpi4", "--threads", "1", "--runs", "2",
        "--out", str(tmp_path / "p"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert only_report(tmp_path / "p")["runtime"]["threads"] == 1


def test_run_with_a_device_profile(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    model = probe_model(tmp_path / "m.tflite", recipe="fp32")
    summary = tmp_path / "s.json"
    result = runner.invoke(
        app,
        ["run", str(model), "--device", "x86-64", "--source", "synthetic://?size=16x16&frames=3",
         "--headless", "--csv", str(tmp_path / "c.csv"), "--summary-json", str(summary)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(summary.read_text())["frames"] == 3
