import numpy as np
import torch

from nerfexport.checkpoint import load_checkpoint
from nerfexport.datasets import load_blender
from nerfexport.synthetic import make_scene
from nerfexport.train import TrainConfig, evaluate, new_model, render_image, train


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
    from nerfexport.checkpoint import CheckpointError
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
    from nerfexport.datasets import load_llff
    scene = load_llff(llff_dir, factor=2, llffhold=2)
    model = new_model(scene, width=16, depth=3, n_coarse=8, n_fine=8)
    assert model.cfg.ndc and (model.cfg.near, model.cfg.far) == (0.0, 1.0) and not model.cfg.white_bkgd
    res = train(model, scene, TrainConfig(steps=3, batch_rays=32, n_coarse=8, n_fine=8, ckpt_every_steps=0))
    assert res.steps == 3
    out = render_image(model, scene.H, scene.W, scene.focal, scene.poses[0])
    assert np.isfinite(out["rgb"]).all()
