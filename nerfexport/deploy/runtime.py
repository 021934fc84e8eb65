"""Runtimes: what evaluates a bundle's networks, defined by TOML files in ``runtimes/``: the
runtime file (:class:`RuntimeSpec`, :func:`load_runtime`) and whether it can run here
(:func:`check_available`, :func:`check_bundle`).

A runtime file names its ``kind`` and options::

    kind = "onnxruntime"                     # onnxruntime | tensorrt | torch
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    threads = 0                              # 0: the runtime's default
    graph_optimization = "all"
    chunk = 8192                             # rays per chunk (one network call per pass, or per segment)
    workers = 1                              # chunks rendered at once, in threads (0: one per core)
    segment = 32                             # samples per ray marched at once (early termination)
    encoding = "graph"                       # graph | host: who computes the encodings' sines and cosines
    [provider_options.CUDAExecutionProvider]
    device_id = 0

Shipped runtimes (``ort-cpu``, ``ort-cuda``, ``ort-trt``, ``tensorrt``, ``torch``,
``torch-bf16``) are found by name; a user's own file by path. ``check_available`` says in one
sentence why a runtime cannot run here.

Each kind is a family of networks behind one interface (:mod:`nerfexport.deploy.networks`):
onnxruntime sessions (:mod:`nerfexport.deploy.ort_network`, with the graph edits of
:mod:`nerfexport.deploy.graph_edits`), TensorRT engines (:mod:`nerfexport.deploy.trt_network`);
neither imports torch nor nerfexport's training code. Only the ``torch`` runtime imports torch,
and it lives on the train side (:mod:`nerfexport.train.torch_runtime`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal, get_args

Kind = Literal["onnxruntime", "tensorrt", "torch"]
Precision = Literal["fp32", "bf16", "fp16"]              # what the torch runtime computes in
GraphOptimization = Literal["disable", "basic", "extended", "all"]
Encoding = Literal["graph", "host"]                      # who computes the encodings' sines and cosines
KINDS: tuple[str, ...] = get_args(Kind)
PRECISIONS: tuple[str, ...] = get_args(Precision)
GRAPH_OPTIMIZATIONS: tuple[str, ...] = get_args(GraphOptimization)
ENCODINGS: tuple[str, ...] = get_args(Encoding)
KEYS = {"description", "kind", "providers", "provider_options", "threads", "graph_optimization", "chunk",
        "workers", "segment", "device", "precision", "encoding", "samples", "early_stop", "proposal_segment",
        "sampler", "proposal_softness", "proposal_spacing"}
Sampler = Literal["auto", "density", "network"]   # where the fine samples go (deploy.render.make_renderer)
SAMPLERS: tuple[str, ...] = get_args(Sampler)
SAMPLER_NAMES = SAMPLERS


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run on this machine (package, provider or device missing)."""


class RuntimeFailure(RuntimeError):
    """A runtime failed while loading or running a network (a CUDA or TensorRT error)."""


class RuntimeSpecError(ValueError):
    """The runtime definition is unusable."""


class IncompatibleBundle(RuntimeSpecError):
    """The bundle is not one this runtime can run (a U8S8 int8 bundle on TensorRT)."""


@dataclass
class RuntimeSpec:
    name: str
    kind: Kind
    description: str = ""
    providers: list[str] = field(default_factory=list)
    provider_options: dict[str, dict] = field(default_factory=dict)
    threads: int = 0
    graph_optimization: GraphOptimization = "all"
    chunk: int = 1024
    workers: int = 1
    segment: int = 32          # samples per ray marched at once with early termination
    device: str | int = "auto"
    precision: Precision = "fp32"
    encoding: Encoding = "graph"    # onnxruntime: "host" computes the encodings' Sin/Cos in numpy (see OrtNetwork)
    samples: list[int] | None = None  # [coarse, fine] samples per ray instead of the bundle's (`nerfexport tune`)
    early_stop: float | None = None   # the transmittance a ray stops at (None: the renderer's default)
    proposal_segment: int = 8         # the density sampler's fine samples marched at once
    sampler: str = "auto"             # where the fine samples go: auto | density | network (make_renderer)
    proposal_softness: float = 0.1    # the density sampler reads the baked density times this
    proposal_spacing: float = 1.0     # ... at depths this many density-grid cells apart along a ray
    path: str = ""

    @property
    def uses_cuda(self) -> bool:
        if self.kind == "tensorrt":
            return True
        if self.kind == "torch":
            return str(self.device) == "cuda"
        return any(p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in self.providers[:1])


