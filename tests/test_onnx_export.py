import numpy as np
import onnx
import pytest
import torch

from conftest import tiny_config
from nerfexport.model.mlp import MLPConfig, NeRF, NeRFMLP
from nerfexport.export.onnx_graph import encoding_permutation, mlp_to_onnx
from nerfexport.model.encoding import PositionalEncoding
from nerfexport.deploy.ort_network import OrtNetwork


def _inputs(n=777, seed=0, scale=4.0):
    rng = np.random.default_rng(seed)
    pts = (rng.uniform(-1, 1, (n, 3)) * scale).astype(np.float32)
    d = rng.normal(size=(n, 3)).astype(np.float32)
    return pts, d / np.linalg.norm(d, axis=1, keepdims=True)


def _torch(net, pts, d):
    with torch.no_grad():
        raw = net(torch.from_numpy(pts), torch.from_numpy(d))
    return torch.sigmoid(raw[:, :3]).numpy(), torch.relu(raw[:, 3:]).numpy()


def test_encoding_permutation_matches_torch_order():
    x = torch.randn(5, 3)
    enc = PositionalEncoding(4)(x).numpy()
    perm = encoding_permutation(4)
    xf = x.numpy()[:, None, :] * (2.0 ** np.arange(4))[None, :, None]
    graph_order = np.concatenate((x.numpy(), np.sin(xf).reshape(5, -1), np.cos(xf).reshape(5, -1)), 1)
    assert np.allclose(enc[:, perm], graph_order, atol=1e-6)


@pytest.mark.parametrize("viewdirs", [True, False])
def test_fp32_graph_matches_torch(tmp_path, viewdirs):
    torch.manual_seed(0)
    cfg = MLPConfig(widths=[32, 24, 40, 16, 32, 20], skips=[2], feature_width=12, view_widths=[10, 6],
                    use_viewdirs=viewdirs)
    net = NeRFMLP(cfg).eval()
    model = mlp_to_onnx({k: v.numpy() for k, v in net.state_dict().items()}, cfg, metadata={"k": "v"})
    onnx.checker.check_model(model, full_check=True)
    assert {p.key: p.value for p in model.metadata_props}["k"] == "v"
    path = tmp_path / "n.onnx"
    onnx.save(model, path)
    sess = OrtNetwork(path)
    for scale in (1.0, 4.0):
        pts, d = _inputs(scale=scale)
        rgb, dens = sess(pts, d)
        t_rgb, t_dens = _torch(net, pts, d)
        assert rgb.shape == (777, 3) and dens.shape == (777, 1)
        assert np.abs(rgb - t_rgb).max() < 1e-4 and np.abs(dens - t_dens).max() < 1e-4 * max(1, t_dens.max())
    # dynamic batch axis
    assert sess(*_inputs(n=1))[0].shape == (1, 3)


def test_fp16_graph_is_close(tmp_path):
    torch.manual_seed(0)
    net = NeRF(tiny_config(width=32)).coarse
    model = mlp_to_onnx({k: v.numpy() for k, v in net.state_dict().items()}, net.cfg, dtype="fp16")
    onnx.save(model, tmp_path / "h.onnx")
    pts, d = _inputs(scale=1.0)
    rgb, dens = OrtNetwork(tmp_path / "h.onnx")(pts, d)
    t_rgb, t_dens = _torch(net, pts, d)
    assert rgb.dtype == np.float32 and np.abs(rgb - t_rgb).max() < 5e-3
    with pytest.raises(ValueError):
        mlp_to_onnx({k: v.numpy() for k, v in net.state_dict().items()}, net.cfg, dtype="int4")
