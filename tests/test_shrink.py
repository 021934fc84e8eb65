import pytest
import torch

from conftest import tiny_config
from nerfexport.shrink.calibration import draw_samples
from nerfexport.data.datasets import load_scene
from nerfexport.model.mlp import NeRF
from nerfexport.shrink.scoring import METHODS
from nerfexport.shrink.pipeline import ShrinkSpec, shrink_model, shrink_pipeline
from nerfexport.shrink.spec import EvalSpec


@pytest.fixture
def setup(blender_dir):
    scene = load_scene(blender_dir)
    torch.manual_seed(0)
    model = NeRF(tiny_config(width=32, depth=4))
    return model, scene, draw_samples(model, scene, n_rays=64)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_the_target_widths(setup, method):
    model, _, cal = setup
    small, info = shrink_model(model, ShrinkSpec(method=method, width=16), cal)
    for net in (small.coarse, small.fine):
        assert net.cfg.widths == [16] * 4 and net.cfg.feature_width == 16 and net.cfg.view_widths == [8]
        assert net.pts_linears[1].weight.shape == (16, 16)
    assert info.params_after["total"] < info.params_before["total"] / 2
    pts = torch.rand(64, 3)
    dirs = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    with torch.no_grad():
        assert torch.isfinite(small.coarse(pts, dirs)).all()


def test_shrinking_to_full_width_is_exact(setup):
    model, _, cal = setup
    pts = torch.rand(64, 3)
    dirs = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    for method in ("magnitude", "activation"):
        same, _ = shrink_model(model, ShrinkSpec(method=method, width=32), cal)
        with torch.no_grad():
            assert torch.allclose(same.fine(pts, dirs), model.fine(pts, dirs), atol=1e-6)


def test_methods_pick_different_neurons(setup):
    model, _, cal = setup
    a, _ = shrink_model(model, ShrinkSpec(method="magnitude-in", width=8), cal)
    b, _ = shrink_model(model, ShrinkSpec(method="uniform", width=8, seed=1), cal)
    assert not torch.equal(a.coarse.pts_linears[0].weight, b.coarse.pts_linears[0].weight)


def test_bad_specs(setup):
    model, _, cal = setup
    with pytest.raises(ValueError, match="unknown method"):
        shrink_model(model, ShrinkSpec(method="lottery", width=8), cal)
    with pytest.raises(ValueError, match="cannot grow"):
        shrink_model(model, ShrinkSpec(method="uniform", width=64), cal)
    with pytest.raises(ValueError, match="positive"):
        shrink_model(model, ShrinkSpec(method="uniform", width=0), cal)
    with pytest.raises(ValueError, match="exactly one"):
        shrink_model(model, ShrinkSpec(method="uniform"), cal)
    with pytest.raises(ValueError, match="calibration"):
        shrink_model(model, ShrinkSpec(method="activation", width=8), None)


def test_pipeline_reports_before_and_after(setup):
    model, scene, _ = setup
    from nerfexport.shrink.distill import DistillConfig
    small, rep = shrink_pipeline(model, scene, ShrinkSpec(method="activation", width=16, finetune=5, calib_rays=32),
                                 EvalSpec(views=1, samples=(4, 4)),
                                 distill_cfg=DistillConfig(bank_rays=64, batch_rays=32, n_coarse=4, n_fine=4))
    assert rep.psnr_before_finetune is not None and rep.psnr_after_finetune is not None
    assert rep.widths["coarse"]["pts.0"] == 16 and rep.params_after["total"] < rep.params_before["total"]
    assert rep.finetune["steps"] == 5 and rep.seconds["finetune"] > 0


def test_auto_finds_the_narrow_network_inside_a_grown_one(blender_dir):
    """A network widened from 16 to 32 (``train``'s ``grow_from``) holds its narrow self in the
    neurons that magnitude scoring keeps; ``auto`` must find that student (the others lose it).
    As in the trained lego teacher (docs/shrink.md), the new neurons' outgoing weights stay
    smaller than the old ones' (here 0.1x, into the new neurons only: the old ones read none)."""
    from nerfexport.model.surgery import widen_model
    from nerfexport.shrink.pipeline import AUTO_CANDIDATES, choose_method
    from nerfexport.train.evaluate import eval_pixels

    scene = load_scene(blender_dir)
    torch.manual_seed(0)
    narrow = NeRF(tiny_config(width=16, depth=4)).eval()
    grown, maps = widen_model(narrow, tiny_config(width=32, depth=4), torch.Generator().manual_seed(1))
    with torch.no_grad():
        for name, mod in grown.named_modules():
            if isinstance(mod, torch.nn.Linear) and name in maps:
                new_cols = torch.ones(mod.in_features, dtype=torch.bool)
                new_cols[maps[name][1]] = False
                mod.weight[:, new_cols] *= 0.1
    grown.eval()
    cal = draw_samples(grown, scene, n_rays=64)
    spec = ShrinkSpec(method="auto", width=16)
    method, student, info, scores = choose_method(grown, scene, spec, cal, n_pixels=256)
    assert method == "magnitude" and set(scores) == set(AUTO_CANDIDATES)
    assert scores["magnitude"] > 40 and scores["magnitude"] > max(scores["coreset"], scores["data-coreset"]) + 10
    pts = torch.rand(64, 3)
    dirs = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    with torch.no_grad():
        assert torch.allclose(student.fine(pts, dirs), narrow.fine(pts, dirs), atol=1e-5)
    assert info.params_after["total"] < info.params_before["total"]
    # the pixels it judges by come from the training views, never the held-out ones
    train = eval_pixels(scene, 10**6, 10**6, 0, split="train")
    test = eval_pixels(scene, 10**6, 10**6, 0, split="test")
    assert train["rgb"].shape[0] == len(scene.splits["train"]) * scene.H * scene.W
    assert test["rgb"].shape[0] == len(scene.splits["test"]) * scene.H * scene.W != train["rgb"].shape[0]
    with pytest.raises(ValueError, match="auto"):
        shrink_model(grown, spec, cal)


