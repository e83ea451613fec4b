"""Imports point down the layers of DESIGN section 1: every import in ``fairmed_core`` (lazy ones inside functions
included) goes to its own package, a package of a lower layer, or the shared foundation modules; no core module
imports streamlit or the pages; viz only imports down."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

CORE = REPO_ROOT / "fairmed_core"
# The foundation every layer may use: errors, plain values, settings declarations, atomic files.
FOUNDATION = {"errors", "plain", "folder_json", "settings", "files"}
# DESIGN section 1, bottom to top; packages on one layer may import each other.
LAYERS = [{"data"}, {"models", "fairness"}, {"training", "counterfactual"}, {"runs"}, {"jobs"}, {"viz"},
          {"report"}, {"cli"}]
LEVEL = {package: level for level, packages in enumerate(LAYERS) for package in packages}
# Known upward imports that move with work owned elsewhere, each with its reason. Keep this list short.
ALLOWED_UPWARD = {
    # Generator cards are documents: they move to report/ with the evidence-pack work that owns report/.
    ("counterfactual/card.py", "report"),
}


def _package(path: Path) -> str:
    parts = path.relative_to(CORE).parts
    return parts[0] if len(parts) > 1 else Path(parts[0]).stem


def _imports(path: Path) -> list[tuple[str, int]]:
    """``(module, line)`` of every import in the file (relative ones resolved), wherever it sits (lazy imports
    count)."""
    found = []
    here = ("fairmed_core", *path.relative_to(CORE).with_suffix("").parts)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                package = here[:-node.level]  # an __init__ counts as a module of its package: the same rule
                base = ".".join([*package, *([base] if base else [])])
            modules = [base] if base != "fairmed_core" else [f"fairmed_core.{alias.name}" for alias in node.names]
            found += [(module, node.lineno) for module in modules]
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return found


CORE_FILES = sorted(CORE.rglob("*.py"))


def test_every_core_package_has_a_layer():
    packages = {_package(path) for path in CORE_FILES} - {"__init__"}
    assert packages <= FOUNDATION | set(LEVEL), packages - FOUNDATION - set(LEVEL)


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CORE)))
def test_imports_point_down_the_layers(path):
    package = _package(path)
    relative = str(path.relative_to(CORE))
    wrong = []
    for module, line in _imports(path):
        top = module.split(".")[0]
        if top in ("streamlit", "pages"):
            wrong.append(f"line {line}: {module} (the core never imports the UI)")
            continue
        if top != "fairmed_core" or module == "fairmed_core":
            continue
        target = module.split(".")[1]
        if target == package or target in FOUNDATION or package == "__init__":
            continue
        if package in FOUNDATION:
            wrong.append(f"line {line}: {module} (foundation modules import only each other)")
        elif LEVEL[target] > LEVEL[package] and (relative, target) not in ALLOWED_UPWARD:
            wrong.append(f"line {line}: {module} ({target} is above {package})")
    assert not wrong, f"{relative} imports up the layers:\n" + "\n".join(wrong)


def test_the_allowed_upward_imports_are_still_needed():
    """An allowance whose import is gone must be removed, so the list only ever shrinks."""
    for relative, target in ALLOWED_UPWARD:
        modules = [module for module, _ in _imports(CORE / relative)]
        assert any(module.startswith(f"fairmed_core.{target}") for module in modules), (relative, target)
