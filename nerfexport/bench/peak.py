"""What the network's arithmetic costs, and what this machine's matrix multiply can do.

:func:`network_ops` counts the operations of one network evaluation (2 per multiply-add, the
Linear layers only). :func:`gemm_peak` measures the int8 and fp32 matrix-multiply peak through
onnxruntime's CPU provider (the runtime the bundles run on): large square ``MatMulInteger``
(uint8 x int8, the U8S8 kernels the int8 bundles use) and ``MatMul`` graphs on all cores, the
best of a few sizes. The benchmark reports each network's achieved operations per second
against it. Run ``python -m nerfexport.bench.peak`` to print the figures as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def network_shapes(arch: dict, colour: bool = True) -> list[tuple[int, int]]:
    """``(fan_in, fan_out)`` of every matrix product of one evaluation of a network with
    architecture ``arch`` (an ``MLPConfig.to_dict()``: widths, skips, feature_width,
    view_widths, multires, ranks, ...), a low-rank layer (rank r) as two, ``fan_in x r`` and
    ``r x fan_out``. ``colour=False``: the density alone (trunk and density head), what a coarse
    network that only places the fine samples computes."""
    in_ch = 3 + 6 * int(arch["multires"])
    in_views = 3 + 6 * int(arch["multires_views"])
    ranks = arch.get("ranks") or {}
    out: list[tuple[int, int]] = []

    def lin(name: str, fan_in: int, fan_out: int) -> None:
        r = ranks.get(name)
        out.extend([(fan_in, r), (r, fan_out)] if r is not None else [(fan_in, fan_out)])

    prev = in_ch
    for i, w in enumerate(arch["widths"]):
        lin(f"pts.{i}", prev, w)
        prev = w + (in_ch if i in arch["skips"] else 0)
    if not colour and arch.get("use_viewdirs", True):
        out.append((prev, 1))        # the density head alone (without view directions one layer gives both)
    elif arch.get("use_viewdirs", True):
        out.append((prev, 1))
        lin("feature", prev, int(arch["feature_width"]))
        prev = int(arch["feature_width"]) + in_views
        for j, w in enumerate(arch["view_widths"]):
            lin(f"views.{j}", prev, w)
            prev = w
        out.append((prev, 3))
    else:
        out.append((prev, 4))
    return out


def network_ops(arch: dict, colour: bool = True) -> int:
    """Operations (2 per multiply-add) of one evaluation (:func:`network_shapes`)."""
    return 2 * sum(k * n for k, n in network_shapes(arch, colour))


def _matmul_model(dtype: str, K: int, N: int, seed: int = 0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    if dtype == "int8":
        B = numpy_helper.from_array(rng.integers(-127, 128, (K, N)).astype(np.int8), "B")
        node = helper.make_node("MatMulInteger", ["A", "B"], ["C"])
        a_t, c_t = TensorProto.UINT8, TensorProto.INT32
    else:
        B = numpy_helper.from_array(rng.standard_normal((K, N)).astype(np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["C"])
        a_t, c_t = TensorProto.FLOAT, TensorProto.FLOAT
    g = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", a_t, ["M", K])],
                          [helper.make_tensor_value_info("C", c_t, ["M", N])], [B])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def _fastest(sess, a: np.ndarray, repeat: int, min_seconds: float) -> float:
    """Seconds of the fastest of at least ``repeat`` runs (and ``min_seconds`` in all) of ``sess``
    on ``a``, after one warm-up run."""
    sess.run(None, {"A": a})
    ts = []
    while len(ts) < repeat or sum(ts) < min_seconds:
        t = time.perf_counter()
        sess.run(None, {"A": a})
        ts.append(time.perf_counter() - t)
    return min(ts)


def gemm_peak(dtype: str = "int8", sizes: tuple[int, ...] = (1024, 2048, 4096), threads: int = 0,
              repeat: int = 5, min_seconds: float = 0.3) -> dict:
    """Best ``2 M K N / seconds`` (GOP/s) of square ``size^3`` products through onnxruntime's CPU
    provider with ``threads`` intra-op threads (0: all cores).

    Each size runs at least ``repeat`` times and ``min_seconds`` long, and its fastest run counts:
    a peak is what the machine *can* do, and on a shared machine noise only ever slows a run down
    (the median of 3 runs of 1024^3 gave 362 and 179 GOP/s in two benchmarks minutes apart). A
    best-run peak is the higher, so the fraction of peak quoted against it is the conservative one."""
    import onnxruntime as ort
    if dtype not in ("int8", "fp32"):
        raise ValueError(f"dtype must be int8 or fp32, not {dtype!r}")
    rng = np.random.default_rng(1)
    best = {"gops": 0.0}
    per_size = {}
    for n in sizes:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or (os.cpu_count() or 1)
        sess = ort.InferenceSession(_matmul_model(dtype, n, n), so, providers=["CPUExecutionProvider"])
        a = (rng.integers(0, 256, (n, n)).astype(np.uint8) if dtype == "int8"
             else rng.standard_normal((n, n)).astype(np.float32))
        g = 2.0 * n ** 3 / _fastest(sess, a, repeat, min_seconds) / 1e9
        per_size[n] = g
        if g > best["gops"]:
            best = {"gops": g, "size": n}
    return {**best, "dtype": dtype, "threads": threads or (os.cpu_count() or 1), "per_size": per_size,
            "runtime": "onnxruntime CPUExecutionProvider " + ort.__version__}


LAYER_ROWS = 4096          # samples per product in the layer-shape probe (a chunk's worth)
LAYER_WIDTHS = (64, 128, 256)


def layer_gemm(dtype: str, width: int, rows: int = LAYER_ROWS, threads: int = 0, repeat: int = 20,
               min_seconds: float = 0.3) -> float:
    """Best GOP/s of one ``rows x width x width`` product, the shape of a hidden layer of that
    width on a chunk of samples, through onnxruntime's CPU provider with ``threads`` intra-op
    threads (0: all cores). The network's throughput is quoted against this as well as the
    square peak: a 128-wide layer cannot reach what a 4096-cubed product does."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    sess = ort.InferenceSession(_matmul_model(dtype, width, width), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    a = (rng.integers(0, 256, (rows, width)).astype(np.uint8) if dtype == "int8"
         else rng.standard_normal((rows, width)).astype(np.float32))
    return 2.0 * rows * width * width / _fastest(sess, a, repeat, min_seconds) / 1e9


