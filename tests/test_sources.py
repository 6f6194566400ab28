"""File frame sources: folders, patterns, images, TIFF stacks, videos, and bad paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import write_video

from edgeseg.errors import DataError
from edgeseg.imageio import write_image
from edgeseg.runtime.sources import FrameSource, open_file_source

tifffile = pytest.importorskip("tifffile")
cv2 = pytest.importorskip("cv2")


def _check_video_frame(frame: np.ndarray, i: int) -> None:
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    # RGB order: red carries the index, green and blue stay dark (JPEG tolerance).
    assert abs(int(frame[24, 40, 0]) - i * 8) <= 6, (i, frame[24, 40])
    assert frame[24, 40, 1] < 12 and frame[24, 40, 2] < 12
    bar = int((frame[24, :, 1] > 128).sum())
    assert abs(bar - (i + 1)) <= 1, (i, bar)


def test_folder_natural_order_and_names(tmp_path: Path) -> None:
    for i in (10, 2, 1):
        write_image(tmp_path / f"{i}.png", np.full((8, 9), i, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_file_source(tmp_path)
    assert isinstance(src, FrameSource)
    assert len(src) == 3
    assert [src.name(i) for i in range(3)] == ["1.png", "2.png", "10.png"]
    assert [int(src.read(i)[0, 0]) for i in range(3)] == [1, 2, 10]
    assert src.description == f"image folder {tmp_path} (3 images)"
    with pytest.raises(IndexError):
        src.read(3)


def test_glob_and_single_image(tmp_path: Path) -> None:
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[..., 0] = 200  # red stays in channel 0 through OpenCV's BGR
    write_image(tmp_path / "a.png", rgb)
    write_image(tmp_path / "b.png", rgb)
    write_image(tmp_path / "c.jpg", rgb)
    src = open_file_source(str(tmp_path / "*.png"))
    assert len(src) == 2 and src.name(1) == "b.png"
    assert "2 files" in src.description
    one = open_file_source(tmp_path / "a.png")
    assert len(one) == 1 and one.name(0) == "a.png"
    np.testing.assert_array_equal(one.read(0), rgb)


def test_glob_same_names_in_different_folders(tmp_path: Path) -> None:
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        write_image(tmp_path / d / "0.png", np.zeros((4, 4), np.uint8))
    src = open_file_source(str(tmp_path / "*" / "0.png"))
    assert [src.name(0), src.name(1)] == ["x/0.png", "y/0.png"]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_stack_pages_are_frames(tmp_path: Path, dtype: type) -> None:
    stack = np.arange(5 * 12 * 10, dtype=dtype).reshape(5, 12, 10) * (
        1 if dtype == np.uint8 else 50
    )
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    src = open_file_source(tmp_path / "stack.tif")
    assert len(src) == 5
    assert src.name(3) == "stack.tif#page3"
    assert "5 frames of 12x10" in src.description
    for i in (4, 0, 2):  # random access
        frame = src.read(i)
        assert frame.dtype == dtype
        np.testing.assert_array_equal(frame, stack[i])
    src.close()


def test_tiff_layouts(tmp_path: Path) -> None:
    # (T, Z, H, W) ImageJ hyperstack: T*Z gray frames, in file order.
    tz = np.arange(2 * 3 * 8 * 8, dtype=np.uint16).reshape(2, 3, 8, 8)
    tifffile.imwrite(tmp_path / "tz.tif", tz, imagej=True, metadata={"axes": "TZYX"})
    src = open_file_source(tmp_path / "tz.tif")
    assert len(src) == 6
    np.testing.assert_array_equal(src.read(4), tz[1, 1])
    # (Z, H, W, 3) RGB stack: frames keep their colour.
    zrgb = np.random.default_rng(0).integers(0, 255, (4, 8, 9, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "zrgb.tif", zrgb, photometric="rgb")
    src = open_file_source(tmp_path / "zrgb.tif")
    assert len(src) == 4
    np.testing.assert_array_equal(src.read(3), zrgb[3])
    # ImageJ (T, Z, C, H, W) with 2 channels: channels go last, T*Z frames.
    tzc = np.random.default_rng(1).integers(0, 4000, (2, 3, 2, 8, 8), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "tzc.tif", tzc, imagej=True, metadata={"axes": "TZCYX"})
    src = open_file_source(tmp_path / "tzc.tif")
    assert len(src) == 6
    np.testing.assert_array_equal(src.read(5), np.moveaxis(tzc[1, 2], 0, -1))
    # Single-page TIFFs are one frame: 16-bit gray, planar RGB, 2-channel contiguous.
    gray = np.full((7, 5), 60000, np.uint16)
    tifffile.imwrite(tmp_path / "g.tif", gray)
    src = open_file_source(tmp_path / "g.tif")
    assert len(src) == 1 and src.name(0) == "g.tif"
    np.testing.assert_array_equal(src.read(0), gray)
    planar = np.zeros((3, 6, 5), np.uint8)
    planar[1] = 77
    tifffile.imwrite(tmp_path / "p.tif", planar, photometric="rgb", planarconfig="separate")
    assert open_file_source(tmp_path / "p.tif").read(0)[0, 0].tolist() == [0, 77, 0]
    two = np.zeros((6, 5, 2), np.uint8)
    tifffile.imwrite(tmp_path / "two.tif", two, photometric="minisblack", planarconfig="contig")
    assert open_file_source(tmp_path / "two.tif").read(0).shape == (6, 5, 2)


def test_folder_with_a_tiff_stack(tmp_path: Path) -> None:
    write_image(tmp_path / "1.png", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "2.tif", np.ones((3, 8, 8), np.uint16), photometric="minisblack")
    src = open_file_source(tmp_path)
    assert len(src) == 4
    assert [src.name(i) for i in range(4)] == ["1.png", "2.tif#page0", "2.tif#page1", "2.tif#page2"]
    assert src.read(3).dtype == np.uint16 and src.read(0).dtype == np.uint8
    assert "(2 images, 4 frames)" in src.description


def test_video_frames(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", n=30)
    src = open_file_source(path)
    assert len(src) == 30
    assert src.name(7) == "clip.avi#frame7"
    assert src.description.startswith(f"video {path} (30 frames, 64x48")
    for i in [0, 1, 2, 29, 5, 6, 20]:  # sequential, a far seek back and forth, a short skip
        _check_video_frame(src.read(i), i)
    src.close()
    _check_video_frame(src.read(3), 3)  # reopens after close
    src.close()


def test_truncated_video_never_crashes(tmp_path: Path) -> None:
    data = write_video(tmp_path / "clip.avi", n=30).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    try:
        src = open_file_source(cut)
    except DataError as exc:
        assert "cut.avi" in str(exc)
        return
    assert 0 < len(src) < 30  # fewer frames, each readable or a DataError naming it
    for i in range(len(src)):
        try:
            src.read(i)
        except DataError as exc:
            assert f"cut.avi#frame{i}" in str(exc)
    src.close()


def test_bad_paths(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 20)
    (tmp_path / "bad.tif").write_bytes(b"not a tiff" * 20)
    cases = {
        tmp_path / "missing": "not found",
        tmp_path / "empty": "no images",
        str(tmp_path / "*.bmp"): "matches nothing",
        tmp_path / "notes.txt": "unsupported file type .txt",
        tmp_path / "bad.mp4": "cannot open video",
        tmp_path / "bad.tif": "cannot read",
    }
    for source, needle in cases.items():
        with pytest.raises(DataError, match=needle) as info:
            open_file_source(source)
        assert "\n" not in str(info.value)
