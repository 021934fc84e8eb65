"""CUDA paths: skipped on machines without an NVIDIA GPU (the reason names what is missing)."""

import importlib.util

import numpy as np
import pytest
import torch

from conftest import tiny_config
from nerfexport.deploy.runtime import cuda_device_count

HAS_GPU = cuda_device_count() > 0
HAS_TRT = importlib.util.find_spec("tensorrt") is not None
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU visible (libcuda / device missing)")
needs_trt = pytest.mark.skipif(not (HAS_GPU and HAS_TRT), reason="TensorRT and a CUDA GPU are both needed")


def _ort_has(provider):
    import onnxruntime as ort
    return provider in ort.get_available_providers()


@needs_gpu
def test_torch_training_step_on_cuda(blender_dir):
    from nerfexport.data.datasets import load_scene
    from nerfexport.train.loop import TrainConfig, new_model, train
    scene = load_scene(blender_dir)
    model = new_model(scene, width=16, depth=3, n_coarse=8, n_fine=8)
    res = train(model, scene, TrainConfig(steps=5, batch_rays=32, n_coarse=8, n_fine=8, device="cuda"))
    assert res.steps == 5 and next(model.parameters()).is_cuda


@needs_gpu
@pytest.mark.skipif(not _ort_has("CUDAExecutionProvider"), reason="onnxruntime-gpu (CUDAExecutionProvider) missing")
def test_ort_cuda_matches_cpu(tmp_path):
    from nerfexport.deploy.bundle import open_bundle
    from nerfexport.export.bundle_writer import ExportOptions, export_bundle
    from nerfexport.model.mlp import NeRF
    from nerfexport.deploy.runtime import OrtNetwork
    torch.manual_seed(0)
    export_bundle(NeRF(tiny_config(width=32)), tmp_path / "b", ExportOptions())
    p = open_bundle(tmp_path / "b").network_path("fine")
    pts = np.random.default_rng(0).uniform(-1, 1, (1000, 3)).astype(np.float32)
    d = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    a = OrtNetwork(p)(pts, d)
    b = OrtNetwork(p, ["CUDAExecutionProvider"])(pts, d)
    assert np.abs(a[0] - b[0]).max() < 1e-3


@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engines_build_and_run(tmp_path, blender_dir, precision):
    from nerfexport.deploy.bundle import open_bundle
    from nerfexport.shrink.calibration import draw_samples
    from nerfexport.data.datasets import load_scene
    from nerfexport.export.bundle_writer import ExportOptions, export_bundle
    from nerfexport.model.mlp import NeRF
    from nerfexport.export.quantize import Int8Settings
    from nerfexport.deploy.runtime import OrtNetwork, TensorRTNetwork
    torch.manual_seed(0)
    model = NeRF(tiny_config(width=32))
    cal = draw_samples(model, load_scene(blender_dir), n_rays=64) if precision == "int8" else None
    opts = ExportOptions(precision=precision, int8=Int8Settings(target="tensorrt"), tensorrt=True)
    man = export_bundle(model, tmp_path / "b", opts, calib=cal)
    assert set(man["tensorrt"]["engines"]) == {"coarse", "fine"}
    b = open_bundle(tmp_path / "b")
    pts = np.random.default_rng(0).uniform(-1, 1, (4096, 3)).astype(np.float32)
    d = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    ref = OrtNetwork(b.network_path("fine"))(pts, d)
    out = TensorRTNetwork(b.engine_path("fine"))(pts, d)
    assert np.abs(out[0] - ref[0]).max() < (1e-3 if precision == "fp32" else 5e-2)
