"""A bare uint8 x int8 QGemm (K = N = WIDTH, the quantized layer onnxruntime runs for each trunk
layer) by rows per call, on one thread, against the one-thread MatMulInteger peak:
qgemm_rows.py [WIDTH] [ROWS,...]."""
import sys, time, numpy as np, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

K = int(sys.argv[1]) if len(sys.argv) > 1 else 128
rows = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "512,1024,2048,4096,8192,16384,32768").split(",")]
rng = np.random.default_rng(0)


def session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def best(sess, feeds, min_s=0.4):
    for _ in range(2):
        sess.run(None, feeds)
    ts, t0 = [], time.perf_counter()
    while len(ts) < 5 or time.perf_counter() - t0 < min_s:
        t = time.perf_counter(); sess.run(None, feeds); ts.append(time.perf_counter() - t)
    return min(ts), float(np.median(ts))


def scalar(name, v, dt):
    return numpy_helper.from_array(np.array(v, dtype=dt), name)


# QGemm from the com.microsoft domain, as onnxruntime fuses QDQ Gemm + Relu: uint8 A, int8 B (per channel), uint8 Y
w = rng.integers(-127, 128, (K, K), dtype=np.int8)
inits = [numpy_helper.from_array(w.T.copy(), "B"), scalar("a_s", 0.02, np.float32), scalar("a_z", 0, np.uint8),
         numpy_helper.from_array(np.full(K, 0.01, np.float32), "b_s"), numpy_helper.from_array(np.zeros(K, np.int8), "b_z"),
         numpy_helper.from_array(np.zeros(K, np.int32), "C"), scalar("y_s", 0.05, np.float32), scalar("y_z", 0, np.uint8)]
node = helper.make_node("QGemm", ["A", "a_s", "a_z", "B", "b_s", "b_z", "C", "y_s", "y_z"], ["Y"], domain="com.microsoft", transB=1)
g = helper.make_graph([node], "q", [helper.make_tensor_value_info("A", TensorProto.UINT8, ["M", K])],
                      [helper.make_tensor_value_info("Y", TensorProto.UINT8, ["M", K])], inits)
qm = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
qs = session(qm)

P = 2048
mm = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "p",
                       [helper.make_tensor_value_info("A", TensorProto.UINT8, [P, P])],
                       [helper.make_tensor_value_info("Y", TensorProto.INT32, [P, P])],
                       [numpy_helper.from_array(rng.integers(-127, 128, (P, P), dtype=np.int8), "B")])
ps = session(helper.make_model(mm, opset_imports=[helper.make_opsetid("", 17)]))
pk = 2 * P ** 3 / best(ps, {"A": rng.integers(0, 256, (P, P), dtype=np.uint8)}, 1.0)[0] / 1e9
print(f"one-thread MatMulInteger {P}^3 peak: {pk:.0f} GOP/s")
for M in rows:
    a = rng.integers(0, 256, (M, K), dtype=np.uint8)
    b, m = best(qs, {"A": a})
    print(f"QGemm K=N={K} rows {M:6d}: best {2 * M * K * K / b / 1e9:5.0f} GOP/s ({2 * M * K * K / b / 1e9 / pk:4.0%}), "
          f"median {2 * M * K * K / m / 1e9:5.0f}")
