"""A live source that is not there at start, waited for: :class:`PendingStream`.

A camera not plugged in yet at boot, an RTSP server still starting: with ``--wait-for-source``
(the service unit sets it) the run does not end on it. A :class:`PendingStream` stands in for
the source: its ``read()`` raises why the source did not open, so the capture thread counts an
outage ("camera lost, retrying since …") and reopens the source with back-off through
``reopen`` until it opens, as it does for a source lost mid-run. Meanwhile the run is up:
systemd hears READY and the watchdog is petted (:mod:`edgeseg.runtime.notify`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.runtime.stream_base import Stream, StreamBase, StreamInfo
from edgeseg.runtime.uri import parse_uri

__all__ = ["LIVE_SCHEMES", "PendingStream", "waits_for"]

#: The sources worth waiting for: cameras and network streams (never files or synthetic://).
LIVE_SCHEMES = ("camera", "v4l2", "csi", "gst", "rtsp", "http", "https")


def waits_for(uri: str) -> bool:
    """Whether ``uri`` is a live source that may come later (a camera or a network stream)."""
    try:
        return parse_uri(uri).scheme in LIVE_SCHEMES
    except EdgesegError:
        return False


class PendingStream(StreamBase):
    """Stands in for the live source ``uri`` that did not open (``error`` says why) until
    ``reopen`` opens it. Its size and rate are unknown (None) until then."""

    def __init__(self, uri: str, error: EdgesegError, reopen: Callable[[], Stream]) -> None:
        self.info = StreamInfo(
            uri=uri, description=f"{uri} (not there yet)", live=True, fps=None, size=None
        )
        self.warnings: list[str] = []
        self.reopen = reopen
        self.error = error

    def read(self) -> np.ndarray | None:
        raise self.error

    def close(self) -> None:
        pass
