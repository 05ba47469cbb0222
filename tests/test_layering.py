"""The house rules of the import structure (DESIGN.md section 2; issue 17), read with ``ast``.

* no import cycles between the project's modules (function-local imports count: they only
  hide a cycle; imports under ``if TYPE_CHECKING:`` do not run and do not count);
* ``collector`` never imports ``curation``;
* no module imports another module's underscore names, or touches an underscore attribute
  that it does not define itself (``ds._snap`` in ``ops`` reaches into ``Dataset``).

The exception lists below are empty since issue 17. They may only shrink: an entry that no
longer occurs fails the test too, so that it is deleted with the code that needed it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("collector", "curation", "conf")

#: Import cycles still present (each a set of modules): none since issue 17.
ALLOWED_CYCLES: list[frozenset[str]] = []

#: (importing module, imported underscore name) still present.
ALLOWED_PRIVATE_IMPORTS: set[tuple[str, str]] = set()

#: (module, underscore attribute it touches but does not define) still present.
ALLOWED_PRIVATE_ATTRIBUTES: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _walk(tree: ast.AST) -> Iterator[tuple[ast.AST, bool]]:
    """Every node with whether it sits under ``if TYPE_CHECKING:``."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, typing_only = stack.pop()
        yield node, typing_only
        for child in ast.iter_child_nodes(node):
            guarded = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            stack.append((child, typing_only or (guarded and child in node.body)))


def _base(module: str, node: ast.ImportFrom) -> str | None:
    if not node.level:
        return node.module
    parts = module.split(".")
    if MODULES[module].name != "__init__.py":
        parts = parts[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(project modules ``module`` imports at run time, underscore names it imports)."""
    deps: set[str] = set()
    private: set[str] = set()
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node, typing_only in _walk(tree):
        if typing_only:
            continue
        if isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name.split(".")[0] in PACKAGES)
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, node)
            if not base or base.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                deps.add(full if full in MODULES else base)
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    private.add(full)
    return {d for d in deps if d in MODULES and d != module}, private


def _private_attributes(module: str) -> set[str]:
    """Underscore attributes ``module`` touches on others without defining them itself."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.arg):
            own.add(node.arg)
    touched = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name, value = node.attr, node.value
        if not name.startswith("_") or name.startswith("__") or name in own:
            continue
        if isinstance(value, ast.Name) and value.id in ("self", "cls"):
            continue
        touched.add(name)
    return touched


def _cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
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
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


EDGES_AND_PRIVATE = {m: _imports(m) for m in MODULES}


def test_the_scan_sees_the_project() -> None:
    assert {"collector.collect", "curation.dataset", "curation.remotes.base"} <= set(MODULES)
    assert "collector.errors" in EDGES_AND_PRIVATE["collector.collect"][0]


def test_no_import_cycles_beyond_the_allowed_ones() -> None:
    cycles = set(_cycles({m: deps for m, (deps, _) in EDGES_AND_PRIVATE.items()}))
    assert cycles - set(ALLOWED_CYCLES) == set(), "a new import cycle"
    assert set(ALLOWED_CYCLES) - cycles == set(), "a cycle is gone: delete it from the list"


def test_collector_never_imports_curation() -> None:
    wrong = {
        (m, d)
        for m, (deps, _) in EDGES_AND_PRIVATE.items()
        if m.startswith("collector")
        for d in deps
        if d.startswith("curation")
    }
    assert wrong == set()


def test_no_module_imports_another_modules_underscore_names() -> None:
    found = {(m, name) for m, (_, private) in EDGES_AND_PRIVATE.items() for name in private}
    assert found - ALLOWED_PRIVATE_IMPORTS == set(), "a new private import"
    assert ALLOWED_PRIVATE_IMPORTS - found == set(), "gone: delete it from the list"


def test_no_module_touches_another_modules_underscore_attributes() -> None:
    found = {(m, name) for m in MODULES for name in _private_attributes(m)}
    assert found - ALLOWED_PRIVATE_ATTRIBUTES == set(), "a new private attribute access"
    assert ALLOWED_PRIVATE_ATTRIBUTES - found == set(), "gone: delete it from the list"


#: (module, literal) that look like the storage layout's names but are a module's own:
#: a temporary file's suffix next to the file it replaces, not the datasets root's ``.tmp``.
OWN_LOOKALIKES: set[tuple[str, str]] = {
    ("collector.redact", ".tmp"),  # Hydra's run files, rewritten in place
    ("curation.remotes.file", ".tmp"),  # the file remote's own uploads in progress
    ("collector.policy_loaders", "data"),  # the JSON member of an SB3 model.zip
}


def test_only_storage_knows_the_file_names() -> None:
    """File names of the harvest layout appear only in ``collector.storage`` (issue 17).

    ``curation.minari`` owns Minari's layout (whose names happen to overlap); docstrings and
    messages may name files, so only string constants that are not whole sentences count.
    """
    from collector import storage

    names = {
        storage.METADATA_FILE,
        storage.METADATA_TMP,
        storage.NAMESPACE_METADATA_FILE,
        storage.DATA_DIR,
        storage.LOCKS_DIR,
        storage.TMP_DIR,
    }
    found = set()
    for module, path in MODULES.items():
        if module.startswith(("collector.storage", "curation.minari")):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
                continue
            value = node.value
            if value in names or (" " not in value and (".h5" in value or "shard-" in value)):
                found.add((module, value))
    assert found - OWN_LOOKALIKES == set(), "use collector.storage's names"
    assert OWN_LOOKALIKES - found == set(), "gone: delete it from the list"
