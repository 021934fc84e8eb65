"""Issue 22: the no-flag training recipe, the cheap periodic evaluation, progress in logs,
forward-facing scenes with the NDC occupancy grid, and eval's ns-eval JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nerfexport.cli import app
from nerfexport.data.datasets import load_scene
from nerfexport.data.synthetic import make_forward_scene
from nerfexport.train import defaults
from nerfexport.train.evaluate import eval_pixels, evaluate, pixel_psnr
from nerfexport.train.factory import new_model
from nerfexport.train.loop import TrainConfig, train
from nerfexport.data.datasets import DataArgs
from nerfexport.train.run import train_config

from conftest import write_blender, write_llff

runner = CliRunner()


def test_no_flags_take_the_cpu_preset_with_a_time_budget(tmp_path):
    tc, name = train_config(DataArgs(write_blender(tmp_path / "b")), {})
    assert name == "cpu" and tc.max_minutes == defaults.CPU["max_minutes"]
    assert (tc.batch_rays, tc.n_coarse, tc.n_fine, tc.grow_from) == (128, 16, 24, 128) and tc.occupancy
    # --steps alone: exactly that many steps, no time budget; --minutes with it: both
    tc, _ = train_config(DataArgs(tmp_path / "b"), {"steps": 7})
    assert tc.steps == 7 and tc.max_minutes is None
    tc, _ = train_config(DataArgs(tmp_path / "b"), {"steps": 7, "max_minutes": 2.0})
    assert (tc.steps, tc.max_minutes) == (7, 2.0)
    # a forward-facing scene on a GPU gets nerf-pytorch's LLFF counts
    assert defaults.preset_name("cuda", True) == "gpu-llff" and defaults.GPU_LLFF["n_fine"] == 64
    assert defaults.preset_name("cpu", True) == "cpu"


def test_forward_facing_training_uses_the_ndc_grid(tmp_path):
    scene = load_scene(write_llff(tmp_path / "llff", n=6), downscale=2)
    assert scene.ndc
    model = new_model(scene, 16, 2, True, 8, 8)
    events = []
    tc = TrainConfig(steps=40, batch_rays=64, n_coarse=8, n_fine=8, grid_warmup=10, grid_every=10, grid_res=16,
                     ckpt_every_steps=0, final_eval=False)
    train(model, scene, tc, progress=events.append)
    occ = [e["occupied"] for e in events if e.get("event") == "step"]
    assert occ[0] == 1.0 and min(occ) < 1.0   # the grid was built (in NDC space) and has empty cells
    # no background in a forward-facing scene: every ray is trained, none skipped as empty
    assert all(e["skipped"] == 0 and e["rays"] == 64 for e in events if e.get("event") == "step")


def test_periodic_evaluation_is_a_fixed_pixel_subset_that_matches_the_full_view(tmp_path):
    scene = load_scene(write_blender(tmp_path / "b", size=8))
    a = eval_pixels(scene, 40, 2, seed=3)
    b = eval_pixels(scene, 40, 2, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a) and a["o"].shape == (40, 3)
    assert eval_pixels(scene, 10_000, 1)["o"].shape[0] == 64   # never more than the view has, no repeats
    model = new_model(scene, 16, 2, True, 8, 8)
    full = evaluate(model, scene, "test", 1, 8, 8)
    rays = {k: torch.from_numpy(v) for k, v in eval_pixels(scene, 64, 1).items()}
    assert pixel_psnr(model, rays, 8, 8, None) == pytest.approx(full.psnr, abs=1e-3)


def test_a_run_ends_with_the_full_views_and_reports_evaluation_time(tmp_path):
    scene = load_scene(write_blender(tmp_path / "b", size=8))
    model = new_model(scene, 16, 2, True, 8, 8)
    events = []
    res = train(model, scene, TrainConfig(steps=6, batch_rays=32, n_coarse=8, n_fine=8, ckpt_every_steps=0,
                                          eval_every_minutes=1e-6, eval_pixels=20), progress=events.append)
    evals = [e for e in events if e["event"] == "eval"]
    assert evals and all(e["pixels"] == 20 for e in evals)
    final = [e for e in events if e["event"] == "final"]
    assert len(final) == 1 and final[0]["views"] == len(scene.splits["test"])
    assert res.final is not None and res.eval_seconds > 0 and res.wall_seconds >= res.train_seconds


def test_a_run_that_is_not_on_a_terminal_prints_progress_lines(tmp_path):
    data = write_blender(tmp_path / "b", size=8)
    env = {**os.environ, "NERFEXPORT_PROGRESS_EVERY": "0.05"}
    p = subprocess.run([sys.executable, "-m", "nerfexport.cli", "train", str(data), "-o", str(tmp_path / "m.pt"),
                        "--width", "16", "--depth", "2", "--minutes", "0.05", "--render-coarse", "8",
                        "--render-fine", "8", "--eval-views", "1"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = [l for l in p.stdout.splitlines() if l.startswith("train: step ")]
    assert len(lines) >= 2, p.stdout
    assert all("loss" in l and "psnr" in l and "of 0.05 min left" in l for l in lines)
    assert "recipe (cpu preset" in p.stdout and "\x1b[" not in p.stdout   # no bar, no escape codes


def test_eval_json_is_in_nerfstudio_ns_eval_layout(tmp_path):
    data = write_blender(tmp_path / "b", size=8)
    model = tmp_path / "m.pt"
    r = runner.invoke(app, ["train", str(data), "-o", str(model), "--width", "16", "--depth", "2", "--steps", "3",
                            "--render-coarse", "8", "--render-fine", "8"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["eval", str(model), "--data", str(data), "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "e.json").read_text())
    assert {"experiment_name", "method_name", "checkpoint", "results"} <= set(doc)
    res = doc["results"]
    for k in ("psnr", "psnr_std", "ssim", "ssim_std", "num_rays_per_sec", "fps"):
        assert isinstance(res[k], float), k
    assert res["psnr"] == pytest.approx(np.mean(res["per_view_psnr"]))
    assert res["psnr_std"] == pytest.approx(np.std(res["per_view_psnr"]))
    assert res["num_rays_per_sec"] == pytest.approx(res["fps"] * 8 * 8)
    # curve --final reads it
    r = runner.invoke(app, ["curve", str(model), "-o", str(tmp_path / "c.png"), "--final", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c.png").is_file() and "views |" in r.output   # the run's own final evaluation is a row


def test_forward_facing_scene_is_an_llff_dataset(tmp_path):
    root = make_forward_scene(tmp_path / "ff", 40, 30, 9)
    s = load_scene(root)
    assert (s.W, s.H, s.ndc, len(s.splits["test"])) == (40, 30, True, 2)
    assert s.images.std() > 0.05   # a textured wall behind the objects: no empty background
