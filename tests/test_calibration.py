import numpy as np
import torch

from conftest import tiny_config
from nerfexport.shrink.calibration import draw_samples, subsample
from nerfexport.data.datasets import load_scene
from nerfexport.model.mlp import NeRF


def test_samples_follow_the_renderer(blender_dir):
    scene = load_scene(blender_dir)
    torch.manual_seed(0)
    model = NeRF(tiny_config())
    cal = draw_samples(model, scene, n_rays=40, seed=3)
    assert cal.coarse_pts.shape == (40 * 8, 3) and cal.fine_pts.shape == (40 * 16, 3)
    assert cal.coarse_pts.dtype == np.float32
    # unit view directions, one per ray repeated along it
    assert np.allclose(np.linalg.norm(cal.fine_dirs, axis=1), 1.0, atol=1e-5)
    # every point lies on a training ray between near and far: distance from the camera centre
    cams = scene.poses[scene.splits["train"], :3, 3]
    dist = np.linalg.norm(cal.coarse_pts[:, None] - cams[None], axis=-1).min(1)
    assert dist.min() >= 0.0 and dist.max() <= scene.far * 1.5
    again = draw_samples(model, scene, n_rays=40, seed=3)
    assert np.array_equal(again.fine_pts, cal.fine_pts)
    other = draw_samples(model, scene, n_rays=40, seed=4)
    assert not np.array_equal(other.coarse_pts, cal.coarse_pts)
    s = cal.summary()
    assert s["coarse"]["points"] == 320 and s["rays"] == 40


def test_fine_samples_concentrate_where_the_coarse_weights_are(blender_dir):
    """With a coarse network that is opaque only in a slab, the extra fine samples land in it."""
    scene = load_scene(blender_dir)
    torch.manual_seed(0)
    cfg = tiny_config(fine=False)
    cfg.n_coarse, cfg.n_fine = 32, 64
    model = NeRF(cfg)

    class Slab(torch.nn.Module):
        cfg = model.coarse.cfg

        def forward(self, pts, dirs):
            r = pts.norm(dim=-1, keepdim=True)
            sigma = torch.where((r > 0.9) & (r < 1.1), 50.0, 0.0)
            return torch.cat((torch.zeros_like(pts), sigma), -1)
    model.coarse = Slab()
    cal = draw_samples(model, scene, n_rays=64, seed=0)
    r_f = np.linalg.norm(cal.fine_pts, axis=1)
    r_c = np.linalg.norm(cal.coarse_pts, axis=1)
    in_f = ((r_f > 0.8) & (r_f < 1.2)).mean()
    in_c = ((r_c > 0.8) & (r_c < 1.2)).mean()
    assert in_f > 2 * in_c  # uniform sampling would give equal fractions


def test_subsample():
    p = np.arange(30, dtype=np.float32).reshape(10, 3)
    a, b = subsample(p, p, 4, seed=0)
    assert a.shape == (4, 3) and np.array_equal(a, b)
    same, _ = subsample(p, p, 20)
    assert same is p
