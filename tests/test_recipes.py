from __future__ import annotations

from pathlib import Path

import pytest

from edgeseg.convert.recipes import Recipe, available, load_recipe
from edgeseg.errors import DataError


def test_builtin_recipes_are_shipped_and_valid(tmp_path: Path) -> None:
    found = available(user_dir=tmp_path / "none")
    assert {"fp32", "fp16", "int8", "int8-uint8io", "int8-legacy"} <= set(found)
    assert found["int8"].needs_calibration and found["int8"].equalize
    assert found["int8"].min_dice_agreement == 0.95 and found["int8"].io == "int8"
    assert found["int8-uint8io"].io == "uint8"
    assert found["int8-cpu"].float_ends and not found["int8"].float_ends
    cpu = [r for r in found.values() if not r.edgetpu]
    assert all(r.depth_to_space for r in cpu) and not found["int8-edgetpu"].depth_to_space
    assert not found["fp16"].needs_calibration
    assert load_recipe("fp16", user_dir=tmp_path).precision == "fp16"


def test_user_recipes_by_path_and_by_name_win(tmp_path: Path) -> None:
    user = tmp_path / "converters" / "recipes"
    user.mkdir(parents=True)
    (user / "int8.toml").write_text('name = "int8"\nprecision = "int8"\nio = "uint8"\n')
    (user / "mine.toml").write_text('name = "mine"\nprecision = "fp16"\n')
    assert load_recipe("int8", user_dir=user).io == "uint8"
    assert load_recipe("mine", user_dir=user).precision == "fp16"
    assert load_recipe(str(user / "mine.toml")).name == "mine"


@pytest.mark.parametrize(
    "text, needle",
    [
        ('name = "x"\nprecision = "int4"\n', "precision"),
        ('name = "x"\nprecision = "fp16"\nio = "int8"\n', "integer I/O"),
        ('name = "x"\nprecision = "int8"\ncolour = 1\n', "unknown key"),
        ('precision = "int8"\n', "needs at least"),
        ("name = \n", "not valid TOML"),
        ('name = "x"\nprecision = "fp16"\nedgetpu = true\n', "Edge TPU"),
        ('name = "x"\nprecision = "fp16"\nfloat_ends = true\n', "CPU int8 recipes only"),
        ('name = "x"\nprecision = "int8"\nedgetpu = true\nfloat_ends = true\n', "CPU int8"),
        (
            'name = "x"\nprecision = "int8"\nquantizer = "legacy"\nfloat_ends = true\n',
            "default quantizer",
        ),
    ],
)
def test_bad_recipe_files(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(DataError, match=needle):
        load_recipe(str(path))


def test_unknown_recipe_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"available: .*fp16"):
        load_recipe("int3", user_dir=tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_recipe(str(tmp_path / "missing.toml"))
    with pytest.raises(DataError):
        Recipe(name="q", precision="int8", min_dice_agreement=2.0)
