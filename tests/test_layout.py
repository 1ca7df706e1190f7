"""The serving path (`router/`) does not depend on the operator tools (`ops/`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_router_never_imports_ops_except_its_command_entry() -> None:
    offenders = sorted(p.name for p in (ROOT / "router").glob("*.py")
                       if p.name != "__main__.py" and "ops" in _imported(p))
    assert offenders == []


def test_ops_holds_the_operator_tools_and_router_none_of_them() -> None:
    tools = {"cli", "simulate", "replay", "tune", "defaults", "report", "distill", "promote", "loop_cli"}
    assert tools <= {p.stem for p in (ROOT / "ops").glob("*.py")}
    assert not tools & {p.stem for p in (ROOT / "router").glob("*.py")}
