"""TensorRT engines from a bundle's ONNX graphs (optional: ``pip install nerfexport[tensorrt]``).

Built with TensorRT's Python API: the ONNX parser, a *strongly typed* network where the
installed version offers it (TensorRT 10 has it; TensorRT 11 removed the INT8/FP16 builder
flags, so precision must come from the graph: fp16 tensors, or QDQ nodes for int8 explicit
quantization), and one optimization profile over the batch axis. On TensorRT versions without
strong typing the FP16/INT8 flags are set from the bundle's precision.

Without TensorRT or a CUDA GPU every entry point raises :class:`TensorRTUnavailable` with one
sentence; nothing is written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from nerfexport.deploy.bundle import MANIFEST, open_bundle, sha256
from nerfexport.deploy.runtime import cuda_device_count

BATCH_MIN, BATCH_OPT, BATCH_MAX = 1, 65536, 262144


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA device is missing."""


def check_tensorrt():
    """Import TensorRT and check for a CUDA device; returns the ``tensorrt`` module."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable("TensorRT is not installed (pip install 'nerfexport[tensorrt]' on a machine "
                                  "with an NVIDIA GPU)") from None
    if cuda_device_count() == 0:
        raise TensorRTUnavailable("TensorRT is installed but no CUDA GPU is visible") from None
    return trt


def build_engine(onnx_path: str | Path, precision: str, trt=None, workspace_gb: float = 2.0) -> bytes:
    """Serialize a TensorRT engine for one ONNX graph; returns the engine bytes."""
    trt = trt or check_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if not strongly_typed:  # older TensorRT: precision from builder flags
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name in ("points", "viewdirs"):
        profile.set_shape(name, (BATCH_MIN, 3), (BATCH_OPT, 3), (BATCH_MAX, 3))
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path}")
    return bytes(blob)


def build_engines(bundle_dir: str | Path) -> dict:
    """Add an engine per network to a bundle and record them (with hashes) in its manifest."""
    trt = check_tensorrt()
    b = open_bundle(bundle_dir)
    engines = {}
    for which in ("coarse", "fine"):
        p = b.network_path(which)
        if p is None:
            continue
        blob = build_engine(p, b.precision, trt)
        dest = b.root / f"{which}.engine"
        fd, tmp = tempfile.mkstemp(dir=b.root, prefix=f".{dest.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, dest)
        engines[which] = {"file": dest.name, "sha256": sha256(dest), "bytes": dest.stat().st_size}
    man = dict(b.manifest)
    man["tensorrt"] = {"version": trt.__version__, "engines": engines,
                       "profile": {"min": BATCH_MIN, "opt": BATCH_OPT, "max": BATCH_MAX},
                       "strongly_typed": hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")}
    fd, tmp = tempfile.mkstemp(dir=b.root, prefix=".manifest.")
    with os.fdopen(fd, "w") as f:
        json.dump(man, f, indent=1)
    os.replace(tmp, b.root / MANIFEST)
    return man["tensorrt"]
