"""The fused int8 kernel (csrc/nerf_mlp.c through nerfexport.fused) computes what the bundle's
int8 graph computes, refuses what it cannot compute, and ort-cpu falls back with a reason."""

import numpy as np
import onnx
import pytest
import torch

from nerfexport import fused
from nerfexport.deploy.bundle import open_bundle
from nerfexport.shrink.calibration import draw_samples
from nerfexport.export.bundle_writer import ExportOptions, export_bundle
from nerfexport.model.mlp import MLPConfig, NeRF, NeRFConfig
from nerfexport.export.quantize import Int8Settings
from nerfexport.deploy.render import Renderer, SceneSettings
from nerfexport.deploy.runtime import OrtNetwork, RuntimeSpecError, RuntimeUnavailable, load_runtime, make_networks
from nerfexport.data.synthetic import make_scene
from nerfexport.data.datasets import load_scene

WHY = fused.unavailable()
needs_kernel = pytest.mark.skipif(WHY is not None, reason=f"fused kernel cannot run here: {WHY}")


def _model(width: int, view_width: int, skips=(1,), views: int = 1, viewdirs: bool = True,
           multires: int = 10) -> NeRF:
    torch.manual_seed(0)
    mlp = lambda: MLPConfig(widths=[width] * 4, skips=list(skips), feature_width=width,
                            view_widths=[view_width] * views, use_viewdirs=viewdirs, multires=multires)
    return NeRF(NeRFConfig(coarse=mlp(), fine=mlp(), n_coarse=16, n_fine=16))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """int8 bundles (widths 64 with 32-wide views, and 48 with 16) and an fp32 one, of untrained
    networks calibrated on a tiny procedural scene, and that scene."""
    d = tmp_path_factory.mktemp("fused")
    make_scene(d / "scene", size=16, n_train=4, n_val=1, n_test=1)
    scene = load_scene(d / "scene")
    out = {"scene": scene}
    for name, (w, v) in {"w64": (64, 32), "w48": (48, 16)}.items():
        model = _model(w, v)
        cal = draw_samples(model, scene, n_rays=128)
        export_bundle(model, d / name, ExportOptions(precision="int8"), calib=cal)
        out[name] = d / name
    export_bundle(_model(64, 32), d / "fp32", ExportOptions())
    out["fp32"] = d / "fp32"
    return out


def _inputs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-1.5, 1.5, (n, 3)).astype(np.float32)
    dirs = rng.standard_normal((n, 3)).astype(np.float32)
    return pts, dirs / np.linalg.norm(dirs, axis=1, keepdims=True)


@needs_kernel
@pytest.mark.parametrize("name", ["w64", "w48"])
@pytest.mark.parametrize("which", ["coarse", "fine"])
def test_fused_equals_the_graph(bundles, name, which):
    path = open_bundle(bundles[name]).network_path(which)
    graph = OrtNetwork(path, threads=1)
    fast = OrtNetwork(path, threads=1, kernel="fused")
    assert fast.kernel == "fused" and graph.kernel == "graph"
    for n in (1, 5, 64, 1000):   # partial blocks of 64 rows, and several blocks
        pts, dirs = _inputs(n, n)
        (rgb_g, d_g), (rgb_f, d_f) = graph(pts, dirs), fast(pts, dirs)
        assert rgb_f.shape == (n, 3) and d_f.shape == (n, 1)
        # the same integer arithmetic; only float rounding of the scales differs (an output may move
        # by one quantization step where a value sits on a rounding boundary)
        scale = max(float(np.abs(d_g).max()), 1.0)
        assert np.abs(d_f - d_g).max() <= 0.02 * scale
        assert np.abs(rgb_f - rgb_g).max() <= 0.02
        assert np.mean(np.abs(d_f - d_g) <= 1e-4 * scale) > 0.99
    # an empty call gives empty outputs, as the graph does
    rgb0, d0 = fast(*_inputs(0))
    assert rgb0.shape == (0, 3) and d0.shape == (0, 1)
    # the density alone (a coarse network before a fine one) equals the full network's density
    dens = OrtNetwork(path, threads=1, kernel="fused", outputs=("density",))
    rgb, d = dens(pts, dirs)
    assert rgb is None and np.array_equal(d, d_f)


@needs_kernel
def test_fused_renders_the_graphs_image(bundles):
    b = open_bundle(bundles["w64"])
    s = bundles["scene"]
    pose = s.subset("test")[1][0]
    imgs = {}
    for kernel in ("graph", "fused"):
        nets = [OrtNetwork(b.network_path(w), threads=1, kernel=kernel,
                           outputs=("density",) if w == "coarse" else ("rgb", "density")) for w in ("coarse", "fine")]
        imgs[kernel] = Renderer(*nets, SceneSettings.from_manifest(b.manifest)).render_view(s.H, s.W, s.focal, pose)["rgb"]
    mse = float(((imgs["graph"] - imgs["fused"]) ** 2).mean())
    assert mse == 0.0 or -10 * np.log10(mse) > 50.0


