"""The one session builder: model + device policy + stream + sinks → a pipeline ready to run.

`edgeseg run`, `edgeseg demo` and `edgeseg bench --e2e` all build their pipeline here, so they
share one policy and `bench --e2e` measures what `run` does:

- a ``--device`` profile gives the delegate, the threads and the camera unless they are given;
- one interpreter gets every core, unless told otherwise;
- models with edgeseg metadata are tiled, others resized (``resize`` overrides);
- a finite source (file, folder, stack, a synthetic stream without a frame rate) on the CPU is
  processed by one interpreter per core (throughput); a live source or a delegate gets one
  interpreter (latency);
- the model is opened first (a bad model fails before anything else opens), then the outputs,
  before the source (a port in use or an unwritable path fails before the camera opens), in a
  fixed order: stream, CSV, objects, masks, recording, window. Picking among a model's
  artefacts needs the source's frame size, so then the source opens first (and closes again
  if anything else fails);
- ``--backend auto`` compares the runtimes on frames of the source's size: until the source is
  open the model runs on its own runtime (LiteRT, onnxruntime), then the pick is made (once
  per model, runtime versions, threads and frame size: cached) and the winner opened.

:func:`open_any_model` is the one way a command that takes any model file (``eval``, ``calib
build``) opens it: a device artefact through :func:`edgeseg.runtime.selection.open_selected`,
a Keras model through :mod:`edgeseg.model.resolve`.

It sits above ``runtime/`` and ``devices/`` (it reads device profiles), below the CLI.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.core.backend import Backend
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.segmenter import Segmenter, plan_frame
from edgeseg.errors import DataError
from edgeseg.run_options import RunOptions
from edgeseg.runtime.artefacts import Artefact, Choice
from edgeseg.runtime.backends import Opened, OpenedModel
from edgeseg.runtime.backends.registry import model_suffixes
from edgeseg.runtime.pipeline import RenderOptions, RunSummary, run_pipeline
from edgeseg.runtime.sinks import Sink
from edgeseg.runtime.streams import Stream

__all__ = [
    "DevicePolicy",
    "RunOptions",
    "Session",
    "any_model_metadata",
    "build_session",
    "device_policy",
    "open_any_model",
]


MASK_FORMATS = ("png", "tif")


@dataclass(frozen=True)
class DevicePolicy:
    """What a ``--device`` profile (or its absence) decides: delegate, threads, camera."""

    delegate: str
    threads: int
    camera: str | None  # the profile's camera pipeline (a stream URI)
    profile: Any = None  # the DeviceProfile, when one was named


def device_policy(
    device: str | None, *, delegate: str | None = None, threads: int | None = None
) -> DevicePolicy:
    """Fill what the user left out from the profile ``device`` (a name or .toml), else defaults.

    Defaults: the ``auto`` delegate and every core for one interpreter (LiteRT's own default
    is fewer).
    """
    profile = None
    if device is not None:
        from edgeseg.devices.profiles import load_profile

        profile = load_profile(device)
        if getattr(profile, "micro", None) is not None:
            raise DataError(
                f"{profile.name} is a microcontroller profile (TensorFlow Lite Micro): check a "
                f"model against it with `edgeseg convert MODEL --micro --device {profile.name}`"
            )
    return DevicePolicy(
        delegate=delegate or (profile.delegate if profile else "auto"),
        threads=threads or (profile.threads if profile else None) or os.cpu_count() or 1,
        camera=profile.camera if profile else None,
        profile=profile,
    )


@dataclass
class Session:
    """A pipeline ready to run: the opened stream, one segmenter per worker, the sinks.

    Attributes:
        model: the model asked for (with --fallback, the backend may run its CPU sibling).
        stream: the opened source.
        segmenters: one per worker, each with its own interpreter.
        sinks: the outputs, in the order they were opened.
        meta: the model's metadata (embedded, or inferred with the flags).
        opened: what runs the model, as data (runtime, device, delegate, threads, how chosen).
        backend: the start-up line's words for it, e.g. "CPU (XNNPACK, 2 threads) via
            ai-edge-litert 2.3.0" (``opened.describe()``, with the worker pool).
        mode: how frames reach the model: "whole frame 768x1024", "25 tiles of 256x256 for
            1024x1024 frames", "resizing to 256x256".
        messages: what was said while building (the stream URL, a missing window).
    """

    model: Path
    stream: Stream
    segmenters: list[Segmenter]
    sinks: list[Sink]
    meta: ModelMetadata
    opened: Opened
    backend: str
    mode: str
    render: RenderOptions
    max_frames: int | None = None
    retry: bool = True
    read_timeout: float = 5.0
    messages: list[str] = field(default_factory=list)
    metrics: Any = None  # the run's RunMetrics (--stream, --metrics), else None

    @property
    def description(self) -> str:
        """The start-up line: source → model on backend; tiling or resizing to the input."""
        return f"{self.stream.info.description} → {self.model.name} on {self.backend}; {self.mode}"

    def run(
        self, stop: threading.Event | None = None, *, handle_signals: bool = False
    ) -> RunSummary:
        """Run until the source ends, ``max_frames``, ``stop`` or (with ``handle_signals``, in
        the main thread) SIGINT/SIGTERM; every sink is closed and a summary returned."""
        from edgeseg.runtime.capture import CaptureThread
        from edgeseg.runtime.notify import Notifier, Watchdog

        stop = stop or threading.Event()
        # Under a Type=notify unit ($NOTIFY_SOCKET): READY once the source is open (or being
        # reopened), watchdog pets while frames flow, STATUS lines, STOPPING at the end.
        notifier = Notifier()
        watchdog: list[Watchdog] = []
        with _signals_set(stop) if handle_signals else _nothing():
            capture = CaptureThread(
                self.stream,
                max_frames=self.max_frames,
                retry=self.retry,
                read_timeout=self.read_timeout,
            ).start()
            if notifier.enabled:
                dog = Watchdog(notifier, stop=stop, in_flight=lambda: capture.delivered)
                watchdog.append(dog.start(self.description))
            return run_pipeline(
                capture,
                self.segmenters,
                [*self.sinks, *watchdog],
                stop=stop,
                render=self.render,
                source=self.stream.info.description,
                backend=self.backend,
            )

    def close(self) -> None:
        """Close the sinks and the stream without running (after a failure to start)."""
        for sink in self.sinks:
            sink.close()
        self.stream.close()


def build_session(
    options: RunOptions,
    *,
    extra_sinks: Sequence[Sink] = (),
    warn: Callable[[str], None] = lambda _msg: None,
) -> Session:
    """Open the model, the outputs and the source as `edgeseg run` does.

    ``extra_sinks`` (e.g. a timing sink for `bench --e2e`) come after the usual ones and count
    as outputs. ``warn`` hears what is worth saying at once (a delegate falling back, the
    stream's URL, a missing window). Raises DataError for bad options, before anything opens.
    """
    from edgeseg.dicom import parse_window, window_spec
    from edgeseg.runtime.artefacts import candidates, choose
    from edgeseg.runtime.backends import reopen
    from edgeseg.runtime.foreign_onnx import adapt_onnx
    from edgeseg.runtime.streams import open_stream, parse_source

    o = options
    policy = device_policy(o.device, delegate=o.delegate, threads=o.threads)
    suffixes = model_suffixes()
    if not o.model.is_dir() and o.model.suffix.lower() not in suffixes:
        raise DataError(
            f"{o.model} is not a {' or '.join(suffixes)} model; convert it first: "
            f"edgeseg convert {o.model} --int8 …"
        )
    if o.mask_format not in MASK_FORMATS:
        raise DataError(f"--mask-format must be png or tif, got {o.mask_format}")
    if not 0.0 <= o.alpha <= 1.0:
        raise DataError(f"--alpha must be between 0 and 1, got {o.alpha}")
    if o.pixel_size is not None and not (math.isfinite(o.pixel_size) and o.pixel_size > 0):
        raise DataError(
            f"--pixel-size must be a positive number of µm per pixel, got {o.pixel_size}"
        )
    source = o.source
    if o.camera is None and source is None:
        source = policy.camera
    uri = parse_source(o.camera, source)
    # A source ONNX (PyTorch's NCHW, logits) runs as its adapted copy: tiles of its tile
    # size, or --whole-frames at each frame's own size.
    model_file = o.model
    if not o.model.is_dir():
        model_file = adapt_onnx(
            o.model, activation=o.activation, whole_frames=o.whole_frames, flags=o.flags
        )
    elif o.activation is not None or o.whole_frames:
        raise DataError("--activation and --whole-frames take a source ONNX file, not a folder")
    # The model given, or the one of its siblings (whole-frame artefacts, a folder of them)
    # that fits the stream's frames: then the stream opens first, to know their size.
    arts = candidates(model_file)
    early: Stream | None = None
    choice = None
    window = parse_window(o.window)
    if len(arts) > 1:
        early = open_stream(uri, width=o.width, height=o.height, fps=o.fps, window=window)
    try:
        if early is not None:
            choice = choose(arts, early.info.size, o.overlap)
        path = choice.artefact.path if choice is not None else arts[0].path
        # --backend auto compares runtimes on the stream's frames: with no stream open yet,
        # the file's own runtime stands in until it is (and is kept if it wins).
        later = early is None and _auto_measures(path, o.backend, policy.delegate)
        model = _open_chosen(o, policy, path, early, warn, backend=None if later else o.backend)
    except BaseException:
        if early is not None:
            early.close()
        raise
    meta = model.meta
    tile = model.embedded if o.resize is None else not o.resize
    seg_options = {"resize": not tile, "overlap": o.overlap, "min_area": o.min_area}

    messages: list[str] = []
    try:
        sinks = _open_sinks(o, meta, messages, warn)
    except BaseException:
        if early is not None:
            early.close()
        raise
    sinks += extra_sinks
    try:
        if not sinks:
            raise DataError(
                "--headless with no output: add --record, --save-masks, --csv, --objects or "
                "--stream"
            )
        if window is None:
            window = parse_window(meta.dicom_window)
        elif meta.dicom_window is not None and window_spec(window) != meta.dicom_window:
            warn(
                f"--window {window_spec(window)}: the model was calibrated with {meta.dicom_window}"
            )
        stream = early or _open_or_wait(uri, o, warn, messages, window)
        if o.pixel_size is None and getattr(stream, "pixel_sizes", None):
            for sink in sinks:  # DICOM: each slice's own Pixel Spacing for object areas
                if hasattr(sink, "pixel_sizes"):
                    sink.pixel_sizes.update(stream.pixel_sizes)
        _prepare_recording(sinks, stream, messages, warn)
    except BaseException:
        for sink in sinks:
            sink.close()
        if early is not None:
            early.close()
        raise
    try:
        if later:
            model = _open_chosen(o, policy, path, stream, warn, backend=o.backend, reuse=model)
        opened, backend = model.opened, model.backend
        workers = o.workers
        if workers is None:
            workers = (os.cpu_count() or 1) if (not stream.info.live and opened.cpu) else 1
        segmenters = [Segmenter(backend, meta, **seg_options)]
        described = opened.describe()
        if workers > 1:
            if not opened.cpu:
                raise DataError("--workers above 1 runs several CPU interpreters, not a delegate")
            per = o.threads or max(1, (os.cpu_count() or 1) // workers)
            # One interpreter per worker, each with its share of the cores.
            pool = [reopen(opened, per) for _ in range(workers)]
            segmenters = [Segmenter(b, meta, **seg_options) for b in pool]
            described = opened.describe(workers=workers, threads_each=per)
    except BaseException:
        for sink in sinks:
            sink.close()
        stream.close()
        raise
    return Session(
        model=backend_model(o, arts, choice),
        stream=stream,
        segmenters=segmenters,
        sinks=sinks,
        meta=meta,
        opened=opened,
        backend=described,
        mode=_mode(meta, tile, stream.info.size, o.overlap, choice),
        render=RenderOptions(alpha=o.alpha, contours=o.contours, hud=o.hud),
        max_frames=o.max_frames,
        retry=o.retry,
        read_timeout=o.read_timeout,
        messages=messages,
        metrics=_describe_metrics(sinks, o, opened, described),
    )


def _describe_metrics(sinks: Sequence[Sink], o: RunOptions, opened: Opened, backend: str) -> Any:
    """The run's RunMetrics (when --stream or --metrics made one), told what runs and what
    the outputs are."""
    from edgeseg.runtime.metrics import RunMetrics
    from edgeseg.runtime.sinks import is_folder_target

    metrics = next((s for s in sinks if isinstance(s, RunMetrics)), None)
    if metrics is not None:
        metrics.describe(
            model=opened.model.name,
            runtime=opened.runtime,
            device=opened.device,
            accelerator=opened.accelerator,
            backend=backend,
        )
        files = [
            o.csv,
            o.objects,
            o.record if o.record and not is_folder_target(o.record) else None,
        ]
        folders = [p.parent for p in files if p is not None]
        folders += [p for p in (o.save_masks, o.record) if p is not None and p not in files]
        metrics.watch_outputs(sinks, folders=folders)
    return metrics


def _auto_measures(model: Path, backend: str | None, delegate: str) -> bool:
    """Whether ``--backend auto`` has runtimes to compare for ``model`` (then it compares
    them on the stream's frames)."""
    from edgeseg.runtime.backends import resolve_runtime
    from edgeseg.runtime.selection import candidates

    return resolve_runtime(model, backend, delegate) == "auto" and len(candidates(model)) > 1


def backend_model(o: RunOptions, arts: list[Artefact], choice: Choice | None) -> Path:
    """The model file that runs: the artefact chosen for the stream, else the one given."""
    if choice is not None:
        return choice.artefact.path
    return arts[0].path if o.model.is_dir() else o.model


def _mode(
    meta: ModelMetadata,
    tile: bool,
    size: tuple[int, int] | None,
    overlap: int,
    choice: Choice | None,
) -> str:
    """How frames reach the model, for the start-up line: whole frame, tiles, or resizing."""
    h, w = meta.input_size
    if not tile:
        return f"resizing to {h}x{w}"
    if meta.size_multiple is not None:
        return f"whole frames at their own size, padded to a multiple of {meta.size_multiple}"
    if choice is not None and choice.whole_frame:
        return choice.reason
    if size is None:
        return f"tiling to {h}x{w}"
    fh, fw = size
    if fh <= h and fw <= w and meta.output_border == 0:
        padded = "" if (fh, fw) == (h, w) else f", padded to {h}x{w}"
        return f"whole frame {fh}x{fw}{padded}"
    n = plan_frame((fh, fw), meta, overlap).n_tiles
    why = f" ({choice.reason})" if choice is not None else ""
    return f"{n} tiles of {h}x{w} for {fh}x{fw} frames{why}"


def _open_chosen(
    o: RunOptions,
    policy: DevicePolicy,
    path: Path,
    stream: Stream | None,
    warn: Callable[[str], None],
    *,
    backend: str | None,
    reuse: OpenedModel | None = None,
) -> OpenedModel:
    """The artefact chosen for the stream opened on the runtime ``backend`` names (auto:
    compared on the stream's frames; None: the file's own), reusing ``reuse`` when it is
    already open on the runtime picked."""
    from edgeseg.runtime.selection import open_selected

    return open_selected(
        path,
        backend=backend,
        frame_size=stream.info.size if stream is not None else None,
        delegate=policy.delegate,
        threads=policy.threads,
        fallback=o.fallback,
        device=o.edgetpu_device,
        warn=warn,
        explain=warn if o.explain else None,
        reuse=reuse,
        **o.flags,
    )


def open_any_model(
    model_path: str | Path,
    *,
    backend: str = "auto",
    frame_size: tuple[int, int] | None = None,
    trust_model: bool = False,
    threads: int | None = None,
    warn: Callable[[str], None] | None = None,
    explain: Callable[[str], None] | None = None,
    activation: str | None = None,
    whole_frames: bool = False,
    **flags: Any,
) -> tuple[Backend, ModelMetadata, str]:
    """(backend, metadata, what runs it) for any model file: .tflite, .onnx, .keras, .h5 or a
    SavedModel folder.

    A device artefact runs on the CPU as ``run`` opens it without a delegate (``backend``:
    auto, compared on frames of ``frame_size``, or a registered runtime; an ONNX model on
    onnxruntime's CPU provider); a Keras model runs in Keras (a float backend over its
    ``predict``) and takes only ``auto``. ``flags`` are the metadata overrides for models
    without edgeseg metadata; ``activation`` and ``whole_frames`` are for a source ONNX
    (:func:`edgeseg.runtime.foreign_onnx.adapt_onnx`).
    """
    path = Path(model_path)
    if path.suffix.lower() in model_suffixes():
        from edgeseg.runtime.foreign_onnx import adapt_onnx
        from edgeseg.runtime.selection import open_selected

        if path.is_file():
            path = adapt_onnx(path, activation=activation, whole_frames=whole_frames, flags=flags)

        model = open_selected(
            path,
            backend=backend,
            frame_size=frame_size,
            delegate=_device_delegate(path),
            threads=threads,
            warn=warn,
            explain=explain,
            **flags,
        )
        return model.backend, model.meta, model.opened.describe()
    if backend != "auto":
        raise DataError(
            f"--backend {backend} is for .tflite and .onnx models; {path.name} runs in Keras"
        )
    if activation is not None or whole_frames:
        raise DataError(
            f"--activation and --whole-frames apply to a source ONNX; {path.name} runs in Keras"
        )
    from edgeseg.model.resolve import open_keras_model

    keras, meta = open_keras_model(path, trust_model=trust_model, **flags)
    return keras, meta, keras.runtime


def _device_delegate(path: Path) -> str:
    """The delegate eval and calib open an artefact with: an ONNX model on onnxruntime's CPU
    provider (scores comparable on any host), a TFLite model as ``run`` does (an Edge TPU
    model needs its delegate)."""
    return "cpu" if path.suffix.lower() == ".onnx" else "auto"


def any_model_metadata(
    model_path: str | Path, *, trust_model: bool = False, **flags: Any
) -> ModelMetadata:
    """The metadata of any model file, ``flags`` applied: a device artefact's (opened on its
    own runtime, as :func:`open_any_model` opens it, to read its tensors), or a Keras
    model's sidecar (loading the model only when it has none)."""
    path = Path(model_path)
    if path.suffix.lower() in model_suffixes():
        from edgeseg.runtime.backends import open_model

        return open_model(path, delegate=_device_delegate(path), **flags).meta
    from edgeseg.model.resolve import keras_metadata

    return keras_metadata(path, trust_model=trust_model, **flags)


def _open_sinks(
    o: RunOptions, meta: ModelMetadata, messages: list[str], warn: Callable[[str], None]
) -> list[Sink]:
    """The outputs `run` was asked for, in a fixed order; all closed again if one fails."""
    from edgeseg.runtime.sinks import (
        CSV_FIELDS,
        CsvSink,
        MaskSink,
        MjpegServer,
        ObjectSink,
        VideoSink,
        WindowSink,
        is_folder_target,
        parse_stream_address,
    )

    sinks: list[Sink] = []
    try:
        metrics = _run_metrics(o, messages, warn)
        if metrics is not None:
            sinks.append(metrics)
        recordings = o.record if o.record and is_folder_target(o.record) else None
        if o.stream:
            host, port = parse_stream_address(o.stream)
            server = MjpegServer(
                host=host, port=port, token=o.stream_token, metrics=metrics, recordings=recordings
            )
            sinks.append(server)
            messages.append("streaming at " + ", ".join(server.urls))
            warn(messages[-1])
        if o.metrics and (not o.stream or parse_stream_address(o.stream) != _address(o.metrics)):
            host, port = _address(o.metrics)
            alone = MjpegServer(
                host=host, port=port, token=o.stream_token, metrics=metrics, frames=False
            )
            sinks.append(alone)
            messages.append("metrics at " + ", ".join(alone.urls))
            warn(messages[-1])
        if o.csv:
            sinks.append(CsvSink(o.csv, CSV_FIELDS, max_bytes=o.csv_max_bytes))
        if o.objects:
            pixel = o.pixel_size if o.pixel_size is not None else meta.pixel_size_um
            sinks.append(
                ObjectSink(o.objects, meta, pixel_size_um=pixel, max_bytes=o.objects_max_bytes)
            )
        if o.save_masks:
            sinks.append(MaskSink(o.save_masks, fmt=o.mask_format, max_bytes=o.masks_max_bytes))
        if o.record:
            fps = o.record_fps if o.record_fps is not None else o.fps
            segmented = is_folder_target(o.record)
            if segmented and Path(o.record).suffix and not Path(o.record).is_dir():
                messages.append(
                    f"recording segments into the folder {o.record}/ (a video file's name ends "
                    "in .mp4, .mkv or .avi)"
                )
                warn(messages[-1])
            sinks.append(
                VideoSink(
                    o.record,
                    fps=fps or 0,
                    segment_seconds=o.record_segment if segmented else None,
                    max_bytes=o.record_max_bytes,
                )
            )
        if not o.headless:
            try:
                sinks.append(WindowSink(f"edgeseg: {o.model.name}"))
            except Exception as exc:  # no display / headless OpenCV: say so, run on
                if not sinks:
                    raise
                messages.append(f"no window ({exc}); continuing with the other outputs")
                warn(messages[-1])
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def _prepare_recording(
    sinks: Sequence[Sink], stream: Stream, messages: list[str], warn: Callable[[str], None]
) -> None:
    """Tell the recording what the open source is (live or file, rate, frame size) and say
    what its checks found: a bound that holds no whole segment is a DataError."""
    from edgeseg.runtime.sinks import VideoSink

    info = stream.info
    for sink in sinks:
        if isinstance(sink, VideoSink):
            try:
                found = sink.prepare(live=info.live, fps=info.fps, size=info.size)
            except DataError as exc:
                raise DataError(f"{exc} (--record-max-bytes, --record-segment)") from exc
            for line in found:
                messages.append(f"warning: {line}")
                warn(messages[-1])


def _open_or_wait(
    uri: str, o: RunOptions, warn: Callable[[str], None], messages: list[str], window: Any = None
) -> Stream:
    """The source opened; with --wait-for-source (and --retry), a live source that does not
    open yet is a PendingStream the capture keeps reopening."""
    from edgeseg.runtime.pending import PendingStream, waits_for
    from edgeseg.runtime.streams import open_stream

    def reopen() -> Stream:
        return open_stream(uri, width=o.width, height=o.height, fps=o.fps, window=window)

    try:
        return reopen()
    except DataError as exc:
        if not (o.wait_for_source and o.retry and waits_for(uri)):
            raise
        messages.append(f"waiting for the source: {exc}")
        warn(messages[-1])
        return PendingStream(uri, exc, reopen)


def _address(text: str) -> tuple[str, int]:
    from edgeseg.runtime.metrics import parse_metrics_address

    return parse_metrics_address(text)


def _run_metrics(o: RunOptions, messages: list[str], warn: Callable[[str], None]) -> Any:
    """A RunMetrics for --metrics (required) or --stream (where prometheus_client is
    installed; without it the stream has no /metrics, and says so)."""
    from edgeseg.errors import MissingDependencyError
    from edgeseg.runtime.metrics import RunMetrics

    if not (o.metrics or o.stream):
        return None
    try:
        return RunMetrics()
    except MissingDependencyError as exc:
        if o.metrics:
            raise
        messages.append(f"no /metrics on the stream: {exc}")
        warn(messages[-1])
        return None


@contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (a clean stop: recordings finalized) while inside."""

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def _nothing() -> Iterator[None]:
    yield
