"""Low-rank factorization: the layer, its fit, its export, the rank budget and the shrink method."""

import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import tiny_config
from nerfexport.data.datasets import load_scene
from nerfexport.export.bundle_writer import ExportOptions, export_bundle
from nerfexport.export.quantize import Int8Settings
from nerfexport.model.checkpoint import load_checkpoint, save_checkpoint
from nerfexport.model.mlp import LowRankLinear, MLPConfig, NeRF, NeRFMLP
from nerfexport.shrink import lowrank
from nerfexport.shrink.calibration import draw_samples
from nerfexport.data.datasets import DataArgs
from nerfexport.shrink.pipeline import ShrinkSpec, shrink_model, shrink_pipeline
from nerfexport.shrink.spec import EvalSpec


def _inputs(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(n, 3, generator=g) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return pts, dirs


def _samples(n=2048, seed=0):
    pts, dirs = _inputs(n, seed)
    return lowrank.WeightedSamples(pts, dirs, torch.full((n,), 1.0 / n, dtype=torch.float64))


def test_config_validates_ranks_and_counts_macs():
    cfg = MLPConfig.uniform(4, 32)
    full = cfg.macs()
    lr = replace(cfg, ranks={"pts.1": 4})
    lr.validate()
    assert full - lr.macs() == 32 * 32 - 4 * 64
    net = NeRFMLP(lr)
    assert isinstance(net.pts_linears[1], LowRankLinear) and net.pts_linears[1].down.weight.shape == (4, 32)
    for bad, match in (({"rgb": 2}, "not a hidden layer"), ({"pts.9": 2}, "not a hidden layer"),
                       ({"pts.1": 0}, "rank of pts.1"), ({"pts.1": 33}, "rank of pts.1"), ({"pts.1": 2.5}, "rank")):
        with pytest.raises(ValueError, match=match):
            replace(cfg, ranks=bad).validate()


@pytest.mark.parametrize("mode", lowrank.FIT_MODES)
def test_full_rank_factorization_equals_the_layer(mode):
    torch.manual_seed(0)
    net = NeRFMLP(MLPConfig.uniform(4, 16)).eval()
    ranks = {name: min(i, o) for name, _, i, o in net.cfg.linear_shapes() if name not in lowrank.HEADS}
    small = lowrank.factorize_network(net, ranks, _samples(), mode)
    pts, dirs = _inputs(256, 1)
    with torch.no_grad():
        assert torch.allclose(small(pts, dirs), net(pts, dirs), atol=2e-4)


@pytest.mark.parametrize("mode", lowrank.FIT_MODES)
def test_exact_when_preactivations_span_r_dimensions(mode):
    """A layer whose weight has rank r has pre-activations in an r-dimensional affine subspace:
    its rank-r factorization is exact (and the rest of the network unchanged)."""
    torch.manual_seed(0)
    net = NeRFMLP(MLPConfig.uniform(4, 32)).eval()
    r = 5
    with torch.no_grad():
        lay = net.pts_linears[2]
        lay.weight.copy_(torch.randn(32, r) @ torch.randn(r, 32) * 0.1)
    small = lowrank.factorize_network(net, {"pts.2": r}, _samples(), mode)
    assert small.pts_linears[2].rank == r
    pts, dirs = _inputs(256, 2)
    with torch.no_grad():
        assert torch.allclose(small(pts, dirs), net(pts, dirs), atol=1e-4)
    # below the subspace's dimension it is not exact
    smaller = lowrank.factorize_network(net, {"pts.2": r - 2}, _samples(), mode)
    with torch.no_grad():
        assert not torch.allclose(smaller(pts, dirs), net(pts, dirs), atol=1e-3)


def test_reduced_rank_regression_corrects_its_inputs_error():
    """rrr fits a layer from the student's inputs (changed by the layers cut before it), so on
    the samples its error is the least of any rank-r map, below pca's projection of the teacher."""
    g = torch.Generator().manual_seed(0)
    n, d_in, d_out, r = 2048, 24, 16, 4
    x_t = torch.randn(n, d_in, generator=g)
    x_s = x_t @ (torch.eye(d_in) + 0.5 * torch.randn(d_in, d_in, generator=g))   # what the cut layers hand on
    W = torch.randn(d_out, r, generator=g) @ torch.randn(r, d_in, generator=g)    # outputs in r dimensions
    b = torch.randn(d_out, generator=g)
    y = x_t @ W.T + b
    w = torch.full((n,), 1.0 / n, dtype=torch.float64)
    err = {}
    for mode in lowrank.FIT_MODES:
        down, up, bias = lowrank.fit_low_rank(x_s, y, w, W, b, r, mode)
        assert down.shape == (r, d_in) and up.shape == (d_out, r)
        err[mode] = float(((x_s.double() @ down.T @ up.T + bias - y.double()) ** 2).mean())
    assert err["rrr"] < 1e-3 * err["pca"]


def test_allocate_ranks_meets_the_budget():
    cfg = MLPConfig.uniform(8, 64)
    quarter = lowrank.budget_macs(cfg, width=32)
    assert quarter == replace(cfg, widths=[32] * 8, feature_width=32, view_widths=[16]).macs()
    plain = lowrank.allocate_ranks(cfg, quarter)
    assert len(set(plain.values())) == 1 and replace(cfg, ranks=plain).macs() <= quarter
    # a spectrum that puts all variance in few directions of pts.3 gives pts.3 no more than it needs
    spectra = {n: torch.ones(o, dtype=torch.float64) for n, _, _, o in cfg.linear_shapes() if n not in lowrank.HEADS}
    spectra["pts.3"] = torch.cat((torch.ones(4), torch.zeros(60))).double()
    greedy = lowrank.allocate_ranks(cfg, quarter, spectra)
    assert replace(cfg, ranks=greedy).macs() <= quarter
    eff = {n: greedy.get(n, min(i, o)) for n, _, i, o in cfg.linear_shapes() if n not in lowrank.HEADS}
    assert eff["pts.3"] <= 8 < max(eff.values())
    with pytest.raises(ValueError, match="below the cheapest"):
        lowrank.allocate_ranks(cfg, 100)


@pytest.fixture
def setup(blender_dir):
    scene = load_scene(blender_dir)
    torch.manual_seed(0)
    model = NeRF(tiny_config(width=32, depth=4))
    return model, scene


def test_lowrank_method_meets_the_width_cost_and_saves(setup, tmp_path):
    model, scene = setup
    cal = draw_samples(model, scene, n_rays=64)
    small, info = shrink_model(model, ShrinkSpec(method="lowrank", width=16), cal)
    target = ShrinkSpec(method="magnitude", width=16).budget_macs(model.fine.cfg)
    assert small.fine.cfg.ranks and small.fine.cfg.macs() <= target
    assert info.macs_after["fine"] == small.fine.cfg.macs() < info.macs_before["fine"]
    save_checkpoint(small, tmp_path / "s.pt")
    back = load_checkpoint(tmp_path / "s.pt")
    pts, dirs = _inputs(64)
    with torch.no_grad():
        assert torch.equal(back.fine(pts, dirs), small.fine(pts, dirs))
    uniform, _ = shrink_model(model, ShrinkSpec(method="lowrank", rank=3), cal)
    assert set(uniform.coarse.cfg.ranks.values()) == {3}
    with pytest.raises(ValueError, match="--rank is a target of the lowrank"):
        shrink_model(model, ShrinkSpec(method="coreset", rank=3), cal)
    with pytest.raises(ValueError, match="cannot be pruned"):
        shrink_model(small, ShrinkSpec(method="magnitude", width=8), cal)


def test_budget_target_for_pruning_takes_the_widest_width_within(setup):
    model, scene = setup
    cal = draw_samples(model, scene, n_rays=32)
    small, _ = shrink_model(model, ShrinkSpec(method="magnitude", budget=0.3), cal)
    w = small.fine.cfg.widths[0]
    assert small.fine.cfg.macs() <= 0.3 * model.fine.cfg.macs()
    wider = ShrinkSpec(method="magnitude", width=w + 1).budget_macs(model.fine.cfg)
    assert wider > 0.3 * model.fine.cfg.macs()


def test_pipeline_auto_considers_lowrank_and_reports_cost(setup):
    model, scene = setup
    student, rep = shrink_pipeline(model, scene, ShrinkSpec(method="auto", width=16, calib_rays=32),
                                   EvalSpec(views=1, pixels=64))
    assert "lowrank" in rep.auto and rep.psnr_before_finetune is not None
    assert rep.eval["pixels"] == 64 and rep.eval["resolution"] == [scene.H, scene.W]
    assert sum(rep.macs_after.values()) < sum(rep.macs_before.values())


NO_TORCH = textwrap.dedent('''
    import sys
    import numpy as np
    sys.modules["torch"] = None  # any "import torch" now fails
    from nerfexport.deploy.bundle import open_bundle
    from nerfexport.deploy.networks import make_networks
    from nerfexport.deploy.runtime import load_runtime
    b = open_bundle(sys.argv[1])
    nets = make_networks(load_runtime("ort-cpu"), bundle=b)
    data = np.load(sys.argv[2])
    rgb, dens = nets["fine"](data["pts"], data["dirs"])
    np.savez(sys.argv[3], rgb=rgb, density=dens)
''')


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_lowrank_bundle_runs_without_torch_as_two_gemms(setup, tmp_path, precision):
    import onnx

    model, scene = setup
    cal = draw_samples(model, scene, n_rays=64)
    small, _ = shrink_model(model, ShrinkSpec(method="lowrank", rank=4), cal)
    opts = ExportOptions(precision=precision, int8=Int8Settings())
    export_bundle(small, tmp_path / "b", opts, calib=cal if precision == "int8" else None)
    g = onnx.load(str(tmp_path / "b" / "fine.onnx")).graph
    gemms = {n.name for n in g.node if n.op_type == "Gemm"}
    assert "pts.1.down/Gemm" in gemms and "pts.1/Gemm" in gemms
    pts, dirs = _inputs(256, 4)
    np.savez(tmp_path / "in.npz", pts=pts.numpy(), dirs=dirs.numpy())
    (tmp_path / "s.py").write_text(NO_TORCH)
    res = subprocess.run([sys.executable, str(tmp_path / "s.py"), str(tmp_path / "b"), str(tmp_path / "in.npz"),
                          str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = np.load(tmp_path / "out.npz")
    with torch.no_grad():
        raw = small.fine(pts, dirs)
    # int8: every layer of this rank-4 toy is int8 (the skip's and the view branch's readers too, one
    # Gemm a part), so colours move by up to a few hundredths; a wrong graph moves them by tenths
    tol = 1e-4 if precision == "fp32" else 0.25
    assert np.abs(out["rgb"] - torch.sigmoid(raw[:, :3]).numpy()).max() < tol


def test_import_records_the_training_resolution_and_eval_uses_it(tmp_path):
    """A model is judged at the resolution it was trained at: ``import --data --downscale`` records
    it, and ``eval`` (no --downscale) and ``shrink`` load the views at that resolution."""
    import json

    from typer.testing import CliRunner

    from conftest import write_blender
    from nerfexport.cli import app
    from nerfexport.shrink.run import run_shrink

    data = write_blender(tmp_path / "scene", size=16)
    torch.manual_seed(0)
    model = NeRF(tiny_config(width=16, depth=4))
    torch.save({"network_fn_state_dict": model.coarse.state_dict(), "network_fine_state_dict": model.fine.state_dict(),
                "global_step": 7}, tmp_path / "m.tar")
    r = CliRunner().invoke(app, ["import", str(tmp_path / "m.tar"), "-o", str(tmp_path / "m.pt"), "--data", str(data),
                                 "--downscale", "2", "--n-coarse", "8", "--n-fine", "8"])
    assert r.exit_code == 0, r.output
    net, meta, _ = load_checkpoint(tmp_path / "m.pt", with_train_state=True)
    assert (net.cfg.camera["H"], net.cfg.camera["W"]) == (8, 8) and meta["data"]["downscale"] == 2
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "m.pt"), "--json", str(tmp_path / "e.json"), "--views", "1"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "e.json").read_text())["results"]
    assert res["num_rays_per_sec"] / res["fps"] == 8 * 8      # one frame is 8x8 rays: the recorded resolution
    assert "using the dataset recorded" in r.output
    # shrink evaluates at the recorded 8x8, and --downscale overrides it
    res = run_shrink(tmp_path / "m.pt", tmp_path / "s.pt", ShrinkSpec(method="lowrank", width=8, calib_rays=16),
                     evaluation=EvalSpec(views=1))
    assert res.report.eval["resolution"] == [8, 8]
    res = run_shrink(tmp_path / "m.pt", tmp_path / "s.pt", ShrinkSpec(method="lowrank", width=8, calib_rays=16),
                     DataArgs(downscale=1), EvalSpec(views=1))
    assert res.report.eval["resolution"] == [16, 16]
