import pytest
import torch

from conftest import tiny_config
from nerfexport.model.mlp import MLPConfig, NeRF, NeRFMLP, count_parameters
from nerfexport.model.surgery import (Selection, activation_stats, layers, prune_mlp, prune_model, target_widths,
                                widen_mlp, widen_model)


def _net(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = MLPConfig(widths=[24] * 6, skips=[2], feature_width=24, view_widths=[12], **kw)
    return NeRFMLP(cfg).eval()


def _inputs(n=512, seed=1):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(n, 3, generator=g) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return pts, d


def test_layers_describe_the_wiring():
    net = _net()
    lays = {l.name: l for l in layers(net.cfg)}
    assert list(lays) == [f"pts.{i}" for i in range(6)] + ["feature", "views.0"]
    # after the skip the encoded input comes first; the pruned columns follow it
    assert lays["pts.2"].consumers == [("pts_linears.3", net.cfg.input_ch)]
    assert lays["pts.5"].consumers == [("alpha_linear", 0), ("feature_linear", 0)]
    assert lays["feature"].consumers == [("views_linears.0", 0)] and not lays["feature"].relu


def test_pruning_nothing_changes_nothing():
    net = _net()
    pts, d = _inputs()
    sels = {l.name: Selection(torch.arange(l.width)) for l in layers(net.cfg)}
    small = prune_mlp(net, sels, activation_stats(net, pts, d).mean)
    with torch.no_grad():
        assert torch.allclose(small(pts, d), net(pts, d), atol=1e-6)


def _make_constant_neurons(net):
    """Neurons 0-3 of pts.1 dead (always 0), 4-7 always on at a constant; feature 0-2 constant;
    pts.2 (before the skip) neurons 0-1 constant; views.0 neuron 0 dead."""
    with torch.no_grad():
        l = net.pts_linears[1]
        l.weight[:8] = 0
        l.bias[:4] = -1.0
        l.bias[4:8] = torch.tensor([0.5, 1.0, 2.0, 0.1])
        net.pts_linears[2].weight[:2] = 0
        net.pts_linears[2].bias[:2] = torch.tensor([0.7, 0.3])
        net.feature_linear.weight[:3] = 0
        net.feature_linear.bias[:3] = torch.tensor([-0.4, 0.2, 1.5])
        net.views_linears[0].weight[:1] = 0
        net.views_linears[0].bias[:1] = -2.0


def test_pruning_constant_neurons_is_exact():
    net = _net()
    _make_constant_neurons(net)
    pts, d = _inputs()
    stats = activation_stats(net, pts, d)
    sels = {"pts.1": Selection(torch.arange(8, 24)), "pts.2": Selection(torch.arange(2, 24)),
            "feature": Selection(torch.arange(3, 24)), "views.0": Selection(torch.arange(1, 12))}
    small = prune_mlp(net, sels, stats.mean)
    assert small.cfg.widths == [24, 16, 22, 24, 24, 24]
    assert small.cfg.feature_width == 21 and small.cfg.view_widths == [11]
    p2, d2 = _inputs(seed=7)  # unseen inputs: the neurons are constant everywhere
    with torch.no_grad():
        assert torch.allclose(small(p2, d2), net(p2, d2), atol=1e-5)
        # dropping the always-on neurons without folding their means does change the output
        dropped = prune_mlp(net, sels, None)
        assert not torch.allclose(dropped(p2, d2), net(p2, d2), atol=1e-3)


def test_coreset_scales_are_folded_exactly_for_constant_neurons():
    """Scaling a constant neuron's outgoing weights (as a coreset does) is exact once its mean is folded."""
    net = _net()
    _make_constant_neurons(net)
    pts, d = _inputs()
    stats = activation_stats(net, pts, d)
    scale = torch.ones(24, dtype=torch.float64)
    scale[:8] = torch.linspace(0.5, 3.0, 8, dtype=torch.float64)
    p2, d2 = _inputs(seed=3)
    with torch.no_grad():
        scaled = prune_mlp(net, {"pts.1": Selection(torch.arange(24), scale)}, stats.mean)
        assert torch.allclose(scaled(p2, d2), net(p2, d2), atol=1e-5)
        # scaling a neuron that varies is not exact (the test would notice a fold that did nothing)
        scale[10] = 3.0
        varied = prune_mlp(net, {"pts.1": Selection(torch.arange(24), scale)}, stats.mean)
        assert not torch.allclose(varied(p2, d2), net(p2, d2), atol=1e-4)


def test_parameter_count_matches_widths():
    torch.manual_seed(0)
    model = NeRF(tiny_config(width=32, depth=4))
    pts, d = _inputs()
    sels = {"pts.0": Selection(torch.arange(10)), "pts.1": Selection(torch.arange(5, 25)),
            "pts.3": Selection(torch.arange(16)), "feature": Selection(torch.arange(8)),
            "views.0": Selection(torch.arange(4))}
    small = prune_model(model, {"coarse": sels, "fine": sels})
    c = small.coarse.cfg
    assert c.widths == [10, 20, 32, 16] and c.feature_width == 8 and c.view_widths == [4]
    fresh = NeRFMLP(c)
    assert count_parameters(small.coarse) == count_parameters(fresh)
    ic, iv = c.input_ch, c.input_ch_views
    assert c.skips == [1]  # the encoded input is concatenated before layer 2
    expected = (ic * 10 + 10) + (10 * 20 + 20) + ((ic + 20) * 32 + 32) + (32 * 16 + 16) \
        + (16 * 8 + 8) + (16 + 1) + ((8 + iv) * 4 + 4) + (4 * 3 + 3)
    assert count_parameters(small.coarse) == expected
    assert count_parameters(small.coarse) < count_parameters(model.coarse) / 2


def test_target_widths_rules():
    cfg = MLPConfig.uniform(8, 256)
    t = target_widths(cfg, width=128)
    assert all(t[f"pts.{i}"] == 128 for i in range(8)) and t["feature"] == 128 and t["views.0"] == 64
    assert target_widths(cfg, width=128, view_width=32)["views.0"] == 32
    r = target_widths(cfg, ratio=0.25)
    assert r["pts.0"] == 64 and r["views.0"] == 32
    w = target_widths(cfg, widths=[200, 180, 160, 140, 120, 100, 90, 80])
    assert w["pts.7"] == 80 and w["feature"] == 80 and w["views.0"] == 40
    for bad in (dict(width=300), dict(width=0), dict(width=-4), dict(ratio=1.5), dict(ratio=0.0),
                dict(widths=[128] * 7), dict(width=128, ratio=0.5), {}):
        with pytest.raises(ValueError):
            target_widths(cfg, **bad)


def test_selection_rejects_bad_indices():
    net = _net()
    with pytest.raises(ValueError):
        Selection(torch.tensor([], dtype=torch.int64))
    with pytest.raises(ValueError):
        Selection(torch.tensor([1, 1]))
    with pytest.raises(ValueError):
        prune_mlp(net, {"pts.0": Selection(torch.tensor([0, 99]))})
    with pytest.raises(ValueError):
        prune_mlp(net, {"nope": Selection(torch.tensor([0]))})


def test_widening_keeps_what_the_network_computes():
    net = _net(seed=4)
    with torch.no_grad():
        for p in net.parameters():  # weights large enough that every layer matters
            p.normal_(0.0, 0.3)
    pts, d = _inputs()
    wider = MLPConfig(widths=[24, 40, 24, 48, 24, 32], skips=[2], feature_width=36, view_widths=[20])
    wide, maps = widen_mlp(net, wider, torch.Generator().manual_seed(0))
    assert wide.cfg == wider
    for name, m in wide.named_modules():
        if isinstance(m, torch.nn.Linear):
            old = dict(net.named_modules())[name]
            r, c = maps[name]
            assert torch.equal(m.weight[r[:, None], c[None, :]], old.weight)
            # the new neurons are random, not copies, and old neurons read nothing from them
            if m.weight.shape[0] > old.weight.shape[0]:
                assert m.weight[old.weight.shape[0]:].abs().sum() > 0
    with torch.no_grad():
        ref, out = net(pts, d), wide(pts, d)
    assert ref.abs().max() > 1.0
    assert torch.allclose(out, ref, atol=1e-5)
    # the new neurons' (zero) outgoing weights get gradients at once, so they start to count
    wide.train()
    wide(pts, d).square().sum().backward()
    assert wide.pts_linears[2].weight.grad[:, 24:].abs().sum() > 0


def test_widening_refuses_narrower_or_reshaped_networks():
    net = _net()
    with pytest.raises(ValueError, match="cannot widen"):
        widen_mlp(net, MLPConfig(widths=[16] * 6, skips=[2], feature_width=24, view_widths=[12]))
    with pytest.raises(ValueError, match="only widths"):
        widen_mlp(net, MLPConfig(widths=[32] * 6, skips=[3], feature_width=32, view_widths=[16]))


def test_widening_a_whole_model():
    cfg = tiny_config()
    model = NeRF(cfg).eval()
    big = tiny_config(width=64)
    wide, maps = widen_model(model, big)
    pts, d = _inputs(64)
    assert wide.cfg == big and "fine.rgb_linear" in maps
    with torch.no_grad():
        assert torch.allclose(wide.fine(pts, d), model.fine(pts, d), atol=1e-5)
