"""The package's floors only look down: a module imports its own floor and the floors below it, never one above,
and no two parts of one floor import each other. Read from the source with ``ast`` (imports inside functions
count: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "meap_scale"

FLOORS = (
    {"config", "spec_base", "identity", "eval_spec", "models", "objectives", "data", "store", "schedule",
     "branch_plan", "checkpoints", "loss", "urls", "strict_json", "transfer", "options"},
    {"train", "evals", "scaling"},
    {"study", "report", "plan", "preflight"},
    {"cli"},
)
"""Bottom first: what configures and stores runs, then what trains, evaluates and fits them, then what runs
studies and reports on them, then the command line."""


def part_of(path: Path) -> str:
    """The top-level module or sub-package ``path`` belongs to."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def imported_parts(path: Path) -> set[str]:
    """The parts of meap_scale the module at ``path`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "meap_scale"
                                     else [])
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name.split(".")[1] for name in names if name.startswith("meap_scale.") and name.count("."))
    return found


def dependencies() -> dict[str, set[str]]:
    """Part -> the other parts it imports."""
    out: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue
        part = part_of(path)
        out.setdefault(part, set()).update(imported_parts(path) - {part})
    return out


def floor_of(part: str) -> int:
    return next(k for k, floor in enumerate(FLOORS) if part in floor)


def test_every_part_of_the_package_has_a_floor():
    unplaced = set(dependencies()) - set().union(*FLOORS)
    assert not unplaced, f"put each of {sorted(unplaced)} on a floor in FLOORS"


def test_no_part_imports_a_higher_floor():
    upward = sorted((part, other) for part, others in dependencies().items() for other in others
                    if floor_of(other) > floor_of(part))
    assert not upward, f"imports that look up: {upward}"


def test_no_two_parts_import_each_other():
    found = dependencies()
    mutual = sorted((a, b) for a, b in itertools.combinations(sorted(found), 2)
                    if b in found[a] and a in found.get(b, set()))
    assert not mutual, f"parts that import each other: {mutual}"


def test_the_check_sees_a_lazy_upward_import(tmp_path):
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from meap_scale.train.loop import x\n    from meap_scale import report\n")
    assert imported_parts(module) == {"train", "report"}


MAX_LINES = 450
"""A module past this holds several concerns: split it by concern, not by line count."""


def test_no_module_holds_more_than_450_lines():
    long = sorted((str(path.relative_to(PACKAGE)), lines) for path in PACKAGE.rglob("*.py")
                  if (lines := path.read_text().count("\n")) > MAX_LINES)
    assert not long, f"modules over {MAX_LINES} lines: {long}"
