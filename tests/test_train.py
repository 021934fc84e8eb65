import numpy as np
import torch

from nerfexport.model.checkpoint import load_checkpoint
from nerfexport.data.datasets import load_blender
from nerfexport.data.synthetic import make_scene
from nerfexport.train.evaluate import evaluate
from nerfexport.train.factory import new_model
from nerfexport.train.loop import TrainConfig, train
from nerfexport.train.render import render_image


def small_scene(tmp_path):
    return load_blender(make_scene(tmp_path / "scene", size=16, n_train=6, n_val=1, n_test=2, seed=0))


def test_short_training_run_loss_falls(tmp_path):
    scene = small_scene(tmp_path)
    model = new_model(scene, width=64, depth=4, n_coarse=16, n_fine=16, seed=0)
    before = evaluate(model, scene, "train")
    losses = []
    tc = TrainConfig(steps=300, batch_rays=256, n_coarse=16, n_fine=16, lr=1e-3, lr_final=2e-4,
                     precrop_iters=0, ckpt_every_steps=0, seed=0, grid_warmup=50, grid_every=16)
    res = train(model, scene, tc, progress=lambda e: e["event"] == "step" and losses.append(e["loss"]))
    assert res.steps == 300 and len(losses) == 300
    assert np.mean(losses[-20:]) < 0.75 * np.mean(losses[:20])
    after = evaluate(model, scene, "train")
    assert after.psnr > before.psnr + 3.0


def test_an_empty_grid_does_not_stop_training(tmp_path):
    # a model with no density anywhere gets an empty occupancy grid; that grid must not skip
    # every ray (training would stop): the trainer samples plainly until the grid finds matter
    scene = small_scene(tmp_path)
    model = new_model(scene, width=32, depth=3, n_coarse=8, n_fine=8, seed=0)
    with torch.no_grad():
        for net in (model.coarse, model.fine):
            net.alpha_linear.bias.fill_(-1e3)
    events = []
    tc = TrainConfig(steps=30, batch_rays=64, n_coarse=8, n_fine=8, precrop_iters=0, ckpt_every_steps=0,
                     seed=0, grid_warmup=10, grid_every=5, precision="fp32", collapse_guard_steps=0)
    train(model, scene, tc, progress=lambda e: e["event"] == "step" and events.append(e))
    late = events[10:]
    assert all(e["occupied"] == 0.0 for e in late)
    assert all(e["rays"] == 64 and e["skipped"] == 0 for e in late)


def test_checkpoints_resume_after_interruption(tmp_path):
    scene = small_scene(tmp_path)
    out = tmp_path / "model.pt"
    tc = TrainConfig(steps=40, batch_rays=64, n_coarse=8, n_fine=8, ckpt_every_steps=10, seed=3,
                     precision="fp32", grid_warmup=10, grid_every=5)

    class Stop(Exception):
        pass

    def interrupt(e):
        if e["event"] == "checkpoint" and e["step"] == 20:
            raise Stop

    model = new_model(scene, width=16, depth=3, n_coarse=8, n_fine=8, seed=3)
    try:
        train(model, scene, tc, out, progress=interrupt)
    except Stop:
        pass
    _, meta, state = load_checkpoint(out, with_train_state=True)
    assert state["step"] == 20 and meta["steps"] == 20
    events = []
    resumed = train(new_model(scene, width=16, depth=3, n_coarse=8, n_fine=8, seed=99), scene, tc, out,
                    progress=events.append)
    assert resumed.steps == 40
    assert {"event": "resume", "step": 20} in events
    assert sum(e["event"] == "step" for e in events) == 20
    # the resumed run equals an uninterrupted one with the same seed
    straight = new_model(scene, width=16, depth=3, n_coarse=8, n_fine=8, seed=3)
    train(straight, scene, tc, tmp_path / "straight.pt")
    a, b = load_checkpoint(out), load_checkpoint(tmp_path / "straight.pt")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(va, vb, atol=1e-5, rtol=1e-4, msg=ka)


