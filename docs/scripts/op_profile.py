"""Where an ONNX network's time goes on onnxruntime's CPU provider (one thread): time an
evaluation and each operator's share. Usage:
    python docs/scripts/op_profile.py BUNDLE/fine.onnx [POINTS]"""
import sys, json, collections, numpy as np, onnxruntime as ort, time
path = sys.argv[1]; n = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.enable_profiling = True
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
so.optimized_model_filepath = "op_profile-optimized.onnx"
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
ins = {i.name: np.random.default_rng(0).uniform(-1, 1, (n, 3)).astype(np.float32) for i in s.get_inputs()}
print([ (i.name, i.shape) for i in s.get_inputs()])
for _ in range(3): s.run(None, ins)
t = time.perf_counter()
for _ in range(20): s.run(None, ins)
print("per eval us", (time.perf_counter() - t) / 20 / n * 1e6)
prof = s.end_profiling()
ev = json.load(open(prof))
agg = collections.Counter(); cnt = collections.Counter()
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        agg[e["args"]["op_name"]] += e["dur"]; cnt[e["args"]["op_name"]] += 1
tot = sum(agg.values())
for k, v in agg.most_common(): print(f"{k:28s} {v/tot*100:5.1f}%  n={cnt[k]//23}")
import onnx
m = onnx.load("op_profile-optimized.onnx")
print(collections.Counter(nd.op_type for nd in m.graph.node))
