"""Labelled folders with instance labels (labels/: one id per object) and the split by group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error, write_instance_pairs, write_pairs
from typer.testing import CliRunner

from edgeseg.core.metadata import ModelMetadata
from edgeseg.datasets import (
    LabelledSet,
    find_pairs,
    group_of,
    load_labelled,
    read_instance_labels,
    split,
    split_groups,
    target_kind,
)
from edgeseg.errors import DataError
from edgeseg.imageio import list_images, write_image

pytest.importorskip("cv2")
META = ModelMetadata(input_size=(32, 32))
runner = CliRunner()


def test_instance_mode_is_automatic_when_only_labels(tmp_path: Path) -> None:
    root = write_instance_pairs(tmp_path / "d", n=3, size=(48, 40))
    assert target_kind(root) == "labels"
    data = load_labelled(root, META, instances=None)
    assert data.instances and len(data) == 3
    assert all(t.dtype == np.int32 and t.shape == (48, 40) and t.max() > 1 for t in data.targets)
    with pytest.raises(DataError, match="no masks/ folder"):
        load_labelled(root, META, instances=False)


def test_both_folders_masks_by_default_labels_on_request(tmp_path: Path) -> None:
    root = write_instance_pairs(tmp_path / "d", n=2, size=(40, 40))
    (root / "masks").mkdir()
    for p in list_images(root / "labels"):
        labels = read_instance_labels(p)
        write_image(root / "masks" / p.name, np.where(labels > 0, 255, 0).astype(np.uint8))
    assert target_kind(root) == "masks"
    masks = load_labelled(root, META, instances=None)
    assert not masks.instances and masks.targets[0].dtype == np.uint8
    assert set(np.unique(masks.targets[0])) <= {0, 1}
    labels = load_labelled(root, META, instances=True)
    assert labels.instances and labels.targets[0].max() > 1
    assert np.array_equal(labels.targets[0] > 0, masks.targets[0] > 0)


def test_instances_requested_without_labels_folder(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "d", n=2)
    with pytest.raises(DataError, match="no labels/ folder"):
        target_kind(root, True)


def test_float_label_images_are_refused(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    root = write_instance_pairs(tmp_path / "d", n=2, size=(40, 40))
    bad = list_images(root / "labels")[0]
    bad.unlink()
    tifffile.imwrite(bad.with_suffix(".tif"), np.ones((40, 40), np.float32))
    with pytest.raises(DataError, match="integer ids") as exc:
        load_labelled(root, META, instances=True)
    assert "\n" not in str(exc.value) and bad.stem in str(exc.value)


def test_names_that_do_not_match_name_the_first_missing(tmp_path: Path) -> None:
    root = write_instance_pairs(tmp_path / "d", n=3, size=(40, 40))
    first = list_images(root / "labels")[0]
    first.rename(first.with_name("zzz.png"))
    with pytest.raises(DataError, match=f"without a label image.*{first.name}"):
        find_pairs(root, "labels")
    # The image comes back, the stray label stays: also refused, by name.
    write_image(root / "labels" / first.name, np.zeros((40, 40), np.uint16))
    with pytest.raises(DataError, match=r"zzz\.png"):
        find_pairs(root, "labels")


def test_label_image_of_another_size(tmp_path: Path) -> None:
    root = write_instance_pairs(tmp_path / "d", n=2, size=(40, 40))
    p = list_images(root / "labels")[1]
    write_image(p, np.ones((40, 36), np.uint16))
    with pytest.raises(DataError, match=f"{p.name}: image is 40x40 but its label image is 36x40"):
        load_labelled(root, META, instances=True)


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    from edgeseg.cli.main import app

    root = write_instance_pairs(tmp_path / "d", n=2, size=(40, 40))
    p = list_images(root / "labels")[1]
    write_image(p, np.ones((40, 36), np.uint16))
    result = runner.invoke(app, ["train", "--data", str(root), "--out", str(tmp_path / "m.keras")])
    one_line_error(result, "label image is 36x40")
    result = runner.invoke(
        app, ["train", "--data", str(write_pairs(tmp_path / "m")), "--instances",
              "--out", str(tmp_path / "m.keras")],
    )  # fmt: skip
    one_line_error(result, "no labels/ folder")


# --------------------------------------------------------------------------------------------
# Split by group


def _named(names: list[str]) -> LabelledSet:
    z = np.zeros((4, 4), np.uint8)
    return LabelledSet(tuple(z[..., None] for _ in names), tuple(z for _ in names), tuple(names))


WELLS = [f"{w}_s{s}_{i:02d}" for i, (w, s) in enumerate(
    (w, s) for w in ("A01", "A02", "B07", "C11", "D03", "E05") for s in (1, 2, 3)
)]  # fmt: skip


def test_group_of_default_and_pattern() -> None:
    assert group_of("A06_s6_B957") == "A06" and group_of("0001") == "0001"
    assert group_of("plate1-A06-s2", r"plate\d-(\w+)-") == "A06"
    assert group_of("other", r"plate\d-(\w+)-") == "other"
    with pytest.raises(DataError, match="invalid group pattern"):
        split_groups(_named(WELLS), 0.3, pattern="(")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_holds_whole_wells_out(seed: int) -> None:
    s = split_groups(_named(WELLS), 0.3, seed=seed)
    train_wells = {group_of(n) for n in s.train.names}
    val_wells = {group_of(n) for n in s.val.names}
    assert not train_wells & val_wells and train_wells and val_wells
    assert set(s.val_groups) == val_wells and s.n_groups == 6
    assert len(s.val) >= round(0.3 * len(WELLS))  # whole groups until the share is reached
    again = split_groups(_named(WELLS), 0.3, seed=seed)
    assert again.val.names == s.val.names  # seeded


def test_split_by_named_groups() -> None:
    s = split_groups(_named(WELLS), 0.3, val_groups=["B07", "E05"])
    assert s.val_groups == ("B07", "E05") and len(s.val) == 6
    with pytest.raises(DataError, match="'Z99' not found"):
        split_groups(_named(WELLS), 0.3, val_groups=["Z99"])
    with pytest.raises(DataError, match="every group"):
        split_groups(_named(["a_1", "b_1"]), 0.3, val_groups=["a", "b"])


def test_ungrouped_names_split_by_image_as_before() -> None:
    names = [f"{i:04d}" for i in range(10)]
    train, val = split(_named(names), 0.2, seed=3)
    order = np.random.default_rng(3).permutation(10)  # the split by image of old
    assert list(val.names) == [names[i] for i in sorted(order[:2])]
    assert len(train) == 8
    one_group = split_groups(_named([f"A01_{i}" for i in range(5)]), 0.4)
    assert len(one_group.val) == 2 and len(one_group.train) == 3  # one well: by image


def test_bbbc039_labels_and_wells(bbbc039: Path) -> None:
    pairs = find_pairs(bbbc039, "labels")
    assert len(pairs) > 100 and target_kind(bbbc039) == "labels"
    img_path, label_path = pairs[0]
    from edgeseg.imageio import read_image

    image = read_image(img_path)
    labels = read_instance_labels(label_path, image.shape)
    assert labels.shape == (520, 696) and labels.dtype == np.int32 and labels.max() > 10
    names = [p.stem for p, _ in pairs]
    s = split_groups(_named(names), 0.2, seed=0)
    assert not {group_of(n) for n in s.train.names} & {group_of(n) for n in s.val.names}
    assert 0.15 <= len(s.val) / len(names) <= 0.35