def shape_gemm(dtype: str, shapes: list[tuple[int, int]], rows: int = LAYER_ROWS, threads: int = 0,
               repeat: int = 10, min_seconds: float = 0.05, cache: dict | None = None) -> float:
    """GOP/s of a network's matrix products alone: each ``rows x fan_in x fan_out`` product of
    ``shapes`` (:func:`network_shapes`) timed at its own shape through onnxruntime's CPU provider
    (``MatMulInteger`` for int8, ``MatMul`` for fp32; ``threads`` intra-op threads, 0: all cores),
    their operations over the sum of their times: what the network would reach if it were
    nothing but its GEMMs. Thin products (a low rank's) run far below the square peak, so this is
    the rate a network of those shapes can be held to. ``cache`` (shape -> seconds, filled here)
    times a shape once across calls with the same ``dtype``, ``rows`` and ``threads``."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    rng = np.random.default_rng(3)
    seconds, cache = 0.0, ({} if cache is None else cache)
    for k, n in shapes:
        if (k, n) not in cache:
            sess = ort.InferenceSession(_matmul_model(dtype, k, n), so, providers=["CPUExecutionProvider"])
            a = (rng.integers(0, 256, (rows, k)).astype(np.uint8) if dtype == "int8"
                 else rng.standard_normal((rows, k)).astype(np.float32))
            cache[(k, n)] = _fastest(sess, a, repeat, min_seconds)
        seconds += cache[(k, n)]
    return 2.0 * rows * sum(k * n for k, n in shapes) / seconds / 1e9


def evaluations_gemm(dtype: str, archs: dict, colour: dict, evaluations: dict) -> float | None:
    """GOP/s of :func:`shape_gemm` over a frame's evaluations: ``archs``, ``colour`` and
    ``evaluations`` map ``"coarse"``/``"fine"`` to a network's architecture (the fine one may be
    ``None``: the coarse network evaluates the fine samples), whether it computes colour, and
    how many times it ran."""
    arch = {"coarse": archs.get("coarse"), "fine": archs.get("fine") or archs.get("coarse")}
    shapes = {w: network_shapes(arch[w], colour[w]) for w in arch if arch[w] and evaluations.get(w, 0) > 0}
    ops = {w: evaluations[w] * 2.0 * sum(k * n for k, n in sh) / 1e9 for w, sh in shapes.items()}
    timed: dict = {}   # the coarse and fine networks share most shapes: each is timed once
    secs = sum(ops[w] / shape_gemm(dtype, sh, cache=timed) for w, sh in shapes.items())
    return sum(ops.values()) / secs if secs > 0 else None


def _main(argv: list[str]) -> int:
    sizes = tuple(int(x) for x in argv[0].split(",")) if argv else (1024, 2048, 4096)
    layers = {d: {str(w): layer_gemm(d, w) for w in LAYER_WIDTHS} for d in ("int8", "fp32")}
    print(json.dumps({"int8": gemm_peak("int8", sizes), "fp32": gemm_peak("fp32", sizes),
                      "layers": {"rows": LAYER_ROWS, **layers}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
