import os
from pathlib import Path

import pytest
import torch

from nerfexport.model.checkpoint import (CheckpointError, import_nerf_pytorch, load_checkpoint, save_checkpoint)
from nerfexport.model.mlp import NeRF

from conftest import tiny_config


def outputs(model: NeRF, x: torch.Tensor, d: torch.Tensor):
    with torch.no_grad():
        return model.coarse(x, d), model.fine(x, d)


def test_round_trip_exact(tmp_path, tiny_model):
    p = tmp_path / "model.pt"
    save_checkpoint(tiny_model, p, meta={"steps": 3})
    back, meta, state = load_checkpoint(p, with_train_state=True)
    assert meta["steps"] == 3 and state is None
    assert back.cfg == tiny_model.cfg
    x, d = torch.rand(6, 3), torch.rand(6, 3)
    for a, b in zip(outputs(tiny_model, x, d), outputs(back, x, d)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not list(tmp_path.glob("*.tmp"))


def test_round_trip_keeps_uneven_widths(tmp_path):
    cfg = tiny_config()
    cfg.coarse.widths = [32, 7, 19, 32]
    cfg.coarse.view_widths = [5]
    net = NeRF(cfg)
    save_checkpoint(net, tmp_path / "m.pt")
    back = load_checkpoint(tmp_path / "m.pt")
    assert back.coarse.state_dict()["pts_linears.1.weight"].shape == (7, 32)
    assert back.coarse.state_dict()["views_linears.0.weight"].shape == (5, 32 + 27)


def nerf_pytorch_tar(model: NeRF, fine: bool) -> dict:
    return {"global_step": 1234,
            "network_fn_state_dict": model.coarse.state_dict(),
            "network_fine_state_dict": model.fine.state_dict() if fine else None,
            "optimizer_state_dict": torch.optim.Adam(model.parameters()).state_dict()}


@pytest.mark.parametrize("fine", [True, False])
def test_import_nerf_pytorch(tmp_path, fine):
    torch.manual_seed(1)
    src = NeRF(tiny_config(width=24, depth=8))
    tar = tmp_path / "200000.tar"
    torch.save(nerf_pytorch_tar(src, fine), tar)
    net, meta = import_nerf_pytorch(tar, near=2.0, far=6.0)
    assert meta["global_step"] == 1234
    assert net.cfg.coarse.widths == [24] * 8 and net.cfg.coarse.skips == src.cfg.coarse.skips
    assert (net.fine is not None) == fine
    x, d = torch.rand(4, 3), torch.rand(4, 3)
    with torch.no_grad():
        torch.testing.assert_close(net.coarse(x, d), src.coarse(x, d))
    assert load_checkpoint(tar).cfg.coarse.widths == [24] * 8  # load_checkpoint detects the format too


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARK}",))


MARK = "/tmp/nerfexport-test-pwned"


def test_pickle_that_runs_code_is_refused(tmp_path):
    Path(MARK).unlink(missing_ok=True)
    p = tmp_path / "evil.pt"
    torch.save({"format": "nerfexport", "payload": Evil()}, p)
    with pytest.raises(CheckpointError, match="refused") as e:
        load_checkpoint(p)
    assert not Path(MARK).exists()
    # one short line that names what was refused, not torch's advice to load it unsafely
    msg = str(e.value)
    assert "\n" not in msg and "GLOBAL" in msg and "weights_only" not in msg and len(msg) < 300


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "junk.pt"
    p.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save([1, 2, 3], p)
    with pytest.raises(CheckpointError):
        load_checkpoint(p)


def test_widths_that_do_not_match_the_weights(tmp_path, tiny_model):
    p = tmp_path / "m.pt"
    save_checkpoint(tiny_model, p)
    obj = torch.load(p, weights_only=True)
    obj["config"]["coarse"]["widths"][1] = 16
    torch.save(obj, p)
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(p)


def test_newer_version_refused(tmp_path, tiny_model):
    p = tmp_path / "m.pt"
    save_checkpoint(tiny_model, p)
    obj = torch.load(p, weights_only=True)
    obj["version"] = 99
    torch.save(obj, p)
    with pytest.raises(CheckpointError, match="version"):
        load_checkpoint(p)


def test_unwritable_path_leaves_nothing(tmp_path, tiny_model):
    with pytest.raises(CheckpointError, match="does not exist"):
        save_checkpoint(tiny_model, tmp_path / "no" / "such" / "dir" / "m.pt")
    with pytest.raises(CheckpointError, match="folder"):
        save_checkpoint(tiny_model, tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError):
        save_checkpoint(tiny_model, blocker / "m.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
