import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import tiny_config
from nerfexport.deploy.bundle import open_bundle
from nerfexport.data.datasets import load_scene
from nerfexport.export.bundle_writer import ExportOptions, export_bundle
from nerfexport.model.mlp import NeRF
from nerfexport.deploy.ort_network import OrtNetwork
from nerfexport.deploy.render import Renderer, SceneSettings
from nerfexport.deploy.volume import sample_pdf
from nerfexport.train.render import render_image
from nerfexport.train.volume import sample_pdf as torch_sample_pdf


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
    from nerfexport.deploy.bundle import open_bundle
    from nerfexport.deploy.render import SceneSettings, make_renderer
    from nerfexport.deploy.networks import make_networks
    from nerfexport.deploy.runtime import load_runtime
    from nerfexport.data.rays import pose_spherical
    b = open_bundle(sys.argv[1])
    spec = load_runtime("ort-cpu")
    r = make_renderer(spec, make_networks(spec, bundle=b), SceneSettings.from_manifest(b.manifest), b.occupancy())
    assert r.grid is not None and r.early_stop > 0 and r.workers >= 1
    out = r.render_view(6, 5, 8.0, pose_spherical(30.0, -30.0, 4.0))
    assert out["rgb"].shape == (6, 5, 3)
    print("rendered without torch")
