"""The import graph of dvd's packages, read from the source: every import points down the layers that
docs/architecture.md draws, and no two packages import each other, directly or around a loop.

Imports inside functions and under TYPE_CHECKING count: a lazy import is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import dvd

SOURCE = Path(dvd.__file__).parent
# Top to bottom; a package may import its own layer and the layers below. "dvd" is the root package, imported for
# `__version__` (its lazy `DVDPipeline`/`DVDModel` names are strings, not imports). cli.py and train.py are the
# command line's entry points, beside the subcommands they load.
LAYERS = (
    ("commands", "cli", "train"),
    ("app", "jobs", "training", "evaluation", "bench"),
    ("pipeline", "engine", "metric"),
    ("model", "weights", "data", "io"),
    ("errors", "options", "dvd"),
)
LAYER = {package: depth for depth, packages in enumerate(LAYERS) for package in packages}


def package_of(path: Path) -> str:
    """The package a source file belongs to: `engine` for dvd/engine/stitch.py, `cli` for dvd/cli.py."""
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return "dvd" if parts == ("__init__",) else parts[0]


def imported_packages(path: Path) -> set[str]:
    """The dvd packages a file imports, wherever in the file the import statement stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; dvd imports absolutely"
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name.split(".")[1] if "." in name else "dvd" for name in names if name.split(".")[0] == "dvd"}
    return found


def import_graph() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> the files (relative to src/dvd) whose imports make that edge."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(SOURCE.rglob("*.py")):
        source = package_of(path)
        for target in imported_packages(path) - {source}:
            graph[source][target].append(path.relative_to(SOURCE).as_posix())
    return graph


def test_the_graph_is_read_from_the_source():
    graph = import_graph()
    assert "dvd/jobs/outputs.py" not in graph["jobs"]["engine"]  # paths are relative to the package folder
    assert "jobs/outputs.py" in graph["jobs"]["engine"] and "jobs/outputs.py" in graph["jobs"]["pipeline"]
    assert "app/jobs.py" in graph["app"]["jobs"]


def test_every_package_has_a_layer():
    packages = {package_of(path) for path in SOURCE.rglob("*.py")}
    assert packages - LAYER.keys() == set(), "place each new package in LAYERS (and in docs/architecture.md)"
    assert "inference" not in packages


def test_imports_only_point_down():
    upward = [
        f"{source} -> {target} ({', '.join(files)})"
        for source, targets in import_graph().items()
        for target, files in targets.items()
        if LAYER[target] < LAYER[source]
    ]
    assert upward == []


def test_no_package_cycle():
    graph = {source: set(targets) for source, targets in import_graph().items()}
    cycles = []

    def visit(package: str, path: list[str]) -> None:
        for target in sorted(graph.get(package, ())):
            if target == path[0]:
                cycles.append(" -> ".join([*path, target]))
            elif target not in path and target > path[0]:  # each cycle once, from its smallest package
                visit(target, [*path, target])

    for package in sorted(graph):
        visit(package, [package])
    assert cycles == []
