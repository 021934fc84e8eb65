import json, sys, collections, os, time
import numpy as np, onnxruntime as ort
q = sys.argv[1]; N = int(sys.argv[2])
rng = np.random.default_rng(0)
pts = (rng.random((N, 3), np.float32) * 2 - 1); d = rng.standard_normal((N, 3)).astype(np.float32); d /= np.linalg.norm(d, axis=1, keepdims=True)
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.enable_profiling = True; so.profile_file_prefix = "/tmp/probe/prof"
s = ort.InferenceSession(q, so, providers=["CPUExecutionProvider"])
R = 40
for _ in range(R): s.run(None, {"points": pts, "viewdirs": d})
f = s.end_profiling(); ev = json.load(open(f)); os.remove(f)
agg = collections.Counter(); cnt = collections.Counter(); tot_run = 0
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        agg[e["name"].replace("_kernel_time", "")] += e["dur"]
    if e.get("name") == "model_run": tot_run += e["dur"]
tot = sum(agg.values())
print(f"N={N} model_run {tot_run/R:.0f} us, kernels {tot/R:.0f} us")
for k, v in agg.most_common(): print(f"  {k:40s} {100*v/tot:5.1f}%  {v/R:8.0f} us")
