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
    kernel = "auto"                          # graph | fused | auto: an int8 network as one fused kernel
    [provider_options.CUDAExecutionProvider]
    device_id = 0

Shipped runtimes (``ort-cpu``, ``ort-cuda``, ``ort-trt``, ``tensorrt``, ``torch``,
``torch-bf16``) are found by name; a user's own file by path. ``check_available`` says in one
sentence why a runtime cannot run here. The onnxruntime and TensorRT networks import neither
torch nor nerfexport's training code; only the ``torch`` runtime imports torch.
"""

from __future__ import annotations

import os
import sys
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
        "workers", "segment", "device", "precision", "encoding", "kernel"}
ENCODINGS = ("graph", "host")
KERNELS = ("graph", "fused", "auto")


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run on this machine (package, provider or device missing)."""


class RuntimeSpecError(ValueError):
    """The runtime definition is unusable."""


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
    kernel: str = "graph"      # onnxruntime on the CPU: "fused"/"auto" run an int8 network as one kernel (fused.py)
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
    path = Path(ref)
    if not path.is_file():
        shipped = shipped_runtimes()
        if str(ref) in shipped:
            path = shipped[str(ref)]
        else:
            raise RuntimeSpecError(f"unknown runtime {ref!r}; choose one of {', '.join(sorted(shipped))} "
                                   "or give the path of a runtime TOML file")
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
        raise RuntimeSpecError(f"{path} is not a valid runtime file ({e})") from None
    unknown = sorted(set(doc) - KEYS)
    if unknown:
        raise RuntimeSpecError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(KEYS))})")
    if doc.get("kind") not in KINDS:
        raise RuntimeSpecError(f"{path}: kind must be one of {', '.join(KINDS)}")
    if doc["kind"] == "onnxruntime" and not doc.get("providers"):
        raise RuntimeSpecError(f"{path}: an onnxruntime runtime needs a providers list")
    spec = RuntimeSpec(name=path.stem, path=str(path), **{k: v for k, v in doc.items()})
    if not isinstance(spec.chunk, int) or spec.chunk < 1:
        raise RuntimeSpecError(f"{path}: chunk must be a positive integer")
    if not isinstance(spec.segment, int) or spec.segment < 1:
        raise RuntimeSpecError(f"{path}: segment must be a positive integer")
    if not isinstance(spec.workers, int) or spec.workers < 0:
        raise RuntimeSpecError(f"{path}: workers must be 0 (one per core) or a positive integer")
    if spec.encoding not in ENCODINGS:
        raise RuntimeSpecError(f"{path}: encoding must be one of {', '.join(ENCODINGS)}")
    if spec.kernel not in KERNELS:
        raise RuntimeSpecError(f"{path}: kernel must be one of {', '.join(KERNELS)}")
    if spec.kernel != "graph" and (spec.kind != "onnxruntime" or spec.providers[:1] != ["CPUExecutionProvider"]):
        raise RuntimeSpecError(f"{path}: kernel = \"{spec.kernel}\" needs onnxruntime with the CPUExecutionProvider first")
    if spec.workers == 0:
        spec.workers = os.cpu_count() or 1
    return spec


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
        try:
            import torch
        except ImportError:
            raise RuntimeUnavailable("runtime torch needs PyTorch") from None
        if str(spec.device) == "cuda" and not torch.cuda.is_available():
            raise RuntimeUnavailable("runtime torch was asked for CUDA but torch sees no CUDA device")


ENCODING_PREFIXES = {"encoding": "points", "view_encoding": "viewdirs"}   # node-name prefix -> raw graph input


def _prune_outputs(model, outputs: tuple[str, ...]) -> None:
    """Keep only the graph ``outputs`` of an ONNX ``model`` and the nodes and weights they need
    (in place). The graph inputs stay, so callers feed the same names."""
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


