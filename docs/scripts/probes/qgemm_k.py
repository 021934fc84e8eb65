"""A bare uint8 x int8 QGemm with N = 128 outputs by inner dimension K (the trunk's first layer
reads K = 63, the skip layer 191, the view layer 155), one thread, 2,048 rows per call, in
alternated rounds: does padding K to a multiple of 16 or 64 pay? qgemm_k.py [K,...]."""
import sys, time, numpy as np, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

Ks = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "63,64,155,160,191,192,128").split(",")]
N, M = 128, 2048
rng = np.random.default_rng(0)


def scalar(name, v, dt):
    return numpy_helper.from_array(np.array(v, dtype=dt), name)


def qgemm(K):
    w = rng.integers(-127, 128, (N, K), dtype=np.int8)
    inits = [numpy_helper.from_array(w, "B"), scalar("a_s", 0.02, np.float32), scalar("a_z", 0, np.uint8),
             numpy_helper.from_array(np.full(N, 0.01, np.float32), "b_s"), numpy_helper.from_array(np.zeros(N, np.int8), "b_z"),
             numpy_helper.from_array(np.zeros(N, np.int32), "C"), scalar("y_s", 0.05, np.float32), scalar("y_z", 0, np.uint8)]
    node = helper.make_node("QGemm", ["A", "a_s", "a_z", "B", "b_s", "b_z", "C", "y_s", "y_z"], ["Y"],
                            domain="com.microsoft", transB=1)
    g = helper.make_graph([node], "q", [helper.make_tensor_value_info("A", TensorProto.UINT8, ["M", K])],
                          [helper.make_tensor_value_info("Y", TensorProto.UINT8, ["M", N])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    so = ort.SessionOptions(); so.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


sess = {K: qgemm(K) for K in Ks}
feeds = {K: {"A": rng.integers(0, 256, (M, K), dtype=np.uint8)} for K in Ks}
times = {K: [] for K in Ks}
for _ in range(15):
    for K in Ks:
        s, f = sess[K], feeds[K]
        s.run(None, f)
        ts = []
        for _ in range(20):
            t = time.perf_counter(); s.run(None, f); ts.append(time.perf_counter() - t)
        times[K].append(min(ts))
for K in Ks:
    t = float(np.median(times[K]))
    print(f"K={K:4d}: {t * 1e6:7.1f} us per call, {2 * M * K * N / t / 1e9:5.0f} GOP/s (real MACs)")
