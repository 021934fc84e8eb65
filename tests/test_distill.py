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
