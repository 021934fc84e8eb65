"""The TensorRT family: a bundle's serialized TensorRT engines (:class:`TensorRTNetwork`), with
their device buffers through NVIDIA's ``cuda-python`` (no torch). Written against TensorRT 10/11
and checked on the CPU with stand-ins in ``tests/test_gpu_construction.py``: engines take calls
within their optimization profile, and a U8S8 int8 bundle is refused for TensorRT
(:func:`nerfexport.deploy.runtime.check_bundle`).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from nerfexport.deploy.runtime import RuntimeFailure, RuntimeSpec, RuntimeUnavailable


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


def trt_networks(spec: RuntimeSpec, bundle) -> dict:
    """``{"coarse": TensorRTNetwork, "fine": TensorRTNetwork | None}`` for ``bundle``'s engines on
    the device the runtime ``spec`` names (0 unless a number)."""
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
