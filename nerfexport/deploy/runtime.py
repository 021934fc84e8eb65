"""Runtimes: what evaluates a bundle's networks, defined by TOML files in ``runtimes/``.

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
sentence why a runtime cannot run here. The onnxruntime and TensorRT networks import neither
torch nor nerfexport's training code; only the ``torch`` runtime imports torch.

On GPUs (written against onnxruntime-gpu, TensorRT 10/11 and cuda-python, and checked on the
CPU with stand-ins in ``tests/test_gpu_construction.py``): a session that onnxruntime silently
put on another provider than the first asked for is refused (:func:`check_session_provider`);
:func:`provider_options` turns TF32 off for the CUDA provider, sets the TensorRT provider's
fp16/int8 switches from the bundle's precision and keys its engine cache on each network's
sha256; TensorRT sessions and engines take calls within their optimization profile
(:func:`trt_profile`, :class:`TensorRTNetwork`), which names only the inputs the graph has; a
U8S8 int8 bundle is refused for TensorRT (:func:`check_bundle`).
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KINDS = ("onnxruntime", "tensorrt", "torch")
KEYS = {"description", "kind", "providers", "provider_options", "threads", "graph_optimization", "chunk",
        "workers", "segment", "device", "precision", "encoding", "samples"}
ENCODINGS = ("graph", "host")


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
    kind: str
    description: str = ""
    providers: list[str] = field(default_factory=list)
    provider_options: dict[str, dict] = field(default_factory=dict)
    threads: int = 0
    graph_optimization: str = "all"
    chunk: int = 1024
    workers: int = 1
    segment: int = 32          # samples per ray marched at once with early termination
    device: str | int = "auto"
    precision: str = "fp32"
    encoding: str = "graph"    # onnxruntime: "host" computes the encodings' Sin/Cos in numpy (see OrtNetwork)
    samples: list[int] | None = None  # [coarse, fine] samples per ray instead of the bundle's (`nerfexport tune`)
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
    """A runtime by shipped name (``ort-cpu``) or by path to a TOML file."""
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
             "precision": str, "encoding": str, "samples": list}
    for k, v in doc.items():
        if not isinstance(v, types[k]) or isinstance(v, bool) and types[k] is int:
            raise RuntimeSpecError(f"{path}: {k} has the wrong type ({type(v).__name__})")
    if not all(isinstance(p, str) for p in doc.get("providers", [])) or not all(
            isinstance(o, dict) for o in doc.get("provider_options", {}).values()):
        raise RuntimeSpecError(f"{path}: providers must be a list of names and provider_options a table of tables")
    if doc.get("precision", "fp32") not in ("fp32", "bf16", "fp16") or doc.get("threads", 0) < 0:
        raise RuntimeSpecError(f"{path}: precision must be fp32, bf16 or fp16 and threads zero or more")
    _check_providers(doc, path, trusted)
    for k, hi in (("threads", 1024), ("workers", 1024), ("chunk", 1 << 20), ("segment", 4096)):
        if isinstance(doc.get(k), int) and doc[k] > hi:
            raise RuntimeSpecError(f"{path}: {k} must be at most {hi}, not {doc[k]}")
    spec = RuntimeSpec(name=path.stem, path=str(path), **{k: v for k, v in doc.items()})
    if not isinstance(spec.chunk, int) or spec.chunk < 1:
        raise RuntimeSpecError(f"{path}: chunk must be a positive integer")
    if not isinstance(spec.segment, int) or spec.segment < 1:
        raise RuntimeSpecError(f"{path}: segment must be a positive integer")
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
    """Raise :class:`RuntimeUnavailable` with one sentence when ``spec`` cannot run here."""
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
        # the torch baseline lives on the train side (nerfexport.model.torch_network); here only
        # whether it is installed, without importing it
        import importlib.util
        if importlib.util.find_spec("torch") is None:
            raise RuntimeUnavailable("runtime torch needs PyTorch (pip install 'nerfexport[train]')")


ENCODING_PREFIXES = {"encoding": "points", "view_encoding": "viewdirs"}   # node-name prefix -> raw graph input


def _prune_outputs(model, outputs: tuple[str, ...]) -> None:
    """Keep only the graph ``outputs`` of an ONNX ``model`` and the nodes, weights and inputs they
    need (in place): the density alone reads no ``viewdirs``, so that input goes too (a TensorRT
    profile naming an input the graph lacks makes the provider rebuild its engine every session;
    callers feed only the inputs the session has)."""
    g = model.graph
    missing = set(outputs) - {o.name for o in g.output}
    if missing:
        raise RuntimeSpecError(f"the graph has no output(s) {', '.join(sorted(missing))}")
    keep = [o for o in g.output if o.name in outputs]
    del g.output[:]
    g.output.extend(keep)
    needed, kept = set(outputs), []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            kept.append(n)
            needed.update(i for i in n.input if i)
    del g.node[:]
    g.node.extend(reversed(kept))
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    ins = [i for i in g.input if i.name in needed]
    del g.input[:]
    g.input.extend(ins)


def _cut_encodings(model) -> list[tuple[str, np.ndarray, str, str, np.dtype]]:
    """Cut the positional encodings' frequency scaling (``Tile``, ``Mul``), ``Sin`` and ``Cos`` out
    of a bundle graph (in place; :mod:`nerfexport.export.onnx_graph` names them ``{prefix}/tile``,
    ``{prefix}/scaled``, ``{prefix}/sin``, ``{prefix}/cos``, all fp32, an fp16 graph casting
    after them): their outputs become fp32 graph inputs. Returns, per encoding still in the
    graph, ``(raw input, scales (L,), sin input, cos input, float32)`` for the caller to compute
    ``sin`` and ``cos`` of ``raw @ F``, ``F = [scales[0] I, scales[1] I, ...]``."""
    from onnx import TensorProto, helper, numpy_helper
    g = model.graph
    nodes = {n.name: n for n in g.node}
    inits = {t.name: t for t in g.initializer}
    cuts = []
    for prefix, raw in ENCODING_PREFIXES.items():
        tl, mul, sn, cn = (nodes.get(f"{prefix}/{k}") for k in ("tile", "scaled", "sin", "cos"))
        if tl is None and mul is None and sn is None and cn is None:
            continue   # no such encoding (no view directions, or pruned away)
        if (None in (tl, mul, sn, cn) or tl.op_type != "Tile" or mul.op_type != "Mul" or list(tl.input[:1]) != [raw]
                or len(tl.input) != 2 or tl.input[1] not in inits or len(mul.input) != 2
                or mul.input[0] != tl.output[0] or mul.input[1] not in inits
                or list(sn.input) != [mul.output[0]] or list(cn.input) != [mul.output[0]]
                or sn.op_type != "Sin" or cn.op_type != "Cos"):
            raise RuntimeSpecError(f"the graph's {prefix} is not the form nerfexport exports; "
                                   "use encoding = \"graph\"")
        if sum(mul.output[0] in n.input for n in g.node) != 2 or sum(tl.output[0] in n.input for n in g.node) != 1:
            raise RuntimeSpecError(f"the graph's {prefix}/scaled feeds more than Sin and Cos; use encoding = \"graph\"")
        reps = numpy_helper.to_array(inits[tl.input[1]])
        freqs = numpy_helper.to_array(inits[mul.input[1]])
        L = freqs.size // 3
        # f = [2^0, 2^0, 2^0, 2^1, ...] as exported: column 3k + d is 2^k x_d, one multiply by a power
        # of two (exact); numpy's matmul would call BLAS, whose own threads fight the workers'
        scales = freqs.reshape(-1)[0::3].astype(np.float32) if L else np.zeros(0, np.float32)
        if (freqs.dtype != np.float32 or freqs.size != 3 * L or reps.tolist() != [1, L]
                or not np.array_equal(freqs.reshape(-1), np.repeat(scales, 3))):
            raise RuntimeSpecError(f"the graph's {prefix} frequencies are not nerfexport's; use encoding = \"graph\"")
        for n in (tl, mul, sn, cn):
            g.node.remove(n)
        for name in (tl.input[1], mul.input[1]):
            if not any(name in n.input for n in g.node):
                g.initializer.remove(inits[name])
        for name in (sn.output[0], cn.output[0]):
            g.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3 * L]))
        cuts.append((raw, scales, sn.output[0], cn.output[0], np.dtype(np.float32)))
    return cuts


def check_session_provider(session, asked: str) -> None:
    """onnxruntime lists a provider as available even where it cannot start (its CUDA, cuDNN or
    TensorRT libraries missing) and then runs the session on the next one: refuse that in one
    line instead of rendering on the CPU under a GPU runtime's name."""
    got = list(session.get_providers() or [])
    if not got or got[0] != asked:
        raise RuntimeUnavailable(f"onnxruntime was asked for {asked} but the session runs on "
                                 f"{got[0] if got else 'no provider'}: {asked} is installed but did not start "
                                 "(its CUDA, cuDNN or TensorRT libraries did not load; onnxruntime's warnings say which)")