def shipped_runtimes() -> dict[str, Path]:
    root = resources.files("nerfexport.runtimes")
    return {Path(str(p)).stem: Path(str(p)) for p in root.iterdir() if str(p).endswith(".toml")}


def load_runtime(ref: str | Path) -> RuntimeSpec:
    """Read a runtime file.

    Args:
        ref: a shipped name (``ort-cpu``; ``./ort-cpu`` for a file here) or the path of a TOML file.

    Returns:
        The checked :class:`RuntimeSpec` (``workers = 0`` resolved to the core count). Raises
        :class:`RuntimeSpecError` in one line for an unknown name or an unusable file.
    """
    from nerfexport.data.safety import UnsafeInput, load_toml
    path = Path(ref)
    shipped = shipped_runtimes()
    as_path = isinstance(ref, Path) or os.sep in str(ref) or path.suffix != ""
    if str(ref) in shipped and not as_path:   # a shipped name means the shipped file (./ort-cpu for a file here)
        path = shipped[str(ref)]
    elif not path.exists():
        if as_path:
            raise RuntimeSpecError(f"runtime file {ref} does not exist")
        raise RuntimeSpecError(f"unknown runtime {ref!r}; choose one of {', '.join(sorted(shipped))} "
                               "or give the path of a runtime TOML file")
    trusted = path in shipped.values()
    try:
        doc = load_toml(path, "runtime file", 1 << 20)
    except UnsafeInput as e:
        raise RuntimeSpecError(f"{path} is not a valid runtime file ({e})") from None
    unknown = sorted(set(doc) - KEYS)
    if unknown:
        raise RuntimeSpecError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(KEYS))})")
    if doc.get("kind") not in KINDS:
        raise RuntimeSpecError(f"{path}: kind must be one of {', '.join(KINDS)}")
    if doc["kind"] == "onnxruntime" and not doc.get("providers"):
        raise RuntimeSpecError(f"{path}: an onnxruntime runtime needs a providers list")
    types = {"description": str, "kind": str, "providers": list, "provider_options": dict, "threads": int,
             "graph_optimization": str, "chunk": int, "workers": int, "segment": int, "device": (str, int),
             "precision": str, "encoding": str, "samples": list, "early_stop": (float, int),
             "proposal_segment": int, "sampler": str, "proposal_softness": (float, int),
             "proposal_spacing": (float, int)}
    for k, v in doc.items():
        if not isinstance(v, types[k]) or isinstance(v, bool) and types[k] is int:
            raise RuntimeSpecError(f"{path}: {k} has the wrong type ({type(v).__name__})")
    if not all(isinstance(p, str) for p in doc.get("providers", [])) or not all(
            isinstance(o, dict) for o in doc.get("provider_options", {}).values()):
        raise RuntimeSpecError(f"{path}: providers must be a list of names and provider_options a table of tables")
    if doc.get("precision", "fp32") not in PRECISIONS or doc.get("threads", 0) < 0:
        raise RuntimeSpecError(f"{path}: precision must be fp32, bf16 or fp16 and threads zero or more")
    _check_providers(doc, path, trusted)
    for k, hi in (("threads", 1024), ("workers", 1024), ("chunk", 1 << 20), ("segment", 4096),
                  ("proposal_segment", 4096)):
        if isinstance(doc.get(k), int) and doc[k] > hi:
            raise RuntimeSpecError(f"{path}: {k} must be at most {hi}, not {doc[k]}")
    spec = RuntimeSpec(name=path.stem, path=str(path), **{k: v for k, v in doc.items()})
    if not isinstance(spec.chunk, int) or spec.chunk < 1:
        raise RuntimeSpecError(f"{path}: chunk must be a positive integer")
    if not isinstance(spec.segment, int) or spec.segment < 1:
        raise RuntimeSpecError(f"{path}: segment must be a positive integer")
    if spec.proposal_segment < 1:
        raise RuntimeSpecError(f"{path}: proposal_segment must be a positive integer")
    if spec.early_stop is not None and not 0.0 <= spec.early_stop < 1.0:
        raise RuntimeSpecError(f"{path}: early_stop is a transmittance in [0, 1), not {spec.early_stop}")
    if spec.sampler not in SAMPLER_NAMES:
        raise RuntimeSpecError(f"{path}: sampler must be one of {', '.join(SAMPLER_NAMES)}, not {spec.sampler!r}")
    if not 0.0 < spec.proposal_softness <= 100.0:
        raise RuntimeSpecError(f"{path}: proposal_softness must lie in (0, 100], not {spec.proposal_softness}")
    if not 0.25 <= spec.proposal_spacing <= 16.0:
        raise RuntimeSpecError(f"{path}: proposal_spacing must lie in [0.25, 16] cells, not {spec.proposal_spacing}")
    if not isinstance(spec.workers, int) or spec.workers < 0:
        raise RuntimeSpecError(f"{path}: workers must be 0 (one per core) or a positive integer")
    if spec.samples is not None:
        smp = spec.samples
        if (len(smp) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) for n in smp)
                or not (1 <= smp[0] <= 4096 and 0 <= smp[1] <= 4096) or (smp[1] > 0 and smp[0] < 3)):
            raise RuntimeSpecError(f"{path}: samples is [coarse, fine], at most 4096 each, and fine samples need "
                                   "at least 3 coarse ones")
    if spec.encoding not in ENCODINGS:
        raise RuntimeSpecError(f"{path}: encoding must be one of {', '.join(ENCODINGS)}")
    if spec.workers == 0:
        spec.workers = os.cpu_count() or 1
    return spec


