"""Issue 34: time the density sampler's settings on two whole 400x400 test views of lego_400.

    .venv/bin/python docs/scripts/sampler_frames.py BUNDLE [key=value ...]

Keys (the renderer's, as a runtime file sets them): ``nf`` fine samples (32), ``np`` proposal
depths a ray (0: one per density-grid cell), ``soft`` proposal softness (0.1), ``dil`` spread in
intervals (the renderer's default), ``seg`` proposal segment (8), ``stop`` early stop (1e-3),
``chunk`` rays a chunk (256), ``views`` test views (``0,2``: test frames 0 and 40 of the protocol's
every-20th split); ``mode=skip``: the skipping renderer with the coarse network instead (64+64).
Two workers, one onnxruntime thread each (``ort-cpu``). Prints one JSON line: seconds a frame
(mean), evaluations a frame, PSNR against the ground truth, and the frame time split.
"""
import dataclasses
import json
import sys
import time

import numpy as np

from nerfexport.data.datasets import load_scene
from nerfexport.deploy.bundle import open_bundle
from nerfexport.deploy.networks import make_networks, render_settings
from nerfexport.deploy.rays import view_rays
from nerfexport.deploy.render import Renderer
from nerfexport.deploy.runtime import load_runtime

DATA = "/work/shared/data/lego_400"


def main():
    b = open_bundle(sys.argv[1])
    kv = dict(a.split("=", 1) for a in sys.argv[2:])
    skip = kv.get("mode") == "skip"
    base = dataclasses.replace(load_runtime("ort-cpu"), workers=2)
    spec = base if skip else dataclasses.replace(base, samples=[64, int(kv.get("nf", 32))])
    s = render_settings(spec, b.manifest)
    nets = make_networks(spec, bundle=b)
    if skip:
        r = Renderer(nets["coarse"], nets["fine"], s, chunk=256, grid=b.occupancy(), early_stop=1e-3, workers=2)
    else:
        r = Renderer(nets["coarse"], nets["fine"], s, chunk=int(kv.get("chunk", 256)), grid=b.occupancy(),
                     early_stop=float(kv.get("stop", 1e-3)), workers=2, proposal=b.density(),
                     proposal_segment=int(kv.get("seg", 8)), proposal_softness=float(kv.get("soft", 0.1)),
                     proposal_dilate=int(kv["dil"]) if "dil" in kv else None,
                     n_proposal=int(kv.get("np", 0)) or None)
    sc = load_scene(DATA, 1, True, 20)
    imgs, poses = sc.subset("test")
    views = [int(x) for x in kv.get("views", "0,2").split(",")]
    r.render_rays(*[x[:2000] for x in view_rays(sc.H, sc.W, sc.cam, poses[0], False)])   # warm-up
    r.timings.reset()
    ts, ps = [], []
    for i in views:
        t = time.perf_counter()
        out = r.render_view(sc.H, sc.W, sc.cam, poses[i])
        ts.append(time.perf_counter() - t)
        ps.append(float(-10 * np.log10(np.mean((out["rgb"] - imgs[i]) ** 2))))
    tm = r.timings.as_dict()
    busy = sum(tm[k] for k in ("rays", "sampling", "network", "compositing"))
    sec = float(np.mean(ts))
    print(json.dumps({"config": " ".join(sys.argv[2:]), "s_frame": round(sec, 3),
                      "evaluations": round(tm["samples"] / len(views)), "psnr": round(float(np.mean(ps)), 3),
                      "split_s": {k: round(tm[k] / busy * sec, 3) for k in ("sampling", "network", "compositing")}}),
          flush=True)


if __name__ == "__main__":
    main()