''')


def test_render_path_imports_no_torch(tmp_path):
    torch.manual_seed(0)
    export_bundle(NeRF(tiny_config(width=8)), tmp_path / "b",
                  ExportOptions(grid=True, grid_res=8, grid_box=[-2, -2, -2, 2, 2, 2]))
    script = tmp_path / "s.py"
    script.write_text(NO_TORCH)
    res = subprocess.run([sys.executable, str(script), str(tmp_path / "b")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "rendered without torch" in res.stdout


def _field_bundle(tmp_path, blender_dir, bias: float):
    """A tiny exported model whose density bias sets how opaque its rays are."""
    scene = load_scene(blender_dir)
    torch.manual_seed(0)
    cfg = tiny_config(width=32)
    cfg.n_coarse, cfg.n_fine = 16, 24
    model = NeRF(cfg)
    with torch.no_grad():
        for net in (model.coarse, model.fine):
            net.alpha_linear.bias.fill_(bias)
    export_bundle(model, tmp_path / "b", ExportOptions())
    b = open_bundle(tmp_path / "b")
    nets = [OrtNetwork(b.network_path(w)) for w in ("coarse", "fine")]
    return scene, nets, SceneSettings.from_manifest(b.manifest)


def _render(r, scene):
    pose = scene.subset("test")[1][0]
    return r.render_view(scene.H, scene.W, scene.focal, pose)


def test_skipping_with_every_cell_occupied_equals_the_plain_renderer(blender_dir, tmp_path):
    from nerfexport.deploy.occupancy import OccupancyBits
    scene, nets, s = _field_bundle(tmp_path, blender_dir, 0.0)
    everywhere = OccupancyBits(np.ones((4, 4, 4), bool), [-50, -50, -50, 50, 50, 50])  # holds every sample
    plain = Renderer(*nets, s, chunk=17)
    skip = Renderer(*nets, s, chunk=17, grid=everywhere)
    a, b = _render(plain, scene), _render(skip, scene)
    for k in ("rgb", "depth", "acc"):
        assert np.abs(a[k] - b[k]).max() < 1e-6, k
    assert skip.timings.samples == plain.timings.samples
    # two workers render the same image
    c = _render(Renderer(*nets, s, chunk=17, grid=everywhere, workers=2), scene)
    assert np.abs(a["rgb"] - c["rgb"]).max() < 1e-6


def test_empty_grid_renders_background_without_the_network(blender_dir, tmp_path):
    from nerfexport.deploy.occupancy import OccupancyBits
    scene, nets, s = _field_bundle(tmp_path, blender_dir, 0.0)
    nowhere = OccupancyBits(np.zeros((4, 4, 4), bool), [-50, -50, -50, 50, 50, 50])
    r = Renderer(*nets, s, grid=nowhere, early_stop=1e-3)
    out = _render(r, scene)
    assert r.timings.samples == 0
    assert np.all(out["acc"] == 0) and np.all(out["rgb"] == 1.0)  # white background


def test_early_termination_error_is_bounded_by_its_threshold(blender_dir, tmp_path):
    scene, nets, s = _field_bundle(tmp_path, blender_dir, 10.0)  # dense: rays turn opaque early
    plain = Renderer(*nets, s)
    a = _render(plain, scene)
    for stop in (1e-2, 1e-4):
        r = Renderer(*nets, s, early_stop=stop, segment=4)
        b = _render(r, scene)
        # the coarse pass stops after its first segment; the fine samples sit where the weight is,
        # in front of the stopping point, so only the fine pass's copies of coarse depths are saved
        assert r.timings.coarse_samples <= 0.5 * plain.timings.coarse_samples
        assert r.timings.samples < plain.timings.samples
        assert np.abs(a["rgb"] - b["rgb"]).max() <= stop + 1e-5
        assert np.abs(a["acc"] - b["acc"]).max() <= stop + 1e-5
    with pytest.raises(ValueError):
        Renderer(*nets, s, early_stop=1.0)


def test_balanced_chunk_splits_evenly_among_workers():
    from nerfexport.deploy.render import balanced_chunk
    for rays, chunk, workers in [(10000, 1024, 2), (10000, 2048, 2), (4096, 256, 3), (100, 256, 2), (7, 256, 1),
                                 (1, 64, 4), (12345, 1000, 5)]:
        c = balanced_chunk(rays, chunk, workers)
        n = -(-rays // c)
        assert 1 <= c <= chunk
        if workers > 1 and rays >= workers:
            assert n % workers == 0, (rays, chunk, workers, c)
        # the fewest such chunks: one fewer round per worker would need chunks larger than `chunk`
        assert -(-rays // max(1, n - (workers if rays >= workers else 1))) > chunk or n <= max(workers, 1)


def _toy_field(pts, dirs):
    r = np.linalg.norm(pts - np.array([0.2, -0.1, 0.0], np.float32), axis=-1, keepdims=True)
    dens = np.maximum(0.0, 30.0 * (0.8 - r)).astype(np.float32)
    rgb = (0.5 + 0.5 * np.sin(3.0 * pts + dirs)).astype(np.float32)
    return rgb, dens


def test_coarse_pass_from_a_density_source_equals_the_coarse_network():
    """The grid-placed fine samples are the hierarchical ones when the density source is the coarse
    network itself; a baked DensityGrid of the same field is within a small tolerance."""
    from nerfexport.deploy.density import DensityGrid
    from nerfexport.data.rays import pose_spherical
    from nerfexport.deploy.render import Renderer, SceneSettings
    s = SceneSettings(2.0, 6.0, True, False, 32, 32)
    c2w = pose_spherical(30.0, -30.0, 4.0)
    plain = Renderer(_toy_field, _toy_field, s, chunk=50).render_view(10, 12, 14.0, c2w)
    same = Renderer(_toy_field, _toy_field, s, chunk=50,
                    coarse_density=lambda p: _toy_field(p, np.zeros_like(p))[1][:, 0]).render_view(10, 12, 14.0, c2w)
    for k in ("rgb", "depth", "acc"):
        np.testing.assert_allclose(same[k], plain[k], atol=1e-6)
    ax = np.linspace(-1.5, 1.5, 65, dtype=np.float32)
    corners = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    grid = DensityGrid(_toy_field(corners, np.zeros_like(corners))[1].reshape(65, 65, 65), [-1.5] * 3 + [1.5] * 3)
    baked = Renderer(_toy_field, _toy_field, s, chunk=50, coarse_density=grid).render_view(10, 12, 14.0, c2w)
    assert np.abs(baked["rgb"] - plain["rgb"]).max() < 0.02   # the documented tolerance: 65^3 corners, 32+32 samples
    assert grid(np.array([[5.0, 0.0, 0.0]], np.float32))[0] == 0.0   # outside the box: empty
