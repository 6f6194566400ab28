"""Viewable frames, class-colour overlays, the HUD and side-by-side panels."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BINARY, THREE

from edgeseg.core.instances import InstanceSpec
from edgeseg.core.metadata import ModelMetadata
from edgeseg.core.preprocess import normalize
from edgeseg.errors import DataError
from edgeseg.runtime.overlay import (
    ALERT,
    class_colors,
    display_frame,
    draw_hud,
    hud_lines,
    instance_colors,
    overlay,
    side_by_side,
)

pytest.importorskip("cv2")


def gray_image(h: int = 40, w: int = 48, value: int = 100) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def two_class_labels(h: int = 40, w: int = 48) -> np.ndarray:
    labels = np.zeros((h, w), np.uint8)
    labels[5:15, 5:20] = 1
    labels[25:35, 30:44] = 2
    return labels


# ---------------------------------------------------------------------------- class_colors


def test_class_colors_fixed_distinct_and_black_background() -> None:
    for k in (1, 2, 3, 12, 40, 256):
        colours = class_colors(k)
        assert colours.shape == (k, 3) and colours.dtype == np.uint8
        assert len({tuple(c) for c in colours}) == k
    np.testing.assert_array_equal(class_colors(5), class_colors(40)[:5])
    assert not class_colors(3)[0].any()
    with pytest.raises(DataError):
        class_colors(0)


# ---------------------------------------------------------------------------- overlay


def test_overlay_fill_colours_only_labelled_pixels() -> None:
    image, labels = gray_image(), two_class_labels()
    before = image.copy()
    out = overlay(image, labels, THREE, alpha=0.5, contours=False)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(image, before)  # a new array; the input is untouched
    background = labels == 0
    np.testing.assert_array_equal(out[background], image[background])
    colours = class_colors(3)
    for c in (1, 2):
        expected = 0.5 * 100 + 0.5 * colours[c].astype(float)
        assert np.abs(out[labels == c] - expected).max() <= 1
    assert not np.array_equal(out[labels == 1][0], out[labels == 2][0])


def test_overlay_one_class_model_and_alpha_extremes() -> None:
    image = gray_image()
    labels = (two_class_labels() > 0).astype(np.uint8)
    opaque = overlay(image, labels, BINARY, alpha=1.0, contours=False)
    np.testing.assert_array_equal(opaque[labels == 1][0], class_colors(2)[1])
    clear = overlay(image, labels, BINARY, alpha=0.0, contours=False)
    np.testing.assert_array_equal(clear, image)


def test_overlay_contours_on_boundaries_only() -> None:
    image, labels = gray_image(), two_class_labels()
    out = overlay(image, labels, THREE, contours=True, fill=False)
    colours = class_colors(3)
    changed = np.any(out != image, axis=2)
    # The block's outline is drawn in the class colour; its inside and the background stay.
    assert (out[5, 5:20] == colours[1]).all() and (out[14, 5:20] == colours[1]).all()
    assert (out[5:15, 5] == colours[1]).all() and (out[5:15, 19] == colours[1]).all()
    assert not changed[6:14, 6:19].any()
    assert not changed[labels == 0].any()
    assert (out[25, 30:44] == colours[2]).all()


def test_overlay_without_labels_and_size_mismatch() -> None:
    image = gray_image()
    out = overlay(image, np.zeros((40, 48), np.uint8), THREE)
    np.testing.assert_array_equal(out, image)
    assert out is not image
    with pytest.raises(DataError, match="do not match"):
        overlay(image, np.zeros((20, 48), np.uint8), THREE)
    with pytest.raises(DataError, match="alpha"):
        overlay(image, two_class_labels(), THREE, alpha=1.5)


def test_overlay_accepts_frames_as_read() -> None:
    frame16 = np.full((40, 48), 1000, np.uint16)
    frame16[0, 0] = 0
    out = overlay(frame16, two_class_labels(), THREE)
    assert out.shape == (40, 48, 3) and out.dtype == np.uint8


# ---------------------------------------------------------------------------- instances

INSTANCES = ModelMetadata(input_size=(32, 32), instances=InstanceSpec().to_dict())


def touching_instances(h: int = 40, w: int = 48) -> np.ndarray:
    """Two objects side by side, touching along column 20, and a third far away."""
    ids = np.zeros((h, w), np.int32)
    ids[10:30, 8:20] = 1
    ids[10:30, 20:32] = 2
    ids[33:38, 40:46] = 300  # an id past 8 bits
    return ids


def test_instance_colors_fixed_by_id_and_black_background() -> None:
    ids = np.arange(0, 1024)
    colours = instance_colors(ids)
    assert colours.shape == (1024, 3) and colours.dtype == np.uint8
    assert (colours[0] == 0).all() and (colours[1:].max(axis=1) > 100).all()
    np.testing.assert_array_equal(colours[1], colours[257])  # a palette of 256, by id % 256
    assert len({tuple(c) for c in colours[1:257]}) == 256  # every one of them distinct
    np.testing.assert_array_equal(instance_colors(np.array([5, 6])), colours[[5, 6]])


def test_overlay_of_touching_instances_shows_a_boundary_and_two_colours() -> None:
    image, ids = gray_image(), touching_instances()
    c1, c2, c300 = instance_colors(np.array([1, 2, 300]))
    assert not np.array_equal(c1, c2)
    out = overlay(image, ids, INSTANCES, alpha=0.5)
    # Outlines, opaque in each object's colour: the line between the two touching objects
    # is two pixels, one of each colour.
    assert (out[15:25, 19] == c1).all() and (out[15:25, 20] == c2).all()
    assert (out[10, 9:19] == c1).all() and (out[29, 21:31] == c2).all()
    assert (out[33, 40:46] == c300).all()
    # Insides blended with the object's colour; the background untouched.
    for colour, inside in ((c1, out[12:28, 10:18]), (c2, out[12:28, 22:30])):
        expected = 0.5 * 100 + 0.5 * colour.astype(float)
        assert np.abs(inside.astype(float) - expected).max() <= 1
    np.testing.assert_array_equal(out[ids == 0], image[ids == 0])
    # The frame's edge is no outline: an object filling the frame has none.
    full = overlay(image, np.ones((40, 48), np.int32), INSTANCES, alpha=0.5)
    assert len(np.unique(full.reshape(-1, 3), axis=0)) == 1


def test_overlay_of_instances_fill_and_contours_switches() -> None:
    image, ids = gray_image(), touching_instances()
    c1 = instance_colors(np.array([1]))[0]
    outline_only = overlay(image, ids, INSTANCES, fill=False)
    assert (outline_only[15:25, 19] == c1).all()
    np.testing.assert_array_equal(outline_only[12:28, 10:18], image[12:28, 10:18])
    fill_only = overlay(image, ids, INSTANCES, contours=False, alpha=1.0)
    assert (fill_only[ids == 1] == c1).all()
    np.testing.assert_array_equal(overlay(image, ids * 0, INSTANCES), image)
    for dtype in (np.uint16, np.int64):
        np.testing.assert_array_equal(
            overlay(image, ids.astype(dtype), INSTANCES), overlay(image, ids, INSTANCES)
        )
    with pytest.raises(DataError, match="integer instance map"):
        overlay(image, ids.astype(np.float32), INSTANCES)
    with pytest.raises(DataError, match="uint8"):  # a semantic model's map stays uint8
        overlay(image, ids, THREE)


# ---------------------------------------------------------------------------- display_frame


def test_display_frame_uint8_gray_rgb_rgba() -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    shown = display_frame(gray)
    assert shown.shape == (20, 30, 3) and shown.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(shown[..., c], gray)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert display_frame(rgb) is rgb
    rgba = np.dstack([rgb, np.full((20, 30), 7, np.uint8)])
    np.testing.assert_array_equal(display_frame(rgba), rgb)
    np.testing.assert_array_equal(display_frame(gray[..., None])[..., 0], gray)


def test_display_frame_stretches_16_bit() -> None:
    # A 12-bit ramp in 16-bit storage: shown as black..white, not as near-black.
    ramp = np.tile(np.linspace(0, 4095, 200).astype(np.uint16), (10, 1))
    shown = display_frame(ramp)
    assert shown.shape == (10, 200, 3) and shown.dtype == np.uint8
    assert shown[:, 0].max() == 0 and shown[:, -1].min() == 255
    assert np.all(np.diff(shown[0, :, 0].astype(int)) >= 0)  # monotonic
    rgba16 = np.dstack([ramp, ramp, ramp, np.full_like(ramp, 65535)])
    np.testing.assert_array_equal(display_frame(rgba16), shown)


def test_display_frame_follows_the_metadata_rule() -> None:
    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (8, 1))
    twelve_bit = BINARY.with_updates(input_max=4095.0)
    shown = display_frame(ramp, twelve_bit)[..., 0]
    expected = np.clip(normalize(ramp, twelve_bit) * 255, 0, 255)
    assert np.abs(shown - expected).max() <= 1
    pct = BINARY.with_updates(normalization="percentile", percentiles=(5.0, 95.0))
    shown = display_frame(ramp, pct)[..., 0]
    expected = np.clip(normalize(ramp, pct) * 255, 0, 255)
    assert np.abs(shown - expected).max() <= 1.5


def test_display_frame_float_bool_and_bad_shapes() -> None:
    x = np.linspace(-1, 3, 64, dtype=np.float32).reshape(8, 8)
    x[0, 0], x[0, 1] = np.nan, np.inf
    shown = display_frame(x)
    assert shown.shape == (8, 8, 3) and shown.dtype == np.uint8
    assert shown[..., 0].max() == 255 and shown[..., 0].min() == 0
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = True
    assert display_frame(mask)[1, 1, 0] == 255 and display_frame(mask)[0, 0, 0] == 0
    two = np.zeros((4, 4, 2), np.uint8)
    assert display_frame(two).shape == (4, 4, 3)
    with pytest.raises(DataError):
        display_frame(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(DataError):
        display_frame(np.zeros(4, np.uint8))


# ---------------------------------------------------------------------------- HUD


def test_draw_hud_in_place_in_the_chosen_corner() -> None:
    image = gray_image(120, 160)
    result = draw_hud(image, ["FPS 23.4", "objects 17"])
    assert result is image
    changed = np.any(image != 100, axis=2)
    assert changed[:30, :60].any()
    assert not changed[60:, 80:].any()  # the opposite corner is untouched
    assert (image[:40, :80] == 255).all(axis=2).any()  # white text on a darkened box
    assert (image[:40, :80] < 100).all(axis=2).any()
    other = gray_image(120, 160)
    draw_hud(other, ["FPS 1.0"], corner="br")
    changed = np.any(other != 100, axis=2)
    assert changed[90:, 100:].any() and not changed[:60, :80].any()


def test_draw_hud_edge_cases() -> None:
    tiny = gray_image(8, 8)
    draw_hud(tiny, ["a very long line that does not fit"])  # clipped, no error
    untouched = gray_image()
    draw_hud(untouched, [])
    assert (untouched == 100).all()
    with pytest.raises(DataError, match="corner"):
        draw_hud(gray_image(), ["x"], corner="middle")
    with pytest.raises(DataError, match="contiguous"):
        draw_hud(gray_image()[:, ::2], ["x"])


def test_hud_lines() -> None:
    stages = {"preprocess": 2.14, "inference": 31.2, "postprocess": 1.0, "render": 3.3}
    assert hud_lines(23.44, stages, 17, 4) == [
        "FPS 23.4",
        "infer 31.2 ms  pre 2.1  post 1.0  render 3.3",
        "objects 17",
        "dropped 4",
    ]
    assert hud_lines(None, {"inference_ms": 5.0}, None, 0) == ["infer 5.0 ms", "dropped 0"]
    assert hud_lines(None, {}, None, None) == []


def test_hud_shows_a_lost_camera_in_red_first_and_counts_outages() -> None:
    lost = "camera lost, retrying since 14:02:11"
    lines = hud_lines(12.0, {}, 3, 0, status=lost, outages=2)
    assert lines == [(lost, ALERT), "FPS 12.0", "objects 3", "dropped 0", "outages 2"]
    assert hud_lines(12.0, {}, None, None, status=None, outages=0) == ["FPS 12.0"]
    image = gray_image(120, 320)
    draw_hud(image, lines)
    red = (image[..., 0] > 200) & (image[..., 1] < 120) & (image[..., 2] < 120)
    white = (image == 255).all(axis=2)
    rows = np.flatnonzero(red.any(axis=1))
    assert rows.size and white.any()
    assert rows.max() < np.flatnonzero(white.any(axis=1)).min()  # the red line is on top
    plain = gray_image(120, 320)
    draw_hud(plain, ["FPS 12.0", ("", ALERT)])  # empty lines are left out, coloured or not
    assert not ((plain[..., 0] > 200) & (plain[..., 1] < 120)).any()


def test_side_by_side_pads_never_resamples() -> None:
    a = gray_image(20, 10, 50)
    b = np.full((12, 6), 200, np.uint8)
    out = side_by_side(a, b, gap=2)
    assert out.shape == (20, 18, 3)
    assert (out[:, :10] == 50).all() and (out[:12, 12:] == 200).all()
    assert not out[12:, 12:].any() and not out[:, 10:12].any()


def test_overlay_contours_two_pixels_wide_from_1024() -> None:
    labels = np.zeros((1024, 1030), np.uint8)
    labels[100:200, 100:300] = 1
    image = np.full((1024, 1030, 3), 50, np.uint8)
    out = overlay(image, labels, BINARY, contours=True, fill=False)
    colour = class_colors(2)[1]
    drawn = np.all(out == colour, axis=2)
    # The outline lies inside the object, two pixels wide, and nothing is drawn outside it.
    assert drawn[100:102, 150].all() and not drawn[102:198, 150].any()
    assert drawn[150, 298:300].all() and not drawn[150, 102:298].any()
    assert not drawn[labels == 0].any()
