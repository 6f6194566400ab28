"""The layer rule, enforced whole: every import of every module, read from the source.

Every import counts: at the top of a module, inside a function, under ``if TYPE_CHECKING``,
relative or absolute, and ``importlib.import_module("edgeseg…")`` with a literal name.

The package is cut into units (``edgeseg.core``, ``edgeseg.runtime``, … and each small module
at the top, ``edgeseg.paths``, ``edgeseg.session``, …). :data:`RANKS` lists them bottom up,
as ARCHITECTURE.md draws them; the rules:

1. **ranks**: a unit imports only units of lower ranks (and itself). Imports between units of
   one rank are forbidden unless :data:`SIDEWAYS` lists the pair. A module whose unit is not
   in :data:`RANKS` fails too: a new package must be given its place.
2. **core is pure**: ``edgeseg.core`` imports nothing of edgeseg but ``edgeseg.errors``,
   ``edgeseg.optional`` and itself.
3. **device code is light**: ``edgeseg.runtime``, ``edgeseg.devices`` and ``edgeseg.batch``
   never import the model loaders and importers (:data:`MODEL_FILES`), whatever their rank:
   a Raspberry Pi installs ``edgeseg[runtime]`` without TensorFlow or PyTorch.
4. **no private names across modules**: no module imports a ``_private`` name (one leading
   underscore; ``__dunder__`` names are fine) from another module, nor a module whose dotted
   path has a ``_private`` part.
5. **no import cycles** between modules, counting the imports inside functions.

Each rule is also checked against a planted violation, so the checker cannot pass by
catching nothing.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

import edgeseg

PACKAGE_DIR = Path(edgeseg.__file__).resolve().parent

#: Units bottom up; a unit may import the units of the ranks below its own.
RANKS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("optional", "paths", "sizes", "child", "quiet"),
    ("core", "hardware", "imageio", "config"),
    ("samples", "run_options", "service", "dicom"),
    ("model", "runtime", "datasets"),
    ("devices",),
    ("session",),
    ("convert", "bench", "train", "evaluate", "batch", "distill"),
    ("demo",),
    ("cli",),
)

#: Imports allowed between units of one rank: (importer, imported). A command that composes
#: training, conversion and measuring (``distill``: train a student, convert it, bench it).
SIDEWAYS: frozenset[tuple[str, str]] = frozenset(
    {("distill", "train"), ("distill", "convert"), ("distill", "bench")}
)

CORE_ALLOWED = ("edgeseg.errors", "edgeseg.optional", "edgeseg.core")
DEVICE_CODE = ("edgeseg.runtime", "edgeseg.devices", "edgeseg.batch")
#: What loads or imports a model file of its training framework (TensorFlow, PyTorch).
MODEL_FILES = ("edgeseg.model.loading", "edgeseg.model.importers", "edgeseg.model.resolve")

RANK = {unit: i for i, units in enumerate(RANKS) for unit in units}


class Import(NamedTuple):
    line: int
    target: str  # the module imported, or the module a name is imported from
    name: str | None  # the name in ``from target import name``, else None
    text: str  # how it reads in the report


def _within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def unit_of(module: str) -> str:
    """``edgeseg.runtime.backends.litert`` → ``runtime``; ``edgeseg.paths`` → ``paths``;
    the package itself → ``edgeseg``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "edgeseg"


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


def resolved(imp: Import, known: frozenset[str] = KNOWN_MODULES) -> str:
    """The module an import brings in: ``from edgeseg.model import loading`` is
    ``edgeseg.model.loading``; ``from edgeseg.core.quant import quantize`` is
    ``edgeseg.core.quant``."""
    if imp.name is not None and imp.name != "*":
        candidate = f"{imp.target}.{imp.name}"
        if candidate in known:
            return candidate
    return imp.target


def _rank_breach(module: str, target: str) -> str | None:
    a, b = unit_of(module), unit_of(target)
    if a == b or b == "edgeseg":
        return None
    if a not in RANK:
        return f"unit {a} has no rank: add it to RANKS (and to ARCHITECTURE.md)"
    if b not in RANK:
        return f"unit {b} has no rank: add it to RANKS (and to ARCHITECTURE.md)"
    if RANK[b] > RANK[a]:
        return f"{a} (rank {RANK[a]}) imports {b} (rank {RANK[b]}), a higher rank"
    if RANK[b] == RANK[a] and (a, b) not in SIDEWAYS:
        return f"{a} imports {b} sideways (both rank {RANK[a]}; not listed in SIDEWAYS)"
    return None


