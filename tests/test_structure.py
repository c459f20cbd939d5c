"""The package's shape: no import cycles in local/, and imports between rooms point one way.

The import graph is read from the source with `ast` (every `import` and `from ... import`, including the
ones inside functions), so a cycle hidden behind a lazy import is caught too.
"""
import ast
from pathlib import Path

import pytest

LOCAL = Path(__file__).resolve().parents[1] / "local"

# Rooms from the bottom up: a module may import its own room or a room of a lower rank, never one of the
# same rank (data and models stay independent, and so do training and evaluation) or a higher one.
ROOM_RANK = {"common": 0, "data": 1, "models": 1, "training": 2, "evaluation": 2, "benchmarks": 3, "": 3}


def module_name(path, package_dir):
    rel = path.relative_to(package_dir.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(package_dir):
    """{module: {imported module of the same package}} from the source files under package_dir."""
    package_dir = Path(package_dir)
    root = package_dir.name
    files = {module_name(p, package_dir): p for p in package_dir.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import: resolve against this module's package
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets.add(module)
                # `from pkg import submodule` imports the submodule
                targets.update(f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in files)
        graph[name] = {t for t in targets if t in files and t != name and (t == root or t.startswith(root + "."))}
    return graph


def find_cycle(graph):
    """One import cycle as a list [a, b, ..., a], or None (iterative depth-first search)."""
    state = {}  # module -> "open" while on the current path, "done" once fully explored
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = "open"
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = "done"
                stack.pop()
            elif state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = "open"
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def room_of(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ROOM_RANK) else ""


def test_local_has_no_import_cycle():
    graph = import_graph(LOCAL)
    assert len(graph) > 20, "the import graph should cover the whole package"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in local/: " + " -> ".join(cycle)


def test_cycle_finder_catches_a_cycle_even_behind_a_lazy_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from pkg.data.b import thing\n")
    (pkg / "data" / "b.py").write_text("def thing():\n    from pkg.data import c\n")
    (pkg / "data" / "c.py").write_text("from . import a\n")
    graph = import_graph(pkg)
    assert graph["pkg.data.b"] == {"pkg.data", "pkg.data.c"}
    assert find_cycle(graph) == ["pkg.data.a", "pkg.data.b", "pkg.data.c", "pkg.data.a"]
    (pkg / "data" / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(pkg)) is None


def test_rooms_import_downwards_only():
    wrong = []
    for module, targets in import_graph(LOCAL).items():
        room = room_of(module)
        assert room in ROOM_RANK, f"{module} is in no known room: add it to ROOM_RANK or move it"
        for target in targets:
            other = room_of(target)
            if other != room and ROOM_RANK[other] >= ROOM_RANK[room] and target != "local":
                wrong.append(f"{module} ({room or 'top'}) imports {target} ({other or 'top'})")
    assert not wrong, "imports against the room order:\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize("room", [r for r in ROOM_RANK if r])
def test_every_room_is_a_documented_package(room):
    init = LOCAL / room / "__init__.py"
    assert init.is_file(), f"local/{room}/ needs an __init__.py"
    assert ast.get_docstring(ast.parse(init.read_text())), f"local/{room}/__init__.py should say what the room holds"


def test_every_module_of_local_is_tracked_by_git():
    """A module that exists only on one machine (say, caught by a .gitignore pattern) breaks every fresh clone."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (LOCAL.parent / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = set(subprocess.run(["git", "ls-files", "local"], cwd=LOCAL.parent, capture_output=True, text=True,
                                 check=True).stdout.split())
    on_disk = {str(p.relative_to(LOCAL.parent)) for p in LOCAL.rglob("*.py")}
    ignored = subprocess.run(["git", "check-ignore", *sorted(on_disk)], cwd=LOCAL.parent, capture_output=True,
                             text=True).stdout.split()
    assert not ignored, f"modules ignored by .gitignore: {ignored}"
    untracked = sorted(on_disk - tracked)
    if untracked:  # new modules of work in progress are fine, as long as git would take them
        assert all(p not in ignored for p in untracked)
