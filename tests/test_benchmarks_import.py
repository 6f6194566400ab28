"""Every script in benchmarks/ still imports: moving an edgeseg module cannot break one unseen.

Each script is loaded by path (its ``if __name__ == "__main__"`` part does not run), and
the edgeseg imports its functions make when they run (``from edgeseg.x import y`` inside a
function) and the ``python -m edgeseg.…`` modules it launches are resolved too.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))
SIBLINGS = {p.stem for p in SCRIPTS}
MODULE_STRING = re.compile(r"^edgeseg(\.[A-Za-z_][A-Za-z_0-9]*)+$")


def test_benchmarks_are_found() -> None:
    assert "isbi" in SIBLINGS and len(SCRIPTS) >= 5, SCRIPTS


def _exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent package is missing
        return False


def _import(name: str, where: str, broken: list[str]):
    """The module, or None with a line added to ``broken`` when edgeseg has no such module."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] not in ("edgeseg", *SIBLINGS):
            # A third-party package the module needs is absent here: nothing moved.
            pytest.skip(f"{name} needs {exc.name}, which is not installed")
        broken.append(f"{where}: {type(exc).__name__}: {exc}")
        return None


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_script_imports(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The scripts run as `python benchmarks/x.py`: their folder is on sys.path.
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for sibling in SIBLINGS:  # a sibling loaded by an earlier case is loaded afresh
        monkeypatch.delitem(sys.modules, sibling, raising=False)
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)  # __name__ is not "__main__": main() does not run
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] not in ("edgeseg", *SIBLINGS):
            # torch_train.py runs in a scratch environment with torch, never installed here
            pytest.skip(f"{script.name} needs {exc.name}, which is not installed")
        raise

    broken: list[str] = []
    tree = ast.parse(script.read_text(encoding="utf-8"), filename=str(script))
    for node in ast.walk(tree):
        where = f"{script.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] not in ("edgeseg", *SIBLINGS):
                continue
            imported = _import(node.module, where, broken)
            for alias in node.names:
                if imported is None or alias.name == "*" or hasattr(imported, alias.name):
                    continue
                if not _exists(f"{node.module}.{alias.name}"):
                    broken.append(f"{where}: from {node.module} import {alias.name}: no such name")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "edgeseg":
                    _import(alias.name, where, broken)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and MODULE_STRING.match(node.value)
            and not _exists(node.value)
        ):
            broken.append(f"{where}: no module {node.value} (launched with python -m?)")
    assert not broken, "\n".join(broken)