def test_render_image_shapes(tmp_path):
    scene = small_scene(tmp_path)
    model = new_model(scene, width=16, depth=3, n_coarse=8, n_fine=8)
    out = render_image(model, scene.H, scene.W, scene.focal, scene.poses[0], chunk=100)
    assert out["rgb"].shape == (16, 16, 3) and out["depth"].shape == (16, 16) and out["acc"].shape == (16, 16)
    assert out["rgb"].min() >= 0 and out["rgb"].max() <= 1


def test_finished_run_is_not_retrained_and_a_different_model_is_refused(tmp_path):
    import pytest
    from nerfexport.model.checkpoint import CheckpointError
    scene = small_scene(tmp_path)
    out = tmp_path / "model.pt"
    tc = TrainConfig(steps=5, batch_rays=32, n_coarse=8, n_fine=8, ckpt_every_steps=2, precrop_iters=0)
    train(new_model(scene, width=16, depth=3, n_coarse=8, n_fine=8), scene, tc, out)
    _, meta, state = load_checkpoint(out, with_train_state=True)
    assert state["step"] == 5 and "optimizer" not in state      # a finished model drops the optimizer
    before = out.read_bytes()
    events = []
    res = train(new_model(scene, width=16, depth=3, n_coarse=8, n_fine=8), scene, tc, out, progress=events.append)
    assert res.steps == 5 and events == [{"event": "complete", "step": 5}]
    assert out.read_bytes() == before
    tc.steps = 8
    events.clear()
    res = train(new_model(scene, width=16, depth=3, n_coarse=8, n_fine=8), scene, tc, out, progress=events.append)
    assert res.steps == 8 and events[0] == {"event": "resume", "step": 5}
    assert sum(e["event"] == "step" for e in events) == 3
    tc.steps = 10
    with pytest.raises(CheckpointError, match="different model"):
        train(new_model(scene, width=24, depth=3, n_coarse=8, n_fine=8), scene, tc, out)


def test_llff_ndc_training_runs(llff_dir):
    from nerfexport.data.datasets import load_llff
    scene = load_llff(llff_dir, factor=2, llffhold=2)
    model = new_model(scene, width=16, depth=3, n_coarse=8, n_fine=8)
    assert model.cfg.ndc and (model.cfg.near, model.cfg.far) == (0.0, 1.0) and not model.cfg.white_bkgd
    res = train(model, scene, TrainConfig(steps=3, batch_rays=32, n_coarse=8, n_fine=8, ckpt_every_steps=0))
    assert res.steps == 3
    out = render_image(model, scene.H, scene.W, scene.focal, scene.poses[0])
    assert np.isfinite(out["rgb"]).all()


def test_auto_precision_takes_bf16_only_where_the_cpu_runs_it_natively(monkeypatch):
    """On a CPU without native bf16 kernels (AVX2 only) torch's bf16 matmul falls back to a
    reference GEMM many times slower than fp32, so ``auto`` must pick fp32 there."""
    import nerfexport.train.device as tr
    cpu = torch.device("cpu")
    monkeypatch.setattr(tr, "cpu_has_native_bf16", lambda: False)
    assert tr.autocast_dtype("auto", cpu) is None
    assert tr.autocast_dtype("bf16", cpu) is torch.bfloat16 and tr.autocast_dtype("fp32", cpu) is None
    assert "no native bf16" in tr.bf16_warning("bf16", cpu) and tr.bf16_warning("fp32", cpu) is None
    monkeypatch.setattr(tr, "cpu_has_native_bf16", lambda: True)
    assert tr.autocast_dtype("auto", cpu) is torch.bfloat16
    assert tr.bf16_warning("bf16", cpu) is None


