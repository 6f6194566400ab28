"""Helpers shared by several test modules (fixtures live in conftest.py).

Test modules import from here, never from each other or from conftest.py.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeseg.core.metadata import ModelMetadata
from edgeseg.errors import DataError
from edgeseg.runtime.sinks import SinkBase
from edgeseg.runtime.stream_base import StreamBase

# --------------------------------------------------------------------------------------------
# The command line: light imports and one-line errors
# --------------------------------------------------------------------------------------------

HEAVY = ("tensorflow", "keras", "cv2", "ai_edge_litert", "tflite_runtime", "tifffile", "h5py")


def imported_after(code: str) -> set[str]:
    """Modules loaded after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def imported_by_cli(argv: list[str]) -> set[str]:
    """Modules loaded after running ``edgeseg *argv`` in a fresh interpreter."""
    return imported_after(
        "import sys\n"
        f"sys.argv = ['edgeseg', *{argv!r}]\n"
        "from edgeseg.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )


def one_line_error(result: Any, *needles: str) -> str:
    """Assert a clean failure: non-zero exit, no traceback, one error line naming the needles."""
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------------------------
# Data on disk: labelled folders and videos
# --------------------------------------------------------------------------------------------


def write_pairs(
    root: Path,
    n: int = 3,
    size: tuple[int, int] = (48, 40),
    image_dtype: type = np.uint8,
    channels: int = 1,
    suffix: str = ".png",
    mask_values: tuple[int, ...] = (0, 255),
    seed: int = 0,
) -> Path:
    """Write ``n`` random image/mask pairs under root/images and root/masks."""
    from edgeseg.imageio import write_image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    top = np.iinfo(image_dtype).max
    shape = size if channels == 1 else (*size, channels)
    for i in range(n):
        img = rng.integers(0, top, size=shape, dtype=image_dtype)
        mask = rng.choice(np.array(mask_values, dtype=np.uint8), size=size)
        write_image(root / "images" / f"{i}{suffix}", img)
        write_image(root / "masks" / f"{i}.png", mask)
    return root


def write_video(path: Path, n: int, size: tuple[int, int] = (48, 64)) -> Path:
    """MJPG .avi at 10 fps whose frame i is red i*8 with a white bar i+1 pixels wide."""
    cv2 = pytest.importorskip("cv2")
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    assert writer.isOpened()
    for i in range(n):
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0] = i * 8
        rgb[:, : i + 1] = 255
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_nuclei_video(path: Path, n: int, size: tuple[int, int], seed: int) -> Path:
    """MJPG .avi at 10 fps of ``n`` synthetic 8-bit microscopy frames of ``size`` (H, W)."""
    cv2 = pytest.importorskip("cv2")
    from edgeseg.samples import SyntheticStream

    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    stream = SyntheticStream(size=size, seed=seed)
    for _ in range(n):
        frame, _mask = stream.read()
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def read_video(path: Path, *, rgb: bool = False) -> list[np.ndarray]:
    """Every frame of a video file, as OpenCV decodes it (BGR), or RGB with ``rgb``."""
    cv2 = pytest.importorskip("cv2")
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if rgb else frame)
    cap.release()
    return frames


# --------------------------------------------------------------------------------------------
# Metadata of small models
# --------------------------------------------------------------------------------------------

BINARY = ModelMetadata(input_size=(32, 32))
THREE = ModelMetadata(
    input_size=(32, 32), num_classes=3, class_names=("background", "nucleus", "membrane")
)

# --------------------------------------------------------------------------------------------
# Tiny models: the doctor's probe (no TensorFlow) and 32x32 U-Nets converted once per session
# --------------------------------------------------------------------------------------------

SIZE = 32
META = ModelMetadata(input_size=(SIZE, SIZE), threshold=0.4, provenance={"data": "synthetic"})


