"""Issue 34: evaluations per ray and PSNR of each sampler on a fixed set of native-resolution pixels.

    nice -n 19 .venv/bin/python docs/scripts/native_samples.py BUNDLE [CONFIG ...]

4,000 random pixels (seed 34) of the bundle's recorded test views (lego_400: 10 views at 400x400),
rendered through ``Renderer.render_rays`` on ``ort-cpu``. Prints one JSON line per configuration:
evaluations per ray (all and coarse), PSNR against the plain render of the same pixels and against
the ground truth. The plain render is cached beside the bundle (``BUNDLE/../<name>-plain.npz``).
Density grids that the bundle lacks are baked from its fine network at the occupied cells' corners
and cached as ``<name>-density-<res>.npz``.
"""
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from nerfexport.deploy.bundle import open_bundle
from nerfexport.deploy.density import bake_density, load_density, save_density
from nerfexport.deploy.rays import view_rays
from nerfexport.deploy.render import Renderer
from nerfexport.deploy.networks import make_networks, render_settings
from nerfexport.deploy.ort_network import OrtNetwork
from nerfexport.deploy.runtime import load_runtime
from nerfexport.deploy.views import dataset_views

PIXELS, SEED = 4000, 34


def pixel_set(b):
    v = dataset_views(b.manifest.data, owner="the bundle")
    rng = np.random.default_rng(SEED)
    vi = rng.integers(0, len(v.poses), PIXELS)
    pi = rng.integers(0, v.H * v.W, PIXELS)
    o, d, vd, gt = [], [], [], []
    for k in range(len(v.poses)):
        sel = pi[vi == k]
        ro, rd, rv = view_rays(v.H, v.W, v.focal, v.poses[k], False)
        o.append(ro[sel]); d.append(rd[sel]); vd.append(rv[sel]); gt.append(v.images[k].reshape(-1, 3)[sel])
    return [np.concatenate(x).astype(np.float32) for x in (o, d, vd, gt)]


def psnr(a, b):
    return float(-10 * np.log10(np.mean((np.clip(a, 0, 1) - b) ** 2)))


def density_grid(b, root, res):
    if b.manifest.density is not None and b.manifest.density.res == res:
        return b.density()        # baked into the bundle at export
    cache = root.parent / f"{root.name}-density-{res}.npz"
    occ = b.occupancy()
    if cache.exists():
        z = np.load(cache)
        return load_density(cache, res, occ.aabb, float(z["scale"])) if "scale" in z else None
    fine = OrtNetwork(b.network_path("fine"), threads=2, outputs=("density",))
    dg = bake_density(lambda p: fine(p, np.zeros_like(p))[1], occ, res, chunk=16384)
    from nerfexport.deploy.density import encode
    codes, scale = encode(dg.values)
    np.savez_compressed(cache, codes=codes.reshape(-1), scale=np.float64(scale))
    return load_density(cache, res, occ.aabb, scale)


def main():
    root = Path(sys.argv[1])
    configs = sys.argv[2:] or ["plain", "skip", "skip-nf32", "dgcoarse128", "prop128-nf64", "prop128-nf32",
                               "prop128-nf24", "prop128-nf16"]
    b = open_bundle(root)
    o, d, v, gt = pixel_set(b)
    spec = dataclasses.replace(load_runtime("ort-cpu"), workers=2)
    plain_file = root.parent / f"{root.name}-plain.npz"
    plain = np.load(plain_file)["rgb"] if plain_file.exists() else None
    for cfg in configs:
        parts = dict(p.split("=") for p in cfg.split(",")[1:])
        name = cfg.split(",")[0]
        nf = int(name.split("-nf")[1]) if "-nf" in name else b.manifest.scene.n_fine
        sp = dataclasses.replace(spec, samples=[b.manifest.scene.n_coarse, nf])
        s = render_settings(sp, b.manifest)
        nets = make_networks(sp, bundle=b)
        kw = dict(chunk=sp.chunk, workers=sp.workers, segment=sp.segment)
        if name != "plain":
            kw.update(grid=b.occupancy(), early_stop=float(parts.get("stop", 1e-3)))
        if "seg" in parts and not name.startswith(("prop", "fineonly")):
            kw["segment"] = int(parts["seg"])    # samples a ray marched at once (the runtime's segment)
        if name.startswith("dgcoarse"):
            kw["coarse_density"] = density_grid(b, root, int(name[8:].split("-")[0]))
        if name.startswith("prop"):
            kw["proposal"] = density_grid(b, root, int(name[4:].split("-")[0]))
            kw["proposal_segment"] = int(parts.get("seg", 8))
            kw["proposal_dilate"] = int(parts.get("dil", 1))
            kw["proposal_softness"] = float(parts.get("soft", 1.0))
        if name.startswith("fineonly"):   # coarse network; the fine network at the fine samples alone
            kw.update(fine_only=True, proposal_segment=int(parts.get("seg", 8)))
            if "np" in parts:
                kw["n_proposal"] = int(parts["np"])
        if name.startswith("march"):   # the fine network alone at N evenly spaced depths, occupied cells only
            s = dataclasses.replace(s, n_coarse=int(name[5:]), n_fine=0)
            r = Renderer(nets["fine"], None, s, **kw)
        else:
            r = Renderer(nets["coarse"], nets["fine"], s, **kw)
        rgb = r.render_rays(o, d, v)["rgb"]
        if name == "plain" and plain is None:
            np.savez(plain_file, rgb=rgb)
            plain = rgb
        t = r.timings
        print(json.dumps({"config": cfg, "evals_per_ray": t.samples / len(o), "coarse_per_ray": t.coarse_samples / len(o),
                          "evals_per_400x400_frame": round(t.samples / len(o) * 160000),
                          "psnr_vs_plain": psnr(rgb, np.clip(plain, 0, 1)) if plain is not None else None,
                          "psnr_vs_gt": psnr(rgb, gt), "n_proposal": getattr(r, "n_proposal", None)}), flush=True)


if __name__ == "__main__":
    main()