def _cut_encodings(model) -> list[tuple[str, np.ndarray, str, str, np.dtype]]:
    """Cut the positional encodings' ``MatMul`` (frequency scaling), ``Sin`` and ``Cos`` out of a
    bundle graph (in place; :mod:`nerfexport.export.onnx_graph` names them ``{prefix}/scaled``,
    ``{prefix}/sin``, ``{prefix}/cos``): their outputs become graph inputs. Returns, per
    encoding still in the graph, ``(raw input, scales (L,), sin input, cos input, dtype)`` for
    the caller to compute ``sin`` and ``cos`` of ``raw @ F``, ``F = [scales[0] I, scales[1] I, ...]``."""
    from onnx import helper, numpy_helper
    g = model.graph
    nodes = {n.name: n for n in g.node}
    inits = {t.name: t for t in g.initializer}
    cuts = []
    for prefix, raw in ENCODING_PREFIXES.items():
        mm, sn, cn = (nodes.get(f"{prefix}/{k}") for k in ("scaled", "sin", "cos"))
        if mm is None and sn is None and cn is None:
            continue   # no such encoding (no view directions, or pruned away)
        if (mm is None or sn is None or cn is None or mm.op_type != "MatMul" or mm.input[1] not in inits
                or list(sn.input) != [mm.output[0]] or list(cn.input) != [mm.output[0]]):
            raise RuntimeSpecError(f"the graph's {prefix} is not the form nerfexport exports; "
                                   "use encoding = \"graph\"")
        if sum(mm.output[0] in n.input for n in g.node) != 2:
            raise RuntimeSpecError(f"the graph's {prefix}/scaled feeds more than Sin and Cos; use encoding = \"graph\"")
        freqs = numpy_helper.to_array(inits[mm.input[1]])
        if mm.input[0] != raw:
            # an fp16 graph scales its input cast to fp16; onnxruntime's CPU provider runs these fp16
            # nodes in float and drops the narrowing cast (measured: feeding sin/cos of the unrounded
            # input matches its outputs to 6e-7, of the fp16-rounded input only to 1.3e-3), so the
            # host does not round either
            cast = next((n for n in g.node if mm.input[0] in n.output), None)
            if cast is None or cast.op_type != "Cast" or list(cast.input) != [raw]:
                raise RuntimeSpecError(f"the graph's {prefix} does not read {raw}; use encoding = \"graph\"")
        for n in (mm, sn, cn):
            g.node.remove(n)
        if not any(mm.input[1] in n.input for n in g.node):
            g.initializer.remove(inits[mm.input[1]])
        elem = helper.np_dtype_to_tensor_dtype(freqs.dtype)
        for name in (sn.output[0], cn.output[0]):
            g.input.append(helper.make_tensor_value_info(name, elem, ["N", freqs.shape[1]]))
        dtype, freqs = freqs.dtype, freqs.astype(np.float32)
        # F = [2^0 I, 2^1 I, ...] as exported: column 3k + d is 2^k x_d, one multiply by a power
        # of two (exact); numpy's matmul would call BLAS, whose own threads fight the workers'
        scales = freqs[0, 0::3]
        if freqs.shape[0] != 3 or not np.array_equal(freqs, np.kron(scales[None, :], np.eye(3, dtype=np.float32))):
            raise RuntimeSpecError(f"the graph's {prefix} frequencies are not nerfexport's; use encoding = \"graph\"")
        cuts.append((raw, scales, sn.output[0], cn.output[0], dtype))
    return cuts


