"""Small file-system helpers shared by the commands that write folders or read shipped data."""

from __future__ import annotations

import sys
from collections.abc import Callable
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


def ensure_writable_dir(out: Path, flag: str = "--out") -> Path:
    """Create ``out`` if needed and prove it writable, or raise a one-line DataError."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{flag} {out} is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".edgeseg-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DataError(f"cannot write to {out}: {exc.strerror or exc}") from exc
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
