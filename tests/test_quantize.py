import numpy as np
import pytest
import torch

from nerfexport.deploy.bundle import open_bundle
from nerfexport.shrink.calibration import draw_samples
from nerfexport.data.datasets import load_scene
from nerfexport.export.bundle_writer import ExportOptions, export_bundle
from nerfexport.model.mlp import MLPConfig, NeRF, NeRFConfig
from nerfexport.export.quantize import Int8Settings, QuantizationError, check_calibration_data, quantized_layers
from nerfexport.deploy.render import Renderer, SceneSettings
from nerfexport.deploy.ort_network import OrtNetwork
from nerfexport.data.synthetic import make_scene
from nerfexport.train.factory import new_model
from nerfexport.train.loop import TrainConfig, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("q")
    make_scene(d / "scene", size=16, n_train=6, n_val=1, n_test=2)
    scene = load_scene(d / "scene")
    model = new_model(scene, width=32, depth=4, n_coarse=16, n_fine=16)
    train(model, scene, TrainConfig(steps=150, batch_rays=128, n_coarse=16, n_fine=16, lr=2e-3, precrop_iters=0,
                                    occupancy=False))
    return model, scene, d


def _render(path, scene):
    b = open_bundle(path)
    r = Renderer(OrtNetwork(b.network_path("coarse")), OrtNetwork(b.network_path("fine")),
                 SceneSettings.from_manifest(b.manifest))
    return r.render_view(scene.H, scene.W, scene.focal, scene.subset("test")[1][0])["rgb"]


@pytest.mark.parametrize("method,target", [("minmax", "cpu"), ("entropy", "cpu"), ("percentile", "tensorrt")])
def test_int8_close_to_fp32(trained, method, target):
    model, scene, d = trained
    cal = draw_samples(model, scene, n_rays=256)
    export_bundle(model, d / "fp32", ExportOptions())
    opts = ExportOptions(precision="int8", int8=Int8Settings(method=method, target=target))
    man = export_bundle(model, d / f"int8-{method}", opts, calib=cal)
    assert man.calibration["method"] == method
    assert man.activation_format == ("U8S8" if target == "cpu" else "S8S8")
    assert "pts.1" in quantized_layers(d / f"int8-{method}" / "coarse.onnx")
    # the positional encoding's frequency scaling stays float
    assert not any(n.startswith("encoding") for n in quantized_layers(d / f"int8-{method}" / "coarse.onnx"))
    a, b = _render(d / "fp32", scene), _render(d / f"int8-{method}", scene)
    mse = float(((a - b) ** 2).mean())
    assert 0 < mse and -10 * np.log10(mse) > 30.0  # int8 changes the image, a little


def test_max_psnr_drop_keeps_layers_float(trained):
    model, scene, d = trained
    cal = draw_samples(model, scene, n_rays=64)
    scores = iter([30.0, 20.0] + [29.5] * 40)   # fp32, full int8, then every probe / retry
    man = export_bundle(model, d / "guarded", ExportOptions(precision="int8", max_psnr_drop=1.0), calib=cal,
                        evaluate=lambda p: next(scores))
    kept = man.calibration["float_layers"]
    assert sum(len(v) for v in kept.values()) == 1
    assert man.quantization_check["psnr_int8"] == 29.5 and man.quantization_check["sensitivity"]


def test_calibration_data_of_the_wrong_kind():
    pts = np.zeros((10, 3), np.float32)
    dirs = np.tile(np.array([[0, 0, 1]], np.float32), (10, 1))
    check_calibration_data(pts, dirs)
    for bad in [(pts[:, :2], dirs), (pts, dirs * 3), (pts.astype(np.int32), dirs), (pts[:0], dirs[:0]),
                (np.full((10, 3), np.nan, np.float32), dirs), (pts, dirs[:5])]:
        with pytest.raises(QuantizationError):
            check_calibration_data(*bad)
    with pytest.raises(QuantizationError):
        Int8Settings(method="kl").validate()


def test_ort_cpu_sessions_render_an_int8_bundle_as_its_whole_graphs_do(trained):
    """ort-cpu runs the coarse network for its density alone, and with ``encoding = "host"`` cuts the
    encodings' Sin/Cos out of the graphs (numpy computes them): the int8 image stays what the
    bundle's whole graphs render."""
    import dataclasses
    from nerfexport.deploy.networks import make_networks
    from nerfexport.deploy.runtime import load_runtime
    model, scene, d = trained
    out = d / "int8-host"
    export_bundle(model, out, ExportOptions(precision="int8"), calib=draw_samples(model, scene, n_rays=128))
    spec = dataclasses.replace(load_runtime("ort-cpu"), encoding="host")
    nets = make_networks(spec, bundle=open_bundle(out))
    assert nets["coarse"].outputs == ("density",) and nets["fine"].host_encodings
    s = SceneSettings.from_manifest(open_bundle(out).manifest)
    pose = scene.subset("test")[1][0]
    a = _render(out, scene)
    b = Renderer(nets["coarse"], nets["fine"], s).render_view(scene.H, scene.W, scene.focal, pose)["rgb"]
    # numpy's and onnxruntime's sines differ in the last bits, which can move a value across an int8
    # rounding boundary now and then; the image stays the same to far below one 8-bit level
    assert np.abs(a - b).max() < 2e-3 and float(np.abs(a - b).mean()) < 1e-4


def test_int8_export_defaults_check_the_picture_and_calibrate_by_percentile():
    """``export --int8`` calibrates activations at their 99.99th percentile and checks the bundle
    against fp32 on held-out pixels (0.25 dB, keeping layers float past it) unless told otherwise."""
    from nerfexport.export.run import DEFAULT_MAX_PSNR_DROP, ExportError, ExportRequest, export_options
    opts, _ = export_options(ExportRequest(int8=True))
    assert opts.int8.method == "percentile" and opts.int8.percentile == 99.99
    assert opts.max_psnr_drop == DEFAULT_MAX_PSNR_DROP == 0.25
    assert export_options(ExportRequest(int8=True, max_psnr_drop=1.0))[0].max_psnr_drop == 1.0
    assert export_options(ExportRequest(int8=True, max_psnr_drop=float("inf")))[0].max_psnr_drop == float("inf")
    assert export_options(ExportRequest(int8=True, check_int8=False))[0].max_psnr_drop is None   # sweeps
    assert export_options(ExportRequest())[0].max_psnr_drop is None                            # fp32: nothing to check
    assert export_options(ExportRequest(int8=True, calibration="minmax"))[0].int8.method == "minmax"
    with pytest.raises(ExportError):
        export_options(ExportRequest(int8=True, max_psnr_drop=float("nan")))
