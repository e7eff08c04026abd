"""The code's layout, checked from the source with ``ast`` (nothing is imported):

* no module of ``ralif/project/`` imports the ``Project`` facade (imports under
  ``if TYPE_CHECKING:`` aside): the facade sits on top of its parts, never under them;
* ``streamlit`` is imported only by the app (``ralif/ui/``, ``ralif/app/``, ``views/``, ``app.py``);
* no private name (one leading underscore) is imported from another module, nor read as an
  attribute of an imported module;
* no source file is over 600 lines;
* every browser test module (``tests/*_browser.py``) binds ``pytestmark``, so it skips with a message
  where Chromium or Playwright is missing instead of failing.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600


def _sources(*tops: str) -> list[Path]:
    out: list[Path] = []
    for top in tops:
        path = ROOT / top
        out.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return out


SOURCES = _sources("ralif", "views", "app.py", "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of the statements under ``if TYPE_CHECKING:``."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    inside.update(id(n) for n in ast.walk(stmt))
    return inside


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved from ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")[: -node.level] if node.level else []
    return ".".join([*base, node.module] if node.module else base)


def _imports(path: Path) -> Iterator[tuple[ast.stmt, str, str | None, bool]]:
    """(node, imported module, imported name or None, under TYPE_CHECKING) for every import."""
    tree = _tree(path)
    guarded = _type_checking_blocks(tree)
    module = _module_name(path)
    if path.name == "__init__.py":
        module += ".__init__"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, None, id(node) in guarded
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                yield node, target, alias.name, id(node) in guarded


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _facade_module() -> str:
    for path in _sources("ralif/project"):
        for node in _tree(path).body:
            if isinstance(node, ast.ClassDef) and node.name == "Project":
                return _module_name(path)
    raise AssertionError("no module of ralif/project defines class Project")


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"


def test_project_parts_never_import_the_facade():
    facade = _facade_module()
    bad = []
    for path in _sources("ralif/project"):
        if _module_name(path) in (facade, "ralif.project"):
            continue
        for node, target, name, guarded in _imports(path):
            names_facade = target == facade or f"{target}.{name}" == facade or (
                target == "ralif.project" and name == "Project")
            if names_facade and not guarded:
                bad.append(f"{_where(path, node)} imports {target}{'.' + name if name else ''}")
    assert not bad, f"parts of ralif/project import the Project facade ({facade}):\n" + "\n".join(bad)


def test_streamlit_only_in_the_app():
    allowed = (ROOT / "ralif" / "ui", ROOT / "ralif" / "app", ROOT / "views", ROOT / "app.py")
    bad = []
    for path in SOURCES:
        if any(path == a or a in path.parents for a in allowed):
            continue
        for node, target, _, _ in _imports(path):
            if target.split(".")[0] == "streamlit":
                bad.append(_where(path, node))
    assert not bad, "streamlit imported outside ralif/ui, ralif/app, views and app.py:\n" + "\n".join(bad)


def _private_uses(path: Path) -> list[str]:
    tree = _tree(path)
    module = _module_name(path)
    found = []
    imported_modules: set[str] = set()     # local names bound to modules by import statements
    for node, target, name, _ in _imports(path):
        if name is None:
            alias = next(a for a in node.names if a.name == target)
            imported_modules.add(alias.asname or target.split(".")[0])
            if any(_is_private(part) for part in target.split(".")):
                found.append(f"{_where(path, node)} imports {target}")
        elif _is_private(name) and target != module:
            found.append(f"{_where(path, node)} imports {name} from {target}")
        elif not _is_private(name) and target:
            alias = next(a for a in node.names if a.name == name)
            # ``from ralif import worker`` binds a module; a class or function is not told apart
            # here, so attribute reads on any imported name are checked below.
            imported_modules.add(alias.asname or name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr) and isinstance(node.value, ast.Name) \
                and node.value.id in imported_modules and node.value.id[:1].islower():
            found.append(f"{_where(path, node)} reads {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_crosses_modules(path):
    found = _private_uses(path)
    assert not found, "private names used across modules:\n" + "\n".join(found)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_source_files_stay_small(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (at most {MAX_LINES})"


@pytest.mark.parametrize("path", sorted((ROOT / "tests").glob("*_browser.py")), ids=lambda p: p.name)
def test_browser_tests_skip_without_a_browser(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bound = {a.asname or a.name for node in tree.body if isinstance(node, ast.ImportFrom) for a in node.names}
    bound |= {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
              if isinstance(t, ast.Name)}
    assert "pytestmark" in bound, f"{path.name} must bind pytestmark (from test_e2e_browser import pytestmark)"