def probe_model(path: Path, recipe: str | None = None, precision: str = "fp32") -> Path:
    """The 300-byte (1, 8, 8, 1) float model of `doctor` (x + x), optionally with edgeseg
    metadata and a recipe embedded as `edgeseg convert` does. No TensorFlow needed."""
    from edgeseg.devices.doctor import probe_model_bytes

    data = probe_model_bytes()
    if recipe is not None:
        from edgeseg.core.tflite_file import embed_metadata

        extra = {"recipe": {"name": recipe, "precision": precision}}
        data = embed_metadata(data, ModelMetadata(input_size=(8, 8)), extra=extra)
    path.write_bytes(data)
    return path


@functools.cache
def keras_unet() -> Any:
    """An untrained 32x32 U-Net (4 filters, depth 2), the same weights every run."""
    keras = pytest.importorskip("keras")
    from edgeseg.model.unet import UNetConfig, build_unet

    keras.utils.set_random_seed(0)
    return build_unet(UNetConfig(input_size=(SIZE, SIZE), base_filters=4, depth=2))


def small_model(kind: str) -> Any:
    """A small Keras model that is not a U-Net: dense (rank-2 output), dynamic (any image
    size) or batch2 (a static batch of 2)."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(1)
    if kind == "dense":  # a classifier: rank-2 output
        inp = keras.Input((SIZE, SIZE, 1))
        out = keras.layers.Dense(2)(keras.layers.Flatten()(inp))
    elif kind == "dynamic":  # any image size
        inp = keras.Input((None, None, 1))
        out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp)
    elif kind == "batch2":  # a static batch of 2
        inp = keras.Input((SIZE, SIZE, 1), batch_size=2)
        out = keras.layers.Conv2D(2, 3, padding="same", activation="sigmoid")(inp)
    else:
        raise ValueError(kind)
    return keras.Model(inp, out)


@functools.cache
def tflite_bytes(kind: str) -> bytes:
    """Converted .tflite bytes: float, int8 / uint8 (full integer, int8 or uint8 I/O),
    int8_float_io (int8 inside, float I/O), dense, dynamic, batch2."""
    tf = pytest.importorskip("tensorflow")
    model = keras_unet() if kind in ("float", "int8", "uint8", "int8_float_io") else None
    converter = tf.lite.TFLiteConverter.from_keras_model(model or small_model(kind))
    if kind in ("int8", "uint8", "int8_float_io"):

        def representative():
            rng = np.random.default_rng(1)  # the same calibration for every integer model
            for _ in range(8):
                yield [rng.random((1, SIZE, SIZE, 1), dtype=np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if kind != "int8_float_io":
            io_type = tf.int8 if kind == "int8" else tf.uint8
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
    with warnings.catch_warnings():
        # "Statistics for quantized inputs were expected": the representative set gives them.
        warnings.simplefilter("ignore", UserWarning)
        return converter.convert()


# --------------------------------------------------------------------------------------------
# A tiny .tflite model whose foreground is known: pixels brighter than the frame's midrange
# --------------------------------------------------------------------------------------------


def _bright_keras(size: tuple[int, int]) -> Any:
    """The Keras 1x1-conv sigmoid behind :func:`bright_model` and :func:`bright_int8_model`."""
    keras = pytest.importorskip("keras")
    inp = keras.Input((*size, 1), batch_size=1)
    out = keras.layers.Conv2D(
        1, 1, activation="sigmoid",
        kernel_initializer=keras.initializers.Constant(20.0),
        bias_initializer=keras.initializers.Constant(-10.0),
    )(inp)  # fmt: skip
    return keras.Model(inp, out)


def bright_model(
    path: Path, size: int | tuple[int, int] = 64, metadata: bool = True, **meta: Any
) -> Path:
    """A 1x1-conv 'U-Net' (.tflite) that marks pixels brighter than the frame's midrange
    (percentile normalization embedded): foreground is known exactly, whatever the tiling.
    ``size``: N or (H, W); ``meta``: other metadata fields (``frame_size`` for a whole-frame
    artefact, ``threshold``…). Needs TensorFlow."""
    tf = pytest.importorskip("tensorflow")
    from edgeseg.core.tflite_file import embed_metadata

    hw = (size, size) if isinstance(size, int) else tuple(size)
    data = tf.lite.TFLiteConverter.from_keras_model(_bright_keras(hw)).convert()
    if metadata:
        data = embed_metadata(
            data, ModelMetadata(input_size=hw, normalization="percentile", **meta)
        )
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------
# Frames that carry their own number (recordings that must keep every frame, in order)
# --------------------------------------------------------------------------------------------

INDEX_BITS = 10  # frames 0..1023
INDEX_CELL = 16  # pixels per bit: survives MJPG and mp4v compression


def index_frame(i: int, height: int = 48) -> np.ndarray:
    """An RGB uint8 frame (height, INDEX_BITS * INDEX_CELL) whose cells spell ``i`` in
    binary, most significant bit first: white for 1, black for 0."""
    frame = np.zeros((height, INDEX_BITS * INDEX_CELL, 3), np.uint8)
    for bit in range(INDEX_BITS):
        if (i >> (INDEX_BITS - 1 - bit)) & 1:
            frame[:, bit * INDEX_CELL : (bit + 1) * INDEX_CELL] = 255
    return frame


def frame_index(frame: np.ndarray) -> int:
    """The number :func:`index_frame` wrote into ``frame`` (as decoded from a video)."""
    value = 0
    for bit in range(INDEX_BITS):
        cell = frame[:, bit * INDEX_CELL + 4 : (bit + 1) * INDEX_CELL - 4]
        value = (value << 1) | int(cell.mean() > 127)
    return value


# --------------------------------------------------------------------------------------------
# A live camera that fails and comes back, and sinks that record what the pipeline gives them
# --------------------------------------------------------------------------------------------


class FakeCamera:
    """A fake live camera. Each stream it opens delivers 32x32 uint8 frames filled with a
    running number (shared by all its streams), then fails as ``faults`` says for that stream
    (stream 0 the first item, …; a missing or None item: never): ``(frames, how)`` with how
    "none" (read() returns None), "raise" (read() raises) or "hang" (read() blocks until
    ``unhang`` is set, then returns None).

    :meth:`reopen` (pass it to CaptureThread) raises DataError until ``back`` is set; with
    ``open_gate`` it first blocks until that is set (an open that hangs). ``pace`` (seconds)
    throttles reads so an endless stream does not spin.
    """

    def __init__(
        self,
        faults: list[tuple[int, str] | None],
        *,
        pace: float = 0.002,
        back: bool = True,
        open_gate: threading.Event | None = None,
    ) -> None:
        self.faults = faults
        self.pace = pace
        self.back = threading.Event()
        if back:
            self.back.set()
        self.unhang = threading.Event()
        self.open_gate = open_gate
        self.counter = 0
        self.reopen_attempts = 0
        self.streams: list[FakeLiveStream] = []
        self.lock = threading.Lock()
        self.open()

    def open(self) -> FakeLiveStream:
        k = len(self.streams)
        stream = FakeLiveStream(self, self.faults[k] if k < len(self.faults) else None)
        self.streams.append(stream)
        return stream

    def reopen(self) -> FakeLiveStream:
        with self.lock:
            self.reopen_attempts += 1
        if self.open_gate is not None:
            self.open_gate.wait()
        if not self.back.is_set():
            raise DataError("camera 9 is not back: no /dev/video9")
        return self.open()

    def next_value(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter - 1


class FakeLiveStream(StreamBase):
    """One stream of a :class:`FakeCamera` (counts its reads and closes)."""

    def __init__(self, camera: FakeCamera, fault: tuple[int, str] | None) -> None:
        from edgeseg.runtime.streams import StreamInfo

        self.info = StreamInfo(
            uri="camera://9", description="camera 9 (fake)", live=True, fps=None, size=(32, 32)
        )
        self.warnings: list[str] = [f"stream {len(camera.streams)} opened"]
        self.camera = camera
        self.fault = fault
        self.reads = 0
        self.closed = 0

    def read(self) -> np.ndarray | None:
        if self.fault is not None and self.reads >= self.fault[0]:
            how = self.fault[1]
            if how == "raise":
                raise RuntimeError("VIDIOC_DQBUF: No such device")
            if how == "hang":
                self.camera.unhang.wait()
            return None
        if self.camera.pace:
            time.sleep(self.camera.pace)
        self.reads += 1
        return np.full((32, 32), self.camera.next_value() % 256, np.uint8)

    def close(self) -> None:
        self.closed += 1


class ListSink(SinkBase):
    """A sink that keeps what it is given: ``frames`` (index, labels shape) and ``records``."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, tuple[int, ...]]] = []
        self.records: list[dict[str, Any]] = []
        self.closed = False

    def write(self, index: int, rendered: np.ndarray, labels: np.ndarray, record: dict) -> None:
        self.frames.append((index, labels.shape))
        self.records.append(record)

    def close(self) -> None:
        self.closed = True


