import pytest

from conftest import tiny_config
from nerfexport.model.mlp import MLPConfig
from nerfexport.bench.peak import gemm_peak, network_ops


@pytest.mark.parametrize("cfg", [MLPConfig(), MLPConfig.uniform(width=128),
                                 MLPConfig(widths=[96, 64, 80, 64, 48], skips=[2], feature_width=40, view_widths=[24]),
                                 tiny_config(width=16, viewdirs=False).coarse,
                                 MLPConfig(ranks={"pts.1": 32, "pts.5": 16, "feature": 8, "views.0": 12})])
def test_network_ops_counts_two_per_weight(cfg):
    from nerfexport.model.mlp import NeRFMLP
    net = NeRFMLP(cfg)
    weights = sum(p.numel() for n, p in net.named_parameters() if n.endswith("weight"))
    assert network_ops(cfg.to_dict()) == 2 * weights


def test_network_ops_of_the_density_alone():
    from nerfexport.model.mlp import NeRFMLP
    cfg = MLPConfig.uniform(width=64)
    net = NeRFMLP(cfg)
    weights = sum(p.numel() for n, p in net.named_parameters()
                  if n.endswith("weight") and n.startswith(("pts_linears", "alpha_linear")))
    assert network_ops(cfg.to_dict(), colour=False) == 2 * weights < network_ops(cfg.to_dict())
    # without view directions one output layer gives density and colour: nothing to drop
    flat = tiny_config(width=16, viewdirs=False).coarse.to_dict()
    assert network_ops(flat, colour=False) == network_ops(flat)


def test_gemm_peak_measures_both_precisions():
    for dtype in ("int8", "fp32"):
        p = gemm_peak(dtype, sizes=(64, 128), threads=1, repeat=1, min_seconds=0.0)
        assert p["gops"] > 0 and p["size"] in (64, 128) and set(p["per_size"]) == {64, 128}
    with pytest.raises(ValueError):
        gemm_peak("int4", sizes=(64,))