def violations(
    module: str,
    source: str,
    *,
    is_package: bool = False,
    known: frozenset[str] = KNOWN_MODULES,
) -> list[str]:
    """The rules ``module`` (its text is ``source``) breaks, one line each:
    ``module:line: how the import reads: which rule``."""
    found = []
    if unit_of(module) not in RANK and unit_of(module) != "edgeseg":
        found.append(f"{module}: unit {unit_of(module)} has no rank: add it to RANKS")
    for imp in imports_of(module, source, is_package=is_package):
        if not _within(imp.target, "edgeseg"):
            continue
        target = resolved(imp, known)
        broken = []
        # The bare package (``from edgeseg import __version__``) loads nothing new.
        root_dunder = target == "edgeseg" and (imp.name or "").startswith("__")
        rank = None if root_dunder else _rank_breach(module, target)
        if rank:
            broken.append(rank)
        if _within(module, "edgeseg.core") and not (_within(target, *CORE_ALLOWED) or root_dunder):
            broken.append("edgeseg.core imports only edgeseg.errors, .optional and .core")
        if _within(module, *DEVICE_CODE) and _within(target, *MODEL_FILES):
            broken.append("device code (runtime, devices, batch) never loads model files")
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
# Cycles


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """module → the edgeseg modules it imports (any import, anywhere in it); ``sources``:
    module → (text, is_package)."""
    known = frozenset(sources)
    graph: dict[str, set[str]] = {m: set() for m in sources}
    for module, (text, is_package) in sources.items():
        for imp in imports_of(module, text, is_package=is_package):
            target = resolved(imp, known)
            if target in known and target != module:
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _tree_sources() -> dict[str, tuple[str, bool]]:
    return {
        m: (p.read_text(encoding="utf-8"), p.name == "__init__.py")
        for m, p in package_modules().items()
    }


# --------------------------------------------------------------------------------------------
# The real tree


def test_the_walk_sees_the_whole_package() -> None:
    modules = package_modules()
    assert len(modules) > 40
    for name in ("edgeseg", "edgeseg.core.backend", "edgeseg.runtime.backends", "edgeseg.cli"):
        assert name in modules, name
    # Imports inside functions are seen: the LiteRT adapter reads tflite_file lazily.
    lazy = imports_of(
        "edgeseg.runtime.backends.litert",
        modules["edgeseg.runtime.backends.litert"].read_text("utf-8"),
    )
    assert any(i.target == "edgeseg.core.tflite_file" for i in lazy)


def architecture_ranks(text: str) -> tuple[tuple[str, ...], ...]:
    """The rank table of ARCHITECTURE.md (lines ``rank N  unit, unit``), bottom up."""
    import re

    found = {}
    for m in re.finditer(r"^\s+rank (\d+)\s+(.+)$", text, re.MULTILINE):
        found[int(m[1])] = tuple(u.strip() for u in m[2].split(","))
    return tuple(found[i] for i in sorted(found))


