"""int8 kernels against the float simulation of the same QDQ graph, and the weight format each target writes."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from nerfexport.bench.doctor import INT8_FORMATS, int8_rows, probe_network, probe_points
from nerfexport.data.datasets import load_scene
from nerfexport.data.synthetic import make_scene
from nerfexport.deploy.int8check import (DENSITY_TOLERANCE, RGB_TOLERANCE, check_bundle, network_gap, outputs_of,
                                         ray_points)
from nerfexport.deploy.bundle import open_bundle
from nerfexport.export.bundle_writer import ExportOptions, export_bundle
from nerfexport.export.quantize import Int8Settings, QuantizationError, quantize_int8
from nerfexport.shrink.calibration import draw_samples
from nerfexport.train.factory import new_model


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """int8 bundles of a small (untrained) NeRF for both targets; the kernel check needs no training."""
    d = tmp_path_factory.mktemp("i8")
    make_scene(d / "scene", size=16, n_train=4, n_val=1, n_test=1)
    scene = load_scene(d / "scene")
    model = new_model(scene, width=32, depth=4, n_coarse=16, n_fine=16)
    cal = draw_samples(model, scene, n_rays=128)
    out = {}
    for target in ("cpu", "tensorrt"):
        out[target] = d / target
        export_bundle(model, out[target], ExportOptions(precision="int8", int8=Int8Settings(target=target)), calib=cal)
    out["scene"] = scene
    return out


def _weights(path):
    """{layer: int8 weight array} of the Gemm weights a DequantizeLinear reads."""
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0].endswith(".weight_quantized"):
            out[n.input[0]] = inits[n.input[0]]
    return out


def test_the_written_graph_has_the_targets_weight_format(bundles):
    """--target cpu: U8S8 with 7-bit weights (|w| <= 64: no pair of uint8 x int8 products exceeds 16
    bits on x86 CPUs without VNNI); --target tensorrt: S8S8 with 8-bit weights."""
    for target, bits in (("cpu", 7), ("tensorrt", 8)):
        b = open_bundle(bundles[target])
        assert b.manifest.calibration["weight_bits"] == bits
        for which in ("coarse", "fine"):
            w = _weights(b.network_path(which))
            assert len(w) >= 4, which
            assert all(a.dtype == np.int8 for a in w.values())
            top = max(int(np.abs(a.astype(np.int32)).max()) for a in w.values())
            assert top == (64 if bits == 7 else 127), (target, which, top)
            # the largest pair sum a kernel may form from uint8 (or int8 + 128) activations
            if bits == 7:
                assert 2 * 255 * top <= 32767
    acts = lambda p: {n.input[2] for n in onnx.load(str(p)).graph.node if n.op_type == "QuantizeLinear"}
    m = onnx.load(str(open_bundle(bundles["cpu"]).network_path("fine")))
    zp = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    assert all(zp[z].dtype == np.uint8 for z in acts(open_bundle(bundles["cpu"]).network_path("fine")) if z in zp)


def test_weight_bits_override_and_validation(tmp_path):
    src = tmp_path / "fp32.onnx"
    onnx.save(probe_network(width=16, depth=4), str(src))
    cal = probe_points(256, 0)
    quantize_int8(src, tmp_path / "q8.onnx", *cal, Int8Settings(target="cpu", weight_bits=8))
    assert max(int(np.abs(a.astype(np.int32)).max()) for a in _weights(tmp_path / "q8.onnx").values()) == 127
    # the layers reading [encoding, hidden] (after the skip) and [feature, view encoding] read each part
    # through its own Gemm, so each part has its own int8 scale: no concat reader stays float
    from nerfexport.export.quantize import concat_readers, quantized_layers
    assert concat_readers(src) == ()
    nodes = {n.name: n for n in onnx.load(str(tmp_path / "q8.onnx")).graph.node}
    assert {"pts.2/Gemm", "pts.2.in1/Gemm", "pts.2/Add", "views.0/Gemm", "views.0.in1/Gemm"} <= set(nodes)
    assert not any(n.op_type == "Concat" and n.name.startswith(("skip", "views")) for n in nodes.values())
    layers = quantized_layers(tmp_path / "q8.onnx")
    assert {"pts.0", "pts.1", "pts.2", "pts.3", "feature", "views.0"} <= set(layers)
    quantize_int8(src, tmp_path / "ex.onnx", *cal, Int8Settings(exclude=("pts.2", "views.0")))
    assert not {"pts.2", "views.0"} & set(quantized_layers(tmp_path / "ex.onnx"))   # a split layer stays float whole
    for bad in (6, 9, "7"):
        with pytest.raises(QuantizationError):
            Int8Settings(weight_bits=bad).validate()


def test_kernels_match_the_float_simulation_on_real_rays(bundles):
    """The bundle's int8 networks on onnxruntime's kernels against the float simulation of the same
    QDQ graph, on the points rendering feeds them: within RGB_TOLERANCE (mean |rgb|) and
    DENSITY_TOLERANCE (mean relative density). The 7-bit cpu format holds on every x86 CPU."""
    gaps = check_bundle(bundles["cpu"], n_rays=64)
    assert {g.network for g in gaps} == {"coarse", "fine"}
    for g in gaps:
        assert g.points > 0 and g.ok, g.describe()
        assert g.rgb_mean <= RGB_TOLERANCE and g.density_rel <= DENSITY_TOLERANCE


def test_ray_points_are_what_rendering_feeds(bundles):
    b = open_bundle(bundles["cpu"])
    pts = ray_points(b, n_rays=32)
    s = b.manifest.scene
    assert pts["coarse"][0].shape == (32 * s.n_coarse, 3)
    assert pts["fine"][0].shape == (32 * (s.n_coarse + s.n_fine), 3)
    assert np.allclose(np.linalg.norm(pts["fine"][1], axis=1), 1.0, atol=1e-5)


def test_a_gap_beyond_the_tolerance_is_reported():
    rng = np.random.default_rng(0)
    rgb, dens = rng.uniform(0, 1, (100, 3)), rng.uniform(0, 5, (100, 1))
    assert outputs_of((rgb, dens), (rgb, dens)).ok
    bad = outputs_of((rgb + 0.02, dens), (rgb, dens))
    assert not bad.ok and "tolerance" in bad.describe()
    assert not outputs_of((rgb, dens * 1.1), (rgb, dens)).ok
    with pytest.raises(ValueError):
        network_gap(probe_network(), np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32))


def test_doctor_int8_rows():
    rows = int8_rows(points=1024)
    assert [r.item for r in rows] == [f"kernels {label}" for label, _, _ in INT8_FORMATS]
    cpu = rows[0]
    # 7-bit weights cannot saturate: this format agrees on every x86 CPU (the others may not where VNNI is missing)
    assert cpu.status == "agree", cpu.detail
    assert all(r.status in ("agree", "DIFFER") for r in rows)


def test_max_psnr_drop_scores_a_fixed_set_of_pixels_at_the_scenes_resolution(bundles):
    """The --max-psnr-drop check renders one fixed random set of test pixels (native resolution when
    the scene is loaded at it) rather than whole views: the same pixels for every bundle it compares."""
    from nerfexport.export.run import bundle_scorer
    score = bundle_scorer(bundles["scene"], views=1, pixels=64)
    a, b = score(bundles["cpu"]), score(bundles["cpu"])
    assert np.isfinite(a) and a == b
    whole = bundle_scorer(bundles["scene"], views=1, pixels=None)(bundles["cpu"])
    assert np.isfinite(whole) and abs(whole - a) < 6.0
