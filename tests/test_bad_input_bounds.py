"""Hostile files stay bounded, and every value read is finite and in range (issue 33).

Memory cases run the command in a subprocess under an address-space limit of 3 GB and must end
with one ``error:`` line; the others assert what tests/test_bad_input.py asserts.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_blender, write_llff
from test_bad_input import base, case, check_refused, copy_bundle, edit_manifest, listing, run  # noqa: F401

LIMIT = 3 << 30


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def run_limited(*args, cwd: Path, timeout: float = 120):
    """The command in its own process under RLIMIT_AS 3 GB: exit code and output."""
    env = {k: v for k, v in os.environ.items() if k != "NERFEXPORT_MEMORY_LIMIT_GB"}
    r = subprocess.run([sys.executable, "-c", "from nerfexport.cli.app import main; main()", *map(str, args)],
                       cwd=cwd, capture_output=True, text=True, timeout=timeout, preexec_fn=_limit, env=env)
    return r.returncode, r.stdout + r.stderr


def check_limited(code: int, out: str, folder: Path, before: set[str]) -> None:
    assert code not in (0, None), out
    assert "Traceback" not in out and "MemoryError" not in out, out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error:") and sum(ln.startswith("error:") for ln in lines) == 1, out
    assert listing(folder) == before


def ckpt(base) -> dict:
    return torch.load(base["model"], weights_only=True)


# ---------------------------------------------------------------- memory: tiny files, huge claims

@pytest.mark.parametrize("width", [24000, 70000])
def test_checkpoint_claiming_wide_layers(base, case, width):
    obj = ckpt(base)
    obj["config"]["coarse"]["widths"] = [width] * 3
    torch.save(obj, case / "wide.pt")
    before = listing(case)
    check_limited(*run_limited("info", "wide.pt", cwd=case), case, before)


def test_checkpoint_with_expanded_tensors(base, case):
    """Shapes that match a 24,000-wide config, on one float of storage each."""
    obj = ckpt(base)
    w = 24000
    obj["config"]["coarse"]["widths"] = [w] * 3
    obj["config"]["coarse"]["feature_width"] = w
    from nerfexport.model.mlp import NeRF, NeRFConfig
    with torch.device("meta"):
        m = NeRF(NeRFConfig.from_dict(obj["config"]))
    obj["coarse"] = {k: torch.zeros(1).expand(*v.shape) for k, v in m.coarse.state_dict().items()}
    torch.save(obj, case / "wide.pt")
    before = listing(case)
    check_limited(*run_limited("export", "wide.pt", "-o", "bx", "--no-grid", cwd=case), case, before)


def test_nerf_pytorch_tar_claiming_wide_layers(case):
    w = 24000
    sd = {"pts_linears.0.weight": torch.zeros(1).expand(w, 63), "pts_linears.0.bias": torch.zeros(1).expand(w),
          "pts_linears.1.weight": torch.zeros(1).expand(w, w), "pts_linears.1.bias": torch.zeros(1).expand(w),
          "output_linear.weight": torch.zeros(4, w), "output_linear.bias": torch.zeros(4)}
    torch.save({"network_fn_state_dict": sd, "global_step": 1}, case / "x.tar")
    before = listing(case)
    check_limited(*run_limited("import", "x.tar", "-o", "m.pt", cwd=case), case, before)


def _huge_png(path: Path, w: int = 7000, h: int = 7000) -> None:
    """A valid PNG header claiming w x h pixels, with a tiny body (decoding would fail late)."""
    import struct
    import zlib
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    raw = zlib.compress(b"\0" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def test_dataset_png_header_claiming_49_mpx(case):
    d = write_blender(case / "blender")
    for split in ("train", "val", "test"):
        meta = json.loads((d / f"transforms_{split}.json").read_text())
        for fr in meta["frames"]:
            fr["file_path"] = "./huge"
        meta["frames"] = meta["frames"] * 4
        (d / f"transforms_{split}.json").write_text(json.dumps(meta))
    _huge_png(d / "huge.png")
    before = listing(case)
    check_limited(*run_limited("train", d, "-o", "m.pt", "--steps", 1, cwd=case), case, before)


def test_llff_png_header_claiming_49_mpx(case):
    d = write_llff(case / "llff")
    for f in sorted((d / "images_2").iterdir()):
        _huge_png(f)
    before = listing(case)
    check_limited(*run_limited("train", d, "-o", "m.pt", "--steps", 1, "--downscale", 2, cwd=case), case, before)


def test_bundle_with_4096_plus_4096_samples_no_skip(base, case):
    b = copy_bundle(base, case)
    edit_manifest(b, lambda m: m["scene"].update(n_coarse=4096, n_fine=4096, camera={**m["scene"]["camera"],
                                                                                     "H": 32, "W": 32}))
    before = listing(case)
    code, out = run_limited("render", b, "--views", "spiral", "--no-skip", "-o", "r", "--resolution", "4x4",
                            cwd=case, timeout=300)
    if code == 0:   # bounded and done: the renderer cut its chunk to the samples per ray
        assert "Traceback" not in out
        return
    check_limited(code, out, case, before)


def test_camera_path_dev_zero(base, case):
    before = listing(case)
    res = run("render", base["bundle"], "--camera-path", "/dev/zero", "-o", "r")
    check_refused(res, case, before)
    assert "regular file" in res.output


def test_camera_path_fifo(base, case):
    os.mkfifo(case / "path.json")
    before = listing(case)
    check_refused(run("render", base["bundle"], "--camera-path", case / "path.json", "-o", "r"), case, before)


def test_sweep_of_a_million_cells(base, case):
    axes = {"method": ["uniform"] * 100, "width": list(range(1, 101)), "finetune": list(range(100))}
    text = f'[[scene]]\ncheckpoint = "{base["model"]}"\n[axes]\n' + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in axes.items())
    (case / "s.toml").write_text(text)
    before = listing(case)
    res = run("sweep", case / "s.toml", "-o", case / "out")
    check_refused(res, case, before)
    assert "cells" in res.output


# ---------------------------------------------------------------- nesting depth

def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deeply_nested_dataset_json(case):
    d = write_blender(case / "blender")
    (d / "transforms_train.json").write_text('{"camera_angle_x": 0.7, "frames": ' + _nested(100000) + "}")
    before = listing(case)
    check_refused(run("train", d, "-o", "m.pt", "--steps", 1), case, before)


def test_deeply_nested_camera_path(base, case):
    (case / "p.json").write_text(_nested(100000))
    before = listing(case)
    check_refused(run("render", base["bundle"], "--camera-path", case / "p.json", "-o", "r"), case, before)


def test_deeply_nested_runtime_file(base, case):
    (case / "rt.toml").write_text('kind = "onnxruntime"\nproviders = ' + _nested(100000) + "\n")
    before = listing(case)
    check_refused(run("render", base["bundle"], "--runtime", case / "rt.toml", "-o", "r"), case, before)


def test_deeply_nested_sweep_file(base, case):
    (case / "s.toml").write_text("x = " + _nested(100000) + "\n")
    before = listing(case)
    check_refused(run("sweep", case / "s.toml", "-o", case / "out"), case, before)


def test_deeply_nested_manifest(base, case):
    b = copy_bundle(base, case)
    (b / "manifest.json").write_text(_nested(100000))
    before = listing(case)
    check_refused(run("render", b, "-o", "r"), case, before)


# ---------------------------------------------------------------- images

def test_dataset_image_is_a_fifo(case):
    d = write_blender(case / "blender")
    img = d / "train" / "r_0.png"
    img.unlink()
    os.mkfifo(img)
    before = listing(case)
    result = {}
    t = threading.Thread(target=lambda: result.update(res=run("train", d, "-o", "m.pt", "--steps", 1)), daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():   # unblock the hung reader before failing
        with open(img, "wb"):
            pass
        pytest.fail("train hangs on a FIFO named as an image")
    check_refused(result["res"], case, before)
    assert "regular file" in result["res"].output


def test_16_bit_png_is_read_as_16_bits(case):
    from nerfexport.data.datasets import _read_image
    a = np.full((4, 4), 30000, np.uint16)
    Image.fromarray(a).save(case / "g.png")
    img = _read_image(case / "g.png")
    assert img.shape == (4, 4, 3) and np.allclose(img, 30000 / 65535, atol=1e-6)


def test_32_bit_float_image_is_refused(case):
    d = write_blender(case / "blender")
    Image.fromarray(np.zeros((8, 8), np.float32)).save(d / "train" / "r_0.tif")
    meta = json.loads((d / "transforms_train.json").read_text())
    meta["frames"][0]["file_path"] = "./train/r_0.tif"
    (d / "transforms_train.json").write_text(json.dumps(meta))
    before = listing(case)
    res = run("train", d, "-o", "m.pt", "--steps", 1)
    check_refused(res, case, before)
    assert "mode" in res.output
