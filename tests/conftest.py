"""Shared fixtures: the real ISBI 2012 and BBBC039 data (skipped when absent) and tiny models.

Shared helper functions are in helpers.py: test modules never import conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"
BBBC039 = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc039"


@pytest.fixture(autouse=True)
def _isolated_user_folders(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Config, cache (logs) and token folders of the test session, never the developer's:
    a ~/.config/edgeseg/edgeseg.toml or /etc/edgeseg/edgeseg.toml must not change a result."""
    home = tmp_path_factory.getbasetemp() / "user-folders"
    for name, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_CACHE_HOME", "cache"),
        ("EDGESEG_SYSTEM_CONFIG_DIR", "etc"),
    ):
        (home / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(home / sub))


@pytest.fixture(scope="session")
def isbi() -> Path:
    """../shared/data/isbi2012 (30 labelled 512² EM slices); skip when it is not there."""
    if not (ISBI / "images").is_dir():
        pytest.skip(f"ISBI 2012 data not found at {ISBI}")
    return ISBI


@pytest.fixture(scope="session")
def bbbc039() -> Path:
    """../shared/data/bbbc039 (U2OS nuclei, 520x696 uint16, labels/ with one id per nucleus,
    names WELL_SITE_ID); skip when it is not there."""
    if not (BBBC039 / "labels").is_dir():
        pytest.skip(f"BBBC039 data not found at {BBBC039}")
    return BBBC039


@pytest.fixture(scope="session")
def tiny_unet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 32x32 U-Net (4 filters, depth 2) saved as .keras with its sidecar."""
    keras = pytest.importorskip("keras")
    from edgeseg.core.metadata import ModelMetadata, write_sidecar
    from edgeseg.model.unet import UNetConfig, build_unet

    keras.utils.set_random_seed(0)  # the same weights every run: an int8 gate cannot flake
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    model = build_unet(UNetConfig(input_size=(32, 32), base_filters=4, depth=2))
    model.save(path)
    write_sidecar(ModelMetadata(input_size=(32, 32)), path)
    return path
