"""The static layout scan of issue 14 ("Done when"): the code is read with ``ast``, never imported.

Over ``edgepatch/`` and ``converters/`` (how imports are resolved: ``layout_scan``):

- no import cycle, function-level imports included;
- the layers run one way: a module imports only from its own layer or a lower one (``LAYERS``);
- no module over ``MAX_LINES`` lines (the spec is a text, ``edgepatch/format/spec.rst``, not a module), at most ``MAX_TOP_LEVEL`` modules directly in ``edgepatch/``;
- no kind-name branch outside ``edgepatch/kinds/`` (benchmarks too, for comparisons);
- nothing under ``edgepatch/runtime`` reaches TensorFlow or Keras, through any chain of imports;
- ``benchmarks/`` uses no private name of the product.

A kind-name branch is code that behaves differently for one patch kind by naming it, instead of
asking the kind (the registry). It is one of:

- a comparison (``==``, ``!=``, ``in``, ``not in``) of a registered kind name (a string, or a
  tuple/list/set of them) with an expression that holds kinds: one whose names or string keys
  contain ``kind``, ``trained``, ``private`` or ``patch`` (``trained == ("full",)``,
  ``"logits" in patch.kinds``, ``patch_spec == "full"``);
- a comparison with a tuple/list/set made only of kind names, unless the other side is a site or
  an op (a name made of words like ``op``/``site``);
- ``get_kind("<literal>")``, and any use of the name ``HEAD_KIND``.

Kind names are also other things' names, and those comparisons are not kind branches:
``"depthwise"`` is a site op (``op == "depthwise"`` picks a kernel layout), ``"logits"`` a layer
or site name (``site == "logits"``, ``"logits" in sites``), ``"full"`` a benchmark variant
(``"full" in chosen``). The rule tells them apart by what the other side is called.
"""

from __future__ import annotations

import ast
import os
import re

import pytest
from layout_scan import (
    PROJECT_PACKAGES,
    REPO,
    Module,
    chain,
    cycle_path,
    cycles,
    import_graph,
    module_from_source,
    loaded_imports,
    parse_modules,
    reach,
    resolve_imports,
)

# (path prefix, layer, label): a module's layer is that of the first prefix its path starts with.
# The package root is the facade users import (``edgepatch.patch_model``): it may reach any layer,
# lazily, and no module may import from it.
LAYERS = (
    ("edgepatch/__init__.py", 9, "facade"), ("edgepatch/errors.py", 0, "top"), ("edgepatch/atomic.py", 0, "top"),
    ("edgepatch/format/", 1, "format"), ("edgepatch/kinds/", 2, "kinds"), ("edgepatch/runtime/", 3, "runtime"),
    ("edgepatch/train/", 4, "train"), ("converters/", 5, "converters"), ("edgepatch/ship/", 6, "ship"),
    ("edgepatch/apps/", 7, "apps"), ("edgepatch/cli/", 8, "cli"),
)
MAX_LINES = 450
MAX_TOP_LEVEL = 12
# The registered kinds (issue 14 makes "full" one); the scan also finds any other ``name = "..."``
# a class in edgepatch/kinds/ sets.
KIND_NAMES = frozenset({"scale_bias", "depthwise", "logits", "full"})
KIND_WORDS = ("kind", "trained", "private", "patch")
SITE_WORDS = frozenset({"op", "ops", "site", "sites"})
TENSORFLOW = re.compile(r"(tensorflow(_\w+)?|keras|tf_keras|tf2onnx)")  # top-level modules that load TensorFlow

PROJECT = parse_modules("edgepatch", "converters")
resolve_imports(PROJECT)
BENCHMARKS = parse_modules("benchmarks")
resolve_imports(BENCHMARKS, {**PROJECT, **BENCHMARKS})


def layer(module: Module) -> tuple[int, str] | None:
    return next(((number, label) for prefix, number, label in LAYERS if module.path.startswith(prefix)), None)


