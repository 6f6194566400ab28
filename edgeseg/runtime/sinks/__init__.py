"""Where rendered frames go: a window, a video file, label maps, a CSV, a CSV of objects, an
MJPEG HTTP stream. One module per sink; everything a caller needs is importable from here.

=================  ==========================================================================
module             job
=================  ==========================================================================
``base``           the :class:`Sink` protocol, :class:`SinkBase`, :class:`FrameRecord`, the
                   disk-failure policy
``video``          :class:`VideoSink`: one video file, or segments in a folder, in real time
``recorder``       :class:`VideoWriter`: one container through PyAV, frames at their times
``masks``          :class:`MaskSink`: one lossless label-map file a frame
``csv``            :class:`CsvSink`: one row a frame, rotated within a size bound
``objects``        :class:`ObjectSink`: one row per object per frame
``window``         :class:`WindowSink`: an OpenCV window
``mjpeg``          :class:`MjpegServer`: MJPEG over HTTP, its page, address rule and token
=================  ==========================================================================

Every sink has ``write(index, rendered, labels, record)`` and ``close()``:

- ``index``: the frame's number in the run;
- ``rendered``: uint8 array (H, W, 3), RGB, the overlay as shown;
- ``labels``: (H, W) label map (0 background): uint8 classes, or the int32 object ids of an
  instance model;
- ``record``: the frame's :class:`FrameRecord` (timings in ms, counts; ``name``, the frame's
  file, for file sources), what :class:`CsvSink` writes; a sink also takes the plain fields
  of a row (a mapping), for callers with columns of their own.

What the pipeline may ask of a sink is declared by :class:`Sink`, and :class:`SinkBase` gives
every optional part a default. A sink that needs the raw frame as read (:class:`ObjectSink`:
intensities) has a true ``wants_frame`` (:class:`FrameSink`); the pipeline then also passes
``frame=``.

``close()`` is idempotent and sinks are context managers. Bad input (a frame of the wrong
type, a closed sink) raises :class:`~edgeseg.errors.DataError`. A write that fails on disk (full,
the folder removed: any OSError) never raises into the pipeline: that sink stops writing, sets
``stopped`` and adds a one-line warning to its ``warnings`` (``"recording stopped: disk full
(…)"``), and inference and the other sinks go on; what was written before stays valid (closed
video segments, every mask file, the CSV up to its last whole row).

The pipeline tells every sink the source's state with ``status(message)`` (None while frames
flow, else e.g. ``"camera lost, retrying since 14:02:11"``); :class:`MjpegServer` shows it,
the others ignore it. Video segments, mask files and rotated CSVs can be kept within a size
(:mod:`edgeseg.runtime.storage`).

A new sink is one new module here, re-exported below.
"""

from __future__ import annotations

from edgeseg.core.objects import OBJECT_CSV_FIELDS, frame_objects
from edgeseg.runtime.sinks.base import (
    CSV_FIELDS,
    FrameRecord,
    FrameSink,
    Record,
    Sink,
    SinkBase,
)
from edgeseg.runtime.sinks.csv import CsvSink
from edgeseg.runtime.sinks.masks import MaskSink
from edgeseg.runtime.sinks.mjpeg import (
    MjpegServer,
    is_loopback,
    parse_stream_address,
    stream_token,
    token_dir,
)
from edgeseg.runtime.sinks.objects import ObjectSink
from edgeseg.runtime.sinks.recorder import VideoWriter
from edgeseg.runtime.sinks.video import VideoSink, is_folder_target
from edgeseg.runtime.sinks.window import WindowSink

__all__ = [
    "CSV_FIELDS",
    "OBJECT_CSV_FIELDS",
    "CsvSink",
    "FrameRecord",
    "FrameSink",
    "MaskSink",
    "MjpegServer",
    "ObjectSink",
    "Record",
    "Sink",
    "SinkBase",
    "VideoSink",
    "VideoWriter",
    "WindowSink",
    "frame_objects",
    "is_folder_target",
    "is_loopback",
    "parse_stream_address",
    "stream_token",
    "token_dir",
]