# the execution providers nerfexport runs, and the options of each it passes on
PROVIDER_OPTIONS = {
    "CPUExecutionProvider": set(),
    "CUDAExecutionProvider": {"device_id", "use_tf32", "gpu_mem_limit", "arena_extend_strategy",
                              "cudnn_conv_algo_search", "do_copy_in_default_stream", "cudnn_conv_use_max_workspace",
                              "enable_cuda_graph", "prefer_nhwc", "tunable_op_enable", "tunable_op_tuning_enable"},
    "TensorrtExecutionProvider": {
        "device_id", "trt_max_workspace_size", "trt_fp16_enable", "trt_int8_enable", "trt_engine_cache_enable",
        "trt_engine_cache_path", "trt_engine_cache_prefix", "trt_timing_cache_enable", "trt_timing_cache_path",
        "trt_force_timing_cache", "trt_builder_optimization_level", "trt_auxiliary_streams",
        "trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes", "trt_max_partition_iterations",
        "trt_min_subgraph_size", "trt_detailed_build_log", "trt_build_heuristics_enable", "trt_sparsity_enable",
        "trt_context_memory_sharing_enable", "trt_layer_norm_fp32_fallback", "trt_cuda_graph_enable",
        "trt_force_sequential_engine_build"},
}
PATH_OPTIONS = {"trt_engine_cache_path", "trt_timing_cache_path"}   # confined to a user file's folder


