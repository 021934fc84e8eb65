import subprocess
import sys
import textwrap

import numpy as np
import torch

from conftest import tiny_config
from nerfexport.bundle import open_bundle
from nerfexport.datasets import load_scene
from nerfexport.export import ExportOptions, export_bundle
from nerfexport.model import NeRF
from nerfexport.render import Renderer, SceneSettings, sample_pdf
from nerfexport.runtime import OrtNetwork
from nerfexport.train import render_image
from nerfexport.volume import sample_pdf as torch_sample_pdf


def test_sample_pdf_matches_torch():
    rng = np.random.default_rng(0)
    bins = np.sort(rng.uniform(2, 6, (50, 20)).astype(np.float32), 1)
    w = rng.uniform(0, 1, (50, 19)).astype(np.float32) ** 4
    a = sample_pdf(bins, w, 33)
    b = torch_sample_pdf(torch.from_numpy(bins), torch.from_numpy(w), 33, det=True).numpy()
    assert np.abs(a - b).max() < 1e-4  # float32 cumsum order differs between numpy and torch


def test_lean_renderer_matches_training_renderer(blender_dir, tmp_path):
    scene = load_scene(blender_dir)
    torch.manual_seed(0)
    cfg = tiny_config(width=32)
    cfg.n_coarse, cfg.n_fine = 16, 24
    model = NeRF(cfg)
    with torch.no_grad():  # a half-transparent field, so that compositing is exercised
        for net in (model.coarse, model.fine):
            net.alpha_linear.bias.fill_(0.0)
    export_bundle(model, tmp_path / "b", ExportOptions())
    b = open_bundle(tmp_path / "b")
    r = Renderer(OrtNetwork(b.network_path("coarse")), OrtNetwork(b.network_path("fine")),
                 SceneSettings.from_manifest(b.manifest), chunk=17)
    pose = scene.subset("test")[1][0]
    ours = r.render_view(scene.H, scene.W, scene.focal, pose)
    ref = render_image(model, scene.H, scene.W, scene.focal, pose)
    assert 0.05 < ref["acc"].mean() < 0.999  # neither empty nor opaque: compositing is exercised
    assert np.abs(ours["rgb"] - ref["rgb"]).max() < 1e-4
    assert np.abs(ours["acc"] - ref["acc"]).max() < 1e-4
    # depth is a sum of depths up to `far`: 1e-4 relative to far (float32 sample positions differ by ~1e-5)
    assert np.abs(ours["depth"] - ref["depth"]).max() < 1e-4 * cfg.far
    t = r.timings
    assert t.samples == scene.H * scene.W * (16 + 16 + 24) and t.network > 0 and t.compositing > 0


NO_TORCH = textwrap.dedent('''
    import sys
    sys.modules["torch"] = None  # any "import torch" now fails
    from nerfexport.bundle import open_bundle
    from nerfexport.render import Renderer, SceneSettings
    from nerfexport.runtime import OrtNetwork
    from nerfexport.rays import pose_spherical
    b = open_bundle(sys.argv[1])
    r = Renderer(OrtNetwork(b.network_path("coarse")), OrtNetwork(b.network_path("fine")),
                 SceneSettings.from_manifest(b.manifest))
    out = r.render_view(6, 5, 8.0, pose_spherical(30.0, -30.0, 4.0))
    assert out["rgb"].shape == (6, 5, 3)
    print("rendered without torch")
''')


def test_render_path_imports_no_torch(tmp_path):
    torch.manual_seed(0)
    export_bundle(NeRF(tiny_config(width=8)), tmp_path / "b", ExportOptions())
    script = tmp_path / "s.py"
    script.write_text(NO_TORCH)
    res = subprocess.run([sys.executable, str(script), str(tmp_path / "b")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "rendered without torch" in res.stdout
