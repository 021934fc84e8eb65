import pytest
import torch

from nerfexport.model.mlp import MLPConfig, NeRF, NeRFConfig, NeRFMLP, count_parameters


def expected_params(cfg: MLPConfig) -> int:
    n = 0
    for i, o in zip(cfg.trunk_in_dims(), cfg.widths):
        n += i * o + o
    w = cfg.widths[-1]
    n += w * cfg.feature_width + cfg.feature_width + w + 1
    vin = [cfg.feature_width + cfg.input_ch_views] + cfg.view_widths[:-1]
    for i, o in zip(vin, cfg.view_widths):
        n += i * o + o
    n += cfg.view_widths[-1] * 3 + 3
    return n


def test_original_nerf_shapes():
    net = NeRFMLP(MLPConfig())
    sd = net.state_dict()
    assert sd["pts_linears.0.weight"].shape == (256, 63)
    assert sd["pts_linears.5.weight"].shape == (256, 256 + 63)  # skip concat after layer 4
    assert sd["views_linears.0.weight"].shape == (128, 256 + 27)
    assert sd["feature_linear.weight"].shape == (256, 256)
    assert sd["alpha_linear.weight"].shape == (1, 256)
    assert sd["rgb_linear.weight"].shape == (3, 128)
    assert count_parameters(net) == expected_params(net.cfg) == 595844
    out = net(torch.rand(10, 3), torch.nn.functional.normalize(torch.randn(10, 3), dim=-1))
    assert out.shape == (10, 4)


def test_per_layer_widths():
    cfg = MLPConfig(widths=[64, 40, 48, 32, 56, 24, 16, 72], feature_width=20, view_widths=[12])
    net = NeRFMLP(cfg)
    sd = net.state_dict()
    assert sd["pts_linears.1.weight"].shape == (40, 64)
    assert sd["pts_linears.5.weight"].shape == (24, 56 + 63)
    assert sd["feature_linear.weight"].shape == (20, 72)
    assert sd["views_linears.0.weight"].shape == (12, 20 + 27)
    assert count_parameters(net) == expected_params(cfg)
    assert net(torch.rand(5, 3), torch.rand(5, 3)).shape == (5, 4)
    assert net.density(torch.rand(5, 3)).shape == (5,)


def test_no_viewdirs_and_bad_widths():
    net = NeRFMLP(MLPConfig.uniform(4, 16, use_viewdirs=False))
    assert net(torch.rand(3, 3)).shape == (3, 4)
    with pytest.raises(ValueError):
        MLPConfig.from_dict({**MLPConfig().to_dict(), "widths": [256, 0, 256]})
    with pytest.raises(ValueError):
        MLPConfig.from_dict({**MLPConfig().to_dict(), "bogus": 1})


def test_config_round_trip():
    cfg = NeRFConfig(fine=None, near=0.5, far=3.0, white_bkgd=False, ndc=True, n_fine=0)
    back = NeRFConfig.from_dict(cfg.to_dict())
    assert back == cfg
    assert NeRF(back).fine is None
