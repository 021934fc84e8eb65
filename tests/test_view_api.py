"""``nerfexport view``'s server, asked directly: PNG frames of the requested size, stale requests
dropped, bad requests refused with 400, two bundles side by side, a clean Ctrl-C."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from test_layout import imports

ROOT = Path(__file__).resolve().parents[1]


def make_bundles(d: Path) -> dict[str, Path]:
    """A tiny scene and two bundles of one tiny model: ``fp32`` with an occupancy grid, ``int8`` without."""
    from nerfexport.data.datasets import load_scene
    from nerfexport.data.synthetic import make_scene
    from nerfexport.export.bundle_writer import ExportOptions, export_bundle
    from nerfexport.model.mlp import NeRF
    from nerfexport.shrink.calibration import draw_samples
    scene_dir = make_scene(d / "scene", size=16, n_train=3, n_val=1, n_test=2)
    scene = load_scene(scene_dir)
    torch.manual_seed(0)
    model = NeRF(tiny_config(width=16))
    model.cfg.near, model.cfg.far = scene.near, scene.far
    model.cfg.camera = {"H": scene.H, "W": scene.W, "focal": scene.focal}
    export_bundle(model, d / "fp32", ExportOptions(grid=True, grid_res=8, grid_box=[-2, -2, -2, 2, 2, 2]),
                  data=scene.load_args)
    export_bundle(model, d / "int8", ExportOptions(precision="int8"), calib=draw_samples(model, scene, 32),
                  data=scene.load_args)
    return {"scene": scene_dir, "fp32": d / "fp32", "int8": d / "int8"}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    return make_bundles(tmp_path_factory.mktemp("view"))


@pytest.fixture(scope="module")
def server(bundles):
    from nerfexport.deploy.viewer.server import Viewer, make_server
    httpd = make_server(Viewer.open([bundles["fp32"], bundles["int8"]]), "127.0.0.1", 0)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def get(server, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(server.url.rstrip("/") + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


CAM = "az=30&el=20&r=4"


def test_info_names_both_bundles_and_starts_at_a_held_out_view(server, bundles):
    from nerfexport.data.datasets import load_scene
    from nerfexport.deploy.viewer.session import orbit_of
    code, _, body = get(server, "/api/info")
    info = json.loads(body)
    assert code == 200 and [b["precision"] for b in info["bundles"]] == ["fp32", "int8"]
    assert [b["grid"] for b in info["bundles"]] == [True, False]
    assert all(b["runtime"] == "ort-cpu" and b["W"] == b["H"] == 16 and b["size_mb"] > 0 for b in info["bundles"])
    assert "held-out" in info["start_note"]
    images, poses = load_scene(bundles["scene"]).subset("test")
    want = orbit_of(poses[0])
    assert all(abs(info["start"][k] - want[k]) < 1e-6 for k in ("az", "el", "r"))


def test_a_frame_is_a_png_of_the_requested_size(server):
    for w, h in ((16, 16), (4, 4), (8, 5), (1, 1)):
        code, hdr, body = get(server, f"/api/frame?bundle=0&{CAM}&w={w}&h={h}")
        assert code == 200 and hdr["Content-Type"] == "image/png", body[:200]
        img = Image.open(io.BytesIO(body))
        assert img.format == "PNG" and img.size == (w, h) and hdr["X-Size"] == f"{w}x{h}"
        assert int(hdr["X-Evaluations"]) > 0 and float(hdr["X-Frame-Ms"]) > 0
    code, hdr, body = get(server, f"/api/frame?{CAM}")   # defaults: bundle 0 at its camera's full size
    assert code == 200 and Image.open(io.BytesIO(body)).size == (16, 16)


def test_two_bundles_side_by_side_with_one_camera(server):
    frames = []
    for b in (0, 1):
        code, hdr, body = get(server, f"/api/frame?bundle={b}&{CAM}&w=16&h=16&skip=0")
        assert code == 200, body
        frames.append(np.asarray(Image.open(io.BytesIO(body)), np.float32))
    assert frames[0].shape == frames[1].shape == (16, 16, 3)
    assert np.abs(frames[0] - frames[1]).mean() < 8   # the same model, fp32 and int8, from the same camera
    other = np.asarray(Image.open(io.BytesIO(get(server, "/api/frame?bundle=0&az=120&el=-10&r=3&skip=0")[2])))
    assert np.abs(other.astype(np.float32) - frames[0]).max() > 0   # another camera, another image


def test_skipping_is_a_toggle_and_evaluates_fewer_samples(server):
    ev = {s: int(get(server, f"/api/frame?bundle=0&{CAM}&skip={s}")[1]["X-Evaluations"]) for s in (0, 1)}
    assert 0 < ev[1] < ev[0]


@pytest.mark.parametrize("query", [
    "az=nan&el=0&r=4", "az=inf&el=0&r=4", "az=-1e400&el=0&r=4", "az=400&el=0&r=4", "az=0&el=91&r=4",
    "az=0&el=0&r=-1", "az=0&el=0&r=0", "az=0&el=0&r=1e9", "az=abc&el=0&r=4", "el=0&r=4",
    f"{CAM}&w=0", f"{CAM}&w=17", f"{CAM}&w=100000&h=100000", f"{CAM}&h=-3", f"{CAM}&w=1.5",
    f"{CAM}&w=99999999999999999999999",
    f"{CAM}&bundle=2", f"{CAM}&bundle=-1", f"{CAM}&skip=2", f"{CAM}&seq=-1", f"{CAM}&client=a%20b",
    f"{CAM}&x=1", f"{CAM}&az=10", "az=0&el=0&r=4&" + "&".join(f"k{i}=1" for i in range(40)),
])
def test_bad_requests_get_400_and_the_server_keeps_serving(server, query):
    code, hdr, body = get(server, f"/api/frame?{query}")
    assert code == 400 and hdr["Content-Type"].startswith("text/plain"), (code, body)
    assert body.decode().count("\n") == 1 and len(body) < 400
    assert get(server, f"/api/frame?{CAM}&w=2&h=2")[0] == 200


def test_other_paths_404_and_foreign_hosts_403(server):
    for path in ("/etc/passwd", "/../pyproject.toml", "/static/index.html", "/api/frames"):
        assert get(server, path)[0] == 404, path
    assert get(server, "/api/info", {"Host": "attacker.example:7007"})[0] == 403
    assert get(server, "/api/info", {"Host": "localhost:7007"})[0] == 200


def _in_thread(server, path: str) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(get(server, path)), daemon=True)
    t.start()
    return t, out


def _until(cond, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_a_waiting_request_is_dropped_when_a_newer_one_arrives(server):
    q = server.viewer.bundles[0].queue
    with q.hold():   # the bundle is busy rendering
        old, old_out = _in_thread(server, f"/api/frame?{CAM}&w=4&h=4&seq=1&client=t1")
        _until(lambda: q.waiting == 1)
        new, new_out = _in_thread(server, f"/api/frame?{CAM}&w=8&h=8&seq=2&client=t1")
        old.join(30)   # answered at once, while the bundle is still busy
        assert old_out and old_out[0][0] == 204 and old_out[0][1]["X-Seq"] == "1" and old_out[0][2] == b""
        _until(lambda: q.waiting == 1)
        assert not new_out
    new.join(60)
    code, hdr, body = new_out[0]
    assert code == 200 and hdr["X-Seq"] == "2" and Image.open(io.BytesIO(body)).size == (8, 8)
    assert get(server, f"/api/frame?{CAM}&seq=2&client=t1")[0] == 204   # not newer than what rendered
    assert get(server, f"/api/frame?{CAM}&seq=3&client=t1")[0] == 200
    assert get(server, f"/api/frame?{CAM}&seq=1&client=t2")[0] == 200   # each page counts for itself


def test_requests_without_a_sequence_number_are_never_dropped(server):
    q = server.viewer.bundles[1].queue
    with q.hold():
        threads = [_in_thread(server, f"/api/frame?bundle=1&{CAM}&w=2&h=2") for _ in range(3)]
        _until(lambda: q.waiting == 3)
    for t, out in threads:
        t.join(60)
        assert out[0][0] == 200


def test_a_full_queue_answers_503(server):
    q = server.viewer.bundles[1].queue
    limit, q.limit = q.limit, 1
    try:
        with q.hold():
            t, out = _in_thread(server, f"/api/frame?bundle=1&{CAM}&seq=1&client=q1")
            _until(lambda: q.waiting == 1)
            code, hdr, _ = get(server, f"/api/frame?bundle=1&{CAM}&seq=1&client=q2")
            assert code == 503 and hdr["Retry-After"] == "1"
        t.join(60)
        assert out[0][0] == 200
    finally:
        q.limit = limit


def test_a_failing_render_is_a_500_line_and_the_server_lives_on(server):
    r = server.viewer.bundles[0].renderers[True]

    def broken(*a, **kw):
        raise RuntimeError("the session fell over\nsecond line")
    r.render_view = broken
    try:
        code, _, body = get(server, f"/api/frame?{CAM}&skip=1")
    finally:
        del r.render_view
    assert code == 500 and body == b"render failed: RuntimeError: the session fell over\n"
    assert get(server, f"/api/frame?{CAM}&skip=1")[0] == 200


def test_the_page_is_served_and_fetches_nothing_from_elsewhere(server):
    for path, ctype in (("/", "text/html"), ("/viewer.js", "text/javascript")):
        code, hdr, body = get(server, path)
        assert code == 200 and hdr["Content-Type"].startswith(ctype)
        assert b"http:" not in body and b"https:" not in body and b"//cdn" not in body, path


def test_the_viewer_imports_no_torch_and_ships_its_page():
    files = list((ROOT / "nerfexport" / "deploy" / "viewer").glob("*.py")) + [ROOT / "nerfexport" / "cli" / "view.py"]
    found = [(p.name, n) for p in files for n, _ in imports(p) if n.split(".")[0] == "torch"
             or any(n.startswith(f"nerfexport.{s}") for s in ("train", "shrink", "export", "model"))]
    assert not found, found
    text = (ROOT / "pyproject.toml").read_text()
    assert '"nerfexport.deploy.viewer.static" = ["*.html", "*.js"]' in text


def test_is_local():
    from nerfexport.deploy.viewer import is_local
    assert all(is_local(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(is_local(h) for h in ("0.0.0.0", "192.168.1.2", "example.com", "::"))


NO_TORCH = ("import sys\n"
            "sys.modules['torch'] = None   # as on a device without torch\n"
            "from nerfexport.cli import main\n"
            "sys.argv = ['nerfexport'] + sys.argv[1:]\n"
            "main()\n")


def test_the_command_serves_without_torch_warns_off_localhost_and_stops_on_ctrl_c(bundles):
    p = subprocess.Popen([sys.executable, "-c", NO_TORCH, "view", str(bundles["fp32"]), str(bundles["int8"]),
                          "--port", "0", "--host", "0.0.0.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True,
                         # a job a shell started in the background inherits SIGINT ignored, and Python
                         # then installs no Ctrl-C handler: give the child the terminal's default
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = []
        while not any("viewer at" in ln for ln in lines):
            line = p.stdout.readline()
            assert line, (lines, p.stderr.read())
            lines.append(line)
        url = lines[-1].split("viewer at ")[1].split()[0]
        with urllib.request.urlopen(url + "api/frame?" + CAM + "&w=3&h=2", timeout=120) as r:
            assert Image.open(io.BytesIO(r.read())).size == (3, 2)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert "viewer stopped after 1 frame(s)" in out and "Traceback" not in err
    assert err.startswith("warning: listening on 0.0.0.0")
    assert any("int8" in ln for ln in lines) and any("held-out" in ln for ln in lines)


def test_the_command_refuses_bad_input_in_one_line(bundles, tmp_path):
    for args in (["view", str(tmp_path / "nothing")], ["view", str(bundles["fp32"]), "--port", "70000"],
                 ["view", str(bundles["fp32"]), "--runtime", "torch"]):
        res = subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith("error:"), res.stderr
