"""``nerfexport sweep``: the sweep file's checks, a small sweep on a local Ray (2 tiny scenes x 2
widths x 2 precisions), its cache (a rerun executes no cell), a failing cell recorded while the
others finish, an interrupted sweep that keeps what finished, and the one line without Ray."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_config
from nerfexport.cli import app
from nerfexport.sweep.spec import SweepSpecError, load_sweep

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (the sweep extra: "
                                                    "pip install 'nerfexport[sweep]')")

SETTINGS = """
[shrink]
eval_views = 1
eval_samples = [4, 4]
calib_rays = 16
[distill]
bank_rays = 64
batch_rays = 16
n_coarse = 4
n_fine = 4
[export]
calib_rays = 32
grid_res = 16
[bench]
views = 1
repeat = 1
"""


def scenes_toml(root: Path, axes: str) -> str:
    return f"""description = "tiny"
[[scene]]
name = "ckpt"
checkpoint = "teacher.pt"
[[scene]]
name = "trained"
dataset = "scene1"
train = {{ width = 16, depth = 3, steps = 3, batch_rays = 32, n_coarse = 4, n_fine = 4, render_coarse = 4, render_fine = 4, eval_views = 1 }}
[axes]
{axes}
{SETTINGS}"""


@pytest.fixture(scope="module")
def scene_root(tmp_path_factory) -> Path:
    """Two tiny procedural scenes: one with a (random) teacher checkpoint, one to train."""
    from nerfexport.data.datasets import load_scene
    from nerfexport.data.synthetic import make_scene
    from nerfexport.model.checkpoint import save_checkpoint
    from nerfexport.model.mlp import NeRF
    root = tmp_path_factory.mktemp("sweep")
    for i in range(2):
        make_scene(root / f"scene{i}", size=16, n_train=3, n_val=1, n_test=2, seed=i)
    sc = load_scene(root / "scene0")
    torch.manual_seed(0)
    m = NeRF(tiny_config(width=16, depth=3))
    m.cfg.near, m.cfg.far = sc.near, sc.far
    m.cfg.camera = {"H": sc.H, "W": sc.W, "focal": sc.focal}
    save_checkpoint(m, root / "teacher.pt", meta={"data": sc.load_args, "train_seconds": 1.0})
    return root


@pytest.fixture(scope="module")
def local_ray():
    import ray
    for attempt in range(3):   # Ray gives its node 30 s to start, too little on a machine busy with other work
        try:
            ray.init(address="local", num_cpus=2, resources={"nerfexport_timer": 1}, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    try:
        yield ray
    finally:
        ray.shutdown()


def write(root: Path, name: str, text: str) -> Path:
    p = root / name
    p.write_text(text)
    return p


@needs_ray
def test_small_sweep_rows_cache_failures_and_interrupt(scene_root, local_ray, tmp_path):
    from nerfexport.sweep.run import run_sweep
    out = tmp_path / "out"
    f = write(scene_root, "small.toml", scenes_toml(scene_root, 'method = ["coreset"]\nwidth = [8, 12]\n'
                                                                'finetune = [2]\nprecision = ["fp32", "int8"]'))
    res = run_sweep(f, out)
    assert (res.executed, res.cached, res.failed) == (8, 0, 0)
    # shared work: one teacher per scene, one shrink per width (for both precisions), one export per cell
    assert res.stages == {"teacher": 2, "shrink": 4, "export": 8, "bench": 8}
    rows = res.doc["rows"]
    assert len(rows) == 8
    assert {(r["scene"], r["width"], r["precision"]) for r in rows} == {
        (s, w, p) for s in ("ckpt", "trained") for w in (8, 12) for p in ("fp32", "int8")}
    for r in rows:
        assert r["status"] == "ok" and r["error"] is None
        for k in ("psnr", "ssim", "fps", "num_rays_per_sec", "ms_per_frame", "size_mb", "params", "model_psnr"):
            assert isinstance(r[k], (int, float)) and math.isfinite(r[k]), (k, r)
        assert r["calibration"] == ("minmax" if r["precision"] == "int8" else None)
        assert r["timer"] == "per-node"
    assert len(list((out / "cells").glob("*.json"))) == 8
    md = (out / "sweep.md").read_text()
    assert md.count("| ok") == 8 and "Best cell per scene" in md
    saved = json.loads((out / "sweep.json").read_text())
    assert len(saved["rows"]) == 8 and set(saved["teachers"]) == {"ckpt", "trained"}
    assert (out / "pareto-ckpt.png").is_file() and (out / "pareto-trained.png").is_file()

    # a rerun executes nothing (and starts no Ray task); limits pick the best cell per scene
    res = run_sweep(f, out, max_mb=0.025)
    assert (res.executed, res.cached, res.stages) == (0, 8, {})
    for scene, best in res.doc["best"].items():
        assert best is None or (best["scene"] == scene and best["size_mb"] <= 0.025)

    # a bad recipe value (a width wider than the teacher) fails its cells with one line; the others
    # finish, and nothing already done is redone. The first run is interrupted after its first cell.
    f2 = write(scene_root, "more.toml", scenes_toml(scene_root, 'method = ["coreset"]\nwidth = [8, 99]\n'
                                                                'finetune = [2]\nprecision = ["fp32", "int8"]\n'
                                                                'calibration = ["minmax", "percentile"]'))

    def stop(e):
        if e["event"] == "cell":
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_sweep(f2, out, progress=stop)
    kept = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert len(kept) == 9   # the 8 of before and the one that finished
    ok_now = sum(c["status"] == "ok" for c in kept) - 8
    res = run_sweep(f2, out)
    assert res.cached == 4 + ok_now and res.executed == 8 - ok_now
    assert res.stages.get("shrink", 0) == 2 and "teacher" not in res.stages   # only the two width-99 shrinks
    rows = res.doc["rows"]
    assert len(rows) == 12
    bad = [r for r in rows if r["width"] == 99]
    assert len(bad) == 6 and all(r["status"] == "failed" for r in bad)
    for r in bad:
        assert "\n" not in r["error"] and "99" in r["error"] and "Traceback" not in r["error"], r["error"]
    good = [r for r in rows if r["width"] == 8]
    assert len(good) == 6 and all(r["status"] == "ok" and r["psnr"] > 0 for r in good)
    assert {r["calibration"] for r in good} == {None, "minmax", "percentile"}
    assert "failed: " in (out / "sweep.md").read_text()


@needs_ray
def test_study_reports_from_a_sweep(scene_root, local_ray, tmp_path):
    """The shrink-study table (with the from-scratch baseline) and the export-study table come
    out of sweep files, in the studies' own formats."""
    from nerfexport.sweep.run import run_sweep
    text = f"""[[scene]]
name = "ckpt"
checkpoint = "teacher.pt"
[axes]
method = ["uniform", "coreset", "scratch"]
width = [8]
finetune = {{ 8 = 2 }}
[scratch]
minutes = 0.01
step_seconds = {{ 8 = 0.1 }}
[sweep]
until = "shrink"
report = "shrink-study"
{SETTINGS.split("[export]")[0]}"""
    res = run_sweep(write(scene_root, "shrink.toml", text), tmp_path / "s")
    assert res.failed == 0 and res.executed == 3
    table = (tmp_path / "s" / "report.md").read_text()
    assert "| teacher | 16 |" in table and "coreset (Mussay et al.)" in table and "trained from scratch" in table
    scratch = next(r for r in res.doc["rows"] if r["method"] == "scratch")
    assert scratch["runtime"] is None and scratch["psnr"] > 0
    text = f"""[[scene]]
name = "ckpt"
checkpoint = "teacher.pt"
[axes]
method = ["none", "coreset"]
width = [8]
finetune = [2]
precision = ["fp32", "int8"]
calibration = ["minmax"]
skip = [false]
[sweep]
report = "export-study"
{SETTINGS.replace("grid_res = 16", "grid = false")}"""
    res = run_sweep(write(scene_root, "export.toml", text), tmp_path / "e")
    assert res.failed == 0 and res.executed == 4
    table = (tmp_path / "e" / "report.md").read_text()
    assert "| teacher | fp32 |" in table and "| w8 | int8 | minmax |" in table


