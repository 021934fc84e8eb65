import time, sys, json, threading, numpy as np
from nerfexport.deploy.bundle import open_bundle
from nerfexport.deploy.runtime import load_runtime, make_networks
from nerfexport.deploy.render import SceneSettings, make_renderer
from nerfexport.data.datasets import load_scene
b = open_bundle(sys.argv[1]); spec = load_runtime(sys.argv[2] if len(sys.argv) > 2 else "ort-cpu")
nets = make_networks(spec, bundle=b)
acc = {"t": 0.0, "n": 0, "calls": 0}; lock = threading.Lock(); sizes = []
def wrap(f):
    def g(p, v):
        t = time.perf_counter(); r = f(p, v); dt = time.perf_counter() - t
        with lock: acc["t"] += dt; acc["n"] += p.shape[0]; acc["calls"] += 1; sizes.append(p.shape[0])
        return r
    return g
nets = {k: wrap(v) for k, v in nets.items()}
r = make_renderer(spec, nets, SceneSettings.from_manifest(b.manifest), b.occupancy())
sc = load_scene("../shared/data/lego_400", downscale=4, test_every=20); imgs, poses = sc.subset("test")
r.render_view(sc.H, sc.W, sc.focal, poses[0])
for k in acc: acc[k] = 0
sizes.clear(); r.timings.reset()
t = time.perf_counter()
for p in poses[:3]: r.render_view(sc.H, sc.W, sc.focal, p)
wall = time.perf_counter() - t
tm = r.timings.as_dict()
print(f"wall {wall/3*1e3:.0f} ms/frame; network timer (sum over threads) {tm['network']/3*1e3:.0f} ms; inside run {acc['t']/3*1e3:.0f} ms; "
      f"calls/frame {acc['calls']/3:.0f}, median call {np.median(sizes):.0f}, mean {np.mean(sizes):.0f}; sampling {tm['sampling']/3*1e3:.0f} compositing {tm['compositing']/3*1e3:.0f}")
