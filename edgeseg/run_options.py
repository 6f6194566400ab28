"""Everything `edgeseg run` takes, declared once: :class:`RunOptions`.

Each field carries, in its metadata, how it is given on the command line (an
:class:`OptionSpec`: the flag names, the help text, a lower bound). `edgeseg/cli/run.py`
builds the `run` command from these fields, and the `edgeseg.toml` keys are derived from that
command (`edgeseg/cli/configured.py`), so a field added here is an option of `edgeseg run`
and a config key with no other change. This module knows nothing of the command-line library:
the declarations are plain data. It sits at the session's rank (``session.py`` re-exports
:class:`RunOptions`) and imports nothing heavy, so `edgeseg run --help` stays light.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.core.segmenter import DEFAULT_OVERLAP

__all__ = [
    "ARGUMENT",
    "LIBRARY",
    "METADATA_FLAGS",
    "OPTION",
    "SPEC",
    "OptionSpec",
    "RunOptions",
    "option_specs",
]

#: The metadata key of a field's :class:`OptionSpec`.
SPEC = "edgeseg.run_option"
#: How a field is given (:attr:`OptionSpec.kind`).
ARGUMENT = "argument"  # a positional argument of `edgeseg run`
OPTION = "option"  # an option of `edgeseg run`
METADATA_FLAGS = "metadata flags"  # the metadata flags every command shares (--input-size…)
LIBRARY = "library"  # not on the command line: for library callers (demo, bench --e2e)
KINDS = (ARGUMENT, OPTION, METADATA_FLAGS, LIBRARY)

# Options for a source ONNX (a PyTorch export), shared with `eval`, `bench` and `convert`
# (cli/common.py declares them from these texts).
ACTIVATION_HELP = (
    "ONNX model (PyTorch export): what its output holds, logits|sigmoid|softmax (default: "
    "read from the graph); logits get a sigmoid (1 channel) or softmax appended."
)
WHOLE_FRAMES_HELP = (
    "ONNX model with dynamic H/W (PyTorch export): run each frame whole, at its own size "
    "padded up to the model's multiple (2**depth, from the graph or the sidecar's "
    "size_multiple), instead of tiles of --input-size."
)


@dataclass(frozen=True)
class OptionSpec:
    """How one :class:`RunOptions` field is given on the command line.

    Attributes:
        kind: :data:`ARGUMENT`, :data:`OPTION`, :data:`METADATA_FLAGS` (the field is the dict
            the shared metadata flags fill: ``--input-size``, ``--normalization``,
            ``--input-max``, ``--threshold``, ``--channel-order``) or :data:`LIBRARY`.
        decls: the option's names, ``("--save-masks",)`` or ``("--resize/--tile",)``; its
            first long name without the dashes is its config key.
        help: the help text of `edgeseg run --help`.
        min: the lowest value a number may take.
        type: the command line's type where it is narrower than the field's (a size the
            library also takes as a number of bytes is text on the command line).
        metavar, show_default: as Typer takes them.
    """

    kind: str
    decls: tuple[str, ...] = ()
    help: str | None = None
    min: float | None = None
    type: Any = None
    metavar: str | None = None
    show_default: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; one of {KINDS}")


def _option(
    *decls: str,
    help: str | None = None,
    min: float | None = None,
    type: Any = None,
) -> dict[str, OptionSpec]:
    """The metadata of a field that is an option of `edgeseg run`."""
    return {SPEC: OptionSpec(OPTION, decls, help=help, min=min, type=type)}


@dataclass(frozen=True)
class RunOptions:
    """Everything `edgeseg run` takes; the field names are its parameter names.

    A field without a default (MODEL) has None on the command line: a config file may give
    it, and `run` refuses to start without it.

    ``flags`` are the metadata overrides (input_size, normalization, input_max, threshold,
    channel_order) for models without edgeseg metadata. ``summary_json`` is written by the
    caller when the run ends (the session does not write it).
    """

    model: Path = field(
        metadata={
            SPEC: OptionSpec(
                ARGUMENT,
                help="A .tflite model (from `edgeseg convert` or not). Default: `model` of the "
                "config.",
                metavar="MODEL",
                show_default=False,
            )
        }
    )
    camera: int | None = field(
        default=None, metadata=_option("--camera", help="Camera index (like /dev/videoN).")
    )
    source: str | None = field(
        default=None,
        metadata=_option(
            "--source",
            help="Stream URI: v4l2:///dev/video0, csi://0, file://clip.mp4 or a path, an image "
            "folder or glob, a TIFF stack, rtsp://…, gst:PIPELINE, synthetic://?size=1024x1024.",
        ),
    )
    delegate: str | None = field(
        default=None,
        metadata=_option(
            "--delegate",
            help="auto (Edge TPU for *_edgetpu.tflite, else CPU/XNNPACK), cpu, edgetpu, or a "
            "delegate library path. Default: the --device profile's, else auto.",
        ),
    )
    # auto, litert, openvino, onnxruntime (runtime.backends.BACKENDS)
    backend: str = field(
        default="auto",
        metadata=_option(
            "--backend",
            help="Runtime: auto (measure the installed runtimes that read MODEL once, keep the "
            "fastest whose label maps agree with the file's own runtime's; cached per device, "
            "model, versions, threads and frame size), litert, openvino or onnxruntime. A "
            "delegate or an *_edgetpu.tflite model means LiteRT.",
        ),
    )
    explain: bool = field(
        default=False,
        metadata=_option(
            "--explain", help="Say what --backend auto picked and the figures behind it."
        ),
    )
    device: str | None = field(
        default=None,
        metadata=_option(
            "--device",
            help="Device profile (rpi4, rpi5, jetson-orin-nano, coral-usb, coral-devboard, x86-64 "
            "or a .toml): its delegate, threads and camera unless given.",
        ),
    )
    fallback: bool = field(
        default=False,
        metadata=_option(
            "--fallback", help="If the delegate cannot load, warn and run the CPU model."
        ),
    )
    edgetpu_device: str | None = field(
        default=None,
        metadata=_option(
            "--edgetpu-device", help="Which Edge TPU: usb:0, pci:0 (several attached)."
        ),
    )
    threads: int | None = field(
        default=None,
        metadata=_option(
            "--threads", min=1, help="CPU threads per interpreter (default: cores / workers)."
        ),
    )
    workers: int | None = field(
        default=None,
        metadata=_option(
            "--workers",
            min=1,
            help="Interpreters working on consecutive frames. Default: one per core for file "
            "sources on the CPU (throughput), one for live sources and delegates (latency).",
        ),
    )
    resize: bool | None = field(
        default=None,
        metadata=_option(
            "--resize/--tile",
            help="Resize frames to the model input instead of tiling (default: tile when the "
            "model has edgeseg metadata, resize otherwise).",
        ),
    )
    overlap: int = field(
        default=DEFAULT_OVERLAP, metadata=_option("--overlap", help="Tile overlap in pixels.")
    )
    min_area: int = field(
        default=0, metadata=_option("--min-area", help="Remove objects smaller than this (px).")
    )
    alpha: float = field(default=0.45, metadata=_option("--alpha", help="Overlay opacity, 0..1."))
    contours: bool = field(default=True, metadata=_option("--contours/--no-contours"))
    hud: bool = field(
        default=True, metadata=_option("--hud/--no-hud", help="FPS, latency and count overlay.")
    )
    record: Path | None = field(
        default=None,
        metadata=_option(
            "--record",
            help="Write the overlay video: a .mp4/.mkv/.avi file, or a folder (any other name, or "
            "one ending in /) for short segments, each playable as soon as it closes.",
        ),
    )
    # The recording's frame rate (default: --fps, the stream's).
    record_fps: float | None = field(default=None, metadata={SPEC: OptionSpec(LIBRARY)})
    record_segment: float = field(
        default=10.0,
        metadata=_option(
            "--record-segment", min=0.1, help="Seconds of video per segment (folder --record)."
        ),
    )
    # "2G", "20%"… or a number of bytes (sizes.parse_bytes)
    record_max_bytes: str | int | None = field(
        default=None,
        metadata=_option(
            "--record-max-bytes",
            type=str,
            help="Keep the newest segments within this size (2G, 500M, bytes, or 20% of the free "
            "disk); the oldest of edgeseg's own segments are deleted first.",
        ),
    )
    save_masks: Path | None = field(
        default=None,
        metadata=_option(
            "--save-masks",
            help="Folder for lossless label maps, one per frame (8-bit classes; 16-bit object ids "
            "for an instance model), named after the source file for image folders and globs.",
        ),
    )
    masks_max_bytes: str | int | None = field(
        default=None,
        metadata=_option(
            "--masks-max-bytes", type=str, help="Keep the newest mask files within this size."
        ),
    )
    mask_format: str = field(default="png", metadata=_option("--mask-format", help="png or tif."))
    csv: Path | None = field(
        default=None, metadata=_option("--csv", help="Per-frame timings and counts.")
    )
    csv_max_bytes: str | int | None = field(
        default=None,
        metadata=_option(
            "--csv-max-bytes",
            type=str,
            help="Rotate the CSV (name.1.csv, name.2.csv…, each with its header) within this size.",
        ),
    )
    objects: Path | None = field(
        default=None,
        metadata=_option(
            "--objects",
            help="CSV of one row per object per frame: id, class, area (px, µm² with a pixel "
            "size), centroid, bounding box, mean and integrated intensity of the raw frame, "
            "touches the border.",
        ),
    )
    objects_max_bytes: str | int | None = field(
        default=None,
        metadata=_option(
            "--objects-max-bytes",
            type=str,
            help="Rotate the objects CSV (name.1.csv, name.2.csv…) within this size.",
        ),
    )
    pixel_size: float | None = field(
        default=None,
        metadata=_option(
            "--pixel-size",
            help="µm per pixel, for object areas in µm² (default: the model's pixel_size_um).",
        ),
    )
    stream: str | None = field(
        default=None,
        metadata=_option(
            "--stream",
            help="Serve the overlay as MJPEG over HTTP at [HOST:]PORT (binds 127.0.0.1 unless a "
            "host is given; off loopback it needs a token).",
        ),
    )
    stream_token: str | None = field(
        default=None,
        metadata=_option(
            "--stream-token",
            help="The token a browser must give off loopback (default: one generated on first use "
            "and kept in ~/.config/edgeseg/stream-token).",
        ),
    )
    metrics: str | None = field(
        default=None,
        metadata=_option(
            "--metrics",
            help="Serve Prometheus metrics at http://[HOST:]PORT/metrics without the stream page "
            "(binds 127.0.0.1 unless a host is given; off loopback it needs the stream token). "
            "With --stream, /metrics is also on the stream's address.",
        ),
    )
    retry: bool = field(
        default=True,
        metadata=_option(
            "--retry/--no-retry",
            help="A live source that stops delivering (unplugged, hung, dropped) is reopened with "
            "back-off until it comes back; --no-retry ends the run instead.",
        ),
    )
    wait_for_source: bool = field(
        default=False,
        metadata=_option(
            "--wait-for-source",
            help="A camera or network stream that is not there at start (not plugged in yet, a "
            "server still booting) is waited for and opened when it comes, as a lost one is "
            "reopened, instead of ending the run (the service unit sets it).",
        ),
    )
    read_timeout: float = field(
        default=5.0,
        metadata=_option(
            "--read-timeout", min=0.1, help="Seconds before a live read counts as hung."
        ),
    )
    headless: bool = field(default=False, metadata=_option("--headless", help="No window."))
    max_frames: int | None = field(default=None, metadata=_option("--max-frames", min=1))
    width: int | None = field(
        default=None, metadata=_option("--width", help="Camera capture width.")
    )
    height: int | None = field(
        default=None, metadata=_option("--height", help="Camera capture height.")
    )
    fps: float | None = field(default=None, metadata=_option("--fps", help="Camera capture rate."))
    summary_json: Path | None = field(
        default=None, metadata=_option("--summary-json", help="Write the run summary as JSON.")
    )
    window: str | None = field(
        default=None,
        metadata=_option(
            "--window",
            help="DICOM window: CENTER,WIDTH (modality units, e.g. HU), file (each file's own), "
            "or a preset (ct-soft-tissue, ct-lung, ct-bone, ct-brain, …); default: the window "
            "the model was calibrated with, else file.",
        ),
    )
    flags: dict[str, Any] = field(default_factory=dict, metadata={SPEC: OptionSpec(METADATA_FLAGS)})
    activation: str | None = field(
        default=None, metadata=_option("--activation", help=ACTIVATION_HELP)
    )
    whole_frames: bool = field(
        default=False, metadata=_option("--whole-frames", help=WHOLE_FRAMES_HELP)
    )


def option_specs() -> list[tuple[dataclasses.Field, OptionSpec]]:
    """Every :class:`RunOptions` field with how it is given, in declaration order (the order
    of `edgeseg run --help` and `edgeseg config show`)."""
    return [(f, f.metadata[SPEC]) for f in dataclasses.fields(RunOptions)]
