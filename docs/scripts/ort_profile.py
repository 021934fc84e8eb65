"""Issue 34: where an ONNX network's time goes in onnxruntime on the CPU (one thread), by operator
type and (with ``nodes``) by node, at a batch of N random points.

    .venv/bin/python docs/scripts/ort_profile.py NETWORK.onnx N [profile [nodes]]

Without ``profile`` it prints only the time a call and an evaluation (the median-free mean of
max(5, 400000 / N) calls after 5 warm-up calls)."""
import collections
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    path, n = sys.argv[1], int(sys.argv[2])
    prof = len(sys.argv) > 3
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = prof
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    p = rng.uniform(-0.6, 0.6, (n, 3)).astype(np.float32)
    v = rng.normal(size=(n, 3)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    feeds = {i.name: (p if "point" in i.name else v) for i in s.get_inputs()}
    outs = [o.name for o in s.get_outputs()]
    for _ in range(5):
        s.run(outs, feeds)
    reps = max(5, 400000 // n)
    t = time.perf_counter()
    for _ in range(reps):
        s.run(outs, feeds)
    dt = (time.perf_counter() - t) / reps
    print(f"N={n}: {dt * 1e3:.3f} ms a call, {dt / n * 1e6:.3f} us an evaluation")
    if not prof:
        return
    f = s.end_profiling()
    with open(f) as fh:
        events = [e for e in json.load(fh) if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    os.remove(f)
    by_op, count, by_node = collections.Counter(), collections.Counter(), collections.Counter()
    for e in events:
        by_op[e["args"]["op_name"]] += e["dur"]
        count[e["args"]["op_name"]] += 1
        by_node[(e["name"][:-len("_kernel_time")], e["args"]["op_name"])] += e["dur"]
    total = sum(by_op.values())
    for k, d in by_op.most_common():
        print(f"{k:28s} {100 * d / total:5.1f}%")
    if len(sys.argv) > 4:
        for (name, op), d in by_node.most_common(40):
            print(f"{100 * d / total:5.1f}%  {name} ({op})")


if __name__ == "__main__":
    main()
