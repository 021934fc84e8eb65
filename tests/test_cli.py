"""The command line, driven through typer's CliRunner: happy path and bad input."""

import os

import pytest
import torch
from typer.testing import CliRunner

from nerfexport.cli import app

from conftest import write_blender

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(res):
    assert res.exit_code != 0
    assert "Traceback" not in res.output
    lines = [l for l in res.output.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    scene = d / "scene"
    r = run("synth", scene, "--size", 16, "--train", 4, "--val", 1, "--test", 2)
    assert r.exit_code == 0, r.output
    model = d / "model.pt"
    r = run("train", scene, "-o", model, "--width", 16, "--depth", 3, "--steps", 30, "--batch-rays", 64,
            "--n-coarse", 8, "--n-fine", 8, "--render-coarse", 8, "--render-fine", 8, "--eval-every", 0.001,
            "--eval-views", 1)
    assert r.exit_code == 0, r.output
    return scene, model


def test_train_info_eval(trained, tmp_path):
    scene, model = trained
    assert model.is_file()
    r = run("info", model)
    assert r.exit_code == 0 and "widths [16, 16, 16]" in r.output
    r = run("eval", model, "--data", scene, "--json", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    assert "PSNR" in r.output and (tmp_path / "e.json").is_file()


def test_default_model_in_folder(trained, tmp_path, monkeypatch):
    scene, model = trained
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run("info"))
    (tmp_path / "model.pt").write_bytes(model.read_bytes())
    r = run("info")
    assert r.exit_code == 0 and "using model.pt" in r.output


def test_missing_and_malformed_dataset(tmp_path):
    out = tmp_path / "m.pt"
    assert_one_line_error(run("train", tmp_path / "nope", "-o", out, "--steps", 1))
    bad = write_blender(tmp_path / "bad")
    (bad / "transforms_train.json").write_text("{")
    assert_one_line_error(run("train", bad, "-o", out, "--steps", 1))
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("train", tmp_path / "empty", "-o", out, "--steps", 1))
    assert not out.exists()


def test_unwritable_output(tmp_path):
    data = write_blender(tmp_path / "b")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(run("train", data, "-o", blocker / "m.pt", "--steps", 1))
    assert_one_line_error(run("train", data, "-o", tmp_path / "missing-dir" / "m.pt", "--steps", 1))
    assert_one_line_error(run("train", data, "-o", tmp_path, "--steps", 1))


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/nerfexport-cli-pwned",))


def test_bad_checkpoints(tmp_path, trained):
    junk = tmp_path / "junk.pt"
    junk.write_text("nope")
    assert_one_line_error(run("info", junk))
    evil = tmp_path / "evil.pt"
    torch.save(Evil(), evil)
    assert_one_line_error(run("info", evil))
    assert not os.path.exists("/tmp/nerfexport-cli-pwned")
    _, model = trained
    obj = torch.load(model, weights_only=True)
    obj["config"]["fine"]["widths"] = [8, 16, 16]
    bad = tmp_path / "widths.pt"
    torch.save(obj, bad)
    assert_one_line_error(run("info", bad))
    assert_one_line_error(run("eval", bad, "--data", tmp_path))


def test_bad_options(tmp_path):
    data = write_blender(tmp_path / "b")
    assert_one_line_error(run("train", data, "-o", tmp_path / "m.pt", "--width", 0))
    assert_one_line_error(run("train", data, "-o", tmp_path / "m.pt", "--precision", "fp8"))
    assert not (tmp_path / "m.pt").exists()


def test_synth_refuses_non_empty_folder(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "f").write_text("x")
    assert_one_line_error(run("synth", tmp_path / "s"))


def test_import_nerf_pytorch(tmp_path):
    from nerfexport.model.mlp import NeRF
    from conftest import tiny_config
    net = NeRF(tiny_config(width=16, depth=8))
    tar = tmp_path / "050000.tar"
    torch.save({"global_step": 50000, "network_fn_state_dict": net.coarse.state_dict(),
                "network_fine_state_dict": net.fine.state_dict()}, tar)
    r = run("import", tar, "-o", tmp_path / "model.pt", "--black")
    assert r.exit_code == 0, r.output
    r = run("info", tmp_path / "model.pt")
    assert "black background" in r.output and "50000" in r.output
    assert_one_line_error(run("import", tmp_path / "model.pt", "-o", tmp_path / "x.pt"))


def test_curve_plots_history(trained, tmp_path):
    _, model = trained
    png = tmp_path / "curve.png"
    r = run("curve", model, "-o", png)
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| step |" in r.output


def test_shrink_writes_checkpoint_and_report(trained, tmp_path, monkeypatch):
    import json
    scene, model = trained
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.pt").write_bytes(model.read_bytes())
    r = run("shrink", "--width", 8, "--method", "coreset", "--finetune", 3, "--calib-rays", 32, "--eval-views", 1)
    assert r.exit_code == 0, r.output
    assert "using model.pt" in r.output and "dataset recorded" in r.output
    rep = json.loads((tmp_path / "shrunk.json").read_text())
    assert rep["method"] == "coreset" and rep["widths"]["fine"]["pts.1"] == 8
    assert rep["params_after"]["total"] < rep["params_before"]["total"]
    assert rep["files"]["bytes"] < rep["source"]["bytes"]
    assert rep["psnr_before_finetune"] is not None and rep["psnr_after_finetune"] is not None
    r = run("info", "shrunk.pt")
    assert r.exit_code == 0 and "widths [8, 8, 8]" in r.output
    # the output is an ordinary checkpoint: shrink it again, with a shipped recipe overridden by --width
    r = run("shrink", "shrunk.pt", "-o", "again.pt", "--recipe", "activation-w64", "--width", 4, "--finetune", 0,
            "--eval-views", 0, "--calib-rays", 16)
    assert r.exit_code == 0, r.output
    assert "widths [4, 4, 4]" in run("info", "again.pt").output


