"""`edgeseg convert --micro`: TensorFlow Lite Micro files, arena, op resolver, parity, profiles.

The conversion tests need TensorFlow, LiteRT and the tflite-micro package (x86-64 wheels
only) and skip cleanly without them; the profile and C-source tests need none of them.
"""

from __future__ import annotations

import json
import re
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from helpers import keras_unet, one_line_error, probe_model
from typer.testing import CliRunner

from edgeseg.cli.main import app
from edgeseg.errors import DataError, MissingDependencyError

runner = CliRunner()


def _has(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ImportError:
        return False


needs_tflm = pytest.mark.skipif(
    not (_has("tflite_micro") and _has("tensorflow") and _has("ai_edge_litert")),
    reason="needs tflite-micro (pip install 'edgeseg[micro]', x86-64 only), TensorFlow, LiteRT",
)

# TFLM's and LiteRT's kernels for 1x1 convolutions round the requantization differently
# (convert/micro.py measures where, op by op): on this tiny model the int8 outputs were
# measured at most 2 steps apart, one step of room for another CPU's XNNPACK kernels; a kernel
# that computed something else would be dozens of steps off.
MAX_STEPS = 4


def _c_bytes(cc: str) -> bytes:
    body = cc.split("[] = {", 1)[1].split("};", 1)[0]
    return bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body))


# --------------------------------------------------------------------------------------------
# Without TFLM: profiles, the C source, the op resolver


def test_micro_profiles_load_with_their_memories() -> None:
    from edgeseg.devices.profiles import available_profiles

    profiles = available_profiles()
    m7, s3 = profiles["cortex-m7"].micro, profiles["esp32-s3"].micro
    assert m7 is not None and s3 is not None
    assert (m7.sram_bytes, m7.flash_bytes, m7.psram_bytes) == (512 * 1024, 2048 * 1024, 0)
    assert s3.psram_bytes == 8192 * 1024 and s3.sram_bytes == 512 * 1024
    assert profiles["rpi5"].micro is None
    assert "micro" in profiles["cortex-m4"].to_dict()


def test_micro_fit_names_what_is_needed_against_what_is_there() -> None:
    from edgeseg.devices.profiles import available_profiles, micro_fit

    profiles = available_profiles()
    fit = micro_fit(profiles["cortex-m7"], 100_000, 200_000)
    assert fit.fits and fit.arena_in == "SRAM"
    # 600 KB of arena: too much for the ESP32-S3's SRAM left, fine in its PSRAM.
    s3 = micro_fit(profiles["esp32-s3"], 100_000, 600_000)
    assert s3.fits and s3.arena_in == "PSRAM"
    big = micro_fit(profiles["cortex-m4"], 2_000_000, 600_000)
    assert not big.fits and big.arena_in is None and len(big.problems) == 2
    assert "1953.1 KB of flash" in big.problems[0] and "832.0 KB" in big.problems[0]
    assert "585.9 KB of RAM" in big.problems[1] and "208.0 KB of SRAM" in big.problems[1]
    with pytest.raises(DataError, match="not a microcontroller profile"):
        micro_fit(profiles["rpi5"], 1, 1)


def test_micro_profile_files_are_checked(tmp_path: Path) -> None:
    from edgeseg.devices.profiles import load_profile

    bad = tmp_path / "mcu.toml"
    bad.write_text('name = "mcu"\ntitle = "t"\nrecipe = "int8"\n[micro]\ncore = "M0"\n')
    with pytest.raises(DataError, match="needs flash_kb"):
        load_profile(str(bad))
    bad.write_text(
        'name = "mcu"\ntitle = "t"\nrecipe = "int8"\n'
        '[micro]\ncore = "M0"\nsram_kb = 32\nflash_kb = 256\nram = 1\n'
    )
    with pytest.raises(DataError, match="unknown key"):
        load_profile(str(bad))


