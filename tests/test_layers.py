"""The package's floors: every import inside t2ictl (at module level or inside a function, type-only imports aside)
goes to its own folder or to a lower floor, so inference (sampling, export, evaluation, runs) never imports training
and nothing low imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "t2ictl"
FLOORS = [  # lowest first
    {"errors", "fileio", "console", "startup", "font", "__init__"},
    {"torch_files"},
    {"replicas"},
    {"losses"},
    {"models"},
    {"data"},
    {"recipes", "builtin_recipes"},
    {"sampling"},
    {"runs"},
    {"evaluation", "export"},
    {"training"},
    {"interop"},
    {"bench"},
    {"experiment"},
    {"commands"},
    {"cli"},
    {"__main__"},
]
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}


def room(module: str) -> str:
    """The top-level part of t2ictl a module belongs to: t2ictl.data.vocab -> data, t2ictl -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def type_only_nodes(tree: ast.AST) -> set[int]:
    nodes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            nodes.update(id(n) for n in ast.walk(node))
    return nodes


def imported_rooms(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = type_only_nodes(tree)
    rooms = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "t2ictl":
            rooms.update(alias.name if (PACKAGE / alias.name).is_dir() or (PACKAGE / f"{alias.name}.py").is_file()
                         else "__init__" for alias in node.names)  # from t2ictl import runs, __version__
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("t2ictl."):
            rooms.add(room(node.module))
        elif isinstance(node, ast.Import):
            rooms.update(room(alias.name) for alias in node.names if alias.name.startswith("t2ictl."))
    return rooms


def module_room(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def test_every_import_goes_to_its_own_room_or_a_lower_floor():
    upward = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50
    for path in files:
        own = module_room(path)
        assert own in FLOOR, f"{path.relative_to(PACKAGE)} is in no floor of FLOORS"
        for target in imported_rooms(path):
            assert target in FLOOR, f"{path.relative_to(PACKAGE)} imports t2ictl.{target}, which is in no floor"
            if target != own and FLOOR[target] >= FLOOR[own]:
                upward.append(f"{path.relative_to(PACKAGE)} ({own}) imports {target}")
    assert not upward, "\n".join(upward)


def test_the_scan_sees_imports_inside_functions(tmp_path):
    path = tmp_path / "sample.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from t2ictl.cli import app\n"
                    "def f():\n    from t2ictl.training import gan\n    import t2ictl.data.vocab\n"
                    "    from t2ictl import runs, __version__\n")
    assert imported_rooms(path) == {"training", "data", "runs", "__init__"}