class StatusSink(ListSink):
    """A :class:`ListSink` with the optional ``status`` method: every status it hears goes to
    ``statuses``, then to ``on_status(message)`` (the test's hook) when given."""

    def __init__(self, on_status: Any = None) -> None:
        super().__init__()
        self.statuses: list[str | None] = []
        self._on_status = on_status

    def status(self, message: str | None) -> None:
        self.statuses.append(message)
        if self._on_status is not None:
            self._on_status(message)


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    """Poll ``condition()`` until it is true; fail after ``timeout`` seconds (a guard only)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# --------------------------------------------------------------------------------------------
# The command line in a child process: what really reaches the terminal (fd 1 and 2)
# --------------------------------------------------------------------------------------------

#: What TensorFlow, absl, oneDNN, the converters, LiteRT and Keras print; never on the console.
TF_NOISE = (
    "Saved artifact at",
    "TensorSpec(",
    "absl",
    "oneDNN",
    "WARNING: All log messages before absl",
    "UserWarning",
    "Warning:",
    "tensorflow/",
    "W0000",
    "I0000",
    "E0000",
    "Created TensorFlow Lite XNNPACK delegate",
    "fully_quantize",
    "Traceback",
)


def edgeseg_subprocess(
    argv: list[str], cache: Path, *, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run ``edgeseg *argv`` in a child process with pipes for stdout and stderr (not a
    terminal), TensorFlow's log level untouched and the user cache folder at ``cache``."""
    import os

    child_env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
    child_env.pop("EDGESEG_VERBOSE", None)
    child_env.pop("COLUMNS", None)
    child_env["XDG_CACHE_HOME"] = str(cache)
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edgeseg.cli.main", *argv],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