def test_shrink_bad_input(trained, tmp_path):
    scene, model = trained
    out = tmp_path / "s.pt"
    cases = [("--width", 64), ("--width", 0), ("--width", -3), ("--width", 8, "--method", "lottery"),
             ("--width", 8, "--device", "tpu")]
    if not torch.cuda.is_available():
        cases.append(("--width", 8, "--device", "cuda"))   # asked for, absent: one line, nothing written
    for extra in cases:
        assert_one_line_error(run("shrink", model, "-o", out, "--data", scene, *extra))
    bad = tmp_path / "bad.toml"
    bad.write_text("[shrink]\nwidht = 8\n")
    assert_one_line_error(run("shrink", model, "-o", out, "--recipe", bad))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert_one_line_error(run("shrink", junk, "-o", out, "--width", 8))
    assert_one_line_error(run("shrink", model, "-o", model, "--width", 8))
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert not any(p.name.startswith(".s.pt") for p in tmp_path.iterdir())


def test_three_line_flow_export_render_bench(trained, tmp_path, monkeypatch):
    """train leaves model.pt; shrink, export --int8 and render find what the step before wrote."""
    import json
    scene, model = trained
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.pt").write_bytes(model.read_bytes())
    r = run("shrink", "--width", 8, "--calib-rays", 32, "--eval-views", 0, "--finetune", 5)
    assert r.exit_code == 0, r.output
    r = run("export", "--int8", "--calib-rays", 32)
    assert r.exit_code == 0, r.output
    assert "using shrunk.pt" in r.output
    man = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert man["precision"] == "int8" and man["calibration"]["format"] == "QDQ U8S8"
    assert man["occupancy"]["res"] == 128 and "occupancy grid: 128^3 cells" in r.output
    r = run("render", "--runtime", "ort-cpu", "--views", "0")
    assert r.exit_code == 0, r.output
    assert "using bundle/" in r.output and "PSNR" in r.output and "empty-space skipping" in r.output
    r = run("render", "--views", "0", "--no-skip", "-o", "plain")
    assert r.exit_code == 0 and "plain rendering" in r.output, r.output
    assert (tmp_path / "renders" / "000.png").is_file()
    r = run("render", "--views", "spiral", "-o", "spin")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "spin" / "spiral.gif").is_file()
    r = run("bench", "--views", 1, "--repeat", 1)
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "bench-out" / "bench.json").read_text())
    assert [x["label"] for x in doc["rows"]] == ["model.pt@torch", "bundle@ort-cpu"]
    assert all("error" not in x for x in doc["rows"])
    assert doc["rows"][1]["speedup_vs_teacher"] > 0 and doc["rows"][1]["samples_per_frame"] > 0
    assert (tmp_path / "bench-out" / "pareto.png").is_file() and (tmp_path / "bench-out" / "grid.png").is_file()


def test_export_render_bad_input(trained, tmp_path, monkeypatch):
    import json
    scene, model = trained
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"nope")
    assert_one_line_error(run("export", junk, "-o", tmp_path / "b"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    assert_one_line_error(run("export", model, "-o", mine))
    assert (mine / "keep.txt").read_text() == "x"
    assert_one_line_error(run("export", model, "-o", tmp_path / "b", "--int8", "--fp16"))
    assert_one_line_error(run("export", model, "-o", tmp_path / "b", "--int8", "--calibration", "kl"))
    assert_one_line_error(run("export", model, "-o", tmp_path / "b", "--tensorrt") if not _has_trt() else run("nope"))
    assert not (tmp_path / "b").exists()
    b = tmp_path / "b32"
    assert run("export", model, "-o", b).exit_code == 0
    assert_one_line_error(run("render", b, "--runtime", "warp-drive", "--data", scene))
    assert_one_line_error(run("render", b, "--views", "99", "--data", scene, "-o", tmp_path / "r"))
    assert_one_line_error(run("render", b, "--runtime", "tensorrt", "--data", scene, "-o", tmp_path / "r"))
    assert_one_line_error(run("render", b, "--early-stop", "1.5", "--data", scene, "-o", tmp_path / "r"))
    assert_one_line_error(run("export", model, "-o", tmp_path / "bg", "--grid-alpha", "0"))
    assert_one_line_error(run("export", model, "-o", tmp_path / "bg", "--density-scale", "0"))
    assert not (tmp_path / "bg").exists()
    (b / "coarse.onnx").write_bytes((b / "coarse.onnx").read_bytes()[:-10])
    assert_one_line_error(run("render", b, "--data", scene, "-o", tmp_path / "r"))
    assert not (tmp_path / "r").exists()
    m = json.loads((b / "manifest.json").read_text())
    m["version"] = 7
    (b / "manifest.json").write_text(json.dumps(m))
    assert_one_line_error(run("render", b, "--data", scene))


def _has_trt():
    try:
        import tensorrt  # noqa: F401
        return True
    except ImportError:
        return False


def test_demo_runs_the_whole_pipeline(tmp_path):
    """The main job, shrunk to seconds: every stage runs and it says where everything is."""
    out = tmp_path / "demo"
    r = run("demo", "-o", out, "--steps", 20, "--size", 12, "--width", 16, "--finetune", 5)
    assert r.exit_code == 0, r.output
    for step in range(1, 8):
        assert f"[{step}/7]" in r.output
    assert (out / "bench" / "bench.md").is_file() and (out / "renders" / "000.png").is_file()
    assert "| teacher 256 fp32 | torch |" in r.output and "w16 int8" in r.output
    assert "done. dataset" in r.output
