"""`evaluate` on a labels/ folder: object matching through the Segmenter, tiled frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import disc_labels, instance_meta, labels_oracle

from edgeseg.core.metadata import ModelMetadata
from edgeseg.evaluate import evaluate
from edgeseg.imageio import write_image

pytest.importorskip("cv2")


def _folder(root: Path) -> Path:
    """Images whose pixel values are their own instance ids (uint16), and those labels:
    a touching pair (radii 12 and 8, so their union overlaps the big one with IoU > 0.5),
    a lone disc, a 3x3 speck (ignored), and an empty image."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    a = disc_labels((70, 100), [(30.0, 25.0, 12.0), (30.0, 45.0, 8.0), (50.0, 80.0, 10.0)])
    a[2:5, 95:98] = 4
    for name, labels in (("A01_s1", a), ("B02_s1", np.zeros((70, 100), np.int32))):
        write_image(root / "images" / f"{name}.png", labels.astype(np.uint16))
        write_image(root / "labels" / f"{name}.png", labels.astype(np.uint16))
    return root


def test_perfect_instance_model_scores_one(tmp_path: Path) -> None:
    meta = instance_meta(32, normalization="scale", input_max=65535.0)
    report = evaluate(labels_oracle(meta, 65535.0), meta, _folder(tmp_path / "d"))
    inst = report.instances
    assert inst is not None and report.targets == "labels" and inst.objects == "instances"
    assert (inst.pooled.n_true, inst.pooled.n_pred) == (3, 3)
    assert inst.pooled.ap(0.5) == 1.0 and inst.pooled.mean_ap == 1.0
    assert inst.median_count_error == 0.0  # over the one image with objects
    per = dict(inst.per_image)
    assert per["B02_s1"].count_error is None and per["B02_s1"].ap(0.5) == 1.0
    d = report.to_dict()["instances"]
    assert d["pooled"]["ap50"] == 1.0 and d["per_image"]["B02_s1"]["count_error"] is None
    assert report.classes[0].pooled.dice > 0.99


def test_semantic_model_merges_the_touching_pair(tmp_path: Path) -> None:
    meta = ModelMetadata(input_size=(32, 32), normalization="scale", input_max=65535.0)
    report = evaluate(labels_oracle(meta, 65535.0), meta, _folder(tmp_path / "d"))
    inst = report.instances
    assert inst is not None and inst.objects == "8-connected components"
    # The merged pair matches the big disc; the small one is missed.
    assert (inst.pooled.tp[0], inst.pooled.fp[0], inst.pooled.fn[0]) == (2, 0, 1)
    assert inst.pooled.ap(0.5) == pytest.approx(2 / 3)
    assert inst.median_count_error == pytest.approx(1 / 3)
