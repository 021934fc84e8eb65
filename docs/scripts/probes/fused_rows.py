"""One-thread time per call of a bundle's int8 networks on onnxruntime's own kernels (the graph)
and as nerfexport's fused kernel, by rows per call, against the one-thread int8 GEMM peak
measured in the same run; alternated rounds, the median of each round's best of 5 calls.

    .venv/bin/python docs/scripts/probes/fused_rows.py B [ROWS]     (B: an int8 bundle)
"""
import sys
import time

import numpy as np

from nerfexport.deploy.bundle import open_bundle
from nerfexport.bench.peak import gemm_peak, network_ops
from nerfexport.deploy.runtime import OrtNetwork

b = open_bundle(sys.argv[1])
rows = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "256,1024,4096").split(",")]
arch = {w: n["architecture"] for w, n in b.manifest["networks"].items() if n}
variants = {}
for kernel in ("graph", "fused"):
    variants[f"fine, {kernel}"] = (OrtNetwork(b.network_path("fine"), threads=1, kernel=kernel), network_ops(arch["fine"]))
    variants[f"coarse density, {kernel}"] = (OrtNetwork(b.network_path("coarse"), threads=1, kernel=kernel,
                                                        outputs=("density",)),
                                             network_ops(arch["coarse"], colour=False))
pk = gemm_peak("int8", sizes=(512, 1024), threads=1)
print(f"{b.root}: one thread; int8 peak on one thread (MatMulInteger, best of 512^3 and 1024^3): {pk['gops']:.0f} GOP/s")
print("| network | kernel | rows per call | us per call | GOP/s | of the one-thread peak |")
print("|---|---|---:|---:|---:|---:|")
rng = np.random.default_rng(0)
for n in rows:
    pts = rng.uniform(-1.2, 1.2, (n, 3)).astype(np.float32)
    d = rng.standard_normal((n, 3)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    res = {k: [] for k in variants}
    for _ in range(7):
        for k, (net, _ops) in variants.items():
            net(pts, d)
            ts = []
            for _ in range(5):
                t = time.perf_counter()
                net(pts, d)
                ts.append(time.perf_counter() - t)
            res[k].append(min(ts))
    for k, (net, ops) in variants.items():
        t = float(np.median(res[k]))
        name, kernel = k.rsplit(", ", 1)
        g = ops * n / t / 1e9
        print(f"| {name} | {kernel} | {n} | {t * 1e6:.0f} | {g:.0f} | {g / pk['gops']:.0%} |")