BAD = [
    ("colour = 1\n", "unknown key(s) colour"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nmethod = ['bogus']\nwidth = [8]\n", "axes.method 'bogus'"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nwidth = [8]\ncalibration = ['bogus']\n",
     "axes.calibration 'bogus'"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nwidth = [0]\n", "axes.width must be a positive integer"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nwidth = ['8']\n", "axes.width must be a positive integer"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nwidth = [8, 8]\n", "lists 8 twice"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nwidth = [8]\nprecision = 'int8'\n", "non-empty list"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nwidth = [8]\nruntime = ['nope']\n", "unknown runtime 'nope'"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nwidth = [8]\nfinetune = { 64 = 10 }\n", "not one of the widths"),
    ("[[scene]]\ncheckpoint = 'missing.pt'\n[axes]\nwidth = [8]\n", "does not exist"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\ndataset = 'scene0'\n[axes]\nwidth = [8]\n", "exactly one of"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\n[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nwidth = [8]\n",
     "used twice"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\nname = '../x'\n[axes]\nwidth = [8]\n", "name must be"),
    ("[[scene]]\ndataset = 'scene0'\ntrain = { wings = 2 }\n[axes]\nwidth = [8]\n", "train.wings"),
    ("[[scene]]\ndataset = 'scene0'\ntrain = { steps = 'many' }\n[axes]\nwidth = [8]\n", "train.steps must be int"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nwidth = [8]\nprecision = ['fp32']\n[sweep]\nuntil = 'shrink'\n",
     "no effect"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nwidth = [8]\n[sweep]\nuntil = 'later'\n", "sweep.until"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nwidth = [8]\n[bench]\nviews = -1\n", "bench.views"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nwidth = [8]\n[distill]\nlr = 'fast'\n", "distill.lr"),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nwidth = [8]\n[scratch]\nminutes = 1.0\n", "no \"scratch\""),
    ("[[scene]]\ncheckpoint = 'teacher.pt'\n", None),   # valid: the defaults need a width
    ("this is = = not toml", "not valid TOML"),
    ("", "no scenes"),
]


@pytest.mark.parametrize("text,words", BAD)
def test_bad_sweep_files_are_one_line_errors(scene_root, tmp_path, text, words):
    f = scene_root / f"bad-{abs(hash(text))}.toml"
    f.write_text(text)
    with pytest.raises(SweepSpecError) as e:
        load_sweep(f)
    msg = str(e.value)
    assert "\n" not in msg and str(f) in msg, msg
    assert (words or "axes.width is missing") in msg, msg


def test_paths_are_relative_to_the_sweep_file(scene_root):
    f = scene_root / "rel.toml"
    f.write_text("[[scene]]\ncheckpoint = 'teacher.pt'\ndata = 'scene0'\n[axes]\nwidth = [8]\n")
    spec = load_sweep(f)
    assert spec.scenes[0].checkpoint == (scene_root / "teacher.pt").resolve()
    assert spec.scenes[0].data == (scene_root / "scene0").resolve() and spec.scenes[0].name == "teacher"


def test_auto_is_a_sweep_method(scene_root):
    f = scene_root / "auto.toml"
    f.write_text("[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nmethod = ['auto', 'coreset']\nwidth = [8]\n")
    assert load_sweep(f).axes.method == ["auto", "coreset"]
    f.write_text("[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nmethod = ['best']\nwidth = [8]\n")
    with pytest.raises(SweepSpecError, match="auto"):   # the error lists it among the methods
        load_sweep(f)


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not ((ROOT / "cache/lego100-teacher.pt").is_file() and (ROOT.parent / "shared/data/lego_400").is_dir()),
                    reason="the lego teacher (make teacher) or ../shared/data/lego_400 is not here")
