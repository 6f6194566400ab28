"""Import directions between edgeseg's layers, read from the source with ``ast``.

The layers, bottom up: ``edgeseg.core`` (with ``errors`` and ``optional``), ``runtime``,
``devices``, then the tools (``convert``, ``train``, ``model.loading``) and the command line
(``cli``). Every import counts: at the top of a module, inside a function, under
``if TYPE_CHECKING``, relative or absolute, and ``importlib.import_module("edgeseg…")`` with a
literal name. The rules:

- ``edgeseg.core`` imports nothing of edgeseg but ``edgeseg.errors``, ``edgeseg.optional``
  and ``edgeseg.core.*``;
- ``edgeseg.runtime`` and ``edgeseg.devices`` never import ``edgeseg.convert``,
  ``edgeseg.train``, ``edgeseg.model.loading`` or ``edgeseg.cli``;
- ``edgeseg.runtime`` never imports ``edgeseg.devices`` (devices sits above runtime);
- no module outside ``edgeseg.cli`` imports ``edgeseg.cli``;
- no module imports a ``_private`` name (one leading underscore; ``__dunder__`` names are
  fine) from another edgeseg module, nor a module whose dotted path has a ``_private`` part.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

import edgeseg

PACKAGE_DIR = Path(edgeseg.__file__).resolve().parent

CORE_ALLOWED = ("edgeseg.errors", "edgeseg.optional", "edgeseg.core")
TOOLS = ("edgeseg.convert", "edgeseg.train", "edgeseg.model.loading", "edgeseg.cli")


class Import(NamedTuple):
    line: int
    target: str  # the module imported, or the module a name is imported from
    name: str | None  # the name in ``from target import name``, else None
    text: str  # how it reads in the report


def _within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def package_modules(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every module of the package: dotted name (``edgeseg.runtime`` for its __init__) → file."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


KNOWN_MODULES = frozenset(package_modules())


def imports_of(module: str, source: str, *, is_package: bool = False) -> list[Import]:
    """Every import in ``source`` (the text of ``module``), relative ones made absolute."""
    tree = ast.parse(source, filename=module)
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(node.lineno, alias.name, None, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                if node.level - 1 > len(parts) - 1:
                    raise ValueError(f"{module}:{node.lineno}: relative import beyond edgeseg")
                anchor = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                found.append(
                    Import(node.lineno, base, alias.name, f"from {base} import {alias.name}")
                )
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module",))
            )
        ):
            name = node.args[0].value
            found.append(Import(node.lineno, name, None, f"import_module({name!r})"))
    return sorted(found)


def _resolved(imp: Import, known: frozenset[str]) -> str:
    """The module an import brings in: ``from edgeseg.model import loading`` is
    ``edgeseg.model.loading``; ``from edgeseg.core.quant import quantize`` is
    ``edgeseg.core.quant``."""
    if imp.name is not None and imp.name != "*":
        candidate = f"{imp.target}.{imp.name}"
        if candidate in known:
            return candidate
    return imp.target


def violations(
    module: str,
    source: str,
    *,
    is_package: bool = False,
    known: frozenset[str] = KNOWN_MODULES,
) -> list[str]:
    """The layer rules ``module`` (its text is ``source``) breaks, one line each:
    ``module:line: how the import reads: which rule``."""
    found = []
    for imp in imports_of(module, source, is_package=is_package):
        if not _within(imp.target, "edgeseg"):
            continue
        target = _resolved(imp, known)
        broken = []
        # The bare package (``from edgeseg import __version__``) loads nothing new.
        root_dunder = target == "edgeseg" and (imp.name or "").startswith("__")
        if _within(module, "edgeseg.core") and not (_within(target, *CORE_ALLOWED) or root_dunder):
            broken.append("edgeseg.core imports only edgeseg.errors, .optional and .core")
        if _within(module, "edgeseg.runtime", "edgeseg.devices") and _within(target, *TOOLS):
            broken.append("runtime/devices never import convert, train, model.loading or cli")
        if _within(module, "edgeseg.batch") and _within(target, *TOOLS):
            broken.append("batch runs converted models: never convert, train, model.loading, cli")
        if _within(module, "edgeseg.runtime") and _within(target, "edgeseg.devices"):
            broken.append("runtime never imports devices (devices sits above runtime)")
        if not _within(module, "edgeseg.cli") and _within(target, "edgeseg.cli"):
            broken.append("only edgeseg.cli imports edgeseg.cli")
        private_parts = [p for p in imp.target.split(".") if _is_private(p)]
        if imp.name is not None and _is_private(imp.name) and imp.target != module:
            private_parts.append(imp.name)
        if private_parts:
            broken.append(f"imports private {', '.join(private_parts)} from another module")
        found += [f"{module}:{imp.line}: {imp.text}: {why}" for why in broken]
    return found


def tree_violations() -> list[str]:
    found = []
    for module, path in package_modules().items():
        is_package = path.name == "__init__.py"
        found += violations(module, path.read_text(encoding="utf-8"), is_package=is_package)
    return found


# --------------------------------------------------------------------------------------------
# The real tree


def test_the_walk_sees_the_whole_package() -> None:
    modules = package_modules()
    assert len(modules) > 40
    for name in ("edgeseg", "edgeseg.core.backend", "edgeseg.runtime.backends", "edgeseg.cli"):
        assert name in modules, name
    # Imports inside functions are seen: backends.py opens tflite_file lazily.
    lazy = imports_of(
        "edgeseg.runtime.backends", modules["edgeseg.runtime.backends"].read_text("utf-8")
    )
    assert any(i.target == "edgeseg.core.tflite_file" for i in lazy)


def test_no_module_breaks_the_layer_rules() -> None:
    found = tree_violations()
    assert not found, f"{len(found)} import(s) against the layers:\n" + "\n".join(found)


# --------------------------------------------------------------------------------------------
# The checker itself: it must catch what it is there to catch


def _check(module: str, code: str, **kwargs: bool) -> list[str]:
    return violations(module, textwrap.dedent(code), **kwargs)


@pytest.mark.parametrize(
    ("module", "code", "expected"),
    [
        (
            "edgeseg.core.foo",
            """
            def f():
                from edgeseg.runtime import backends
                return backends
            """,
            "edgeseg.core.foo:3: from edgeseg.runtime import backends: edgeseg.core imports",
        ),
        (
            "edgeseg.core.foo",
            """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from edgeseg.model.resolve import resolve_model
            """,
            "edgeseg.core.foo:4: from edgeseg.model.resolve import resolve_model",
        ),
        (
            "edgeseg.core.foo",
            "from ..datasets import LabelledFolder\n",
            "edgeseg.core.foo:1: from edgeseg.datasets import LabelledFolder",
        ),
        (
            "edgeseg.runtime.foo",
            "import edgeseg.devices.fingerprint\n",
            "runtime never imports devices",
        ),
        (
            "edgeseg.devices.foo",
            "def g():\n    from edgeseg.model import loading\n",
            "edgeseg.devices.foo:2: from edgeseg.model import loading: runtime/devices never",
        ),
        (
            "edgeseg.runtime.foo",
            "from ..convert.tflite import convert\n",
            "from edgeseg.convert.tflite import convert: runtime/devices never",
        ),
        (
            "edgeseg.batch.tasks",
            "def f():\n    from edgeseg.model.loading import load_model\n",
            "edgeseg.batch.tasks:2: from edgeseg.model.loading import load_model: batch runs",
        ),
        (
            "edgeseg.bench.latency",
            "from edgeseg.cli.common import err\n",
            "only edgeseg.cli imports edgeseg.cli",
        ),
        (
            "edgeseg.demo",
            "import importlib\nimportlib.import_module('edgeseg.cli.main')\n",
            "edgeseg.demo:2: import_module('edgeseg.cli.main'): only edgeseg.cli",
        ),
        (
            "edgeseg.cli.run",
            "from edgeseg.runtime.backends import _detail\n",
            "imports private _detail from another module",
        ),
        (
            "edgeseg.runtime.sinks",
            "from .backends import _fmt_shape\n",
            "edgeseg.runtime.sinks:1: from edgeseg.runtime.backends import _fmt_shape: imports "
            "private _fmt_shape",
        ),
        (
            "edgeseg.devices.doctor",
            "import edgeseg._optional\n",
            "imports private _optional from another module",
        ),
    ],
)
def test_the_checker_reports_a_broken_rule(module: str, code: str, expected: str) -> None:
    found = _check(module, code)
    assert any(expected in line for line in found), found


def test_the_checker_passes_allowed_imports() -> None:
    assert (
        _check(
            "edgeseg.core.foo",
            """
        import numpy as np
        from edgeseg import __version__
        from edgeseg.errors import DataError
        from edgeseg.optional import require
        from edgeseg.core.quant import TensorInfo
        from . import metadata
        from .tiling import plan_tiles
        def f():
            from edgeseg.core.tflite_file import read_metadata
        """,
        )
        == []
    )
    assert (
        _check(
            "edgeseg.cli.run",
            "from edgeseg.cli.common import err\nfrom edgeseg.convert import tflite\n",
        )
        == []
    )
    assert _check("edgeseg.devices.profiles", "from edgeseg.runtime import backends\n") == []
    # __init__.py: one dot is the package itself.
    assert _check("edgeseg.runtime", "from . import backends\n", is_package=True) == []
    assert _check("edgeseg.core", "from ..cli import main\n", is_package=True) != []