# --------------------------------------------------------------------------------------------
# Instance models (two sigmoid outputs: foreground, interior) and instance-labelled folders
# --------------------------------------------------------------------------------------------


def instance_meta(size: int = SIZE, **changes: Any) -> ModelMetadata:
    """Metadata of an instance model of ``size``² tiles (default InstanceSpec)."""
    from edgeseg.core.instances import InstanceSpec

    return ModelMetadata(input_size=(size, size), instances=InstanceSpec().to_dict(), **changes)


def instance_unet(size: int = SIZE, decoder: str = "transpose", seed: int = 0) -> Any:
    """An untrained U-Net (4 filters, depth 2) whose head is two sigmoid channels."""
    keras = pytest.importorskip("keras")
    from edgeseg.model.unet import UNetConfig, build_unet

    keras.utils.set_random_seed(seed)
    base = {"input_size": (size, size), "base_filters": 4, "depth": 2, "decoder": decoder}
    if "sigmoid_outputs" in UNetConfig.__dataclass_fields__:
        return build_unet(UNetConfig(**base, sigmoid_outputs=2))
    body = build_unet(UNetConfig(**base))  # graft two sigmoid channels on its last block
    x = body.get_layer("dec0_relu2").output
    head = keras.layers.Conv2D(2, 1, activation="sigmoid", name="head")(x)
    return keras.Model(body.input, head, name="unet")