def test_native_bf16_probe_agrees_with_the_cpu_flags():
    """The probe says yes where the CPU advertises bf16 (AVX-512 BF16 or AMX) and no where it does
    not: an AVX2-only CPU gets a scalar fallback, and an AVX-512 CPU without BF16 (Ice Lake) gets
    oneDNN's emulation, 2.2x slower than fp32 there."""
    import pathlib
    from nerfexport.train.device import cpu_has_native_bf16
    info = pathlib.Path("/proc/cpuinfo")
    if not info.is_file():
        import pytest
        pytest.skip("no /proc/cpuinfo on this system to read the CPU's flags from")
    flags = set(info.read_text().split())
    if flags & {"avx512_bf16", "amx_bf16", "bf16"}:
        assert cpu_has_native_bf16()
    else:
        assert not cpu_has_native_bf16()


def test_a_time_budget_decays_the_learning_rate_over_the_minutes(tmp_path):
    """Stopped by --minutes long before --steps, the run still ends near lr_final."""
    scene = small_scene(tmp_path)
    model = new_model(scene, width=32, depth=2, n_coarse=8, n_fine=8, seed=0)
    lrs = []
    tc = TrainConfig(steps=10 ** 6, batch_rays=32, n_coarse=8, n_fine=8, lr=1e-3, lr_final=1e-4, max_minutes=0.03,
                     precrop_iters=0, ckpt_every_steps=0, occupancy=False, precision="fp32")
    out = tmp_path / "budget.pt"
    res = train(model, scene, tc, out=out, progress=lambda e: e["event"] == "step" and lrs.append(e["lr"]))
    assert 10 < res.steps < 10 ** 6
    assert lrs[0] == 1e-3 and 1e-4 <= lrs[-1] < 1.5e-4
    # the spent budget ends the run: the checkpoint keeps no optimizer state (a third of the size)
    _, _, state = load_checkpoint(out, with_train_state=True)
    assert "optimizer" not in state


def test_a_grown_run_ends_at_full_width_and_resumes_across_the_growth(tmp_path):
    from nerfexport.train.factory import narrow_config
    scene = small_scene(tmp_path)
    out = tmp_path / "model.pt"
    tc = TrainConfig(steps=40, batch_rays=64, n_coarse=8, n_fine=8, ckpt_every_steps=10, seed=5,
                     precision="fp32", grid_warmup=10, grid_every=5, grow_from=8, grow_at=0.5)
    events = []
    model = new_model(scene, width=16, depth=3, n_coarse=8, n_fine=8, seed=5)
    train(model, scene, tc, progress=events.append)
    grows = [e for e in events if e["event"] == "grow"]
    assert len(grows) == 1 and grows[0]["step"] == 20 and grows[0]["width"] == 16
    assert model.cfg.coarse.widths == [16] * 3 and model.fine.pts_linears[0].weight.shape == (16, 63)

    # interrupted before the growth: the checkpoint holds the narrow network and the run resumes
    class Stop(Exception):
        pass

    def interrupt(e):
        if e["event"] == "checkpoint" and e["step"] == 10:
            raise Stop
    fresh = new_model(scene, width=16, depth=3, n_coarse=8, n_fine=8, seed=5)
    try:
        train(fresh, scene, tc, out, progress=interrupt)
    except Stop:
        pass
    narrow, _, state = load_checkpoint(out, with_train_state=True)
    assert narrow.cfg == narrow_config(fresh.cfg, 8) and state["step"] == 10
    resumed = new_model(scene, width=16, depth=3, n_coarse=8, n_fine=8, seed=5)
    train(resumed, scene, tc, out)
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5)
    final = load_checkpoint(out)
    assert final.cfg == model.cfg


def test_a_from_scratch_baseline_of_a_grown_teacher_trains_its_own_width_throughout():
    """make teacher grows from width 128; the width-64 baseline must not inherit that growth
    (it failed with 'grow_from 128 is wider than the model')."""
    from nerfexport.bench.study import scratch_train_config
    tc = scratch_train_config({"grow_from": 128, "grow_at": 0.75, "steps": 10, "lr": 1e-3}, {}, 2.0, 0.1)
    assert tc.grow_from is None and tc.steps == 1200 and tc.max_minutes is None and tc.lr == 1e-3