def test_pipeline_with_auto_records_the_choice(setup):
    model, scene, _ = setup
    from nerfexport.shrink.distill import DistillConfig
    from nerfexport.shrink.pipeline import AUTO_CANDIDATES
    events = []
    small, rep = shrink_pipeline(model, scene, ShrinkSpec(method="auto", width=16, finetune=2, calib_rays=32),
                                 EvalSpec(views=None), distill_cfg=DistillConfig(bank_rays=64, batch_rays=32,
                                                                                 n_coarse=4, n_fine=4),
                                 progress=events.append)
    assert rep.method in AUTO_CANDIDATES and set(rep.auto) == set(AUTO_CANDIDATES)
    assert rep.auto[rep.method] == max(rep.auto.values())
    assert [e["method"] for e in events if e["event"] == "chose"] == [rep.method]
    if rep.method == "lowrank":     # every neuron kept, layers factorized within the width-16 cost
        assert small.coarse.cfg.ranks and small.coarse.cfg.macs() <= ShrinkSpec(width=16).budget_macs(model.coarse.cfg)
    else:
        assert small.coarse.cfg.widths == [16] * 4


def test_targets_are_computed_once_per_shrink(setup, monkeypatch):
    """``--method auto`` makes four students from one resolved target (issue 36: it was 14)."""
    model, scene, _ = setup
    calls = []
    resolve = ShrinkSpec.targets
    monkeypatch.setattr(ShrinkSpec, "targets", lambda self, m: calls.append(self.method) or resolve(self, m))
    shrink_pipeline(model, scene, ShrinkSpec(method="auto", width=16, calib_rays=32), EvalSpec(views=None))
    assert calls == ["auto"]
    t = ShrinkSpec(width=16).targets(model)
    assert t.pruning("fine") == ShrinkSpec(width=16).widths_for(model.fine.cfg)
    assert t.macs == {w: ShrinkSpec(width=16).budget_macs(getattr(model, w).cfg) for w in ("coarse", "fine")}
    with pytest.raises(ValueError, match="no pruned width"):
        ShrinkSpec(method="magnitude", budget=1e-6).targets(model).pruning()
    assert ShrinkSpec(method="lowrank", rank=3).targets(model).ranks["coarse"]


def _tiny_distillation(model, scene, device):
    from nerfexport.shrink.distill import DistillConfig
    spec = ShrinkSpec(method="magnitude", width=16, finetune=3, calib_rays=32, device=device)
    return shrink_pipeline(model, scene, spec, EvalSpec(views=1, samples=(4, 4), pixels=64),
                           distill_cfg=DistillConfig(bank_rays=64, batch_rays=32, n_coarse=4, n_fine=4))


def test_device_cpu_distils_on_the_cpu_as_auto_does_without_a_gpu(setup):
    model, scene, _ = setup
    a, rep = _tiny_distillation(model, scene, "cpu")
    assert rep.spec["device"] == "cpu" and rep.finetune["steps_made"] == 3
    assert all(p.device.type == "cpu" for p in a.parameters())
    if not torch.cuda.is_available():
        b, _ = _tiny_distillation(model, scene, "auto")
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        ShrinkSpec(width=16, device="tpu").validate()


def test_cuda_asked_for_without_a_gpu_is_one_clear_error(setup, monkeypatch):
    from nerfexport.shrink.spec import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"--device cuda: torch sees no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_tiny_distillation_runs_on_cuda(setup):
    """The teacher bank is built and the student distilled on the GPU; both models end on the CPU."""
    from nerfexport.shrink.distill import DistillConfig, build_bank, distill
    model, scene, _ = setup
    student, rep = _tiny_distillation(model, scene, "cuda")
    assert rep.finetune["steps_made"] == 3 and rep.psnr_after_finetune is not None
    assert all(p.device.type == "cpu" for p in student.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())
    teacher = NeRF(tiny_config(width=16, depth=3)).cuda()
    bank = build_bank(teacher, scene, 64, 4, 4, seed=0)
    assert bank.raw_c.device.type == "cuda" and bank.raw_f.device.type == "cuda"
    small = NeRF(tiny_config(width=8, depth=3)).cuda()
    res = distill(small, bank, DistillConfig(steps=2, batch_rays=16), teacher.cfg.white_bkgd)
    assert res.steps == 2 and next(small.parameters()).device.type == "cuda"