def _check_providers(doc: dict, path: Path, trusted: bool) -> None:
    """Known providers and options only; a user file's path options stay inside its folder."""
    from nerfexport.data.fileio import OutsideFolder, confine
    for p in list(doc.get("providers", [])) + list(doc.get("provider_options", {})):
        if p not in PROVIDER_OPTIONS:
            raise RuntimeSpecError(f"{path}: unknown provider {p!r} (known: {', '.join(PROVIDER_OPTIONS)})")
    for p, opts in doc.get("provider_options", {}).items():
        unknown = sorted(set(opts) - PROVIDER_OPTIONS[p])
        if unknown:
            raise RuntimeSpecError(f"{path}: unknown {p} option(s) {', '.join(unknown)}")
        for k, v in opts.items():
            if not isinstance(v, (str, int, float, bool)):
                raise RuntimeSpecError(f"{path}: {p} option {k} must be a string, number or boolean")
            if k in PATH_OPTIONS and not trusted:
                try:
                    opts[k] = str(confine(path.parent, v, f"{p} option {k}"))
                except OutsideFolder as e:
                    raise RuntimeSpecError(str(e)) from None


def cuda_device_count() -> int:
    """CUDA devices visible through the driver (0 without a driver); imports nothing heavy."""
    try:
        import ctypes
        lib = ctypes.CDLL("libcuda.so.1")
        n = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(n)) != 0:
            return 0
        return n.value
    except OSError:
        return 0


def check_available(spec: RuntimeSpec) -> None:
    """Whether ``spec`` can run on this machine (its package, provider and GPU), without
    starting it.

    Args:
        spec: the runtime (:func:`load_runtime`).

    Returns:
        ``None``; raises :class:`RuntimeUnavailable` with one sentence when it cannot run here.
    """
    if spec.kind == "onnxruntime":
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeUnavailable("onnxruntime is not installed") from None
        have = ort.get_available_providers()
        first = spec.providers[0]
        if first not in have:
            raise RuntimeUnavailable(f"runtime {spec.name} needs {first}, but this onnxruntime offers only "
                                     f"{', '.join(have)} (install onnxruntime-gpu on a machine with an NVIDIA GPU)")
        if first in ("CUDAExecutionProvider", "TensorrtExecutionProvider") and cuda_device_count() == 0:
            raise RuntimeUnavailable(f"runtime {spec.name} needs a CUDA GPU and none is visible")
    elif spec.kind == "tensorrt":
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            raise RuntimeUnavailable("runtime tensorrt needs TensorRT (pip install 'nerfexport[tensorrt]') "
                                     "and an NVIDIA GPU") from None
        if cuda_device_count() == 0:
            raise RuntimeUnavailable("runtime tensorrt needs a CUDA GPU and none is visible")
    elif spec.kind == "torch":
        # the torch baseline lives on the train side (nerfexport.train.torch_runtime); here only
        # whether it is installed, without importing it
        import importlib.util
        if importlib.util.find_spec("torch") is None:
            raise RuntimeUnavailable("runtime torch needs PyTorch (pip install 'nerfexport[train]')")


def runs_on_tensorrt(spec: RuntimeSpec) -> bool:
    return spec.kind == "tensorrt" or (spec.kind == "onnxruntime" and spec.providers[:1] == ["TensorrtExecutionProvider"])


def check_bundle(spec: RuntimeSpec, bundle) -> None:
    """Raise :class:`IncompatibleBundle` in one line for a bundle ``spec`` cannot run: an int8
    bundle with uint8 activations (U8S8, ``--target cpu``) on TensorRT, whose ONNX parser
    rejects UINT8 Q/DQ."""
    if runs_on_tensorrt(spec) and bundle.u8s8:
        raise IncompatibleBundle(f"bundle {bundle.root} is int8 for --target cpu (uint8 activations, U8S8), which "
                                 f"runtime {spec.name} (TensorRT) cannot run; export it with --int8 --target tensorrt")
