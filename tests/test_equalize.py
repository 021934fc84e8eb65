"""Rank-space equalization: the same function, equal ranges, and a closer int8 picture."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import tiny_config
from nerfexport.export.equalize import equalize_rank_space, rank_ranges
from nerfexport.model.mlp import LowRankLinear, NeRF


def _lowrank_model(seed=0, skew=30.0):
    """A tiny NeRF whose layers are rank-4 pairs; the first direction of each carries ``skew``
    times the others' scale (as principal directions do)."""
    torch.manual_seed(seed)
    cfg = tiny_config(width=32, depth=4)
    ranks = {f"pts.{i}": 4 for i in range(1, 4)} | {"feature": 4}
    cfg = replace(cfg, coarse=replace(cfg.coarse, ranks=ranks), fine=replace(cfg.fine, ranks=dict(ranks)))
    model = NeRF(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LowRankLinear):
                m.down.weight[0] *= skew
                m.up.weight[:, 0] /= skew
    return model


def _data(n=4096, seed=1):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    dirs = rng.normal(size=(n, 3)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return pts, dirs


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_equalized_model_computes_the_same_and_evens_the_ranges(alpha):
    model = _lowrank_model()
    pts, dirs = _data()
    data = {"coarse": (pts, dirs), "fine": (pts, dirs)}
    eq, report = equalize_rank_space(model, data, alpha)
    p, d = torch.as_tensor(pts[:512]), torch.as_tensor(dirs[:512])
    with torch.no_grad():
        for w in ("coarse", "fine"):
            ref, out = getattr(model, w)(p, d), getattr(eq, w)(p, d)
            assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4)
    # the model given is untouched, the copy's directions are far more even
    assert not torch.equal(eq.fine.pts_linears[1].down.weight, model.fine.pts_linears[1].down.weight)
    before = rank_ranges(model.fine, pts, dirs)
    after = rank_ranges(eq.fine, pts, dirs)
    assert set(before) == set(report["fine"]) == {"pts_linears.1", "pts_linears.2", "pts_linears.3", "feature_linear"}
    for name in before:
        spread_before = before[name].max() / np.median(before[name])
        spread_after = after[name].max() / np.median(after[name])
        assert spread_before > 5.0 and spread_after < spread_before / 2
        assert report["fine"][name][0] == pytest.approx(spread_before, rel=1e-3)
    if alpha == 1.0:   # every direction the same activation range
        for r in after.values():
            assert r.max() / r.min() < 1.01


def test_dense_model_and_bad_alpha():
    torch.manual_seed(0)
    model = NeRF(tiny_config(width=16, depth=4))
    pts, dirs = _data(256)
    eq, report = equalize_rank_space(model, {"coarse": (pts, dirs), "fine": (pts, dirs)})
    assert report == {}
    for a, b in zip(model.parameters(), eq.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="alpha"):
        equalize_rank_space(model, {}, 1.5)


def test_int8_export_equalizes_low_rank_layers_and_lands_closer(blender_dir, tmp_path):
    from nerfexport.data.datasets import load_scene
    from nerfexport.deploy.bundle import open_bundle
    from nerfexport.deploy.ort_network import OrtNetwork
    from nerfexport.export.bundle_writer import ExportOptions, export_bundle
    from nerfexport.export.quantize import Int8Settings
    from nerfexport.shrink.calibration import draw_samples

    model = _lowrank_model(skew=200.0)
    cal = draw_samples(model, load_scene(blender_dir), n_rays=128)
    pts, dirs = cal.for_network("fine")
    with torch.no_grad():
        ref = model.fine(torch.as_tensor(pts), torch.as_tensor(dirs))
    ref_logits = ref[:, :3].numpy()
    err = {}
    for alpha in (0.0, 0.5):
        out = tmp_path / f"b{alpha}"
        export_bundle(model, out, ExportOptions(precision="int8", int8=Int8Settings(equalize=alpha)), calib=cal)
        b = open_bundle(out)
        assert b.manifest.calibration["rank_equalization"] == alpha
        layers = b.manifest.calibration["equalized_layers"]
        assert (layers.get("fine") == ["feature_linear", "pts_linears.1", "pts_linears.2", "pts_linears.3"]
                if alpha else layers == {})
        rgb, _ = OrtNetwork(b.network_path("fine"))(pts, dirs)
        rgb = np.clip(np.asarray(rgb, np.float64), 1e-6, 1 - 1e-6)
        # the colour logits' error against their spread (a random tiny network's colours sit near 0.5)
        err[alpha] = float(np.abs(np.log(rgb / (1 - rgb)) - ref_logits).mean() / ref_logits.std())
    assert err[0.5] < 0.7 * err[0.0], err
