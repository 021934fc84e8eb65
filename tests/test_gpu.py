"""CUDA paths: skipped on machines without an NVIDIA GPU (the reason names what is missing).

`make gpu-check` runs this file on a GPU machine (docs/scripts/gpu_check.py); the CPU-side
checks of the same code are in test_gpu_construction.py."""

import importlib.util
import threading

import numpy as np
import pytest
import torch

from conftest import tiny_config
from nerfexport.deploy.runtime import cuda_device_count

HAS_GPU = cuda_device_count() > 0
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _has_cuda_python() -> bool:
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except (ImportError, ValueError):
            pass
    return False


HAS_CUDA_PYTHON = _has_cuda_python()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU visible (libcuda / device missing)")
needs_torch_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                      reason=f"torch {torch.__version__} sees no CUDA device (CPU build or no GPU)")
needs_trt = pytest.mark.skipif(not (HAS_GPU and HAS_TRT and HAS_CUDA_PYTHON),
                               reason="TensorRT, cuda-python and a CUDA GPU are all needed "
                                      f"(tensorrt {'found' if HAS_TRT else 'missing'}, "
                                      f"cuda-python {'found' if HAS_CUDA_PYTHON else 'missing'}, "
                                      f"GPU {'found' if HAS_GPU else 'missing'})")


def _ort_has(provider):
    import onnxruntime as ort
    return provider in ort.get_available_providers()


def needs_provider(provider):
    import onnxruntime as ort
    return pytest.mark.skipif(not (HAS_GPU and _ort_has(provider)),
                              reason=f"onnxruntime-gpu's {provider} and a CUDA GPU are needed (this onnxruntime offers "
                                     f"{', '.join(ort.get_available_providers())}; GPU {'found' if HAS_GPU else 'missing'})")


def _points(n, seed=0):
    pts = np.random.default_rng(seed).uniform(-4, 4, (n, 3)).astype(np.float32)
    return pts, pts / np.linalg.norm(pts, axis=1, keepdims=True)


def _bundle(tmp_path, precision="fp32", tensorrt=False, blender_dir=None):
    from nerfexport.deploy.bundle import open_bundle
    from nerfexport.export.bundle_writer import ExportOptions, export_bundle
    from nerfexport.model.mlp import NeRF
    from nerfexport.export.quantize import Int8Settings
    torch.manual_seed(0)
    model = NeRF(tiny_config(width=32))
    cal = None
    if precision == "int8":
        from nerfexport.shrink.calibration import draw_samples
        from nerfexport.data.datasets import load_scene
        cal = draw_samples(model, load_scene(blender_dir), n_rays=64)
    out = tmp_path / f"b-{precision}"
    export_bundle(model, out, ExportOptions(precision=precision, int8=Int8Settings(target="tensorrt"),
                                            tensorrt=tensorrt), calib=cal)
    return open_bundle(out)


@needs_torch_cuda
def test_torch_training_step_on_cuda(blender_dir):
    from nerfexport.data.datasets import load_scene
    from nerfexport.train.factory import new_model
    from nerfexport.train.loop import TrainConfig, train
    scene = load_scene(blender_dir)
    model = new_model(scene, width=16, depth=3, n_coarse=8, n_fine=8)
    res = train(model, scene, TrainConfig(steps=5, batch_rays=32, n_coarse=8, n_fine=8, device="cuda"))
    assert res.steps == 5 and next(model.parameters()).is_cuda


@needs_torch_cuda
def test_torch_runtime_on_cuda_matches_cpu():
    from nerfexport.model.mlp import NeRF
    from nerfexport.train.torch_runtime import TorchNetwork
    torch.manual_seed(0)
    net = NeRF(tiny_config(width=32)).fine
    pts, d = _points(4096)
    a = TorchNetwork(net, "cpu")(pts, d)
    b = TorchNetwork(net, "cuda")(pts, d)
    assert np.abs(a[0] - b[0]).max() < 1e-3 and np.abs(a[1] - b[1]).max() < 1e-3 * max(1.0, float(a[1].max()))


