"""The shape of the package: a deploy side without torch or C, stages as subpackages, a thin CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from nerfexport.export.bundle_writer import ExportOptions, export_bundle

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "nerfexport"
STAGES = ("data", "model", "train", "shrink", "export", "deploy", "bench", "cli")


def imports(path: Path) -> list[tuple[str, int]]:
    """Every module an ``import`` statement in ``path`` names (at any depth, inside functions
    too), relative imports resolved against the package."""
    tree = ast.parse(path.read_text())
    pkg = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.append((base, node.lineno))
            out += [(f"{base}.{a.name}", node.lineno) for a in node.names]
    return out


def test_the_stages_are_subpackages():
    for stage in STAGES:
        assert (PKG / stage / "__init__.py").is_file(), stage
    flat = sorted(p.name for p in PKG.glob("*.py") if p.name not in ("__init__.py", "demo.py"))
    assert flat == [], f"modules outside the stages: {flat}"


def test_deploy_imports_no_torch_and_no_train_side_stage():
    banned = ("torch", "nerfexport.train", "nerfexport.shrink", "nerfexport.export", "nerfexport.model")
    walked = sorted((PKG / "deploy").rglob("*.py"))   # every subfolder (deploy/viewer/ too)
    assert PKG / "deploy" / "viewer" / "server.py" in walked
    found = [(str(p.relative_to(PKG)), name, line) for p in walked for name, line in imports(p)
             if any(name == b or name.startswith(b + ".") for b in banned)]
    assert not found, found


def test_cli_commands_are_thin():
    """No command function is longer than 40 lines of body, and cli/ computes nothing itself."""
    long = []
    for p in (PKG / "cli").glob("*.py"):
        for name, _ in imports(p):
            assert name.split(".")[0] not in ("numpy", "torch"), f"{p.name} imports {name}"
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                    isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "command" for d in node.decorator_list):
                body = node.body[1:] if isinstance(node.body[0], ast.Expr) else node.body   # after the docstring
                n = body[-1].end_lineno - body[0].lineno + 1
                if n > 40:
                    long.append((p.name, node.name, n))
    assert not long, long


def test_no_c_sources_and_torch_is_not_a_core_dependency():
    sources = [p for ext in ("*.c", "*.cc", "*.cpp", "*.h", "*.pyx", "*.cu") for p in ROOT.rglob(ext)
               if ".venv" not in p.parts and "build" not in p.parts]
    assert not sources, sources
    assert not (ROOT / "setup.py").exists()
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = [d.split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in proj["dependencies"]]
    assert "torch" not in core and "matplotlib" not in core, core
    assert any(d.startswith("torch") for d in proj["optional-dependencies"]["train"])


NO_TORCH = ("import sys\n"
            "sys.modules['torch'] = None   # `import torch` now fails, as on a device without it\n"
            "from nerfexport.cli import main\n"
            "sys.argv = ['nerfexport'] + sys.argv[1:]\n"
            "main()\n")


def no_torch(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from nerfexport.data.datasets import load_scene
    from nerfexport.data.synthetic import make_scene
    from nerfexport.model.mlp import NeRF
    from nerfexport.shrink.calibration import draw_samples
    d = tmp_path_factory.mktemp("notorch")
    scene_dir = make_scene(d / "scene", size=16, n_train=3, n_val=1, n_test=2)
    scene = load_scene(scene_dir)
    torch.manual_seed(0)
    model = NeRF(tiny_config(width=16))
    model.cfg.near, model.cfg.far = scene.near, scene.far
    model.cfg.camera = {"H": scene.H, "W": scene.W, "focal": scene.focal}
    data = scene.load_args
    export_bundle(model, d / "fp32", ExportOptions(), data=data)
    export_bundle(model, d / "int8", ExportOptions(precision="int8"), calib=draw_samples(model, scene, 32), data=data)
    return d


def test_without_torch_bundles_render_and_train_says_which_extra(bundles, tmp_path):
    for prec in ("fp32", "int8"):
        res = no_torch("render", bundles / prec, "--runtime", "ort-cpu", "-o", tmp_path / f"r-{prec}", "--views", "0")
        assert res.returncode == 0, res.stdout + res.stderr
        assert (tmp_path / f"r-{prec}" / "000.png").is_file() and "PSNR" in res.stdout
    res = no_torch("render", bundles / "fp32", "--views", "spiral", "-o", tmp_path / "spin")
    assert res.returncode == 0 and (tmp_path / "spin" / "spiral.gif").is_file(), res.stdout + res.stderr
    res = no_torch("doctor", "--no-probe")
    assert res.returncode == 0 and "ort-cpu" in res.stdout, res.stdout + res.stderr
    res = no_torch("bench", f"{bundles / 'int8'}@ort-cpu", "-o", tmp_path / "bo", "--views", 1, "--repeat", 1,
                   "--no-peak")
    assert res.returncode == 0 and (tmp_path / "bo" / "bench.json").is_file(), res.stdout + res.stderr
    for cmd in (["train", bundles / "scene", "-o", tmp_path / "m.pt"], ["info", tmp_path / "m.pt"]):
        res = no_torch(*cmd)
        lines = (res.stdout + res.stderr).strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, res.stdout + res.stderr
        assert "pip install 'nerfexport[train]'" in lines[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "m.pt").exists()
