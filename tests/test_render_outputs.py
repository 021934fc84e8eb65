"""Issue 22: render at any size, along a nerfstudio camera path, with depth and opacity images,
an MP4 next to the GIF; and bench's ns-eval JSON keys."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from nerfexport.cli import app
from nerfexport.data.rays import pose_spherical
from nerfexport.deploy.views import DatasetError, camera_path_views, parse_resolution, resize_camera
from nerfexport.export.bundle_writer import ExportOptions, export_bundle
from nerfexport.model.mlp import NeRF

from conftest import tiny_config

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("render-out")
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_config(width=16), camera={"H": 12, "W": 12, "focal": 15.0})
    export_bundle(NeRF(cfg), d / "b", ExportOptions())
    return d / "b"


def camera_path(path, n=3, w=20, h=10, fov=40.0, **over):
    doc = {"camera_type": "perspective", "render_width": w, "render_height": h, "fps": 10, "seconds": n / 10,
           "camera_path": [{"camera_to_world": pose_spherical(a, -30.0, 4.0).reshape(-1).tolist(), "fov": fov,
                            "aspect": w / h} for a in np.linspace(0, 90, n)]}
    doc.update(over)
    path.write_text(json.dumps(doc))
    return path


def one_line_error(res):
    lines = [l for l in res.output.strip().splitlines() if l.strip()]
    return res.exit_code != 0 and "Traceback" not in res.output and len(lines) == 1 and lines[0].startswith("error:")


def test_resize_keeps_the_field_of_view_across_the_width():
    assert resize_camera(100, 100, 138.9, (50, 25)) == (25, 50, pytest.approx(69.45))
    assert resize_camera(100, 80, 100.0, scale=0.5) == (50, 40, pytest.approx(50.0))
    assert parse_resolution("640x480") == (640, 480)
    for bad in ("640", "ax4", "640x480x2"):
        with pytest.raises(DatasetError):
            parse_resolution(bad)
    with pytest.raises(ValueError):
        resize_camera(100, 100, 1.0, (100000, 100000))


def test_render_at_a_resolution_and_a_scale(bundle, tmp_path):
    r = runner.invoke(app, ["render", str(bundle), "--views", "spiral", "--resolution", "20x10", "-o",
                            str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "a" / "000.png").size == (20, 10)
    r = runner.invoke(app, ["render", str(bundle), "--views", "spiral", "--scale", "0.5", "-o", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "b" / "000.png").size == (6, 6)
    for bad in (["--resolution", "0x10"], ["--resolution", "wide"], ["--scale", "-1"], ["--scale", "nan"],
                ["--resolution", "9000x9000"], ["--resolution", "10x10", "--scale", "2"]):
        r = runner.invoke(app, ["render", str(bundle), "--views", "spiral", *bad, "-o", str(tmp_path / "c")])
        assert one_line_error(r), (bad, r.output)
        assert not (tmp_path / "c").exists()


def test_camera_path_with_depth_opacity_gif_and_mp4(bundle, tmp_path):
    cp = camera_path(tmp_path / "camera_path.json")
    v = camera_path_views(cp)
    assert (len(v.poses), v.W, v.H, v.fps) == (3, 20, 10, 10.0)
    assert v.focal == pytest.approx(5.0 / np.tan(np.radians(20.0)))
    out = tmp_path / "r"
    r = runner.invoke(app, ["render", str(bundle), "--camera-path", str(cp), "--depth", "--opacity", "-o", str(out)])
    assert r.exit_code == 0, r.output
    names = {p.name for p in out.iterdir()}
    assert {"000.png", "002.png", "depth-000.png", "opacity-002.png", "spiral.gif"} <= names
    d = Image.open(out / "depth-000.png")
    assert d.size == (20, 10) and d.mode.startswith("I")      # 16-bit
    assert Image.open(out / "opacity-001.png").mode == "L"
    try:
        import imageio_ffmpeg
    except ImportError:
        pytest.skip("imageio-ffmpeg is not installed: no MP4 (pip install imageio-ffmpeg)")
    assert "spiral.mp4" in names
    meta = imageio_ffmpeg.read_frames(str(out / "spiral.mp4"))
    info = next(meta)
    assert tuple(info["size"]) == (20, 10) and len(list(meta)) == 3


@pytest.mark.parametrize("change", [
    {"camera_path": []}, {"camera_path": "x"}, {"render_width": -4}, {"render_width": 10 ** 6}, {"fps": 0},
    {"camera_type": "fisheye"},
    {"camera_path": [{"camera_to_world": [0.0] * 15, "fov": 40}]},
    {"camera_path": [{"camera_to_world": [float("nan")] * 16, "fov": 40}]},
    {"camera_path": [{"camera_to_world": np.eye(4).reshape(-1).tolist(), "fov": 190}]},
    {"camera_path": [{"camera_to_world": np.eye(4).reshape(-1).tolist()}]},
])
def test_bad_camera_paths_are_one_line(bundle, tmp_path, change):
    cp = camera_path(tmp_path / "p.json", **change)
    r = runner.invoke(app, ["render", str(bundle), "--camera-path", str(cp), "-o", str(tmp_path / "o")])
    assert one_line_error(r), r.output
    assert not (tmp_path / "o").exists()


def test_unreadable_camera_path_is_one_line(bundle, tmp_path):
    (tmp_path / "p.json").write_text("{not json")
    r = runner.invoke(app, ["render", str(bundle), "--camera-path", str(tmp_path / "p.json"), "-o", str(tmp_path / "o")])
    assert one_line_error(r)
    r = runner.invoke(app, ["render", str(bundle), "--camera-path", str(tmp_path / "none.json"), "-o", str(tmp_path / "o")])
    assert one_line_error(r)


def test_bench_writes_ns_eval_documents():
    from nerfexport.bench.bench import ns_eval_rows
    row = {"label": "a", "path": "b", "runtime": "ort-cpu", "per_view_psnr": [20.0, 22.0], "per_view_ssim": [0.5, 0.7],
           "median_ms": 250.0, "rays_per_frame": 100, "precision": "int8", "speedup_vs_teacher": 3.0}
    docs = ns_eval_rows({"rows": [row, {"label": "x", "path": "y", "runtime": "z", "error": "boom"}],
                         "machine": {"cpu": "test"}, "views": 2})
    assert len(docs) == 1
    d = docs[0]
    assert (d["experiment_name"], d["method_name"], d["checkpoint"]) == ("a", "nerfexport ort-cpu", "b")
    res = d["results"]
    assert (res["psnr"], res["psnr_std"], res["ssim"]) == (21.0, 1.0, pytest.approx(0.6))
    assert res["fps"] == 4.0 and res["num_rays_per_sec"] == 400.0 and res["speedup_vs_teacher"] == 3.0


def test_tune_writes_a_runtime_file_that_loads_and_renders(bundle, tmp_path):
    from nerfexport.deploy.runtime import load_runtime
    out = tmp_path / "my-cpu.toml"
    r = runner.invoke(app, ["tune", str(bundle), "-o", str(out), "--views", "1"])
    assert r.exit_code == 0, r.output
    spec = load_runtime(out)
    assert spec.kind == "onnxruntime" and spec.samples[0] == 8 and 0 < spec.samples[1] <= 8
    assert spec.chunk in (128, 256, 512, 1024)
    r = runner.invoke(app, ["render", str(bundle), "--runtime", str(out), "--views", "spiral", "-o", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    assert f"{spec.samples[0]}+{spec.samples[1]} samples" in r.output
    assert one_line_error(runner.invoke(app, ["tune", str(bundle), "-o", str(tmp_path / "x.json")]))
    assert one_line_error(runner.invoke(app, ["tune", str(bundle), "-o", str(tmp_path / "y.toml"), "--base", "torch"]))
    bad = tmp_path / "bad.toml"
    bad.write_text(out.read_text().replace("samples = [", "samples = [1, "))
    with pytest.raises(ValueError):
        load_runtime(bad)


def test_the_fast_runtime_renders_and_tune_keeps_its_sampler_settings(bundle, tmp_path):
    """``render --runtime ort-cpu-fast`` uses the density sampler (its file says so); a bundle
    without a density grid gets one line from render and tune; the runtime file tune writes keeps
    the base's sampler settings."""
    from nerfexport.deploy.runtime import load_runtime
    from nerfexport.deploy.tune import Trial, TuneResult, runtime_toml
    assert one_line_error(runner.invoke(app, ["tune", str(bundle), "-o", str(tmp_path / "x.toml"), "--views", "1",
                                              "--base", "ort-cpu-fast"]))
    assert one_line_error(runner.invoke(app, ["render", str(bundle), "--runtime", "ort-cpu-fast", "--views", "0",
                                              "-o", str(tmp_path / "x")]))
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_config(width=16), camera={"H": 12, "W": 12, "focal": 15.0})
    dense = tmp_path / "dense"
    export_bundle(NeRF(cfg), dense, ExportOptions(grid=True, grid_res=8, grid_box=[-2, -2, -2, 2, 2, 2]))
    r = runner.invoke(app, ["render", str(dense), "--runtime", "ort-cpu-fast", "--views", "spiral", "-o",
                            str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    assert "with ort-cpu-fast (64+28 samples)" in r.output
    fast = load_runtime("ort-cpu-fast")
    out = tmp_path / "fast.toml"
    out.write_text(runtime_toml(fast, TuneResult(fast, [Trial("x", (8, 8), 2048, 1, 2, 3.0, 100, 20.0)])))
    spec = load_runtime(out)
    assert (spec.sampler, spec.proposal_spacing, spec.proposal_softness, spec.early_stop,
            spec.proposal_segment) == ("density", 1.5, 0.3, 0.01, 3)


def test_tune_builds_each_step_on_the_best_of_the_one_before(bundle, tmp_path, monkeypatch):
    import nerfexport.deploy.tune as tune
    times = {128: 5.0, 256: 9.0}   # chunk 128 is the fastest: the thread trials must use it

    def fake(spec, b, views, repeat, skip=True):
        return [np.zeros((views.H, views.W, 3), np.float32)] * len(views.poses), times.get(spec.chunk, 7.0), 1.0
    monkeypatch.setattr(tune, "_render", fake)
    r = tune.tune_runtime(bundle, tmp_path / "t.toml", views=1, chunks=(128, 256))
    assert all(t.chunk == 128 for t in r.trials if t.what == "threads") and r.spec.chunk == 128
