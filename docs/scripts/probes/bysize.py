import time, sys, json, numpy as np, onnxruntime as ort
from nerfexport.bench.peak import network_ops
b = sys.argv[1]; man = json.load(open(b + "/manifest.json")); ops = network_ops(man["networks"]["fine"]["architecture"])
so = ort.SessionOptions(); so.intra_op_num_threads = 1
s = ort.InferenceSession(b + "/fine.onnx", so, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
for N in (256, 512, 1024, 2048, 4096, 8192, 16384):
    pts = (rng.random((N, 3), np.float32) * 2 - 1); d = rng.standard_normal((N, 3)).astype(np.float32); d /= np.linalg.norm(d, axis=1, keepdims=True)
    for _ in range(3): s.run(None, {"points": pts, "viewdirs": d})
    ts = []
    t0 = time.perf_counter()
    while len(ts) < 5 or time.perf_counter() - t0 < 0.5:
        t = time.perf_counter(); s.run(None, {"points": pts, "viewdirs": d}); ts.append(time.perf_counter() - t)
    print(N, f"median {N*ops/np.median(ts)/1e9:.0f} best {N*ops/min(ts)/1e9:.0f} GOP/s")
