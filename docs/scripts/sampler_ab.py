"""Seconds a frame of a bundle with the density sampler: the proposal lattice whole against its window
inside the box around matter (and the window with 1,024-ray chunks), frames 0 and 20, two rounds, one
process. The coarse-grid rows of docs/speed-native.md came from a variant not kept (never committed).
Usage: python docs/scripts/sampler_ab.py BUNDLE"""
import sys, json, time, numpy as np; sys.path.insert(0, ".")
from nerfexport.deploy.runtime import load_runtime
from nerfexport.deploy.networks import open_source
from nerfexport.deploy.render import make_renderer
from PIL import Image
spec = load_runtime("cache/m/ort-cpu-d32.toml")
src = open_source(spec, sys.argv[1])
nets = src.networks(None)
tj = json.load(open("/work/shared/data/lego_400/transforms_test.json"))
f = 0.5 * 400 / np.tan(0.5 * tj["camera_angle_x"])
res = {}
for rep in range(2):
  for var in ("full", "window", "window-c1024"):
    spec.chunk = 1024 if var.endswith("c1024") else 256
    r = make_renderer(spec, nets, src.settings, grid=src.occupancy(), skip=True, density=src.density(), sampler="density")
    if var == "full": r._box = None
    for k in (0, 20):
        c2w = np.array(tj["frames"][k]["transform_matrix"], np.float32)
        r.timings = type(r.timings)()
        t = time.perf_counter(); out = r.render_view(400, 400, f, c2w); dt = time.perf_counter() - t
        gt = np.asarray(Image.open(f"/work/shared/data/lego_400/test/r_{k}.png"), np.float32) / 255
        gt = gt[..., :3] * gt[..., 3:] + (1 - gt[..., 3:])
        p = -10 * np.log10(((np.clip(out["rgb"], 0, 1) - gt) ** 2).mean())
        tm = r.timings
        print(f"{var:10s} frame {k}: {dt:.2f}s {p:.3f} dB sampling {tm.sampling:.2f} net {tm.network:.2f} comp {tm.compositing:.2f} evals {tm.samples}", flush=True)