def test_the_docs_sweep_files_are_the_studies():
    from nerfexport.sweep.cells import plan
    shrink = plan(load_sweep(ROOT / "docs/sweeps/shrink-table.toml"))
    kinds = [st.kind for st in shrink.stages.values()]
    assert len(shrink.cells) == 16 and kinds.count("shrink") == 14 and kinds.count("scratch") == 2
    export = plan(load_sweep(ROOT / "docs/sweeps/export-table.toml"))
    kinds = [st.kind for st in export.stages.values()]
    assert len(export.cells) == 8 and kinds.count("shrink") == 1 and kinds.count("export") == 8


def test_cli_bad_sweep_file_is_one_line(scene_root, tmp_path):
    f = write(scene_root, "cli-bad.toml", "[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nwidth = [8]\n"
                                          "precision = ['fp8']\n")
    res = CliRunner().invoke(app, ["sweep", str(f), "-o", str(tmp_path / "o")])
    lines = res.output.strip().splitlines()
    if not HAVE_RAY:
        assert res.exit_code == 2 and "pip install 'nerfexport[sweep]'" in lines[-1]
        return
    assert res.exit_code == 2 and len(lines) == 1 and "axes.precision 'fp8'" in lines[0], res.output


NO_RAY = ("import sys\n"
          "sys.modules['ray'] = None   # `import ray` now fails, as without the sweep extra\n"
          "from nerfexport.cli import main\n"
          "sys.argv = ['nerfexport'] + sys.argv[1:]\n"
          "main()\n")


def test_without_ray_sweep_says_which_extra(scene_root, tmp_path):
    f = write(scene_root, "noray.toml", "[[scene]]\ncheckpoint = 'teacher.pt'\n[axes]\nwidth = [8]\n")
    res = subprocess.run([sys.executable, "-c", NO_RAY, "sweep", str(f), "-o", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=300)
    lines = (res.stdout + res.stderr).strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stdout + res.stderr
    assert lines[0].startswith("error:") and "pip install 'nerfexport[sweep]'" in lines[0]
    assert not (tmp_path / "o").exists()
