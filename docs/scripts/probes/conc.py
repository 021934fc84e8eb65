import time, sys, json, numpy as np, onnxruntime as ort
from concurrent.futures import ThreadPoolExecutor
from nerfexport.bench.peak import network_ops
b = sys.argv[1]; man = json.load(open(b + "/manifest.json")); ops = network_ops(man["networks"]["fine"]["architecture"])
so = ort.SessionOptions(); so.intra_op_num_threads = 1
ss = [ort.InferenceSession(b + "/fine.onnx", so, providers=["CPUExecutionProvider"]) for _ in range(2)]
rng = np.random.default_rng(0)
for N in (1400, 2048, 4096, 8192, 1400):
    pts = (rng.random((N, 3), np.float32) * 2 - 1); d = rng.standard_normal((N, 3)).astype(np.float32); d /= np.linalg.norm(d, axis=1, keepdims=True)
    def job(i, reps=40):
        for _ in range(reps): ss[i].run(None, {"points": pts, "viewdirs": d})
    job(0, 3); job(1, 3)
    t = time.perf_counter(); job(0); t1 = time.perf_counter() - t
    with ThreadPoolExecutor(2) as ex:
        t = time.perf_counter(); list(ex.map(job, [0, 1])); t2 = time.perf_counter() - t
    print(N, f"one thread {40*N*ops/t1/1e9:.0f} GOP/s, two concurrent {80*N*ops/t2/1e9:.0f} GOP/s")
