"""Layers import only downward: every ssl_jax module's imports (module level and inside
functions, `import x` and `from x import y`, relative ones resolved) stay in its own layer or
below, and every top-level module or package under ssl_jax/ has its place in the table.

launch.py, benchmarks/ and experiments/ sit above all of ssl_jax (they may import anything);
dynamic imports by name (`importlib.import_module`, the task table) are not read here.
"""
from __future__ import annotations

import ast
import os

import pytest

from tests.conftest import ROOT

PACKAGE = "ssl_jax"

# level -> the top-level modules/packages under ssl_jax/ in it; a module may import from its
# own level or a lower one.
LAYERS: dict[int, tuple[str, ...]] = {
    0: ("ssl_jax", "ssl_jax.files", "ssl_jax.config", "ssl_jax.ignored"),  # leaf utilities
    1: ("ssl_jax.models",),
    2: ("ssl_jax.data",),
    3: ("ssl_jax.train",),
    4: ("ssl_jax.eval", "ssl_jax.interop"),
    5: ("ssl_jax.tasks",),
    6: ("ssl_jax.transfer", "ssl_jax.sweep", "ssl_jax.generate", "ssl_jax.embed",
        "ssl_jax.preview", "ssl_jax.plan", "ssl_jax.predict",
        "ssl_jax.cluster"),  # the commands and orchestration, and where runs execute
}
LEVEL = {name: level for level, names in LAYERS.items() for name in names}


def module_sources(root: str = ROOT) -> dict[str, tuple[str, bool]]:
    """Every module under ssl_jax/: dotted name -> (source text, is a package __init__)."""
    out = {}
    for folder, dirs, files in os.walk(os.path.join(root, PACKAGE)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                parts = os.path.relpath(os.path.join(folder, f), root)[:-3].split(os.sep)
                is_package = parts[-1] == "__init__"
                name = ".".join(parts[:-1] if is_package else parts)
                with open(os.path.join(folder, f), encoding="utf-8") as fh:
                    out[name] = (fh.read(), is_package)
    return out


def imports_of(name: str, source: str, is_package: bool,
               known: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement anywhere in `source`. `from x
    import y` imports x.y when that is a module of `known`, else x."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package, up level - 1
                package = name.split(".") if is_package else name.split(".")[:-1]
                anchor = package[:len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}" if base else alias.name
                found.append((full if full in known else base, node.lineno))
    return found


def level_of(module: str) -> int | None:
    """The layer of an ssl_jax module (its longest table prefix); None outside ssl_jax."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LEVEL:
            return LEVEL[prefix]
    return None


def upward_imports(sources: dict[str, tuple[str, bool]]) -> list[tuple[str, str, int]]:
    """(module, imported module, line) for each import of a higher layer."""
    known = set(sources)
    bad = []
    for name, (source, is_package) in sorted(sources.items()):
        own = level_of(name)
        for imported, line in imports_of(name, source, is_package, known):
            target = level_of(imported)
            if target is not None and own is not None and target > own:
                bad.append((name, imported, line))
    return bad


def test_no_module_imports_from_a_higher_layer():
    bad = upward_imports(module_sources())
    assert not bad, "upward imports (module, imported module, line):\n" + "\n".join(
        f"  {m} imports {i} (line {line})" for m, i, line in bad)


def test_the_layer_table_places_every_top_level_module():
    on_disk = {".".join(name.split(".")[:2]) for name in module_sources()}
    assert on_disk == set(LEVEL), (
        f"not placed in LAYERS: {sorted(on_disk - set(LEVEL))}; "
        f"in LAYERS but gone: {sorted(set(LEVEL) - on_disk)}")


@pytest.mark.parametrize("module, source, flagged", [
    ("ssl_jax.models.fake", "import numpy\n\ndef f():\n    from ssl_jax.tasks import get_task\n",
     [("ssl_jax.models.fake", "ssl_jax.tasks", 4)]),
    ("ssl_jax.models.fake", "from ssl_jax import data\n", [("ssl_jax.models.fake", "ssl_jax.data", 1)]),
    ("ssl_jax.data.fake", "import ssl_jax.train.loop\n",
     [("ssl_jax.data.fake", "ssl_jax.train.loop", 1)]),
    ("ssl_jax.data.fake", "from ..eval import squad_metrics\n",
     [("ssl_jax.data.fake", "ssl_jax.eval.squad_metrics", 1)]),
    ("ssl_jax.train.fake", "class A:\n    def m(self):\n        from .. import preview\n",
     [("ssl_jax.train.fake", "ssl_jax.preview", 3)]),
    # downward and same-layer imports pass
    ("ssl_jax.tasks.fake", "from ssl_jax.eval import probe\nfrom ssl_jax.tasks import base\n"
                           "from . import base\nimport ssl_jax.config\n", []),
    ("ssl_jax.eval.fake", "from ssl_jax.interop.pretrained import load_pretrained\n", []),
])
def test_the_checker_flags_a_synthetic_upward_import(module, source, flagged):
    sources = dict(module_sources())
    sources[module] = (source, False)
    assert [b for b in upward_imports(sources) if b[0] == module] == flagged