def test_run_refuses_a_microcontroller_profile(tmp_path: Path) -> None:
    model = probe_model(tmp_path / "m.tflite")
    result = runner.invoke(app, ["run", str(model), "--device", "cortex-m7", "--headless"])
    one_line_error(result, "cortex-m7", "microcontroller", "convert MODEL --micro")


def test_c_array_and_identifiers() -> None:
    from edgeseg.convert.micro import c_array, c_identifier

    assert c_identifier("unet-v2.1") == "unet_v2_1"
    assert c_identifier("3d unet") == "m_3d_unet"
    data = bytes(range(256)) * 3 + b"\x07"
    cc = c_array(data, "unet", "unet_model_data.h", "unet_micro.tflite")
    assert "alignas(16) const unsigned char g_unet_model_data[]" in cc
    assert f"g_unet_model_data_len = {len(data)};" in cc
    assert _c_bytes(cc) == data


def test_resolver_lists_the_ops_and_refuses_float_io(tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    from edgeseg.convert.micro import check_target, op_resolver_header, resolver_ops

    data = probe_model(tmp_path / "m.tflite").read_bytes()  # x + x, float32
    ops = resolver_ops(data)
    assert ops == (("ADD", "AddAdd", 1),)
    header = op_resolver_header(ops, "probe", "probe_micro.tflite")
    assert "tflite::MicroMutableOpResolver<probe_op_count>" in header
    assert "constexpr unsigned int probe_op_count = 1;" in header
    assert re.findall(r"resolver\.(Add\w+)\(\)", header) == ["AddAdd"]
    with pytest.raises(DataError, match="float32 input"):
        check_target(data, "m.tflite")


def test_threshold_in_int8_matches_the_float_rule() -> None:
    from edgeseg.convert.micro import threshold_q
    from edgeseg.core.metadata import ModelMetadata
    from edgeseg.core.quant import TensorInfo, dequantize

    info = TensorInfo("out", 0, (1, 8, 8, 1), "int8", 1 / 256, -128)
    for thr in (0.5, 0.37, 0.01, 0.999):
        tq = threshold_q(ModelMetadata(input_size=(8, 8), threshold=thr), info)
        qs = np.arange(-128, 128)
        assert np.array_equal(qs > tq, dequantize(qs, info) > np.float32(thr)), thr


# --------------------------------------------------------------------------------------------
# With TFLM: the whole path on a tiny U-Net


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 32x32 U-Net (4 filters, depth 2) with the same weights every run (seeded:
    conftest's tiny_unet is not, and a random draw can leave its masks at the threshold)."""
    if not (_has("tflite_micro") and _has("tensorflow") and _has("ai_edge_litert")):
        pytest.skip("needs tflite-micro, TensorFlow and LiteRT")
    from edgeseg.core.metadata import ModelMetadata, write_sidecar

    path = tmp_path_factory.mktemp("tiny-micro") / "tiny.keras"
    keras_unet().save(path)
    write_sidecar(ModelMetadata(input_size=(32, 32)), path)
    return path


@pytest.fixture(scope="module")
def micro_build(tiny_unet: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """tiny_unet converted with --int8 --micro --device cortex-m7: (out folder, data)."""
    from edgeseg.samples import SynthConfig, write_dataset

    root = tmp_path_factory.mktemp("micro")
    data = write_dataset(root / "data", 8, SynthConfig(size=(64, 64)), seed=3)
    out = root / "build"
    result = runner.invoke(
        app,
        ["convert", str(tiny_unet), "--int8", "--micro", "--device", "cortex-m7",
         "--calib", str(data / "images"), "--val", str(data), "--out", str(out),
         # An untrained model: its masks hover at the threshold; the gate is not under test.
         "--min-dice-agreement", "0.5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "fits cortex-m7" in result.output
    return out, data


@needs_tflm
def test_micro_files_and_c_array(micro_build: tuple[Path, Path]) -> None:
    out, _ = micro_build
    tflite = out / "tiny_micro.tflite"
    for name in ("tiny_micro.tflite", "tiny_model_data.cc", "tiny_model_data.h",
                 "tiny_op_resolver.h", "tiny_int8.tflite", "tiny_parity.json"):  # fmt: skip
        assert (out / name).is_file(), name
    cc = (out / "tiny_model_data.cc").read_text()
    assert _c_bytes(cc) == tflite.read_bytes()
    assert "alignas(16)" in cc and '#include "tiny_model_data.h"' in cc
    # The same int8 conversion as the LiteRT artefact: the graph is the int8 artefact's.
    from edgeseg.core.tflite_file import op_histogram, tensor_summary

    a, b = tensor_summary(tflite), tensor_summary(out / "tiny_int8.tflite")
    assert a.weight_bytes == b.weight_bytes and op_histogram(tflite) == op_histogram(
        out / "tiny_int8.tflite"
    )


@needs_tflm
def test_resolver_header_lists_exactly_the_models_ops(micro_build: tuple[Path, Path]) -> None:
    from edgeseg.convert.micro import RESOLVER_METHODS
    from edgeseg.core.tflite_file import op_histogram

    out, _ = micro_build
    header = (out / "tiny_op_resolver.h").read_text()
    ops = op_histogram(out / "tiny_micro.tflite")
    added = re.findall(r"resolver\.(Add\w+)\(\)", header)
    assert sorted(added) == sorted(RESOLVER_METHODS[op] for op in ops)
    assert {"AddConv2D", "AddMaxPool2D", "AddConcatenation", "AddLogistic"} <= set(added)
    assert f"tiny_op_count = {len(ops)};" in header


@needs_tflm
def test_arena_and_header_figures_run_in_tflm(micro_build: tuple[Path, Path]) -> None:
    from tflite_micro import runtime

    from edgeseg.core.tflite_file import read_embedded

    out, _ = micro_build
    tflite = out / "tiny_micro.tflite"
    figures = read_embedded(tflite)["micro"]
    arena = figures["arena"]
    header = (out / "tiny_model_data.h").read_text()
    size = int(re.search(r"tiny_arena_size = (\d+);", header).group(1))
    assert size == arena["arena_bytes"] > arena["used_bytes"] > 0
    data = tflite.read_bytes()
    it = runtime.Interpreter.from_bytes(data, arena_size=arena["used_bytes"])
    detail = it.get_input_details(0)
    scale = float(re.search(r"tiny_input_scale = ([0-9.e-]+)f;", header).group(1))
    zero = int(re.search(r"tiny_input_zero_point = (-?\d+);", header).group(1))
    assert np.float32(scale) == np.float32(detail["quantization_parameters"]["scales"][0])
    assert zero == int(detail["quantization_parameters"]["zero_points"][0])
    assert 'tiny_normalization[] = "scale"' in header
    it.set_input(np.zeros(tuple(detail["shape"]), np.int8), 0)
    it.invoke()
    # inspect shows the figures the model carries.
    result = runner.invoke(app, ["inspect", str(tflite)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"flash {len(data)} bytes" in text and f"tensor arena {size} bytes" in text


@needs_tflm
def test_tflm_matches_litert_int8(micro_build: tuple[Path, Path]) -> None:
    from edgeseg.convert.micro import MicroBackend, compare_raw
    from edgeseg.runtime.backends import load_backend

    out, _ = micro_build
    report = json.loads((out / "tiny_parity.json").read_text())
    rows = {a["recipe"]: a for a in report["artefacts"]}
    micro = rows["micro (TFLM)"]
    raw = micro["micro"]["raw_vs_litert"]
    assert raw["tiles"] > 0 and raw["max_steps"] <= MAX_STEPS
    assert micro["micro"]["labels_vs_litert"]["dice"] >= 0.9
    # Where they part, op by op (when they do): every op of the model listed, the first
    # convolution identical in both runtimes.
    layers = micro["micro"]["layers_vs_builtin"]
    if raw["max_steps"]:
        assert len(layers) == sum(micro["ops"].values()) and layers[0]["max_steps"] == 0
        assert "the first to differ" in " ".join(micro["notes"])
    assert micro["micro"]["fit"]["fits"] and micro["micro"]["fit"]["profile"] == "cortex-m7"
    md = (out / "tiny_parity.md").read_text()
    assert "| micro (TFLM) |" in md and "## TensorFlow Lite Micro" in md
    # Independently: random int8 tiles through both interpreters.
    tflite = out / "tiny_micro.tflite"
    backend = MicroBackend(tflite, micro["micro"]["arena"]["arena_bytes"])
    rng = np.random.default_rng(5)
    tiles = rng.integers(-128, 128, (6, *backend.input.shape[1:]), dtype=np.int8)
    again = compare_raw(backend, load_backend(tflite), tiles)
    assert again.tiles == 6 and again.max_steps <= MAX_STEPS and again.equal_share > 0.5


def _profile(tmp_path: Path, sram_kb: int, flash_kb: int) -> Path:
    path = tmp_path / "tiny-mcu.toml"
    path.write_text(
        'name = "tiny-mcu"\ntitle = "a tiny MCU"\nrecipe = "int8"\n'
        f'[micro]\ncore = "Cortex-M0+"\nsram_kb = {sram_kb}\nflash_kb = {flash_kb}\n'
    )
    return path


@needs_tflm
@pytest.mark.parametrize(
    ("sram_kb", "flash_kb", "needles"),
    [
        (512, 8, ("of flash", "tiny-mcu has 8.0 KB", "edgeseg distill")),  # model too big
        (8, 2048, ("tensor arena needs", "8.0 KB of SRAM", "edgeseg distill")),  # arena
    ],
)
def test_model_or_arena_too_big_is_one_line_and_keeps_the_files(
    micro_build: tuple[Path, Path],
    tiny_unet: Path,
    tmp_path: Path,
    sram_kb: int,
    flash_kb: int,
    needles: tuple[str, ...],
) -> None:
    _, data = micro_build
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["convert", str(tiny_unet), "--micro", "--device", str(_profile(tmp_path, sram_kb,
         flash_kb)), "--calib", str(data / "images"), "--val", str(data), "--out", str(out),
         "--min-dice-agreement", "0.5"],
    )  # fmt: skip
    one_line_error(result, "does not fit tiny-mcu", *needles)
    for name in ("tiny_micro.tflite", "tiny_model_data.cc", "tiny_op_resolver.h"):
        assert (out / name).is_file(), name
    fit = json.loads((out / "tiny_parity.json").read_text())["artefacts"][0]["micro"]["fit"]
    assert fit["fits"] is False and fit["problems"]


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--micro", "--device", "cortex-m99"], ("'cortex-m99'", "cortex-m7", "esp32-s3")),
        (["--micro", "--device", "rpi5"], ("rpi5 is not a microcontroller", "cortex-m7")),
        (["--int8", "--device", "cortex-m7"], ("--device", "--micro")),
    ],
)
def test_bad_micro_requests_are_one_line(
    tmp_path: Path, extra: list[str], needles: tuple[str, ...]
) -> None:
    if not _has("tflite_micro"):
        pytest.skip("needs tflite-micro")
    model = tmp_path / "m.keras"
    model.write_bytes(b"not read: the request is refused first")
    result = runner.invoke(
        app, ["convert", str(model), *extra, "--calib", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    one_line_error(result, *needles)


def test_micro_without_calibration_is_one_line(tmp_path: Path) -> None:
    if not _has("tflite_micro"):
        pytest.skip("needs tflite-micro")
    model = tmp_path / "m.keras"
    model.write_bytes(b"x")
    result = runner.invoke(
        app, ["convert", str(model), "--micro", "--val", str(tmp_path), "--out", str(tmp_path)]
    )
    one_line_error(result, "--calib", "int8")


def test_micro_without_tflite_micro_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tflite_micro", None)  # import fails as if not installed
    from edgeseg.convert.micro import tflm

    with pytest.raises(MissingDependencyError, match=r"edgeseg\[micro\]"):
        tflm()
    model = tmp_path / "m.keras"
    model.write_bytes(b"x")
    result = runner.invoke(
        app, ["convert", str(model), "--micro", "--calib", str(tmp_path), "--out", str(tmp_path)]
    )
    one_line_error(result, "tflite-micro", "edgeseg[micro]")


@needs_tflm
def test_generated_c_source_compiles_and_quantizes_as_edgeseg(
    micro_build: tuple[Path, Path], tmp_path: Path
) -> None:
    """The .cc and .h build with the host's C++ compiler (warnings are errors); the array is
    16-byte aligned and holds the .tflite; the header's pixel helper gives the int8 input
    `edgeseg run` gives, for every 8-bit value (the op resolver header needs TFLM's sources,
    which no package registry ships: it is checked by its text above)."""
    import shutil
    import subprocess

    from edgeseg.core.metadata import ModelMetadata
    from edgeseg.core.preprocess import prepare_quantized
    from edgeseg.core.tflite_file import read_metadata

    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler (apt-get install g++)")
    out, _ = micro_build
    main = tmp_path / "main.cc"
    main.write_text(
        '#include <cstdint>\n#include <cstdio>\n#include "tiny_model_data.h"\n'
        "int main() {\n"
        "  unsigned long sum = 0;\n"
        "  for (unsigned i = 0; i < g_tiny_model_data_len; ++i) sum += g_tiny_model_data[i];\n"
        '  std::printf("%u %lu %d\\n", g_tiny_model_data_len, sum,\n'
        "    static_cast<int>(reinterpret_cast<std::uintptr_t>(g_tiny_model_data) % 16));\n"
        "  for (int p = 0; p < 256; ++p)\n"
        '    std::printf("%d ", tiny_quantize_pixel(static_cast<float>(p), 0.0, 255.0));\n'
        "  return 0;\n}\n"
    )
    exe = tmp_path / "main"
    subprocess.run(
        [compiler, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I", str(out), str(main),
         str(out / "tiny_model_data.cc"), "-o", str(exe)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    first, second = subprocess.run(
        [str(exe)], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    data = (out / "tiny_micro.tflite").read_bytes()
    assert first.split() == [str(len(data)), str(sum(data)), "0"]
    from edgeseg.convert.micro import MicroBackend

    meta = read_metadata(out / "tiny_micro.tflite")
    assert isinstance(meta, ModelMetadata) and meta.normalization == "scale"
    info = MicroBackend(out / "tiny_micro.tflite", 1 << 20).input
    expected = prepare_quantized(np.arange(256, dtype=np.uint8)[None, :], meta, info)
    assert [int(v) for v in second.split()] == expected.ravel().tolist()


def test_micro_extra_is_x86_64_only_and_in_all() -> None:
    """`pip install ".[all]"` must still install on aarch64, where tflite-micro has no wheel."""
    from packaging.requirements import Requirement

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())[
        "project"
    ]["optional-dependencies"]
    assert any(re.search(r"edgeseg\[[^]]*\bmicro\b", r) for r in extras["all"])
    (req,) = [Requirement(r) for r in extras["micro"]]
    assert req.name == "tflite-micro" and req.marker is not None
    assert req.marker.evaluate({"platform_machine": "x86_64"})
    assert not req.marker.evaluate({"platform_machine": "aarch64"})


@needs_tflm
def test_micro_under_the_gate_is_kept_as_rejected(
    micro_build: tuple[Path, Path], tiny_unet: Path, tmp_path: Path
) -> None:
    _, data = micro_build
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["convert", str(tiny_unet), "--micro", "--calib", str(data / "images"), "--val",
         str(data), "--out", str(out), "--min-dice-agreement", "1.0"],
    )  # fmt: skip
    one_line_error(result, "micro (TFLM)", "below the gate")
    assert (out / "tiny_micro.rejected.tflite").is_file()
    assert not (out / "tiny_micro.tflite").exists()
    assert (out / "tiny_model_data.cc").is_file() and (out / "tiny_parity.md").is_file()