def registered_kind_names() -> frozenset[str]:
    """KIND_NAMES and every non-empty ``name = "..."`` a class in edgepatch/kinds/ sets."""
    found = set()
    kinds_modules = [module for name, module in PROJECT.items() if name.startswith("edgepatch.kinds")]
    for module in kinds_modules:
        classes = [node for node in ast.walk(module.tree) if isinstance(node, ast.ClassDef)]
        for statement in (statement for cls in classes for statement in cls.body):
            if (isinstance(statement, ast.Assign) and [getattr(t, "id", None) for t in statement.targets] == ["name"]
                    and isinstance(statement.value, ast.Constant) and isinstance(statement.value.value, str)):
                found.add(statement.value.value)
    return KIND_NAMES | (found - {""})


def _literal_kinds(node: ast.expr, kinds: frozenset[str]) -> tuple[set[str], bool]:
    """(the kind names a string or string-collection literal holds, whether it holds only kinds)."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    strings = [item.value for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str)]
    if len(strings) != len(items):
        return set(), False
    return set(strings) & kinds, isinstance(node, (ast.Tuple, ast.List, ast.Set)) and set(strings) <= kinds


def _words(node: ast.expr) -> list[str]:
    """The names, attribute names and string subscript keys in an expression, lower case."""
    words = []
    for part in ast.walk(node):
        if isinstance(part, ast.Name):
            words.append(part.id.lower())
        elif isinstance(part, ast.Attribute):
            words.append(part.attr.lower())
        elif isinstance(part, ast.Subscript) and isinstance(part.slice, ast.Constant):
            words.append(str(part.slice.value).lower())
    return words


def _is_kind_comparison(node: ast.Compare, kinds: frozenset[str]) -> bool:
    if not any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
        return False
    operands = [node.left, *node.comparators]
    for index, operand in enumerate(operands):
        named, only_kinds = _literal_kinds(operand, kinds)
        if not named:
            continue
        words = [word for other in operands[:index] + operands[index + 1:] for word in _words(other)]
        holds_kinds = any(key in word for word in words for key in KIND_WORDS)
        is_site_or_op = any(SITE_WORDS & set(word.split("_")) for word in words)
        if holds_kinds or (only_kinds and not is_site_or_op):
            return True
    return False


def kind_branches(module: Module, kinds: frozenset[str], comparisons_only: bool = False) -> list[str]:
    found = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Compare) and _is_kind_comparison(node, kinds):
            found.append(f"{module.where(node.lineno)}: {ast.unparse(node)}")
        if comparisons_only:
            continue
        if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "get_kind"
                and node.args and _literal_kinds(node.args[0], kinds)[0]):
            found.append(f"{module.where(node.lineno)}: {ast.unparse(node)}")
        named = {ast.Name: "id", ast.Attribute: "attr", ast.alias: "name"}.get(type(node))
        if named and getattr(node, named) == "HEAD_KIND":
            found.append(f"{module.where(getattr(node, 'lineno', 0))}: the name HEAD_KIND")
    return found


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _is_product(dotted: str) -> bool:
    return dotted.split(".")[0] in PROJECT_PACKAGES


def private_uses(module: Module) -> list[str]:
    """Private product names a module imports, or reads as an attribute of a product module."""
    found, aliases = [], {}  # aliases: a local name bound to a product module -> that module
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom) and not node.level and _is_product(node.module):
            for alias in node.names:
                if any(_is_private(part) for part in f"{node.module}.{alias.name}".split(".")):
                    found.append(f"{module.where(node.lineno)}: from {node.module} import {alias.name}")
                if f"{node.module}.{alias.name}" in PROJECT:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in (alias for alias in node.names if _is_product(alias.name)):
                if any(_is_private(part) for part in alias.name.split(".")):
                    found.append(f"{module.where(node.lineno)}: import {alias.name}")
                bound = alias.asname or alias.name.split(".")[0]
                aliases[bound] = alias.name if alias.asname else bound
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            head, _, rest = ast.unparse(node.value).partition(".")
            dotted = ".".join(filter(None, (aliases.get(head), rest)))
            if head in aliases and dotted in PROJECT:
                found.append(f"{module.where(node.lineno)}: {dotted}.{node.attr}")
    return found


def _failures(title: str, offenders: list[str]) -> str:
    return f"{title} ({len(offenders)}):\n  " + "\n  ".join(offenders)


def test_no_import_cycle():
    graph = import_graph(PROJECT)
    offenders = []
    for component in cycles(graph):
        path = cycle_path(graph, component)
        steps = [f"{a} ({PROJECT[a].where(graph[a][b])})" for a, b in zip(path, path[1:])]
        offenders.append(f"{{{', '.join(component)}}}: " + " -> ".join(steps + [path[-1]]))
    assert not offenders, _failures("import cycles (each: its modules, then one cycle with file:line)", offenders)


def test_every_module_has_a_layer():
    missing = [module.path for module in PROJECT.values() if layer(module) is None]
    assert not missing, _failures("modules with no layer: give their folder one in LAYERS", missing)


def upward_imports(modules: dict[str, Module]) -> list[str]:
    offenders = []
    for module in modules.values():
        own = layer(module)
        for found in module.project_imports:
            target = modules.get(found.target)
            other = layer(target) if target else None
            if own and other and other[0] > own[0]:
                offenders.append(f"{module.where(found.line)}: {module.name} ({own[1]}, {own[0]}) imports "
                                 f"{found.target} ({other[1]}, {other[0]})")
    return offenders


def test_imports_run_down_the_layers():
    assert not (offenders := upward_imports(PROJECT)), _failures("imports from a higher layer", offenders)


def test_no_module_is_too_long():
    offenders = [f"{m.path}: {m.line_count} lines" for m in PROJECT.values() if m.line_count > MAX_LINES]
    assert not offenders, _failures(f"modules over {MAX_LINES} lines", offenders)


def test_few_modules_directly_in_edgepatch():
    top = sorted(name for name in os.listdir(os.path.join(REPO, "edgepatch")) if name.endswith(".py"))
    assert len(top) <= MAX_TOP_LEVEL, f"{len(top)} modules directly in edgepatch/ (at most {MAX_TOP_LEVEL}): {top}"


@pytest.mark.parametrize("folder", ["edgepatch", "converters", "benchmarks"])
def test_no_kind_name_branch_outside_the_kinds_package(folder):
    kinds = registered_kind_names()
    modules = BENCHMARKS if folder == "benchmarks" else PROJECT
    offenders = [found for module in modules.values()
                 if module.path.startswith(f"{folder}/") and not module.path.startswith("edgepatch/kinds/")
                 for found in kind_branches(module, kinds, comparisons_only=folder == "benchmarks")]
    assert not offenders, _failures(f"kind-name branches in {folder}/ (ask the kind registry instead)", offenders)


def test_runtime_never_reaches_tensorflow():
    """Each import of TensorFlow/Keras that some runtime module can load, with one chain to it."""
    offenders = {}
    for name in sorted(n for n in PROJECT if n.startswith("edgepatch.runtime")):
        parents = reach(PROJECT, name)
        for reached in sorted(parents):
            for found in loaded_imports(PROJECT[reached], parents):
                if TENSORFLOW.fullmatch(found.target.split(".")[0]):
                    offenders.setdefault(
                        f"{PROJECT[reached].where(found.line)}: {found.target}"
                        + (" (named in a string: a dynamic import)" if found.dynamic else ""),
                        chain(PROJECT, parents, reached))
    listed = [f"{where}, reached as {path}" for where, path in offenders.items()]
    assert not listed, _failures("TensorFlow/Keras imports that edgepatch/runtime loads", listed)


def test_benchmarks_use_no_private_product_name():
    offenders = [found for module in BENCHMARKS.values() for found in private_uses(module)]
    assert not offenders, _failures("private edgepatch/converters names used by benchmarks/", offenders)


# The scan's own rules, on small sources.

def _scanned(sources: dict[str, str]) -> dict[str, Module]:
    modules = {m.name: m for m in (module_from_source(path, text) for path, text in sources.items())}
    resolve_imports(modules)
    return modules


def test_scan_resolves_submodules_packages_relative_and_function_imports():
    modules = _scanned({
        "edgepatch/__init__.py": "", "edgepatch/format/__init__.py": "from edgepatch.format.b import x\n",
        "edgepatch/format/b.py": "def f():\n    from . import c\n", "edgepatch/format/c.py": "import edgepatch.format\n",
    })
    graph = import_graph(modules)
    assert graph["edgepatch.format"] == {"edgepatch.format.b": 1}
    assert graph["edgepatch.format.b"] == {"edgepatch.format.c": 2}
    assert cycles(graph) == [["edgepatch.format", "edgepatch.format.b", "edgepatch.format.c"]]
    assert cycle_path(graph, cycles(graph)[0]) == ["edgepatch.format", "edgepatch.format.b", "edgepatch.format.c",
                                                   "edgepatch.format"]


def test_scan_flags_an_import_from_a_higher_layer_only():
    modules = _scanned({
        "edgepatch/format/a.py": "def f():\n    from edgepatch.runtime import b\n",
        "edgepatch/runtime/__init__.py": "", "edgepatch/runtime/b.py": "from edgepatch.format import a\n",
    })
    assert upward_imports(modules) == [
        "edgepatch/format/a.py:2: edgepatch.format.a (format, 1) imports edgepatch.runtime.b (runtime, 3)"]


def test_scan_finds_tensorflow_behind_imports_and_strings():
    modules = _scanned({
        "edgepatch/runtime/a.py": "from edgepatch.format import b\n", "edgepatch/format/__init__.py": "",
        "edgepatch/format/b.py": "def f():\n    import keras.layers\n",
        "edgepatch/runtime/c.py": "NAMES = ('ai_edge_litert.interpreter', 'tensorflow.lite')\n",
    })
    reached = reach(modules, "edgepatch.runtime.a")
    assert set(reached) == {"edgepatch.runtime.a", "edgepatch.format", "edgepatch.format.b"}
    assert [i.target for i in modules["edgepatch.format.b"].external_imports] == ["keras.layers"]
    assert [(i.target, i.dynamic) for i in modules["edgepatch.runtime.c"].external_imports] == [("tensorflow.lite",
                                                                                                  True)]


def test_scan_follows_only_module_level_imports_of_a_package_loaded_as_a_parent():
    modules = _scanned({
        "edgepatch/__init__.py": "def api():\n    from edgepatch.train import t\n    import keras\n",
        "edgepatch/train/__init__.py": "", "edgepatch/train/t.py": "import keras\n",
        "edgepatch/runtime/__init__.py": "", "edgepatch/runtime/a.py": "from edgepatch.runtime import c\n",
        "edgepatch/runtime/c.py": "", "edgepatch/runtime/b.py": "import edgepatch\n",
    })
    via_parent = reach(modules, "edgepatch.runtime.a")
    assert "edgepatch.train.t" not in via_parent and via_parent["edgepatch"][2]
    assert loaded_imports(modules["edgepatch"], via_parent) == []
    imported = reach(modules, "edgepatch.runtime.b")  # `import edgepatch`: its functions may be called
    assert "edgepatch.train.t" in imported and [i.target for i in loaded_imports(modules["edgepatch"], imported)] == [
        "keras"]


@pytest.mark.parametrize("source, branches", [
    ("trained == ('full',)", True), ("'logits' in patch.kinds", True), ("patch_spec == 'full'", True),
    ("'scale_bias' not in config.trained", True), ("name in ('scale_bias', 'logits')", True),
    ("get_kind('scale_bias').layers(m)", True), ("HEAD_KIND", True), ("from x import HEAD_KIND", True),
    ("op == 'depthwise'", False), ("site.op in ('depthwise',)", False), ("site == 'logits'", False),
    ("'logits' in self.onnx.sites", False), ("'full' not in chosen", False), ("stored.file_kind == 'delta'", False),
    ("kind == other", False), ("get_kind(name)", False),
])
def test_scan_tells_kind_branches_from_site_and_op_names(source, branches):
    module = module_from_source("edgepatch/train/x.py", source + "\n")
    assert bool(kind_branches(module, KIND_NAMES)) == branches, kind_branches(module, KIND_NAMES)


@pytest.mark.parametrize("source, private", [
    ("from edgepatch.train.transfer import _freeze_outside", True),
    ("from edgepatch.train import transfer as t\nt._freeze_outside()", True),
    ("import edgepatch.train.transfer\nedgepatch.train.transfer._top1", True),
    ("from edgepatch.train.transfer import train", False), ("from edgepatch import __version__", False),
    ("from .plan import _local", False), ("import numpy as np\nnp._core", False),
])
def test_scan_finds_private_product_names(source, private):
    module = module_from_source("benchmarks/x.py", source + "\n")
    assert bool(private_uses(module)) == private, private_uses(module)
