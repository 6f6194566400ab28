"""Small file-system helpers: writable folders, publishing files, hashes, shipped data.

Publishing a file is one function here (STYLE.md, habit 18): :func:`atomic_write` writes
bytes or text to a temporary name in the same folder and :func:`publish`es it; a writer that
needs a path to write to (``np.savez``, a video writer, a converter) uses
:func:`atomic_path`. :func:`publish` is the one rename of the package: it fsyncs the file,
renames it over its final name and fsyncs the folder, so after a power cut a reader finds
either the old file or the whole new one, never half of one. Every ``os.replace`` of
edgeseg goes through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from edgeseg.errors import DataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

T = TypeVar("T")

#: Raised by :func:`parse_toml` for text that is not valid TOML.
TOMLDecodeError = tomllib.TOMLDecodeError


def parse_toml(text: str) -> dict[str, Any]:
    """TOML text → dict (tomllib, or tomli on Python 3.10); raises :data:`TOMLDecodeError`."""
    return tomllib.loads(text)


__all__ = [
    "TOMLDecodeError",
    "atomic_path",
    "atomic_write",
    "collect_tomls",
    "ensure_writable_dir",
    "file_sha256",
    "fsync_dir",
    "fsync_file",
    "hash_file",
    "is_partial",
    "load_named_toml",
    "parse_toml",
    "publish",
    "shipped_tomls",
]


def fsync_file(path: str | Path) -> None:
    """Flush a closed file's data to the disk (raises OSError)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | Path) -> None:
    """Make renames and deletions in ``folder`` durable; a no-op where folders cannot be
    opened (Windows) or a file system refuses to fsync one."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def publish(src: str | Path, dst: str | Path, *, durable: bool = True) -> Path:
    """Give the finished file ``src`` its final name ``dst`` (same file system), atomically.

    ``durable``: fsync ``src`` before the rename and ``dst``'s folder after it, so the new
    name survives a power cut with its whole content. Only a file that is cheap to lose and
    is rewritten often may pass False (say why where it does). Raises OSError.
    """
    src, dst = Path(src), Path(dst)
    if durable:
        fsync_file(src)
    os.replace(src, dst)
    if durable:
        fsync_dir(dst.parent)
    return dst


#: A temporary name of :func:`atomic_path` (``.NAME.1a2b3c4d.partial.SUFFIX``), or of the
#: hand-written copies it replaced (``.NAME.partial``, ``.NAME.x.partial``).
_PARTIAL_NAME = re.compile(r"\..+\.partial(?:\.[^.]+)?")


def is_partial(path: str | Path) -> bool:
    """True for a temporary file of :func:`atomic_path` (hidden, ``.partial`` as its last or
    second-to-last suffix): what a killed writer leaves behind, safe to delete when no writer
    runs."""
    return _PARTIAL_NAME.fullmatch(Path(path).name) is not None


@contextlib.contextmanager
def atomic_path(
    path: str | Path, *, suffix: str | None = None, durable: bool = True, mode: int = 0o666
) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; published as ``path`` when the block
    ends without an exception, removed when it raises.

    The temporary file exists (empty, created with ``mode`` less the umask: 0o600 for a
    secret) when the block starts. ``suffix`` (default: ``path``'s own) keeps writers that
    choose the format by the file's extension (``np.savez``, OpenCV) working. The temporary
    name starts with a dot and holds ``.partial``, so folder listings and rings tell it apart.
    """
    path = Path(path)
    suffix = path.suffix if suffix is None else suffix
    for _ in range(100):
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.partial{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 32 random bits
        raise FileExistsError(f"no free temporary name beside {path}")
    try:
        yield tmp
        publish(tmp, path, durable=durable)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(
    path: str | Path,
    data: bytes | str,
    *,
    durable: bool = True,
    encoding: str = "utf-8",
    mode: int = 0o666,
) -> Path:
    """Write ``data`` (bytes, or text in ``encoding``) to ``path`` atomically (see
    :func:`publish`; ``mode`` as in :func:`atomic_path`). Raises OSError; the old file, if
    any, is then left as it was."""
    path = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    with atomic_path(path, durable=durable, mode=mode) as tmp:
        tmp.write_bytes(payload)  # closed here; publish fsyncs it before the rename
    return path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks (raises OSError)."""
    digest = hashlib.sha256()
    hash_file(digest, path)
    return digest.hexdigest()


def hash_file(digest: Any, path: str | Path, *, chunk: int = 1 << 20) -> None:
    """Feed a file's bytes to ``digest`` (a ``hashlib`` object), in chunks (raises OSError):
    for a digest of several files, e.g. a SavedModel folder."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)


def ensure_writable_dir(out: Path, flag: str = "--out", *, for_file: Path | None = None) -> Path:
    """Create ``out`` if needed and prove it writable (a file is written and deleted in it),
    or raise a one-line DataError naming ``flag`` and ``out``.

    ``for_file``: the file to be written in ``out`` (``--out build/set.npz``), named in the
    errors instead: ``cannot write build/set.npz: …``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        if for_file is not None:
            raise DataError(f"cannot write {for_file}: {out} is a file, not a folder")
        raise DataError(f"{flag} {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".edgeseg-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        target = f"{for_file}" if for_file is not None else f"to {out}"
        raise DataError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return out


def shipped_tomls(*parts: str) -> dict[str, Any]:
    """name → resource of the ``*.toml`` files the package ships under ``edgeseg/data/...``."""
    root = resources.files("edgeseg").joinpath("data", *parts)
    if not root.is_dir():
        return {}
    return {p.name[:-5]: p for p in root.iterdir() if p.name.endswith(".toml")}


def collect_tomls(
    parts: tuple[str, ...], user_dir: Path, parse: Callable[[str, str], T]
) -> dict[str, T]:
    """Shipped TOML records overridden by the user's own in ``user_dir``: name → parsed."""
    found = {
        name: parse(p.read_text(), f"edgeseg:{name}") for name, p in shipped_tomls(*parts).items()
    }
    if user_dir.is_dir():
        for p in sorted(user_dir.glob("*.toml")):
            found[p.stem] = parse(p.read_text(), str(p))
    return found


def load_named_toml(
    name_or_path: str,
    parts: tuple[str, ...],
    user_dir: Path,
    parse: Callable[[str, str], T],
    what: str,
) -> T | None:
    """One TOML record: a ``.toml`` path, else ``NAME.toml`` in ``user_dir``, else shipped.

    Returns None for an unknown name, so the caller can list the known ones; a ``.toml`` path
    that does not exist is a one-line DataError naming ``what``.
    """
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise DataError(f"{what} file not found: {path}")
        return parse(path.read_text(), str(path))
    user = user_dir / f"{name_or_path}.toml"
    if user.is_file():
        return parse(user.read_text(), str(user))
    shipped = shipped_tomls(*parts)
    if name_or_path in shipped:
        return parse(shipped[name_or_path].read_text(), f"edgeseg:{name_or_path}")
    return None
