"""Network throughput of a w128 int8 network on onnxruntime's CPU provider: graph form x
threads x workers x batch (docs/speed.md).

    .venv/bin/python docs/scripts/ort_tuning.py cache/shrink-study/magnitude-w128.pt ../shared/data/lego_400

Graph forms: ``gemm`` is what nerfexport exports (one Gemm + Relu per layer, quantized with the
Relu folded: onnxruntime runs a chain of integer QGemm kernels); ``matmul`` is the earlier form
(MatMul, Add, Relu; only the MatMul quantized, so every layer dequantizes to float and back).
Inputs are real fine-network samples of the lego scene. Prints a Markdown table.
"""

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from nerfexport.export import onnx_graph as onnx_export, quantize
from nerfexport.shrink.calibration import draw_samples, subsample
from nerfexport.model.checkpoint import load_checkpoint
from nerfexport.data.datasets import load_scene
from nerfexport.bench.peak import _matmul_model, gemm_peak, network_ops


def matmul_linear(self, x, w, b, name, relu):
    y = self.node("MatMul", [x, self.const(f"{name}.weight", w.T)], f"{name}/MatMul")
    y = self.node("Add", [y, self.const(f"{name}.bias", b)], f"{name}/Add")
    return self.node("Relu", [y], f"{name}/Relu") if relu else y


def build(model, pts, dirs, form: str, out: Path) -> Path:
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    st = {k: v.numpy() for k, v in model.fine.state_dict().items()}
    saved = onnx_export._Builder.linear
    if form == "matmul":
        onnx_export._Builder.linear = matmul_linear
    try:
        m = onnx_export.mlp_to_onnx(st, model.fine.cfg)
    finally:
        onnx_export._Builder.linear = saved
    fp32 = out / f"{form}-fp32.onnx"
    onnx.save(m, str(fp32))
    q = out / f"{form}-int8.onnx"
    if form == "gemm":
        quantize.quantize_int8(fp32, q, pts, dirs, quantize.Int8Settings())
    else:
        quantize_static(str(fp32), str(q), quantize._reader(pts, dirs, 8192), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=list(quantize.ALWAYS_FLOAT),
                        extra_options={"WeightSymmetric": True})
    return q


def timed_map(run, items: list, workers: int, reps: int) -> float:
    """Median seconds to run ``run`` over ``items`` on ``workers`` threads (after a warm-up)."""
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(run, items[:workers]))
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            list(ex.map(run, items))
            ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def throughput(path: Path, pts, dirs, threads: int, workers: int, batch: int, total: int = 98304) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feeds = [{"points": np.ascontiguousarray(pts[a:a + batch]), "viewdirs": np.ascontiguousarray(dirs[a:a + batch])}
             for a in range(0, total, batch)]
    return total / timed_map(lambda f: s.run(None, f), feeds, workers, 3)


def bare_gemm(K: int, M: int, threads: int, workers: int, total: int = 65536) -> float:
    """GOP/s of a bare uint8 x int8 MatMulInteger ``(M,K) x (K,K)`` through the same runtime."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(_matmul_model("int8", K, K), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    a = [rng.integers(0, 256, (M, K)).astype(np.uint8) for _ in range(total // M)]
    return 2.0 * K * K * total / timed_map(lambda x: s.run(None, {"A": x}), a, workers, 5) / 1e9


def main(ckpt: str, data: str) -> None:
    model = load_checkpoint(ckpt)
    scene = load_scene(data, downscale=4, white_bkgd=True, test_every=20)
    calib = draw_samples(model, scene, 512, 0)
    pts, dirs = subsample(*calib.for_network("fine"), 65536, 0)
    big_p, big_d = np.tile(pts, (2, 1)), np.tile(dirs, (2, 1))
    ops = network_ops(model.fine.cfg.to_dict())
    print(f"{ckpt}: {ops / 1e3:.0f} kOP per evaluation; {ort.get_device()} onnxruntime {ort.__version__}\n")
    peak = gemm_peak("int8")
    print(f"int8 GEMM peak (MatMulInteger, 2 threads, best of 1024/2048/4096 cubed): {peak['gops']:.0f} GOP/s\n")
    print("The ceiling of the network's own shape: a bare uint8 x int8 GEMM, K = N = 128 (and 256 for comparison)\n")
    print("| K = N | rows per call | threads per call | workers | GOP/s | of peak |")
    print("|---:|---:|---:|---:|---:|---:|")
    for K in (128, 256):
        for M in (1024, 4096):
            for threads, workers in ((2, 1), (1, 2)):
                g = bare_gemm(K, M, threads, workers)
                print(f"| {K} | {M} | {threads} | {workers} | {g:.0f} | {100 * g / peak['gops']:.0f}% |", flush=True)
    print()
    print("| int8 graph | threads per call | workers | samples per call | samples/s | GOP/s |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for form in ("matmul", "gemm"):
            q = build(model, pts, dirs, form, Path(tmp))
            for threads, workers in ((2, 1), (1, 1), (1, 2)):
                for batch in (1024, 4096, 16384):
                    sps = throughput(q, big_p, big_d, threads, workers, batch)
                    print(f"| {form} | {threads} | {workers} | {batch} | {sps:,.0f} | {sps * ops / 1e9:.0f} |", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