@needs_kernel
def test_ort_cpu_runs_int8_bundles_fused_and_fp32_on_the_graph(bundles):
    spec = load_runtime("ort-cpu")
    assert spec.kernel == "auto"
    nets = make_networks(spec, bundle=open_bundle(bundles["w64"]))
    assert nets["coarse"].kernel == nets["fine"].kernel == "fused"
    fp32 = make_networks(spec, bundle=open_bundle(bundles["fp32"]))
    assert fp32["fine"].kernel == "graph" and "no int8 layers" in fp32["fine"].kernel_note
    assert make_networks(load_runtime("ort-cpu-graph"), bundle=open_bundle(bundles["w64"]))["fine"].kernel == "graph"


def test_fused_refuses_what_it_cannot_compute(bundles, tmp_path):
    fp32 = onnx.load(str(open_bundle(bundles["fp32"]).network_path("fine")))
    with pytest.raises(fused.NotFusable, match="no int8 layers"):
        fused.pack(fp32)
    with pytest.raises((RuntimeUnavailable, RuntimeSpecError)):
        OrtNetwork(open_bundle(bundles["fp32"]).network_path("fine"), kernel="fused")
    # a width that is not a multiple of 16
    d = tmp_path / "w40"
    model = _model(40, 20)
    s = bundles["scene"]
    export_bundle(model, d, ExportOptions(precision="int8"), calib=draw_samples(model, s, n_rays=32))
    with pytest.raises(fused.NotFusable, match="multiples of 16"):
        fused.pack(onnx.load(str(open_bundle(d).network_path("fine"))))
    # a layer kept float at export, a view-independent network, two view-direction layers
    for name, model, opts in (("float-pts2", _model(64, 32), Int8Settings(exclude=("pts.2",))),
                              ("noview", _model(64, 32, viewdirs=False), Int8Settings()),
                              ("views2", _model(64, 32, views=2), Int8Settings()),
                              ("multires11", _model(64, 32, multires=11), Int8Settings())):
        export_bundle(model, tmp_path / name, ExportOptions(precision="int8", int8=opts),
                      calib=draw_samples(model, s, n_rays=32))
        for w in ("coarse", "fine"):
            g = onnx.load(str(open_bundle(tmp_path / name).network_path(w)))
            with pytest.raises(fused.NotFusable, match={"float-pts2": "pts.2 is float", "noview": "view-independent",
                                                        "views2": "more than one view",
                                                        "multires11": "more than 10 encoding frequencies"}[name]):
                fused.pack(g)
    # a runtime file must name a known kernel, and the fused one only on the CPU provider
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nkernel = "fast"\n')
    with pytest.raises(RuntimeSpecError, match="kernel must be one of"):
        load_runtime(bad)
    bad.write_text('kind = "onnxruntime"\nproviders = ["CUDAExecutionProvider", "CPUExecutionProvider"]\n'
                   'kernel = "fused"\n')
    with pytest.raises(RuntimeSpecError, match="CPUExecutionProvider first"):
        load_runtime(bad)


@needs_kernel
def test_a_malformed_params_tensor_is_an_error_not_a_crash(bundles):
    import onnxruntime as ort
    m = fused.fuse(onnx.load(str(open_bundle(bundles["w64"]).network_path("fine"))))
    p = onnx.numpy_helper.to_array(m.graph.initializer[0]).copy()
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(fused.library_path()))
    pts, dirs = _inputs(10)
    for broken in (p[:100], np.concatenate([[0, 0, 0, 0], p[4:]]).astype(np.uint8)):   # truncated; bad magic
        m.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(broken, m.graph.initializer[0].name))
        s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        with pytest.raises(Exception, match="params tensor is malformed"):
            s.run(None, {"points": pts, "viewdirs": dirs})
    # points of the wrong width: one clear error from the kernel, no output
    m.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(p, m.graph.initializer[0].name))
    del m.graph.input[0].type.tensor_type.shape.dim[:]   # let the (N, 4) points through to the kernel
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="points must be"):
        s.run(None, {"points": np.zeros((10, 4), np.float32), "viewdirs": dirs})


def test_unavailable_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(fused, "_cpu_flags", lambda: {"avx512f", "avx2"})
    why = fused.unavailable()
    assert why is not None and "avx512_vnni" in why and "avx512bw" in why
