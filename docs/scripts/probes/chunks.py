"""Frame time and network GOP/s of a bundle on a runtime by renderer chunk and segment, in
alternated rounds (the machine is shared): chunks.py BUNDLE [RUNTIME] [CHUNKS] [SEGMENTS] [ROUNDS]."""
import sys, time, json, dataclasses, numpy as np
from nerfexport.deploy.bundle import open_bundle
from nerfexport.deploy.runtime import load_runtime, make_networks
from nerfexport.deploy.render import SceneSettings, make_renderer
from nerfexport.data.datasets import load_scene
from nerfexport.bench.peak import network_ops

b = open_bundle(sys.argv[1])
spec0 = load_runtime(sys.argv[2] if len(sys.argv) > 2 else "ort-cpu")
chunks = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "256,1024").split(",")]
segs = [int(x) for x in (sys.argv[4] if len(sys.argv) > 4 else "64").split(",")]
rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 2
ops = {w: network_ops(n["architecture"]) for w, n in b.manifest["networks"].items() if n}
nets = make_networks(spec0, bundle=b)
sc = load_scene("../shared/data/lego_400", downscale=4, test_every=20)
_, poses = sc.subset("test")
poses = poses[:3]
res = {}
for rnd in range(rounds):
    for c in chunks:
        for s in segs:
            spec = dataclasses.replace(spec0, chunk=c, segment=s)
            r = make_renderer(spec, nets, SceneSettings.from_manifest(b.manifest), b.occupancy())
            r.render_view(sc.H, sc.W, sc.focal, poses[0])
            for p in poses:
                r.timings.reset()
                t = time.perf_counter()
                r.render_view(sc.H, sc.W, sc.focal, p)
                wall = time.perf_counter() - t
                tm = r.timings.as_dict()
                busy = sum(tm[k] for k in ("rays", "sampling", "network", "compositing"))
                net = tm["network"] / busy * wall
                op = tm["coarse_samples"] * ops["coarse"] + (tm["samples"] - tm["coarse_samples"]) * ops.get("fine", ops["coarse"])
                res.setdefault((c, s), []).append((wall, op / net / 1e9, tm["samples"]))
for (c, s), v in sorted(res.items()):
    a = np.array(v)
    print(f"chunk {c:5d} segment {s:4d}: median {np.median(a[:, 0]) * 1e3:7.0f} ms/frame, network {np.median(a[:, 1]):5.0f} GOP/s, "
          f"{a[:, 2].mean():,.0f} evals/frame ({len(v)} frames)")
