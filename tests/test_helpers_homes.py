"""The one home of each small helper: publishing files (paths), sizes, label-map checks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from edgeseg import hardware
from edgeseg.core.labels import check_labels
from edgeseg.errors import DataError
from edgeseg.paths import (
    atomic_path,
    atomic_write,
    ensure_writable_dir,
    file_sha256,
    hash_file,
    is_partial,
    publish,
)
from edgeseg.sizes import format_hw, format_shape, format_shapes, parse_bytes, parse_hw


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------------------------
# paths: publishing a file


def test_atomic_write_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "entry.json"
    assert atomic_write(target, "one") == target and target.read_text() == "one"
    atomic_write(target, b"\x00two")
    assert target.read_bytes() == b"\x00two" and _leftovers(tmp_path) == []


def test_atomic_write_failure_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "entry.json"
    target.write_text("old")

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, "new")
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_atomic_path_removes_its_temporary_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "set.npz"
    target.write_bytes(b"old")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        # Beside the target, hidden, keeping the extension for writers that choose by it.
        assert tmp.parent == tmp_path and tmp.name.startswith(".set.")
        assert tmp.suffix == ".npz" and is_partial(tmp) and tmp.exists()
        tmp.write_bytes(b"half")
        raise ValueError("writer failed")
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []
    with atomic_path(target, suffix="") as tmp:
        assert tmp.name.endswith(".partial")
        with open(tmp, "wb") as f:
            np.save(f, np.arange(3))
    assert target.stat().st_size > 0 and _leftovers(tmp_path) == []


def test_permissions_follow_the_umask_and_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        shared = atomic_write(tmp_path / "report.json", "{}")
        secret = atomic_write(tmp_path / "token", "s3cret", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_publish_fsyncs_the_file_and_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync

    def record(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if Path("/proc/self/fd").is_dir() else "")
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    src = tmp_path / "a.partial"
    src.write_text("x")
    publish(src, tmp_path / "a.txt")
    assert len(synced) == 2 and (tmp_path / "a.txt").read_text() == "x" and not src.exists()
    if synced[0]:
        assert synced == [str(src), str(tmp_path)]  # the file before the rename, then its folder
    synced.clear()
    atomic_write(tmp_path / "b.txt", "y")
    assert len(synced) == 2
    synced.clear()
    atomic_write(tmp_path / "c.txt", "z", durable=False)
    publish(tmp_path / "c.txt", tmp_path / "d.txt", durable=False)
    assert synced == []


def test_is_partial_names() -> None:
    for name in (
        ".entry.1a2b3c4d.partial.json",
        ".a.png.1a2b3c4d.partial",
        ".x.tif.assemble.partial",
    ):
        assert is_partial(name) and is_partial(Path("/out") / name)
    for name in ("entry.json", ".partial", "a.partial", ".hidden.json", ".a.partial.tar.gz"):
        assert not is_partial(name)


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"abc" * 1000)
    import hashlib

    expected = hashlib.sha256(b"abc" * 1000).hexdigest()
    assert file_sha256(path) == expected
    digest = hashlib.sha256(b"name")  # several files into one digest, chunk by chunk
    hash_file(digest, path, chunk=7)
    assert digest.hexdigest() == hashlib.sha256(b"name" + b"abc" * 1000).hexdigest()


def test_ensure_writable_dir(tmp_path: Path) -> None:
    made = ensure_writable_dir(tmp_path / "a" / "b")
    assert made.is_dir() and list(made.iterdir()) == []
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DataError, match=r"^--dir .*file is a file, not a folder$"):
        ensure_writable_dir(a_file, "--dir")
    with pytest.raises(DataError, match=r"^cannot write to .*sub: "):
        ensure_writable_dir(a_file / "sub")
    with pytest.raises(DataError, match=r"^cannot write .*set\.npz: .*file is a file"):
        ensure_writable_dir(a_file, for_file=a_file / "set.npz")
    with pytest.raises(DataError, match=r"^cannot write .*set\.npz: "):
        ensure_writable_dir(a_file / "sub", for_file=a_file / "sub" / "set.npz")


# --------------------------------------------------------------------------------------------
# sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("768x1024", (768, 1024)),
        ("1080×1920", (1080, 1920)),
        (" 32 X 48 ", (32, 48)),
        ("256", (256, 256)),
        (256, (256, 256)),
        ((750, 1000), (750, 1000)),
        ([8, 9], (8, 9)),
    ],
)
def test_parse_hw_forms(text: object, expected: tuple[int, int]) -> None:
    assert parse_hw(text) == expected  # type: ignore[arg-type]
    assert format_hw(expected) == f"{expected[0]}x{expected[1]}"


@pytest.mark.parametrize(
    ("text", "kwargs", "needle"),
    [
        ("axb", {}, "size 'axb': expected N or HxW (height first"),
        ("10x10x3", {}, "expected N or HxW"),
        ("", {}, "expected N or HxW"),
        (True, {}, "expected N or HxW"),
        ((1, 2, 3), {}, "expected N or HxW"),
        ("256", {"square": False, "what": "--frame-size"}, "--frame-size '256': expected HxW ("),
        (256, {"square": False}, "expected HxW ("),
        ("x", {"square": False, "alternatives": ("auto",)}, "expected HxW or auto ("),
        ("0x10", {}, "height and width must be at least 1"),
        ("4", {"minimum": 8, "what": "synthetic:// size"}, "synthetic:// size '4': height and"),
        ("99999x10", {"maximum": 8192}, "must be between 1 and 8192"),
    ],
)
def test_parse_hw_errors_are_one_line(text: object, kwargs: dict, needle: str) -> None:
    with pytest.raises(DataError) as info:
        parse_hw(text, **kwargs)  # type: ignore[arg-type]
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "kwargs", "expected"),
    [
        ("1048576", {}, 1048576),
        ("500M", {}, 500 << 20),
        ("2g", {}, 2 << 30),
        ("64KB", {}, 64 << 10),
        ("4.25KiB", {}, 4352),
        ("5.05MiB", {}, round(5.05 * 2**20)),  # the nearest byte, as the tool rounded
        (" 1.5 GiB ", {}, 3 << 29),
        ("1T", {}, 1 << 40),
        (4096, {}, 4096),
        ("20%", {"free_bytes": 1000}, 200),
        ("100%", {"free_bytes": 1000}, 1000),
        ("0.00B", {"minimum": 0}, 0),
        (0, {"minimum": 0}, 0),
    ],
)
def test_parse_bytes(text: object, kwargs: dict, expected: int) -> None:
    assert parse_bytes(text, **kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "kwargs", "needle"),
    [
        ("0", {}, "at least 1 byte"),
        (0, {}, "at least 1 byte"),
        ("0.1", {}, "at least 1 byte"),
        ("-5", {}, "bad size"),
        ("2X", {}, "bad size"),
        ("1e9", {}, "bad size"),
        (True, {}, "bad size"),
        ("20%", {}, "needs a folder"),
        ("150%", {"free_bytes": 1000}, "0-100%"),
        ("0%", {"free_bytes": 1000}, "0-100%"),
        ("1%", {"free_bytes": 10}, "disk is full"),
        ("10", {"minimum": 100}, "at least 100 byte"),
    ],
)
def test_parse_bytes_errors_are_one_line(text: object, kwargs: dict, needle: str) -> None:
    with pytest.raises(DataError) as info:
        parse_bytes(text, **kwargs)  # type: ignore[arg-type]
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_format_shape() -> None:
    assert format_shape((1, 256, 256, 1)) == "(1, 256, 256, 1)"
    assert format_shape((None, -1, 32, 3)) == "(None, None, 32, 3)"
    assert format_shape(()) == "()"
    assert format_shapes([(1, None, None, 3)]) == "(1, None, None, 3)"
    assert format_shapes([(1, 2), (None, 4)]) == "[(1, 2), (None, 4)]"


# --------------------------------------------------------------------------------------------
# core/labels


def test_check_labels_classes() -> None:
    mask = np.array([[True, False], [False, True]])
    got = check_labels(mask, kind="classes")
    assert got.dtype == np.uint8 and got.tolist() == [[1, 0], [0, 1]]
    u8 = np.zeros((4, 4), np.uint8)[:, ::2]  # not contiguous
    assert check_labels(u8, kind="classes").flags.c_contiguous
    small = np.array([[0, 2], [255, 1]], np.int32)
    assert check_labels(small, kind="classes").dtype == np.uint8
    assert check_labels(np.zeros((0, 3), np.int64), kind="classes").dtype == np.uint8
    for bad, needle in [
        (np.array([[0, 256]], np.int32), "must hold classes 0..255"),
        (np.array([[-1, 0]], np.int32), "must hold classes 0..255"),
        (np.zeros((2, 2), np.float32), "must be a uint8 (H, W) class map, got float32"),
        (np.zeros((2, 2, 1), np.uint8), "got uint8 of shape (2, 2, 1)"),
    ]:
        with pytest.raises(DataError, match=r"^label map ") as info:
            check_labels(bad, kind="classes", what="label map")
        assert needle in str(info.value)


def test_check_labels_ids() -> None:
    ids = np.array([[0, 7], [70000, 7]], np.int32)
    assert check_labels(ids, kind="ids") is ids  # taken as it is, never narrowed
    u8 = np.array([[0, 3]], np.uint8)
    assert check_labels(u8, kind="ids").dtype == np.uint8
    for bad, needle in [
        (np.array([[0, -2]], np.int32), "instance labels hold negative ids"),
        (np.zeros((2, 2), bool), "one id per object, got bool"),
        (np.zeros((2, 2), np.float64), "one id per object, got float64"),
        (np.zeros((1, 2, 2), np.int32), "of shape (1, 2, 2)"),
    ]:
        with pytest.raises(DataError) as info:
            check_labels(bad, kind="ids", what="instance labels")
        assert needle in str(info.value) and str(info.value).startswith("instance labels ")


def test_check_labels_any() -> None:
    assert check_labels(np.ones((2, 2), bool)).dtype == np.uint8
    ids = np.array([[0, 300]], np.int32)
    assert check_labels(ids) is ids
    with pytest.raises(DataError, match="class map or an integer"):
        check_labels(np.zeros((2, 2, 3), np.uint8))


# --------------------------------------------------------------------------------------------
# hardware


def test_edgetpu_ids_text_names_every_usb_id() -> None:
    text = hardware.edgetpu_ids_text()
    assert text == "USB 1a6e:089a / 18d1:9302 and /dev/apex_*"
    assert all(f"{v}:{p}" in text for v, p in hardware.EDGETPU_USB_IDS)


# --------------------------------------------------------------------------------------------
# One publish: no rename of the package outside paths.py


def _renames(source: str) -> list[int]:
    """Lines of ``source`` that rename a file: ``os.replace``/``os.rename``/``os.renames``/
    ``shutil.move``, or ``X.replace(Y)``/``X.rename(Y)`` with one argument (``Path``'s;
    ``str.replace`` takes two, ``dataclasses.replace`` keywords)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        attr, owner = node.func.attr, node.func.value
        module = owner.id if isinstance(owner, ast.Name) else None
        by_module = (module == "os" and attr in ("replace", "rename", "renames")) or (
            module == "shutil" and attr == "move"
        )
        by_path = attr in ("replace", "rename") and len(node.args) == 1 and not node.keywords
        if by_module or by_path:
            found.append(node.lineno)
    return found


def test_every_rename_of_the_package_goes_through_paths_publish() -> None:
    import edgeseg

    root = Path(edgeseg.__file__).parent
    found = {
        str(p.relative_to(root)): lines
        for p in sorted(root.rglob("*.py"))
        if (lines := _renames(p.read_text(encoding="utf-8")))
    }
    assert set(found) == {"paths.py"}, f"renames outside edgeseg/paths.py: {found}"
    assert len(found["paths.py"]) == 1  # publish's own os.replace


def test_the_rename_finder_finds_them() -> None:
    code = (
        "import os, shutil\n"
        "os.replace(a, b)\n"
        "Path(a).rename(b)\n"
        "tmp.replace(final)\n"
        "shutil.move(a, b)\n"
        "text.replace('a', 'b')\n"  # str.replace: not a rename
        "dataclasses.replace(x, y=1)\n"
    )
    assert _renames(code) == [2, 3, 4, 5]
