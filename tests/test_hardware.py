"""Hardware discovery (:mod:`edgeseg.hardware`) on fake /proc, /sys, /etc and /dev trees, and
OpenCV's capabilities from its build information."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from edgeseg.hardware import (
    EdgeTPU,
    board_family,
    board_model,
    edgetpus,
    jetson_release,
    opencv_capabilities,
    opencv_has_backend,
    opencv_has_gui,
    parse_opencv_build_information,
    video_devices,
)


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --------------------------------------------------------------------------------------------
# Board


def test_raspberry_pi_board(tmp_path: Path) -> None:
    _write(tmp_path, "proc/device-tree/model", "Raspberry Pi 5 Model B Rev 1.0\x00")
    assert board_model(tmp_path) == "Raspberry Pi 5 Model B Rev 1.0"
    assert board_family(tmp_path) == "raspberrypi"
    assert jetson_release(tmp_path) is None


def test_jetson_board_by_release_file_even_without_a_model(tmp_path: Path) -> None:
    _write(tmp_path, "etc/nv_tegra_release", "\n# R36 (release), REVISION: 4.0, GCID: 1\n")
    assert board_model(tmp_path) is None
    assert board_family(tmp_path) == "jetson"
    assert jetson_release(tmp_path) == "# R36 (release), REVISION: 4.0, GCID: 1"


def test_model_from_sysfs_when_proc_has_none(tmp_path: Path) -> None:
    _write(tmp_path, "sys/firmware/devicetree/base/model", "Coral Dev Board\x00")
    assert board_model(tmp_path) == "Coral Dev Board"
    assert board_family(tmp_path) == "other"


def test_empty_tree_is_no_board_not_an_error(tmp_path: Path) -> None:
    assert board_model(tmp_path) is None and jetson_release(tmp_path) is None
    assert board_family(tmp_path) == "other"
    assert edgetpus(tmp_path) == [] and video_devices(tmp_path) == []


# --------------------------------------------------------------------------------------------
# Edge TPUs and cameras


def test_edgetpus_by_usb_ids_with_link_speed_and_pcie(tmp_path: Path) -> None:
    usb = "sys/bus/usb/devices/"
    for port, (vendor, product, speed) in {
        "1-1": ("1a6e", "089a", "480"),  # a Coral before its firmware is loaded, on USB 2
        "1-2": ("046d", "0825", "480"),  # a webcam
        "2-1": ("18d1", "9302", "5000"),  # a Coral after, on USB 3
    }.items():
        _write(tmp_path, usb + port + "/idVendor", vendor + "\n")
        _write(tmp_path, usb + port + "/idProduct", product + "\n")
        _write(tmp_path, usb + port + "/speed", speed + "\n")
    (tmp_path / usb / "usb1").mkdir()  # a hub without ids: skipped
    _write(tmp_path, "dev/apex_0", "")
    found = edgetpus(tmp_path)
    assert found == [
        EdgeTPU("usb", "1-1 (1a6e:089a)", 480),
        EdgeTPU("usb", "2-1 (18d1:9302)", 5000),
        EdgeTPU("pci", "/dev/apex_0"),
    ]
    assert [t.name for t in found] == [
        "usb:1-1 (1a6e:089a)",
        "usb:2-1 (18d1:9302)",
        "pci:/dev/apex_0",
    ]
    assert found[0].to_dict() == {"kind": "usb", "id": "1-1 (1a6e:089a)", "usb_speed_mbps": 480}


def test_video_devices_in_number_order(tmp_path: Path) -> None:
    for n in (10, 2, 0):
        _write(tmp_path, f"dev/video{n}", "")
    _write(tmp_path, "dev/apex_0", "")
    assert [p.name for p in video_devices(tmp_path)] == ["video0", "video2", "video10"]


# --------------------------------------------------------------------------------------------
# OpenCV without OpenCV: fakes of the module


def test_backends_counted_through_the_registry() -> None:
    registry = SimpleNamespace(hasBackend=lambda api: api == 1800)
    cv = SimpleNamespace(videoio_registry=registry, CAP_GSTREAMER=1800, CAP_FFMPEG=1900)
    assert opencv_has_backend(cv, "CAP_GSTREAMER") and not opencv_has_backend(cv, "CAP_FFMPEG")
    assert not opencv_has_backend(cv, "CAP_V4L2")  # not even defined
    old = SimpleNamespace(CAP_FFMPEG=1900)  # no registry: defined counts
    assert opencv_has_backend(old, "CAP_FFMPEG")


def test_capabilities_of_a_fake_build_with_a_gstreamer_plugin() -> None:
    registry = SimpleNamespace(hasBackend=lambda api: api == 1800)
    cv = SimpleNamespace(
        __version__="4.10.0",
        getBuildInformation=lambda: PYPI_HEADLESS,
        videoio_registry=registry,
        CAP_GSTREAMER=1800,
        CAP_FFMPEG=1900,
    )
    assert opencv_capabilities(cv) == {
        "version": "4.10.0",
        "gstreamer": True,  # a plugin loaded at run time
        "ffmpeg": True,
        "v4l2": True,
        "gui": False,
    }


# --------------------------------------------------------------------------------------------
# OpenCV capabilities


def test_opencv_capabilities_keys() -> None:
    cv2 = pytest.importorskip("cv2")
    caps = opencv_capabilities()
    assert set(caps) == {"version", "gstreamer", "ffmpeg", "v4l2", "gui"}
    assert caps["version"] == cv2.__version__
    assert all(isinstance(caps[k], bool) for k in ("gstreamer", "ffmpeg", "v4l2", "gui"))


PYPI_HEADLESS = """
  GUI:                           NONE
    VTK support:                 NO

  Video I/O:
    FFMPEG:                      YES
      avcodec:                   YES (62.28.101)
    GStreamer:                   NO
    v4l/v4l2:                    YES (linux/videodev2.h)
"""

JETPACK = """
  GUI:                           GTK2
    GTK+:                        YES (ver 2.24.32)
    VTK support:                 NO

  Video I/O:
    FFMPEG:                      NO
    GStreamer:                   YES (1.16.3)
    v4l/v4l2:                    YES (linux/videodev2.h)
"""

OLD_STYLE = """
  GUI:
    QT:                          NO
    GTK+ 3.x:                    NO
    GTK+:                        YES (ver 3.22.30)
    VTK support:                 NO

  Video I/O:
    FFMPEG:                      YES
    GStreamer:
      base:                      YES (ver 1.14.5)
      video:                     YES (ver 1.14.5)
    v4l/v4l2:                    NO
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (PYPI_HEADLESS, {"gstreamer": False, "ffmpeg": True, "v4l2": True, "gui": False}),
        (JETPACK, {"gstreamer": True, "ffmpeg": False, "v4l2": True, "gui": True}),
        (OLD_STYLE, {"gstreamer": True, "ffmpeg": True, "v4l2": False, "gui": True}),
    ],
)
def test_build_information_parsing(text: str, expected: dict[str, bool]) -> None:
    assert parse_opencv_build_information(text) == expected
    fake = SimpleNamespace(getBuildInformation=lambda: text)
    assert opencv_has_gui(fake) is expected["gui"]
