"""The project's modules and imports, read with ``ast`` (nothing is imported or run).

A module's imports are every ``import`` / ``from ... import`` statement in its file, at any
depth: inside functions, ``try`` blocks and ``if TYPE_CHECKING`` too, because each one is a
dependency of the code. They are resolved like this:

- ``import a.b.c`` depends on ``a.b.c``; ``from a.b import c`` on ``a.b.c`` when that is a
  module, else on ``a.b``; relative imports are resolved against the importing package.
- A package stands for its ``__init__.py``: ``from edgepatch.runtime import TFLiteBase``
  depends on ``edgepatch/runtime/__init__.py``.
- The parent packages that Python initialises on the way (``edgepatch`` for
  ``edgepatch.format.delta``) are not edges of the graph: a parent is always initialised
  before its children, so a child's import of a sibling never runs the parent's body again.
  ``reach`` (what running a module loads) does follow them.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROJECT_PACKAGES = ("edgepatch", "converters")
# A string constant naming one of these modules is a dynamic import (``importlib.import_module``).
_MODULE_STRING = re.compile(r"(tensorflow|keras|tf_keras|tf2onnx)(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class Import:
    target: str  # a dotted module name
    line: int
    dynamic: bool = False  # named in a string constant, not in an import statement
    deferred: bool = False  # inside a function: runs only when that function is called


@dataclass
class Module:
    name: str
    path: str  # relative to the repository, with "/"
    tree: ast.Module
    line_count: int
    is_package: bool
    project_imports: list[Import] = field(default_factory=list)
    external_imports: list[Import] = field(default_factory=list)

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"


def _module_name(relative: str) -> tuple[str, bool]:
    parts = relative[:-len(".py")].split("/")
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def module_from_source(relative: str, text: str) -> Module:
    """A module as if ``text`` were the file at ``relative`` (for the scan's own tests)."""
    name, is_package = _module_name(relative)
    return Module(name, relative, ast.parse(text, relative), len(text.splitlines()), is_package)


def parse_modules(*folders: str) -> dict[str, Module]:
    """Every ``*.py`` under these repository folders, by dotted module name."""
    modules = {}
    for folder in folders:
        for root, dirs, files in os.walk(os.path.join(REPO, folder)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for file in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(root, file)
                relative = os.path.relpath(path, REPO).replace(os.sep, "/")
                with open(path, encoding="utf-8") as handle:
                    module = module_from_source(relative, handle.read())
                modules[module.name] = module
    return modules


def _is_project(name: str) -> bool:
    return name.split(".")[0] in PROJECT_PACKAGES


def _relative_base(module: Module, level: int, name: str | None) -> str:
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    parts = package.split(".")
    parts = parts[:len(parts) - (level - 1)] if level > 1 else parts
    return ".".join(parts + ([name] if name else []))


def _targets(module: Module, node: ast.Import | ast.ImportFrom, known: dict) -> list[str]:
    """The dotted modules one import statement depends on."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = _relative_base(module, node.level, node.module) if node.level else node.module
    targets = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        targets.append(submodule if submodule in known else base)
    return list(dict.fromkeys(targets))


def _nearest_known(name: str, known: dict) -> str:
    """``name`` itself, or the longest prefix of it that is a scanned module."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return name


def resolve_imports(modules: dict[str, Module], known: dict[str, Module] | None = None) -> None:
    """Fill each module's project and external imports (``known``: the modules to resolve against)."""
    known = modules if known is None else known
    for module in modules.values():
        in_functions = {id(inner) for node in ast.walk(module.tree)
                        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                        for inner in ast.walk(node) if inner is not node}
        for node in ast.walk(module.tree):
            deferred = id(node) in in_functions
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, node, known):
                    if _is_project(target) or getattr(node, "level", 0):
                        module.project_imports.append(Import(_nearest_known(target, known), node.lineno,
                                                             deferred=deferred))
                    else:
                        module.external_imports.append(Import(target, node.lineno, deferred=deferred))
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and _MODULE_STRING.fullmatch(node.value)):
                module.external_imports.append(Import(node.value, node.lineno, dynamic=True, deferred=deferred))


def import_graph(modules: dict[str, Module]) -> dict[str, dict[str, int]]:
    """module -> {imported project module -> first line}, self-imports left out."""
    graph = {}
    for name, module in modules.items():
        edges = {}
        for found in module.project_imports:
            if found.target in modules and found.target != name:
                edges.setdefault(found.target, found.line)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(start: str) -> None:
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(found)


def cycle_path(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """A shortest closed path through a cycle's first module, staying inside the component."""
    start, members = component[0], set(component)
    parents, queue = {start: None}, [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while parents[path[-1]] is not None:
                    path.append(parents[path[-1]])
                return path[::-1] + [start]
            if child in members and child not in parents:
                parents[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def reach(modules: dict[str, Module], start: str) -> dict[str, tuple[str, int, bool] | None]:
    """Every project module that importing ``start`` can load, the parent packages of its imports
    included, each with (importing module, line, whether it is only a parent package of the module
    that line imports) on a shortest path; ``start`` maps to None.

    A package loaded only as the parent of another module runs its module-level code alone, so
    only its module-level imports are followed (a facade's function-local imports are not).
    """
    parents: dict[str, tuple[str, int, bool] | None] = {start: None}
    whole: set[str] = {start}  # reached as an imported module, not only as a parent package
    queue = [start]
    while queue:
        name = queue.pop(0)
        for found in modules[name].project_imports:
            if found.deferred and name not in whole:
                continue
            for target in (*_ancestors(found.target), found.target):
                as_parent = target != found.target
                if target not in modules or (target in parents and (as_parent or target in whole)):
                    continue
                if target not in parents or not as_parent:
                    parents[target] = (name, found.line, as_parent)
                if not as_parent:
                    whole.add(target)
                queue.append(target)
    return parents


def loaded_imports(module: Module, parents: dict) -> list[Import]:
    """``module``'s external imports that can run once ``reach`` found it: all of them, or only the
    module-level ones when it was reached only as a parent package."""
    only_parent = parents.get(module.name) is not None and parents[module.name][2]
    return [found for found in module.external_imports if not (only_parent and found.deferred)]


def chain(modules: dict[str, Module], parents: dict[str, tuple[str, int, bool] | None], end: str) -> str:
    """``start -> b (path:line) -> end (package of the import at path:line)`` along ``reach``'s parents."""
    steps, name = [], end
    while parents[name] is not None:
        source, line, as_parent = parents[name]
        where = modules[source].where(line)
        steps.append(f"{name} ({'package of the import at ' if as_parent else ''}{where})")
        name = source
    return " -> ".join([name] + steps[::-1])
