import torch

from conftest import tiny_config
from nerfexport.data.datasets import load_scene
from nerfexport.shrink.distill import DistillConfig, build_bank, distill
from nerfexport.model.mlp import NeRF


def test_bank_shapes(blender_dir):
    scene = load_scene(blender_dir)
    torch.manual_seed(0)
    teacher = NeRF(tiny_config())
    bank = build_bank(teacher, scene, n_rays=50, n_coarse=6, n_fine=5, seed=0)
    assert bank.o.shape == (50, 3) and bank.target.shape == (50, 3)
    assert bank.z_c.shape == (50, 6) and bank.raw_c.shape == (50, 6, 4)
    assert bank.z_f.shape == (50, 11) and bank.raw_f.shape == (50, 11, 4)
    assert torch.all(bank.z_f[:, 1:] >= bank.z_f[:, :-1])


def test_student_moves_towards_its_teacher(blender_dir):
    scene = load_scene(blender_dir)
    torch.manual_seed(0)
    teacher = NeRF(tiny_config(width=32))
    torch.manual_seed(1)
    student = NeRF(tiny_config(width=16))
    bank = build_bank(teacher, scene, n_rays=192, n_coarse=8, n_fine=8, seed=0)
    pts = torch.rand(500, 3) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(500, 3), dim=-1)

    def gap():
        with torch.no_grad():
            return float(((torch.sigmoid(student.coarse(pts, dirs)[:, :3]) -
                           torch.sigmoid(teacher.coarse(pts, dirs)[:, :3])) ** 2).mean())

    before = gap()
    res = distill(student, bank, DistillConfig(steps=150, batch_rays=64, lr=3e-3, w_photo=0.0, precision="fp32"),
                  teacher.cfg.white_bkgd)
    assert res.steps == 150
    assert gap() < 0.5 * before


def test_random_rays_are_the_split_rays_of_those_pixels(blender_dir, tmp_path):
    import numpy as np

    from conftest import write_llff
    from nerfexport.data.datasets import load_llff
    from nerfexport.shrink.distill import random_rays
    from nerfexport.train.render import scene_rays

    for scene in (load_scene(blender_dir), load_llff(write_llff(tmp_path / "llff"), factor=2, ndc=True)):
        full = scene_rays(scene, "train")
        rng = np.random.default_rng(3)
        some = random_rays(scene, 200, rng)
        flat = np.random.default_rng(3).integers(0, full["o"].shape[0], size=200)
        for k in ("o", "d", "v", "rgb"):
            assert np.allclose(some[k], full[k][flat], atol=1e-5), k


def test_refill_replaces_bank_rows_with_fresh_teacher_rays(blender_dir):
    scene = load_scene(blender_dir)
    torch.manual_seed(0)
    teacher = NeRF(tiny_config(width=16))
    student = NeRF(tiny_config(width=8))
    bank = build_bank(teacher, scene, n_rays=64, n_coarse=4, n_fine=4, seed=0)
    before = bank.o.clone()
    calls = []

    def refill(n, seed):
        calls.append((n, seed))
        return build_bank(teacher, scene, n, 4, 4, seed)

    res = distill(student, bank, DistillConfig(steps=12, batch_rays=32, n_coarse=4, n_fine=4, reuse=1.0),
                  scene.white_bkgd, refill=refill)
    # a quarter (16 rays) is drawn 32 rays a step: a refill every step after the first
    assert res.refills == len(calls) >= 10 and all(n == 16 for n, _ in calls)
    assert not torch.equal(bank.o, before) and len({s for _, s in calls}) == len(calls)
