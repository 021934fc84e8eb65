"""The house rules of issue 36, checked on every module of the package (every subfolder walked):
imports only go down the floors, no module over 450 lines, no function over 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "nerfexport"
# lowest floor first: a module may import from its own floor and the floors below it
FLOORS = ("data", "deploy", "model", "train", "shrink", "export", "bench", "sweep", "cli")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def floor_of(module: str) -> str | None:
    """The stage of a dotted module name inside the package (``None`` outside the stages)."""
    parts = module.split(".")
    if parts[0] != "nerfexport" or len(parts) < 2 or parts[1] not in FLOORS:
        return None
    return parts[1]


def imported(path: Path) -> list[tuple[str, int]]:
    """Every ``nerfexport`` module ``path`` imports (at any depth, inside functions too), relative
    imports resolved against its package, with the line."""
    pkg = path.relative_to(ROOT).with_suffix("").parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = list(pkg[: len(pkg) - node.level + 1])
                base = ".".join(parts + ([base] if base else []))
            out.append((base, node.lineno))
    return [(m, line) for m, line in out if m.split(".")[0] == "nerfexport"]


def test_imports_only_go_down_the_floors():
    up = []
    for p in modules():
        mine = floor_of(".".join(p.relative_to(ROOT).with_suffix("").parts))
        if mine is None:
            continue
        for name, line in imported(p):
            theirs = floor_of(name)
            if theirs is not None and FLOORS.index(theirs) > FLOORS.index(mine):
                up.append(f"{p.relative_to(ROOT)}:{line} ({mine}) imports {name} ({theirs})")
    assert not up, "\n".join(up)


def test_no_module_is_over_450_lines():
    long = [f"{p.relative_to(ROOT)}: {n}" for p in modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, "\n".join(long)


def test_no_function_is_over_80_lines():
    long = []
    for p in modules():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "\n".join(long)


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The walker sees an upward import inside a function and a relative one."""
    p = PKG / "data" / "__structure_probe__.py"
    assert not p.exists()
    src = "def f():\n    from nerfexport.cli import app\n    from ..train import loop\n"
    try:
        p.write_text(src)
        names = [m for m, _ in imported(p)]
    finally:
        p.unlink()
    assert names == ["nerfexport.cli", "nerfexport.train"]
    assert floor_of("nerfexport.deploy.viewer.server") == "deploy" and floor_of("numpy") is None
