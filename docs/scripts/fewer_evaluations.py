"""Measure: the coarse network against a baked density grid in the coarse pass (w128 int8 bundle)."""
import sys, time, dataclasses, numpy as np
from nerfexport.deploy.bundle import open_bundle
from nerfexport.deploy.render import Renderer
from nerfexport.deploy.networks import make_networks, render_settings
from nerfexport.deploy.runtime import load_runtime
from nerfexport.deploy.views import dataset_views
from nerfexport.deploy.density import DensityGrid
from nerfexport.data.datasets import DataArgs
from nerfexport.data.metrics import psnr
from nerfexport.model.checkpoint import load_checkpoint
from nerfexport.export.grid import _query
b = open_bundle("cache/speed/w128-int8"); spec = load_runtime("ort-cpu")
occ = b.occupancy(); lo, hi = occ.aabb[:3], occ.aabb[3:]
model = load_checkpoint("cache/w128.pt")
res = int(sys.argv[1]) if len(sys.argv) > 1 else 128
ax = [np.linspace(lo[i], hi[i], res + 1, dtype=np.float32) for i in range(3)]
corners = np.stack(np.meshgrid(*ax, indexing="ij"), -1).reshape(-1, 3)
t = time.perf_counter(); dens = _query(model.fine, corners, None, 65536)[0]; print("bake s", time.perf_counter() - t)
dg = DensityGrid(dens.reshape(res + 1, res + 1, res + 1), occ.aabb)
v = dataset_views(b.manifest.data, DataArgs("../shared/data/lego_400", 4, None, 20), [0, 5, 9])
def run(nf, grid=None, skip=True):
    sp = dataclasses.replace(spec, samples=[64, nf])
    st = render_settings(sp, b.manifest); nets = make_networks(sp, bundle=b)
    r = Renderer(nets["coarse"], nets["fine"], st, chunk=sp.chunk, grid=occ if skip else None, early_stop=1e-3 if skip else 0.0,
                 segment=sp.segment, workers=sp.workers, coarse_density=grid)
    r.render_view(v.H, v.W, v.focal, v.poses[0]); r.timings.reset()
    imgs, ts = [], []
    for p in v.poses:
        t = time.perf_counter(); imgs.append(r.render_view(v.H, v.W, v.focal, p)["rgb"]); ts.append(time.perf_counter() - t)
    return np.mean([psnr(a, g) for a, g in zip(imgs, v.images)]), np.median(ts) * 1e3, r.timings.samples / len(imgs)
print("plain 64+128", run(128, skip=False))
for nf in (128, 64, 48, 32):
    print("nf", nf, "net", run(nf), "grid", run(nf, dg))
