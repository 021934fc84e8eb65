"""One-thread time per call of a bundle's networks as ort-cpu ran them before (whole graph) and
now (encodings' Sin/Cos in numpy; the coarse network for its density alone), alternated rounds.

    .venv/bin/python docs/scripts/probes/host_encoding.py B [ROWS]     (B: an int8 bundle)
"""
import sys
import time

import numpy as np

from nerfexport.deploy.bundle import open_bundle
from nerfexport.bench.peak import network_ops
from nerfexport.deploy.runtime import OrtNetwork

b = open_bundle(sys.argv[1])
rows = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "512,2048,8192").split(",")]
arch = {w: n["architecture"] for w, n in b.manifest["networks"].items() if n}
rng = np.random.default_rng(0)
variants = {
    "fine, whole graph": (OrtNetwork(b.network_path("fine"), threads=1), network_ops(arch["fine"])),
    "fine, host encoding": (OrtNetwork(b.network_path("fine"), threads=1, encoding="host"), network_ops(arch["fine"])),
    "coarse, whole graph": (OrtNetwork(b.network_path("coarse"), threads=1), network_ops(arch["coarse"])),
    "coarse, host encoding": (OrtNetwork(b.network_path("coarse"), threads=1, encoding="host"), network_ops(arch["coarse"])),
    "coarse, density only, host encoding": (OrtNetwork(b.network_path("coarse"), threads=1, encoding="host",
                                                       outputs=("density",)), network_ops(arch["coarse"], colour=False)),
}
print(f"{b.root}: one thread; median of 7 alternated rounds, each the best of 5 calls")
print("| network | rows per call | us per call | ns per sample | GOP/s (ops it runs) |")
print("|---|---:|---:|---:|---:|")
for n in rows:
    pts = rng.uniform(-1.5, 1.5, (n, 3)).astype(np.float32)
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
        print(f"| {k} | {n} | {t * 1e6:.0f} | {t / n * 1e9:.0f} | {ops * n / t / 1e9:.0f} |")
