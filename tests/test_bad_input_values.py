"""Every float read from a file or a flag is finite and in range; runtime files are confined and
name only known providers; malformed checkpoint fields give one line (issue 33)."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
import torch

from conftest import write_blender, write_llff
from test_bad_input import base, case, check_refused, listing, run  # noqa: F401  (fixtures)


def _blender_angle(case, value):
    d = write_blender(case / "blender")
    for split in ("train", "val", "test"):
        meta = json.loads((d / f"transforms_{split}.json").read_text())
        meta["camera_angle_x"] = value
        (d / f"transforms_{split}.json").write_text(json.dumps(meta).replace('"NAN"', "NaN"))
    return d


@pytest.mark.parametrize("angle", [0, -0.5, "NAN", 3.141592653589793, 4.0, "0.7"])
def test_blender_camera_angle_out_of_range(case, angle):
    d = _blender_angle(case, angle)
    before = listing(case)
    res = run("train", d, "-o", "m.pt", "--steps", 1)
    check_refused(res, case, before)
    assert "camera_angle_x" in res.output


def _llff(case, fn):
    d = write_llff(case / "llff")
    arr = np.load(d / "poses_bounds.npy")
    fn(arr)
    np.save(d / "poses_bounds.npy", arr)
    return d


LLFF_CASES = {
    "focal 0": lambda a: a.__setitem__((slice(None), 14), 0.0),
    "focal negative": lambda a: a.__setitem__((slice(None), 14), -20.0),
    "zero bounds": lambda a: a.__setitem__((slice(None), slice(15, 17)), 0.0),
    "tiny bounds": lambda a: a.__setitem__((slice(None), slice(15, 17)), [1e-320, 2e-320]),
    "identical poses": lambda a: a.__setitem__((slice(None), slice(0, 15)), 0.0),
}


@pytest.mark.parametrize("name", list(LLFF_CASES))
def test_llff_values(case, name):
    d = _llff(case, LLFF_CASES[name])
    before = listing(case)
    check_refused(run("train", d, "-o", "m.pt", "--steps", 1, "--downscale", 2), case, before)


def test_llff_single_image(case):
    d = write_llff(case / "llff", n=1)
    before = listing(case)
    res = run("train", d, "-o", "m.pt", "--steps", 1, "--downscale", 2)
    check_refused(res, case, before)
    assert "2 views" in res.output


@pytest.mark.parametrize("flag", [("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1"), ("--lr", "0"),
                                  ("--minutes", "nan"), ("--width", "100000")])
def test_train_float_flags(base, case, flag):
    before = listing(case)
    res = run("train", base["scene"], "-o", "m.pt", "--steps", 1, *flag)
    check_refused(res, case, before)


@pytest.mark.parametrize("scale", ["1e308", "inf", "nan", "-1", "0"])
def test_render_scale(base, case, scale):
    before = listing(case)
    res = run("render", base["bundle"], "--data", base["scene"], "-o", "r", "--scale", scale)
    check_refused(res, case, before)


def _camera_path(case, matrix):
    doc = {"render_width": 8, "render_height": 8, "fps": 10, "camera_path": [{"camera_to_world": matrix, "fov": 40}]}
    (case / "p.json").write_text(json.dumps(doc))
    return case / "p.json"


@pytest.mark.parametrize("matrix", [[0.0] * 16, [1.0] * 16, [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1]])
def test_camera_path_degenerate_matrices(base, case, matrix):
    p = _camera_path(case, matrix)
    before = listing(case)
    res = run("render", base["bundle"], "--camera-path", p, "-o", "r")
    check_refused(res, case, before)
    assert "rotation" in res.output


@pytest.mark.parametrize("command", ["export", "import-tar", "info"])
def test_nan_weights(base, case, command):
    obj = torch.load(base["model"], weights_only=True)
    k = next(iter(obj["coarse"]))
    obj["coarse"][k][0] = float("nan")
    if command == "import-tar":
        sd = {"pts_linears.0.weight": torch.full((8, 63), float("nan")), "pts_linears.0.bias": torch.zeros(8),
              "output_linear.weight": torch.zeros(4, 8), "output_linear.bias": torch.zeros(4)}
        torch.save({"network_fn_state_dict": sd}, case / "n.tar")
        args = ("import", case / "n.tar", "-o", "m.pt")
    else:
        torch.save(obj, case / "n.pt")
        args = ("export", case / "n.pt", "-o", "bx", "--no-grid") if command == "export" else ("info", case / "n.pt")
    before = listing(case)
    res = run(*args)
    check_refused(res, case, before)
    assert "NaN" in res.output


# ---------------------------------------------------------------- malformed checkpoint fields

FIELD_CASES = {
    "meta as a list": lambda o: o.update(meta=[1, 2]),
    "tensor in meta": lambda o: o["meta"].update(steps=torch.zeros(3)),
    "camera without H": lambda o: o["config"]["camera"].pop("H"),
    "camera as a list": lambda o: o["config"].update(camera=[1, 2]),
    "string step": lambda o: o.update(train_state={"step": "abc", "history": []}),
    "history of strings": lambda o: o["meta"].update(history=["x"]),
    "bad optimizer state": lambda o: o.update(train_state={"step": 1, "history": [], "optimizer": {"state": 5},
                                                           "generator": torch.zeros(3)}),
    "config as a list": lambda o: o.update(config=[1]),
    "nan near": lambda o: o["config"].update(near=float("nan")),
    "huge sample count": lambda o: o["config"].update(n_coarse=10 ** 9),
}


@pytest.mark.parametrize("name", list(FIELD_CASES))
@pytest.mark.parametrize("command", ["info", "curve", "export", "train-resume"])
def test_malformed_checkpoint_fields(base, case, name, command):
    obj = torch.load(base["model"], weights_only=True)
    FIELD_CASES[name](obj)
    p = case / "bad.pt"
    torch.save(obj, p)
    args = {"info": ("info", p), "curve": ("curve", p, "-o", "c.png"), "export": ("export", p, "-o", "bx"),
            "train-resume": ("train", base["scene"], "-o", p, "--steps", 30, "--width", 16, "--depth", 3)}[command]
    before = listing(case)
    check_refused(run(*args), case, before)


def test_nerf_pytorch_string_step(case):
    sd = {"pts_linears.0.weight": torch.zeros(8, 63), "pts_linears.0.bias": torch.zeros(8),
          "output_linear.weight": torch.zeros(4, 8), "output_linear.bias": torch.zeros(4)}
    torch.save({"network_fn_state_dict": sd, "global_step": "many"}, case / "x.tar")
    before = listing(case)
    check_refused(run("import", case / "x.tar", "-o", "m.pt"), case, before)


# ---------------------------------------------------------------- runtime files

def _rt(case, text):
    (case / "rt.toml").write_text('kind = "onnxruntime"\n' + text)
    return case / "rt.toml"


RUNTIME_CASES = {
    "cache path outside": 'providers = ["CPUExecutionProvider"]\n[provider_options.TensorrtExecutionProvider]\n'
                          'trt_engine_cache_path = "/tmp/elsewhere"\n',
    "cache path dotdot": 'providers = ["CPUExecutionProvider"]\n[provider_options.TensorrtExecutionProvider]\n'
                         'trt_timing_cache_path = "../up"\n',
    "plugin library": 'providers = ["CPUExecutionProvider"]\n[provider_options.TensorrtExecutionProvider]\n'
                      'trt_extra_plugin_lib_paths = "./evil.so"\n',
    "unknown provider": 'providers = ["WarpExecutionProvider", "CPUExecutionProvider"]\n',
    "unknown option": 'providers = ["CPUExecutionProvider"]\n[provider_options.CUDAExecutionProvider]\nwarp = 9\n',
    "huge threads": 'providers = ["CPUExecutionProvider"]\nthreads = 100000000000000\n',
    "huge workers": 'providers = ["CPUExecutionProvider"]\nworkers = 1000000\n',
    "table option value": 'providers = ["CPUExecutionProvider"]\n[provider_options.CUDAExecutionProvider]\n'
                          'device_id = {a = 1}\n',
}


@pytest.mark.parametrize("name", list(RUNTIME_CASES))
def test_runtime_files_confined_and_known(base, case, name):
    rt = _rt(case, RUNTIME_CASES[name])
    before = listing(case)
    res = run("render", base["bundle"], "--data", base["scene"], "--runtime", rt, "-o", "r")
    check_refused(res, case, before)
    assert not (case.parent / "elsewhere").exists()


def test_a_file_named_like_a_shipped_runtime_does_not_shadow_it(base, case):
    (case / "ort-cpu").write_text('kind = "quantum"\n')
    res = run("render", base["bundle"], "--data", base["scene"], "-o", "r", "--views", "0")
    assert res.exit_code == 0, res.output
    before = listing(case)
    check_refused(run("render", base["bundle"], "--data", base["scene"], "-o", "r2", "--runtime", "./ort-cpu"),
                  case, before)


def test_tune_leaves_no_invalid_runtime_file(base, case):
    before = listing(case)
    res = run("tune", base["bundle"], "-o", "t.toml", "--data", base["scene"], "--tolerance", "nan")
    check_refused(res, case, before)


# ---------------------------------------------------------------- the viewer on another loopback address

def test_viewer_on_127_0_0_2_answers_its_own_host():
    from nerfexport.deploy.viewer.server import make_server
    import threading
    try:
        httpd = make_server(None, "127.0.0.2", 0)
    except OSError:
        pytest.skip("127.0.0.2 cannot be bound here")
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        port = httpd.server_address[1]
        req = urllib.request.Request(f"http://127.0.0.2:{port}/nope")
        try:
            code = urllib.request.urlopen(req, timeout=10).status
        except urllib.error.HTTPError as e:
            code = e.code
        assert code != 403
        req = urllib.request.Request(f"http://127.0.0.2:{port}/nope", headers={"Host": "attacker.example"})
        try:
            code = urllib.request.urlopen(req, timeout=10).status
        except urllib.error.HTTPError as e:
            code = e.code
        assert code == 403
    finally:
        httpd.shutdown()
        httpd.server_close()
