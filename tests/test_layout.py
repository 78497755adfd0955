"""The layout: packages by concern, imports pointing one way, no circles.

Every import charnn's modules make (at the top of a module or inside a function, where an
import waits until it is needed) goes to a package on the same floor or a lower one, never
across a floor to a neighbour, and the modules of one package import each other in no circle.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "charnn"
FLOORS = [  # lowest first
    ("charnn", "charnn.errors", "charnn.fileio"),  # the package face holds only its version
    ("charnn.config",),
    ("charnn.text", "charnn.nn"),
    ("charnn.checkpoints",),
    ("charnn.evaluation", "charnn.generation"),
    ("charnn.training",),
    ("charnn.inspect", "charnn.export", "charnn.serve"),
    ("charnn.cli",),
    ("charnn.__main__",),
]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def run_time(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` but those under `if TYPE_CHECKING:`, which never run."""
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for child in ast.walk(node)
    }
    return [node for node in ast.walk(tree) if id(node) not in skipped]


def imports(path: Path) -> set[str]:
    """The charnn modules `path` imports at run time, anywhere in it."""
    found = set()
    for node in run_time(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("charnn")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("charnn"):
            for alias in node.names:  # `from charnn.text import cache` names a module
                module = f"{node.module}.{alias.name}"
                found.add(module if module in MODULES else node.module)
    return found


def place(module: str) -> tuple[int, str]:
    """(floor, package) of a module: the longest package name that holds it."""
    best = max(
        (len(name), floor, name)
        for floor, names in enumerate(FLOORS)
        for name in names
        if module == name or module.startswith(name + ".")
    )
    return best[1], best[2]


MODULES = modules()
GRAPH = {name: imports(path) - {name} for name, path in MODULES.items()}


def test_every_module_has_a_floor():
    assert all(place(name) for name in MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_or_stay_in_the_package(module):
    floor, package = place(module)
    for imported in GRAPH[module]:
        their_floor, their_package = place(imported)
        where = f"{module} imports {imported}"
        assert their_floor <= floor, f"{where}: from floor {floor} up to floor {their_floor}"
        if their_floor == floor:
            assert their_package == package, f"{where}: a neighbour on the same floor"


def test_the_package_face_imports_nothing_of_its_own_at_run_time():
    """charnn/__init__.py sits on the ground floor: it names the public API, imported lazily by
    name, so that importing charnn (or `charnn --help`) imports no torch."""
    assert GRAPH["charnn"] == set()


def test_no_circles_within_a_package():
    by_package = defaultdict(set)
    for name in MODULES:
        by_package[place(name)[1]].add(name)
    for members in by_package.values():
        edges = {m: GRAPH[m] & members for m in members}
        done: set[str] = set()

        def visit(node: str, path: tuple[str, ...], edges=edges, done=done) -> None:
            assert node not in path, f"a circle: {' -> '.join((*path, node))}"
            if node in done:
                return
            for nxt in edges[node]:
                visit(nxt, (*path, node))
            done.add(node)

        for member in sorted(members):
            visit(member, ())