@needs_provider("CUDAExecutionProvider")
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_ort_cuda_matches_cpu(tmp_path, precision, tol):
    from nerfexport.deploy.networks import make_networks
    from nerfexport.deploy.ort_network import OrtNetwork
    from nerfexport.deploy.runtime import load_runtime
    b = _bundle(tmp_path, precision)
    ref_b = _bundle(tmp_path / "ref")
    pts, d = _points(20000)
    ref = OrtNetwork(ref_b.network_path("fine"))(pts, d)
    nets = make_networks(load_runtime("ort-cuda"), bundle=b)
    assert nets["fine"].providers[0] == "CUDAExecutionProvider"   # no silent CPU fallback
    out = nets["fine"](pts, d)
    assert np.abs(out[0] - ref[0]).max() < tol
    assert nets["coarse"].inputs == {"points"}


@needs_provider("TensorrtExecutionProvider")
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 2e-2), ("int8", 5e-2)])
def test_ort_trt_matches_cpu_and_splits_calls_beyond_its_profile(tmp_path, monkeypatch, blender_dir, precision, tol):
    from nerfexport.deploy.networks import make_networks
    from nerfexport.deploy.ort_network import OrtNetwork
    from nerfexport.deploy.runtime import load_runtime
    monkeypatch.setenv("HOME", str(tmp_path))   # the engine cache under this test's folder
    b = _bundle(tmp_path, precision, blender_dir=blender_dir)
    spec = load_runtime("ort-trt")
    t = spec.provider_options["TensorrtExecutionProvider"]
    t.update(trt_profile_min_shapes="points:1x3", trt_profile_opt_shapes="points:2048x3",
             trt_profile_max_shapes="points:4096x3")
    nets = make_networks(spec, bundle=b)
    assert nets["fine"].providers[0] == "TensorrtExecutionProvider" and nets["fine"].max_batch == 4096
    pts, d = _points(10000)
    out = nets["fine"](pts, d)
    ref = OrtNetwork(b.network_path("fine"))(pts, d)
    assert out[0].shape == (10000, 3) and np.abs(out[0] - ref[0]).max() < tol
    # a second session finds its engine in the cache folder named by the network's sha256
    sha = b.manifest.networks["fine"].sha256[:16]
    assert any(p.is_file() for p in (tmp_path / ".cache" / "nerfexport" / "ort-trt" / sha).rglob("*"))


@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engines_build_and_run(tmp_path, blender_dir, precision):
    from nerfexport.deploy.ort_network import OrtNetwork
    from nerfexport.deploy.trt_network import TensorRTNetwork
    b = _bundle(tmp_path, precision, tensorrt=True, blender_dir=blender_dir)
    assert set(b.manifest.engines) == {"coarse", "fine"} and b.manifest.tensorrt["strongly_typed"]
    pts, d = _points(4096)
    ref = OrtNetwork(b.network_path("fine"))(pts, d)
    net = TensorRTNetwork(b.engine_path("fine"))
    try:
        out = net(pts, d)
        assert np.abs(out[0] - ref[0]).max() < (1e-3 if precision == "fp32" else 5e-2)
    finally:
        net.close()


@needs_trt
def test_tensorrt_network_splits_calls_beyond_the_profile_and_serves_threads(tmp_path):
    from nerfexport.deploy.ort_network import OrtNetwork
    from nerfexport.deploy.trt_network import TensorRTNetwork
    from nerfexport.export.tensorrt import BATCH_MAX
    b = _bundle(tmp_path, "fp32", tensorrt=True)
    net = TensorRTNetwork(b.engine_path("fine"))
    assert net.max_batch == BATCH_MAX
    pts, d = _points(BATCH_MAX + 1000)
    ref = OrtNetwork(b.network_path("fine"))(pts, d)
    out = net(pts, d)
    assert np.abs(out[0] - ref[0]).max() < 1e-3 and np.abs(out[1][-1000:] - ref[1][-1000:]).max() < 1e-2
    results, errors = [], []

    def work(k):
        try:
            p, v = _points(5000, seed=k)
            results.append(np.abs(net(p, v)[0] - OrtNetwork(b.network_path("fine"))(p, v)[0]).max())
        except Exception as e:   # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    net.close()
    assert not errors and len(results) == 3 and max(results) < 1e-3


@needs_gpu
def test_doctor_names_the_provider_each_available_gpu_runtime_got():
    from nerfexport.bench.doctor import diagnose
    rows = {r.item: r for r in diagnose() if r.section == "runtime"}
    for name, provider in (("ort-cuda", "CUDAExecutionProvider"), ("ort-trt", "TensorrtExecutionProvider")):
        if rows[name].status.startswith("available"):
            assert rows[name].status == "available, ran" and provider in rows[name].detail, rows[name]