class OrtNetwork:
    """An ONNX network in an onnxruntime session: ``(points (N,3), viewdirs (N,3)) -> (rgb, density)``.

    ``encoding="host"`` cuts the positional encodings' ``Sin``/``Cos`` out of the graph and
    computes them here in numpy (``sin(x @ F)``, ``cos(x @ F)``, ``F`` read from the graph):
    onnxruntime's CPU ``Sin``/``Cos`` are scalar (about 2 ns an element), numpy's are vectorised
    (about 0.4 ns on AVX-512). The bundle is unchanged; only the session's copy of the graph is.

    ``outputs=("density",)`` keeps only the density and the nodes it needs (the colour branch
    and the view-direction encoding go): a coarse network whose colour the renderer never reads
    (a bundle with a fine network). The call then returns ``(None, density)``.

    ``kernel="fused"`` runs an int8 network as one node of nerfexport's fused kernel
    (:mod:`nerfexport.fused`; same outputs as the graph to float rounding); ``"auto"`` does so
    where it can and otherwise runs the graph, saying why in ``kernel_note``. ``kernel`` is what
    runs: ``"fused"`` or ``"graph"``.
    """

    def __init__(self, path: str | Path, providers: list | None = None, threads: int | None = None,
                 opt_level: str = "all", provider_options: dict | None = None, encoding: str = "graph",
                 outputs: tuple[str, ...] = ("rgb", "density"), kernel: str = "graph") -> None:
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
        providers = providers or ["CPUExecutionProvider"]
        opts = []
        for p in providers:
            o = dict((provider_options or {}).get(p, {}))
            if "trt_engine_cache_path" in o:
                o["trt_engine_cache_path"] = os.path.expanduser(o["trt_engine_cache_path"])
                os.makedirs(o["trt_engine_cache_path"], exist_ok=True)
            opts.append({k: ("True" if v else "False") if isinstance(v, bool) else str(v) for k, v in o.items()})
        if kernel not in KERNELS:
            raise RuntimeSpecError(f"kernel must be one of {', '.join(KERNELS)}")
        self.outputs = tuple(outputs)
        self.host_encodings: list = []
        self.kernel, self.kernel_note = "graph", ""
        source: str | bytes = str(path)
        fused_model = self._fused(path, providers, kernel) if kernel != "graph" else None
        if fused_model is not None:
            from .fused import library_path
            try:
                so.register_custom_ops_library(str(library_path()))
                self.session = ort.InferenceSession(fused_model.SerializeToString(), so, providers=providers,
                                                    provider_options=opts)
                self.kernel = "fused"
            except Exception as e:   # the library or its op did not load: "auto" runs the graph instead
                why = f"the fused int8 kernel did not load ({str(e).strip().splitlines()[0] if str(e).strip() else e!r})"
                if kernel == "fused":
                    raise RuntimeUnavailable(why) from None
                self.kernel_note = why
        if self.kernel != "fused":
            if encoding == "host" or self.outputs == ("density",):
                import onnx
                model = onnx.load(str(path))
                if self.outputs == ("density",):
                    _prune_outputs(model, self.outputs)
                if encoding == "host":
                    self.host_encodings = _cut_encodings(model)
                source = model.SerializeToString()
            self.session = ort.InferenceSession(source, so, providers=providers, provider_options=opts)
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.path = Path(path)

    def _fused(self, path, providers, kernel: str):
        """The one-node fused graph for ``kernel`` "fused" or "auto", or ``None`` (then
        ``kernel_note`` says why) where "auto" cannot use it; "fused" raises instead."""
        import onnx
        from .fused import NotFusable, fuse, unavailable
        if list(providers)[:1] != ["CPUExecutionProvider"]:
            why = "the fused int8 kernel runs on the CPUExecutionProvider only"
        else:
            why = unavailable()
        if why is None:
            try:
                return fuse(onnx.load(str(path)), density_only=self.outputs == ("density",))
            except NotFusable as e:
                why = f"{Path(path).name}: {e}"
            except Exception as e:   # anything else about this graph: "auto" runs it on onnxruntime's kernels
                why = f"{Path(path).name}: could not fuse it ({type(e).__name__}: {e})"
        if kernel == "fused":
            raise RuntimeUnavailable(why)
        self.kernel_note = why
        return None

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, points: np.ndarray, viewdirs: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
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


