"""Typed errors. The CLI prints any :class:`EdgesegError` as one line and exits non-zero."""

from __future__ import annotations


class EdgesegError(Exception):
    """An error the user can act on; its message is one line, shown without a traceback."""

    exit_code = 2


class DataError(EdgesegError):
    """Bad input data: missing folder, unreadable image, images without masks, wrong sizes."""


class ModelError(EdgesegError):
    """A model file that cannot be loaded, is unsafe, or is not an image-to-mask model."""


class MissingDependencyError(EdgesegError):
    """An optional dependency is not installed; the message names what to install."""

    exit_code = 3