def disk_instance_model(size: int = SIZE) -> Any:
    """A fixed-weight instance model for bright disks on a dark ground (frames scaled to
    [0, 1]): foreground where a pixel is above 0.4, interior where the 7x7 mean is above
    0.6, so touching disks keep separate interiors. Deterministic, no training."""
    keras = pytest.importorskip("keras")
    inp = keras.Input((size, size, 1), name="image")
    head = keras.layers.Conv2D(2, 7, padding="same", activation="sigmoid", name="head")
    out = head(inp)
    kernel = np.zeros((7, 7, 1, 2), np.float32)
    kernel[3, 3, 0, 0] = 20.0
    kernel[:, :, 0, 1] = 30.0 / 49
    head.set_weights([kernel, np.array([-20.0 * 0.4, -30.0 * 0.6], np.float32)])
    return keras.Model(inp, out, name="disks")


def write_instance_pairs(
    root: Path, n: int = 4, size: tuple[int, int] = (96, 96), seed: int = 0
) -> Path:
    """``n`` 8-bit images of bright disks, many touching, under root/images, and their
    uint16 instance labels (one id per disk, 0 background) under root/labels."""
    from edgeseg.imageio import write_image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    h, w = size
    ys, xs = np.indices(size)
    for i in range(n):
        centres: list[tuple[float, float, float]] = []
        for _ in range(400):
            if len(centres) >= 14:
                break
            r = float(rng.uniform(5, 8))
            y, x = rng.uniform(r, h - r), rng.uniform(r, w - r)
            # Touching is welcome, deep overlap is not.
            if all(np.hypot(y - cy, x - cx) >= r + cr - 1 for cy, cx, cr in centres):
                centres.append((y, x, r))
        labels = np.zeros(size, np.uint16)
        best = np.full(size, np.inf)
        for k, (cy, cx, r) in enumerate(centres, start=1):
            d = np.hypot(ys - cy, xs - cx)
            take = (d <= r) & (d / r < best)  # overlaps go to the nearer centre
            labels[take] = k
            best[take] = (d / r)[take]
        image = np.where(labels > 0, 200, 20) + rng.normal(0, 6, size)
        write_image(root / "images" / f"w{i % 2}_{i}.png", np.clip(image, 0, 255).astype(np.uint8))
        write_image(root / "labels" / f"w{i % 2}_{i}.png", labels)
    return root


# --------------------------------------------------------------------------------------------
# A tiny instance model: two sigmoid outputs (foreground, interior) from the brightness
# --------------------------------------------------------------------------------------------


def instance_model(path: Path, size: int = 64, pixel_size_um: float | None = None) -> Path:
    """A 1x1-conv instance 'U-Net' (.tflite) with two sigmoid outputs: foreground where the
    normalized pixel is above 0.5, interior (the seeds) above 0.7 (percentile normalization
    and ``instances`` embedded). Bright blobs with brighter cores are objects. Needs
    TensorFlow."""
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    from edgeseg.core.instances import InstanceSpec
    from edgeseg.core.tflite_file import embed_metadata

    inp = keras.Input((size, size, 1), batch_size=1)
    out = keras.layers.Conv2D(
        2, 1, activation="sigmoid",
        kernel_initializer=keras.initializers.Constant(20.0),
        bias_initializer=keras.initializers.Constant(np.array([-10.0, -14.0])),
    )(inp)  # fmt: skip
    data = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, out)).convert()
    meta = ModelMetadata(
        input_size=(size, size),
        normalization="percentile",
        pixel_size_um=pixel_size_um,
        instances=InstanceSpec().to_dict(),
    )
    path.write_bytes(embed_metadata(data, meta))
    return path


def disc_labels(shape: tuple[int, int], discs: list[tuple[float, float, float]]) -> np.ndarray:
    """int32 instance ids of ``discs`` (cy, cx, r), ids 1.. in list order; a later disc owns
    the pixels it shares with an earlier one."""
    ys, xs = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    for k, (cy, cx, r) in enumerate(discs, start=1):
        labels[np.hypot(ys - cy, xs - cx) <= r] = k
    return labels