def test_every_unit_has_a_rank_and_architecture_md_draws_these_ranks() -> None:
    units = {unit_of(m) for m in package_modules()} - {"edgeseg"}
    assert units <= set(RANK), f"units without a rank: {sorted(units - set(RANK))}"
    text = (PACKAGE_DIR.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert architecture_ranks(text) == RANKS
    for a, b in sorted(SIDEWAYS):
        assert f"`{a}` → " in text and f"`{b}`" in text, (a, b)


def test_no_module_breaks_the_layer_rules() -> None:
    found = tree_violations()
    assert not found, f"{len(found)} import(s) against the layers:\n" + "\n".join(found)


def test_no_import_cycles() -> None:
    found = cycles(import_graph(_tree_sources()))
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


# --------------------------------------------------------------------------------------------
# The checker itself: it must catch what it is there to catch


def _check(module: str, code: str, **kwargs: bool) -> list[str]:
    return violations(module, textwrap.dedent(code), **kwargs)


@pytest.mark.parametrize(
    ("module", "code", "expected"),
    [
        # core is pure
        (
            "edgeseg.core.foo",
            """
            def f():
                from edgeseg.runtime import backends
                return backends
            """,
            "edgeseg.core.foo:3: from edgeseg.runtime import backends: core (rank 2) imports "
            "runtime (rank 4)",
        ),
        (
            "edgeseg.core.foo",
            """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from edgeseg.model.resolve import open_keras_model
            """,
            "edgeseg.core.foo:4: from edgeseg.model.resolve import open_keras_model",
        ),
        (
            "edgeseg.core.foo",
            "from ..paths import atomic_write\n",
            "edgeseg.core.foo:1: from edgeseg.paths import atomic_write: edgeseg.core imports only",
        ),
        # a higher rank
        ("edgeseg.runtime.foo", "import edgeseg.devices.fingerprint\n", "runtime (rank 4)"),
        ("edgeseg.runtime.foo", "from ..convert.tflite import convert\n", "a higher rank"),
        ("edgeseg.bench.latency", "from edgeseg.cli.common import err\n", "a higher rank"),
        (
            "edgeseg.demo",
            "import importlib\nimportlib.import_module('edgeseg.cli.main')\n",
            "edgeseg.demo:2: import_module('edgeseg.cli.main'): demo (rank 8) imports cli",
        ),
        ("edgeseg.session", "from edgeseg.evaluate import evaluate\n", "a higher rank"),
        # sideways, unless listed
        (
            "edgeseg.model.resolve",
            "def f():\n    from edgeseg.runtime.backends import open_model\n",
            "edgeseg.model.resolve:2: from edgeseg.runtime.backends import open_model: model "
            "imports runtime sideways",
        ),
        ("edgeseg.runtime.foo", "from edgeseg.datasets import split\n", "sideways"),
        ("edgeseg.convert.foo", "from edgeseg.train.trainer import train\n", "sideways"),
        ("edgeseg.batch.run", "from edgeseg.evaluate import evaluate\n", "sideways"),
        # device code never loads model files, even where the ranks would allow it
        (
            "edgeseg.devices.foo",
            "def g():\n    from edgeseg.model import loading\n",
            "edgeseg.devices.foo:2: from edgeseg.model import loading: device code",
        ),
        (
            "edgeseg.batch.tasks",
            "def f():\n    from edgeseg.model.loading import load_model\n",
            "edgeseg.batch.tasks:2: from edgeseg.model.loading import load_model: device code",
        ),
        # private names
        (
            "edgeseg.cli.run",
            "from edgeseg.runtime.backends.base import _MAX_DETAIL\n",
            "imports private _MAX_DETAIL from another module",
        ),
        (
            "edgeseg.runtime.sinks",
            "from .backends import _fmt_shape\n",
            "edgeseg.runtime.sinks:1: from edgeseg.runtime.backends import _fmt_shape: imports "
            "private _fmt_shape",
        ),
        ("edgeseg.devices.doctor", "import edgeseg._optional\n", "private _optional"),
        # a unit without a rank
        ("edgeseg.newthing", "from edgeseg.errors import DataError\n", "newthing has no rank"),
        ("edgeseg.cli.foo", "from edgeseg.newthing import x\n", "newthing has no rank"),
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
    assert _check("edgeseg.runtime.foo", "from edgeseg.samples import SyntheticStream\n") == []
    assert _check("edgeseg.session", "from edgeseg.model.resolve import open_keras_model\n") == []
    assert _check("edgeseg.distill.run", "from edgeseg.train.trainer import train\n") == []
    # __init__.py: one dot is the package itself.
    assert _check("edgeseg.runtime", "from . import backends\n", is_package=True) == []
    assert _check("edgeseg.core", "from ..cli import main\n", is_package=True) != []


def test_the_cycle_finder_finds_planted_cycles() -> None:
    sources = {
        "edgeseg.a": ("from edgeseg.b import x\n", False),
        "edgeseg.b": ("def f():\n    from edgeseg.c import y\n", False),  # inside a function
        "edgeseg.c": ("import edgeseg.a\n", False),
        "edgeseg.d": ("from edgeseg.a import x\n", False),  # reaches the cycle, is not in it
        "edgeseg.e": ("from edgeseg import f\n", False),  # a module imported by name
        "edgeseg.f": ("from edgeseg.e import z\n", False),
    }
    assert cycles(import_graph(sources)) == [
        ["edgeseg.a", "edgeseg.b", "edgeseg.c"],
        ["edgeseg.e", "edgeseg.f"],
    ]
    assert (
        cycles(import_graph({"edgeseg.a": ("import edgeseg.b\n", False), "edgeseg.b": ("", False)}))
        == []
    )
