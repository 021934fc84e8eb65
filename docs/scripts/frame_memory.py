"""Issue 34: peak resident memory of one 800x800 frame (torch-free process). Usage:
    nice -n 19 .venv/bin/python docs/scripts/frame_memory.py BUNDLE [density|network|auto] [RUNTIME]
RUNTIME: a shipped runtime name or file (ort-cpu by default)."""
import sys, resource, time
sys.modules["torch"] = None
import numpy as np
from nerfexport.deploy.bundle import open_bundle
from nerfexport.deploy.render import make_renderer, SceneSettings
from nerfexport.deploy.networks import make_networks, render_settings
from nerfexport.deploy.runtime import load_runtime
from nerfexport.data.rays import pose_spherical
def hwm():
    for l in open("/proc/self/status"):
        if l.startswith(("VmHWM", "VmRSS")): print(" ", l.strip(), flush=True)
b = open_bundle(sys.argv[1]); spec = load_runtime(sys.argv[3] if len(sys.argv) > 3 else "ort-cpu")
r = make_renderer(spec, make_networks(spec, bundle=b), render_settings(spec, b.manifest), b.occupancy(), True, None, b.density(), sys.argv[2] if len(sys.argv) > 2 else None)
r.render_view(8, 8, 10.0, pose_spherical(30, -30, 4.0)); print("after warm-up"); hwm()
out = r.render_view(800, 800, 1100.0, pose_spherical(30, -30, 4.0))
print("800x800:", out["rgb"].shape, "acc mean", float(out["acc"].mean()), "evaluations", r.timings.samples); hwm()