def labels_oracle(meta: ModelMetadata, scale: float = 1.0) -> Any:
    """A CallableBackend that reads instance ids from its input tile (channel 0 holds the
    ids / ``scale``) and returns their foreground and interior targets (a semantic model's
    metadata: the foreground alone), computed on the tile alone: a perfect model whose every
    tile sees only its own pixels."""
    from edgeseg.core.backend import CallableBackend
    from edgeseg.core.instances import instance_targets

    border = meta.instance_spec.border if meta.instance_spec else 2

    def predict(tiles: np.ndarray) -> np.ndarray:
        ids = np.rint(tiles[..., 0] * scale).astype(np.int32)
        if meta.instances is None:
            return (ids > 0).astype(np.float32)[..., None]
        return np.stack([instance_targets(t, border) for t in ids])

    return CallableBackend(predict, meta)


# --------------------------------------------------------------------------------------------
# A tiny int8 .tflite model whose label maps every runtime must reproduce exactly
# --------------------------------------------------------------------------------------------


def int8_tflite(model: Any, size: tuple[int, int], samples: int) -> bytes:
    """A one-channel Keras ``model`` of input ``size`` converted to full-integer int8 (int8
    input and output), calibrated on ``samples`` uniform random tiles (seeded). Needs
    TensorFlow."""
    tf = pytest.importorskip("tensorflow")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    rng = np.random.default_rng(0)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [rng.random((1, *size, 1), dtype=np.float32)] for _ in range(samples)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return converter.convert()


def bright_int8_model(path: Path, size: int = 32) -> Path:
    """:func:`bright_model` quantized to int8 with int8 input and output (percentile
    normalization embedded): a steep 1x1-conv sigmoid, so no label sits on the threshold and
    an integer runtime that feeds and reads the tensors right gives LiteRT's labels exactly.
    Needs TensorFlow."""
    from edgeseg.core.tflite_file import embed_metadata

    data = int8_tflite(_bright_keras((size, size)), (size, size), samples=8)
    meta = ModelMetadata(input_size=(size, size), normalization="percentile")
    path.write_bytes(embed_metadata(data, meta))
    return path


# --------------------------------------------------------------------------------------------
# Whole frames: a U-Net whose output depends on context, yet is stable without training
# --------------------------------------------------------------------------------------------


def intensity_unet(size: int = 64, seed: int = 0, context: float = 0.6) -> Any:
    """A depth-2 'same' U-Net (4 filters, no batch norm) that thresholds intensity at 0.5,
    shifted by its random encoder/decoder paths scaled by ``context``: a fixed, deterministic
    model whose label maps on real frames are not trivial and depend on the tile borders."""
    keras = pytest.importorskip("keras")
    from edgeseg.model.unet import UNetConfig, build_unet

    keras.utils.set_random_seed(seed)
    model = build_unet(
        UNetConfig(input_size=(size, size), base_filters=4, depth=2, batch_norm=False)
    )
    for layer in model.layers:
        weights = [w * context for w in layer.get_weights()]
        if not weights:
            continue
        if layer.name in ("enc0_conv1", "enc0_conv2", "dec0_conv1", "dec0_conv2"):
            # Channel 0 carries the pixel itself (skips come first in each concatenation).
            weights[0][:, :, :, 0] = 0.0
            weights[0][1, 1, 0, 0] = 1.0
            weights[1][0] = 0.0
        if layer.name == "head":
            weights[0][0, 0, 0, 0] = 8.0
            weights[1][0] = -4.0
        layer.set_weights(weights)
    return model


# --------------------------------------------------------------------------------------------
# A one-node ONNX model: x → sigmoid(x)
# --------------------------------------------------------------------------------------------


def sigmoid_onnx(path: Path) -> Path:
    """An (1, 8, 8, 1) → (1, 8, 8, 1) ONNX model computing sigmoid(x), checked by ``onnx``."""
    onnx = pytest.importorskip("onnx")  # installed with tf2onnx
    from onnx import TensorProto, helper

    shape = [1, 8, 8, 1]
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["y"])],
        "sigmoid",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime since 1.10 reads
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path