TRT_PROFILE_KEYS = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
TRT_PROFILE_ROWS = (1, 65536, 262144)   # min, opt, max rows per call when a runtime file names none


def _profile_rows(key: str, text, default: int) -> int:
    """The rows a ``name:ROWSxWIDTH,...`` profile string gives (the fewest over its entries)."""
    if text is None or str(text).strip() == "":
        return default
    rows = []
    for entry in str(text).split(","):
        dims = entry.strip().rpartition(":")[2]
        try:
            rows.append(int(dims.split("x")[0]))
        except ValueError:
            raise RuntimeSpecError(f"{key} must look like points:65536x3,viewdirs:65536x3, not {text!r}") from None
    return min(rows)


def trt_profile(options: dict, inputs: dict[str, int]) -> tuple[dict, int]:
    """The TensorRT provider's ``options`` with its profile shapes written for the session graph's
    own ``inputs`` (name -> width), every one of them and no other (the provider needs a shape
    for each dynamic input, and rebuilds its engine at every session when the profile names an
    input the graph lacks); the rows come from the runtime file's shapes (or 1/65536/262144).
    Returns ``(options, max rows per call)``."""
    lo, opt, hi = (_profile_rows(k, options.get(k), d) for k, d in zip(TRT_PROFILE_KEYS, TRT_PROFILE_ROWS))
    if not options.get(TRT_PROFILE_KEYS[1]):
        opt = max(lo, min(opt, hi))   # a file giving only a smaller maximum: optimise for it
    rows = (lo, opt, hi)
    if not 1 <= rows[0] <= rows[1] <= rows[2]:
        raise RuntimeSpecError(f"the TensorRT profile needs 1 <= min <= opt <= max rows, not {rows}")
    out = dict(options)
    for key, n in zip(TRT_PROFILE_KEYS, rows):
        out[key] = ",".join(f"{name}:{n}x{width}" for name, width in inputs.items())
    return out, rows[2]