class TensorRTNetwork:
    """A serialized TensorRT engine (TensorRT 10/11 named-tensor API). Device memory and copies go
    through NVIDIA's ``cuda-python`` (``cuda.bindings.runtime`` or ``cuda.cudart``), so this path
    needs no torch; untested on the CPU-only development machine (see README)."""

    def __init__(self, engine_path: str | Path, device: int = 0) -> None:
        import tensorrt as trt
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart
            except ImportError:
                raise RuntimeUnavailable("runtime tensorrt needs NVIDIA's cuda-python for device memory "
                                         "(pip install cuda-python)") from None
        self.trt, self.cudart = trt, cudart
        self._check(cudart.cudaSetDevice(device))
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeUnavailable(f"TensorRT could not load {engine_path} (built by another TensorRT version "
                                     "or for another GPU?)")
        self.context = self.engine.create_execution_context()
        self.stream = self._check(cudart.cudaStreamCreate())
        self.capacity, self.buffers = 0, {}

    def _check(self, res):
        err, *rest = res if isinstance(res, tuple) else (res,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")
        return rest[0] if rest else None

    def _ensure(self, n: int) -> None:
        if n <= self.capacity:
            return
        for ptr in self.buffers.values():
            self.cudart.cudaFree(ptr)
        cap = max(n, 1024)
        self.buffers = {name: self._check(self.cudart.cudaMalloc(cap * c * 4))
                        for name, c in (("points", 3), ("viewdirs", 3), ("rgb", 3), ("density", 1))}
        self.capacity = cap

    def __call__(self, points: np.ndarray, viewdirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cudart = self.cudart
        n = points.shape[0]
        self._ensure(n)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, a in (("points", points), ("viewdirs", viewdirs)):
            a = np.ascontiguousarray(a, np.float32)
            self._check(cudart.cudaMemcpyAsync(self.buffers[name], a.ctypes.data, a.nbytes, h2d, self.stream))
            self.context.set_input_shape(name, (n, 3))
        for name, ptr in self.buffers.items():
            self.context.set_tensor_address(name, int(ptr))
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execution failed")
        rgb, dens = np.empty((n, 3), np.float32), np.empty((n, 1), np.float32)
        for name, a in (("rgb", rgb), ("density", dens)):
            self._check(cudart.cudaMemcpyAsync(a.ctypes.data, self.buffers[name], a.nbytes, d2h, self.stream))
        self._check(cudart.cudaStreamSynchronize(self.stream))
        return rgb, dens


class TorchNetwork:
    """A checkpoint's network in PyTorch eager: the baseline. Imports torch (only this runtime does)."""

    def __init__(self, net, device: str = "auto", precision: str = "fp32", threads: int = 0) -> None:
        import torch
        self.torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
        self.device = torch.device(dev)
        self.net = net.to(self.device).eval()
        self.amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def __call__(self, points: np.ndarray, viewdirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp or torch.bfloat16,
                                                    enabled=self.amp is not None):
            raw = self.net(torch.from_numpy(points).to(self.device), torch.from_numpy(viewdirs).to(self.device))
            raw = raw.float()
            out = torch.sigmoid(raw[:, :3]), torch.relu(raw[:, 3:4])
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return out[0].cpu().numpy(), out[1].cpu().numpy()


def kernel_summary(nets: dict) -> str | None:
    """One line on what runs a bundle's onnxruntime networks (the fused int8 kernel or the
    graph, and why not the fused one), or ``None`` for other runtimes."""
    ort_nets = {w: n for w, n in nets.items() if isinstance(n, OrtNetwork)}
    if not ort_nets:
        return None
    if all(n.kernel == "fused" for n in ort_nets.values()):
        return "network kernel: nerfexport's fused int8 kernel (" + ", ".join(ort_nets) + ")"
    notes = sorted({n.kernel_note for n in ort_nets.values() if n.kernel_note})
    return "network kernel: onnxruntime's graph" + (f" (fused kernel not used: {'; '.join(notes)})" if notes else "")


def make_networks(spec: RuntimeSpec, bundle=None, model=None, n_fine: int | None = None) -> dict:
    """``{"coarse": net, "fine": net | None}`` for a bundle (onnxruntime, tensorrt) or a loaded
    checkpoint model (torch). ``n_fine``: the fine samples per ray the renderer will take (the
    bundle's own when ``None``); with a fine network and ``n_fine > 0`` an onnxruntime coarse
    network computes its density alone."""
    check_available(spec)
    if spec.kind == "torch":
        if model is None:
            raise RuntimeSpecError("the torch runtime renders a checkpoint (model.pt), not a bundle")
        return {w: TorchNetwork(getattr(model, w), str(spec.device), spec.precision, spec.threads)
                if getattr(model, w) is not None else None for w in ("coarse", "fine")}
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
        n_fine = int(bundle.manifest["scene"]["n_fine"])
    density_only = bundle.network_path("fine") is not None and n_fine > 0
    return {w: OrtNetwork(bundle.network_path(w), spec.providers, spec.threads, spec.graph_optimization,
                          spec.provider_options, encoding=spec.encoding, kernel=spec.kernel,
                          outputs=("density",) if w == "coarse" and density_only else ("rgb", "density"))
            if bundle.network_path(w) else None for w in ("coarse", "fine")}
