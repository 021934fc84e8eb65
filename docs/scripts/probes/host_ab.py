"""Frame time of the skipping renderer on ort-cpu with and without the host encoding and the
density-only coarse session, alternated rounds on the first 3 held-out views:
host_ab.py BUNDLE [ROUNDS] [CHUNKS]."""
import dataclasses
import sys
import time

import numpy as np

from nerfexport.deploy.bundle import open_bundle
from nerfexport.data.datasets import load_scene
from nerfexport.deploy.render import SceneSettings, make_renderer
from nerfexport.deploy.runtime import OrtNetwork, load_runtime

b = open_bundle(sys.argv[1])
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
chunks = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "256").split(",")]
spec = load_runtime("ort-cpu")
sc = load_scene("../shared/data/lego_400", downscale=4, test_every=20)
poses = sc.subset("test")[1][:3]
mk = lambda w, enc, outs: OrtNetwork(b.network_path(w), spec.providers, spec.threads, spec.graph_optimization,
                                     encoding=enc, outputs=outs)
full = ("rgb", "density")
variants = {
    "whole graphs (before)": (mk("coarse", "graph", full), mk("fine", "graph", full)),
    "host encoding": (mk("coarse", "host", full), mk("fine", "host", full)),
    "density-only coarse": (mk("coarse", "graph", ("density",)), mk("fine", "graph", full)),
    "both (ort-cpu now)": (mk("coarse", "host", ("density",)), mk("fine", "host", full)),
}
res = {}
for _ in range(rounds):
    for c in chunks:
        for k, (co, fi) in variants.items():
            r = make_renderer(dataclasses.replace(spec, chunk=c), {"coarse": co, "fine": fi},
                              SceneSettings.from_manifest(b.manifest), b.occupancy())
            r.render_view(sc.H, sc.W, sc.focal, poses[0])
            for p in poses:
                t = time.perf_counter()
                r.render_view(sc.H, sc.W, sc.focal, p)
                res.setdefault((c, k), []).append(time.perf_counter() - t)
print(f"{b.root}, ort-cpu, {spec.workers} workers, {rounds} alternated rounds x 3 views")
print("| chunk | sessions | median ms/frame | against whole graphs |")
print("|---:|---|---:|---:|")
for c in chunks:
    base = np.median(res[(c, "whole graphs (before)")])
    for k in variants:
        m = np.median(res[(c, k)])
        print(f"| {c} | {k} | {m * 1e3:.0f} | {m / base:.3f} |")
