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


def test_network_shapes_split_a_low_rank_layer_in_two_and_its_gemms_are_timed():
    from nerfexport.bench.peak import network_shapes, shape_gemm
    cfg = MLPConfig(widths=(32, 32, 32), skips=(1,), feature_width=32, view_widths=(16,), multires=2, multires_views=1)
    d = cfg.to_dict()
    full = network_shapes(d)
    assert full[0] == (15, 32) and full[2] == (32 + 15, 32)          # the skip's concat feeds pts.2
    d["ranks"] = {"pts.1": 4}
    low = network_shapes(d)
    assert low[1:3] == [(32, 4), (4, 32)] and len(low) == len(full) + 1
    assert network_ops(d) == 2 * sum(k * n for k, n in low) < network_ops(cfg.to_dict())
    g = shape_gemm("fp32", low, rows=256, threads=1, repeat=2, min_seconds=0.0)
    assert 0 < g < 1e5
    from nerfexport.bench.peak import evaluations_gemm
    both = evaluations_gemm("int8", {"coarse": d, "fine": None}, {"coarse": True, "fine": True},
                            {"coarse": 100, "fine": 200})
    assert both is not None and both > 0
    assert evaluations_gemm("int8", {"coarse": d, "fine": None}, {"coarse": True, "fine": True},
                            {"coarse": 0, "fine": 0}) is None
