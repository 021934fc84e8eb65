"""TensorRT engines from a bundle's ONNX graphs (optional: ``pip install nerfexport[tensorrt]``).

Built with TensorRT's Python API: the ONNX parser, a *strongly typed* network, and one
optimization profile over the batch axis of the inputs the network really has (the
density-only coarse graph has no ``viewdirs``). Typing is decided by TensorRT's major version
(:func:`network_flags`): TensorRT 11 builds every network strongly typed (its
``STRONGLY_TYPED`` flag is deprecated and ignored, the ``FP16``/``INT8`` builder flags are
gone), TensorRT 10 is asked for it with ``STRONGLY_TYPED``; precision then comes from the graph
(fp16 tensors, or QDQ nodes for int8 explicit quantization). Only a TensorRT without strong
typing gets the ``FP16``/``INT8`` builder flags, each where the version still has it.

TF32 is cleared (``BuilderFlag.TF32``, on by default): the fp32 layers, all of an fp32 bundle,
run in fp32 as on the CPU.

An int8 bundle must be S8S8 (``export --int8 --target tensorrt``): onnx-tensorrt rejects the
CPU target's uint8 Q/DQ, and :func:`build_engines` refuses such a bundle in one line before
looking for TensorRT.

Without TensorRT or a CUDA GPU every entry point raises :class:`TensorRTUnavailable` with one
sentence; nothing is written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from nerfexport.data.fileio import sha256
from nerfexport.deploy.bundle import open_bundle
from nerfexport.deploy.manifest import FileEntry, Manifest
from nerfexport.export.quantize import QuantizationError, check_tensorrt_target
from nerfexport.deploy.runtime import RuntimeFailure, cuda_device_count

BATCH_MIN, BATCH_OPT, BATCH_MAX = 1, 65536, 262144


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA device is missing."""


def check_tensorrt(int8=None):
    """Import TensorRT and check for a CUDA device; returns the ``tensorrt`` module.

    ``int8``: the export's :class:`nerfexport.export.quantize.Int8Settings` when it is int8; settings
    TensorRT cannot run (``--target cpu``) are refused first, on any machine."""
    check_tensorrt_target(int8)
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable("TensorRT is not installed (pip install 'nerfexport[tensorrt]' on a machine "
                                  "with an NVIDIA GPU)") from None
    if cuda_device_count() == 0:
        raise TensorRTUnavailable("TensorRT is installed but no CUDA GPU is visible") from None
    return trt


def major_version(trt) -> int:
    try:
        return int(str(getattr(trt, "__version__", "0")).split(".")[0])
    except ValueError:
        return 0


def network_flags(trt) -> tuple[int, bool]:
    """``(create_network flags, strongly typed)`` for the installed TensorRT."""
    F = trt.NetworkDefinitionCreationFlag
    if major_version(trt) >= 11:
        return 0, True                                  # always strongly typed; the flag is deprecated
    if hasattr(F, "STRONGLY_TYPED"):
        return 1 << int(F.STRONGLY_TYPED), True         # TensorRT 10 (and 9.x): asked for
    if hasattr(F, "EXPLICIT_BATCH"):
        return 1 << int(F.EXPLICIT_BATCH), False        # older: weakly typed, explicit batch
    return 0, False


def build_engine(onnx_path: str | Path, precision: str, trt=None, workspace_gb: float = 2.0) -> bytes:
    """Serialize a TensorRT engine for one ONNX graph; returns the engine bytes."""
    trt = trt or check_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags, strongly_typed = network_flags(trt)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeFailure(f"TensorRT could not parse {onnx_path}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if not strongly_typed:  # weak typing only: precision from builder flags, where this version has them
        for name in {"fp16": ("FP16",), "int8": ("INT8", "FP16")}.get(precision, ()):
            flag = getattr(trt.BuilderFlag, name, None)
            if flag is not None:
                config.set_flag(flag)
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None:   # on by default: fp32 layers (the encoding's inputs, an fp32 bundle's Gemms) stay fp32
        config.clear_flag(tf32)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):   # the inputs the network has: no viewdirs in a density-only graph
        t = network.get_input(i)
        width = int(tuple(t.shape)[-1])
        profile.set_shape(t.name, (BATCH_MIN, width), (BATCH_OPT, width), (BATCH_MAX, width))
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeFailure(f"TensorRT failed to build an engine for {onnx_path}")
    return bytes(blob)


def check_bundle_for_tensorrt(b) -> None:
    """Refuse an int8 bundle with uint8 activations (U8S8, ``--target cpu``) in one line."""
    if b.u8s8:
        raise QuantizationError(f"bundle {b.root} is int8 for --target cpu (uint8 activations, U8S8), which "
                                "TensorRT cannot run; export it with --int8 --target tensorrt")


def build_engines(bundle_dir: str | Path) -> Manifest:
    """Add an engine per network to a bundle and record them (with hashes) in its manifest;
    returns the updated manifest."""
    b = open_bundle(bundle_dir)
    check_bundle_for_tensorrt(b)
    trt = check_tensorrt()
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
        engines[which] = FileEntry(dest.name, sha256(dest), dest.stat().st_size)
    man = b.manifest
    man.engines = engines
    man.tensorrt = {"version": trt.__version__, "profile": {"min": BATCH_MIN, "opt": BATCH_OPT, "max": BATCH_MAX},
                    "strongly_typed": network_flags(trt)[1], "tf32": False}
    man.write(b.root)
    return man