def _graph_inputs(model) -> dict[str, int]:
    """name -> width of a graph's (N, width) inputs."""
    out = {}
    for i in model.graph.input:
        dims = i.type.tensor_type.shape.dim
        out[i.name] = int(dims[-1].dim_value) if dims and dims[-1].dim_value else 3
    return out


def _concat_calls(parts: list) -> tuple[np.ndarray | None, np.ndarray]:
    rgb = None if parts[0][0] is None else np.concatenate([p[0] for p in parts])
    return rgb, np.concatenate([p[1] for p in parts])


class OrtNetwork:
    """An ONNX network in an onnxruntime session: ``(points (N,3), viewdirs (N,3)) -> (rgb, density)``.

    ``encoding="host"`` cuts the positional encodings' ``Sin``/``Cos`` out of the graph and
    computes them here in numpy (``sin(x @ F)``, ``cos(x @ F)``, ``F`` read from the graph):
    onnxruntime's CPU ``Sin``/``Cos`` are scalar (about 2 ns an element), numpy's are vectorised
    (about 0.4 ns on AVX-512). The bundle is unchanged; only the session's copy of the graph is.

    ``outputs=("density",)`` keeps only the density and the nodes it needs (the colour branch
    and the view-direction encoding go): a coarse network whose colour the renderer never reads
    (a bundle with a fine network). The call then returns ``(None, density)``.

    The session must run on the first of ``providers`` (:func:`check_session_provider`). With the
    TensorRT provider the profile shapes name the session graph's own inputs
    (:func:`trt_profile`) and a call larger than the profile's maximum is split into calls within
    it (``max_batch``).
    """

    def __init__(self, path: str | Path, providers: list | None = None, threads: int | None = None,
                 opt_level: str = "all", provider_options: dict | None = None, encoding: str = "graph",
                 outputs: tuple[str, ...] = ("rgb", "density")) -> None:
        import onnxruntime as ort
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        if opt_level not in levels:
            raise RuntimeSpecError(f"graph_optimization must be one of {', '.join(levels)}")
        if encoding not in ENCODINGS:
            raise RuntimeSpecError(f"encoding must be one of {', '.join(ENCODINGS)}")
        if tuple(outputs) not in (("rgb", "density"), ("density",)):
            raise RuntimeSpecError(f"outputs must be ('rgb', 'density') or ('density',), not {tuple(outputs)}")
        so.graph_optimization_level = levels[opt_level]
        providers = list(providers or ["CPUExecutionProvider"])
        raw_opts = []
        for p in providers:
            o = dict((provider_options or {}).get(p, {}))
            if "trt_engine_cache_path" in o:
                o["trt_engine_cache_path"] = os.path.expanduser(str(o["trt_engine_cache_path"]))
                os.makedirs(o["trt_engine_cache_path"], exist_ok=True)
            raw_opts.append(o)
        strings = lambda: [{k: ("True" if v else "False") if isinstance(v, bool) else str(v) for k, v in o.items()}
                           for o in raw_opts]
        self.outputs = tuple(outputs)
        self.host_encodings: list = []
        self.max_batch: int | None = None
        source: str | bytes = str(path)
        trt = "TensorrtExecutionProvider" in providers
        if encoding == "host" or self.outputs == ("density",) or trt:
            import onnx
            model = onnx.load(str(path))
            if self.outputs == ("density",):
                _prune_outputs(model, self.outputs)
            if encoding == "host":
                self.host_encodings = _cut_encodings(model)
            if encoding == "host" or self.outputs == ("density",):
                source = model.SerializeToString()
            if trt:
                i = providers.index("TensorrtExecutionProvider")
                raw_opts[i], self.max_batch = trt_profile(raw_opts[i], _graph_inputs(model))
        self.session = ort.InferenceSession(source, so, providers=providers, provider_options=strings())
        check_session_provider(self.session, providers[0])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.path = Path(path)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, points: np.ndarray, viewdirs: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        n, m = points.shape[0], self.max_batch
        if m is None or 1 <= n <= m:
            return self._run(points, viewdirs)
        if n == 0:   # below the profile's minimum: nothing to evaluate
            return (None if "rgb" not in self.outputs else np.zeros((0, 3), np.float32)), np.zeros((0, 1), np.float32)
        return _concat_calls([self._run(points[a:a + m], viewdirs[a:a + m]) for a in range(0, n, m)])

    def _run(self, points: np.ndarray, viewdirs: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        raw = {"points": points, "viewdirs": viewdirs}
        feeds = {k: v for k, v in raw.items() if k in self.inputs}
        for name, scales, sin_name, cos_name, dtype in self.host_encodings:
            x = raw[name]
            xf = (x[:, None, :] * scales[None, :, None]).reshape(x.shape[0], -1)   # (N, 3L), exact
            feeds[sin_name] = np.sin(xf).astype(dtype, copy=False)
            feeds[cos_name] = np.cos(xf).astype(dtype, copy=False)
        out = self.session.run(list(self.outputs), feeds)
        if "rgb" not in self.outputs:
            return None, out[0]
        return out[0], out[1]


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart   # cuda-python 12.6+ and 13
    except ImportError:
        try:
            from cuda import cudart                     # cuda-python before 12.6
        except ImportError:
            raise RuntimeUnavailable("runtime tensorrt needs NVIDIA's cuda-python for device memory "
                                     "(pip install 'nerfexport[tensorrt]')") from None
    return cudart


class TensorRTNetwork:
    """A serialized TensorRT engine (TensorRT 10/11 named-tensor API). Device memory and copies go
    through NVIDIA's ``cuda-python`` (``cuda.bindings.runtime`` or ``cuda.cudart``), so this path
    needs no torch.

    The engine's own I/O tensors are bound (a density-only engine has no ``viewdirs``), and a
    call is cut into slices within its optimization profile (0), whose row range is read from
    the engine; a shape the context refuses raises instead of running on stale rows. One lock
    guards the context, the stream and the buffers (a renderer with several workers calls from
    several threads), and each call first makes ``device`` current in the calling thread.
    Copies go through pinned host buffers (``cudaMallocHost``); :meth:`close` (or garbage
    collection) frees them, the device buffers and the stream.

    ``trt`` and ``cudart`` default to the installed modules (tests pass stand-ins)."""

    def __init__(self, engine_path: str | Path, device: int = 0, trt=None, cudart=None) -> None:
        if trt is None:
            import tensorrt as trt
        self.trt, self.cudart = trt, cudart if cudart is not None else _import_cudart()
        self.device = int(device)
        self._lock = threading.Lock()
        self._closed = False
        self.buffers: dict[str, int] = {}   # device memory per I/O tensor
        self._host: dict[str, int] = {}     # pinned host memory per I/O tensor
        self.capacity, self.stream, self.context = 0, None, None
        self._check(self.cudart.cudaSetDevice(self.device))
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeUnavailable(f"TensorRT could not load {engine_path} (built by another TensorRT version "
                                     "or for another GPU?)")
        e = self.engine
        names = [e.get_tensor_name(i) for i in range(e.num_io_tensors)]
        self.inputs = [n for n in names if e.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        if not set(self.inputs) <= {"points", "viewdirs"} or "points" not in self.inputs or "density" not in self.outputs:
            raise RuntimeUnavailable(f"{engine_path} is not a nerfexport engine (inputs {self.inputs}, "
                                     f"outputs {self.outputs})")
        for n in names:
            if e.get_tensor_dtype(n) != trt.DataType.FLOAT:
                raise RuntimeUnavailable(f"{engine_path}: tensor {n} is {e.get_tensor_dtype(n)}, not float32")
        self.widths = {n: int(tuple(e.get_tensor_shape(n))[-1]) for n in names}
        lo, hi = 1, None
        for n in self.inputs:
            mn, _opt, mx = (tuple(d) for d in e.get_tensor_profile_shape(n, 0))
            lo, hi = max(lo, int(mn[0])), int(mx[0]) if hi is None else min(hi, int(mx[0]))
        self.min_batch, self.max_batch = lo, hi
        if hi is None or hi < lo:
            raise RuntimeUnavailable(f"{engine_path}: the engine's optimization profile takes no batch ({lo}..{hi})")
        self.context = e.create_execution_context()
        if self.context is None:
            raise RuntimeFailure(f"TensorRT could not create an execution context for {engine_path}")
        self.stream = self._check(self.cudart.cudaStreamCreate())

    @staticmethod
    def _check(res):
        err, *rest = res if isinstance(res, tuple) else (res,)
        if int(err) != 0:
            raise RuntimeFailure(f"CUDA error {err}")
        return rest[0] if rest else None

    def _free_buffers(self) -> None:
        cudart = self.cudart
        for ptr in self.buffers.values():
            cudart.cudaFree(ptr)
        for ptr in self._host.values():
            cudart.cudaFreeHost(ptr)
        self.buffers, self._host, self.capacity = {}, {}, 0

    def _ensure(self, n: int) -> None:
        if n <= self.capacity:
            return
        self._free_buffers()
        cap = max(n, min(1024, self.max_batch))
        for name, w in self.widths.items():
            self.buffers[name] = self._check(self.cudart.cudaMalloc(cap * w * 4))
            self._host[name] = self._check(self.cudart.cudaMallocHost(cap * w * 4))
        self.capacity = cap

    def _pinned(self, name: str, rows: int) -> np.ndarray:
        import ctypes
        w = self.widths[name]
        return np.ctypeslib.as_array((ctypes.c_float * (rows * w)).from_address(int(self._host[name]))).reshape(rows, w)

    def __call__(self, points: np.ndarray, viewdirs: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        n = points.shape[0]
        feeds = {"points": points, "viewdirs": viewdirs}
        out = {name: np.empty((n, self.widths[name]), np.float32) for name in self.outputs}
        with self._lock:
            if self._closed:
                raise RuntimeFailure("this TensorRT network was closed")
            self._check(self.cudart.cudaSetDevice(self.device))   # the calling thread's current device
            step = self.max_batch
            for a in range(0, n, step):
                b = min(n, a + step)
                self._run({k: feeds[k][a:b] for k in self.inputs}, {k: v[a:b] for k, v in out.items()}, b - a)
        return out.get("rgb"), out["density"]

    def _run(self, feeds: dict, outs: dict, m: int) -> None:
        cudart, ctx = self.cudart, self.context
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ensure(m)
        for name, a in feeds.items():
            host = self._pinned(name, m)
            np.copyto(host, a, casting="same_kind")
            self._check(cudart.cudaMemcpyAsync(self.buffers[name], host.ctypes.data, host.nbytes, h2d, self.stream))
            if not ctx.set_input_shape(name, (m, self.widths[name])):
                raise RuntimeFailure(f"TensorRT refused input shape ({m}, {self.widths[name]}) for {name}; the engine's "
                                   f"profile takes {self.min_batch} to {self.max_batch} rows")
        for name, ptr in self.buffers.items():
            if not ctx.set_tensor_address(name, int(ptr)):
                raise RuntimeFailure(f"TensorRT refused the address of {name}")
        if not ctx.execute_async_v3(int(self.stream)):
            raise RuntimeFailure("TensorRT execution failed")
        for name in outs:
            host = self._pinned(name, m)
            self._check(cudart.cudaMemcpyAsync(host.ctypes.data, self.buffers[name], host.nbytes, d2h, self.stream))
        self._check(cudart.cudaStreamSynchronize(self.stream))
        for name, a in outs.items():
            np.copyto(a, self._pinned(name, m))

    def close(self) -> None:
        """Free the device and pinned buffers and the stream (idempotent)."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.cudart.cudaSetDevice(self.device)
                self._free_buffers()
                if self.stream is not None:
                    self.cudart.cudaStreamDestroy(self.stream)
            finally:
                self.stream, self.context, self.engine = None, None, None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


TRT_CACHE = "~/.cache/nerfexport/ort-trt"


def runs_on_tensorrt(spec: RuntimeSpec) -> bool:
    return spec.kind == "tensorrt" or (spec.kind == "onnxruntime" and spec.providers[:1] == ["TensorrtExecutionProvider"])


def check_bundle(spec: RuntimeSpec, bundle) -> None:
    """Raise :class:`IncompatibleBundle` in one line for a bundle ``spec`` cannot run: an int8
    bundle with uint8 activations (U8S8, ``--target cpu``) on TensorRT, whose ONNX parser
    rejects UINT8 Q/DQ."""
    if runs_on_tensorrt(spec) and bundle.u8s8:
        raise IncompatibleBundle(f"bundle {bundle.root} is int8 for --target cpu (uint8 activations, U8S8), which "
                                 f"runtime {spec.name} (TensorRT) cannot run; export it with --int8 --target tensorrt")


def provider_options(spec: RuntimeSpec, bundle, which: str, density_only: bool = False) -> dict[str, dict]:
    """The provider options of one network's session: the runtime file's, with

    * ``use_tf32 = 0`` for the CUDA provider unless the file says otherwise (TF32 rounds fp32
      GEMM inputs to 10 mantissa bits);
    * the TensorRT provider's ``trt_fp16_enable`` / ``trt_int8_enable`` from the bundle's
      precision (an fp32 bundle runs in fp32, an fp16 one may use fp16 kernels, an int8 one its
      QDQ nodes) unless the file sets them;
    * its engine cache in a folder per network file, named by the file's sha256 from the
      manifest (onnxruntime keys cached engines on graph and tensor names, which every bundle's
      ``coarse.onnx`` shares, not on weights)."""
    opts = {p: dict(o) for p, o in (spec.provider_options or {}).items()}
    if "CUDAExecutionProvider" in spec.providers:
        opts.setdefault("CUDAExecutionProvider", {}).setdefault("use_tf32", 0)
    if "TensorrtExecutionProvider" in spec.providers:
        t = opts.setdefault("TensorrtExecutionProvider", {})
        t.setdefault("trt_fp16_enable", bundle.precision == "fp16")
        t.setdefault("trt_int8_enable", bundle.precision == "int8")
        if str(t.get("trt_engine_cache_enable", False)).lower() in ("true", "1"):
            sha = bundle.manifest.networks[which].sha256
            base = Path(os.path.expanduser(str(t.get("trt_engine_cache_path", TRT_CACHE))))
            t["trt_engine_cache_path"] = str(base / (sha[:16] + ("-density" if density_only else "")))
    return opts


def render_settings(spec: RuntimeSpec, manifest):
    """The renderer's scene settings for a bundle's ``manifest`` on ``spec``: the bundle's bounds
    and sample counts, or the runtime file's ``samples`` when it names them."""
    from nerfexport.deploy.render import SceneSettings
    s = SceneSettings.from_manifest(manifest)
    if spec.samples:
        s.n_coarse, s.n_fine = int(spec.samples[0]), int(spec.samples[1])
    return s


def make_networks(spec: RuntimeSpec, bundle=None, n_fine: int | None = None) -> dict:
    """``{"coarse": net, "fine": net | None}`` for a bundle on onnxruntime or TensorRT (the torch
    baseline renders a checkpoint: :func:`nerfexport.model.torch_network.torch_networks`). ``n_fine``: the fine samples per ray the renderer will take (the
    bundle's own when ``None``); with a fine network and ``n_fine > 0`` an onnxruntime coarse
    network computes its density alone. A bundle the runtime cannot run is refused first
    (:func:`check_bundle`)."""
    if bundle is not None:
        check_bundle(spec, bundle)
    check_available(spec)
    if spec.kind == "torch":
        raise RuntimeSpecError("the torch runtime renders a checkpoint (model.pt), not a bundle")
    if bundle is None:
        raise RuntimeSpecError(f"runtime {spec.name} renders a bundle (nerfexport export), not a checkpoint")
    if spec.kind == "tensorrt":
        out = {}
        for w in ("coarse", "fine"):
            if bundle.network_path(w) is None:
                out[w] = None
                continue
            eng = bundle.engine_path(w)
            if eng is None:
                raise RuntimeUnavailable(f"bundle {bundle.root} has no TensorRT engines (export it with --tensorrt)")
            out[w] = TensorRTNetwork(eng, int(spec.device) if str(spec.device).isdigit() else 0)
        return out
    # with a fine network the renderer reads only the coarse network's density (its colour is never
    # composited), so the coarse session computes the density alone
    if n_fine is None:
        n_fine = spec.samples[1] if spec.samples else bundle.manifest.scene.n_fine
    density_only = bundle.network_path("fine") is not None and n_fine > 0
    out = {}
    for w in ("coarse", "fine"):
        if not bundle.network_path(w):
            out[w] = None
            continue
        only = w == "coarse" and density_only
        out[w] = OrtNetwork(bundle.network_path(w), spec.providers, spec.threads, spec.graph_optimization,
                            provider_options(spec, bundle, w, only), encoding=spec.encoding,
                            outputs=("density",) if only else ("rgb", "density"))
    return out
