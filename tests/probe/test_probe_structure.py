"""The probe package's shape: its modules import each other without a cycle, and old names that
callers may hold keep working."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import vssl.probe
from vssl.probe.train import FitResult

PACKAGE = Path(vssl.probe.__file__).parent


def _imports(module: Path) -> set[str]:
    """The sibling modules ``module`` imports, at its top or inside a function (``from .x import``)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_no_import_cycle_between_probe_modules():
    graph = {m.stem: _imports(m) for m in PACKAGE.glob("*.py")}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    cycles = sorted(m for m in graph if reaches(m, m, {m}))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_fit_result_val_top1_is_a_deprecated_alias_of_val_score():
    result = FitResult(torch.nn.Identity(), 0.1, 0.0, 3, 42.0, val_metric="mAP")
    with pytest.warns(DeprecationWarning, match="val_score"):
        assert result.val_top1 == 42.0
