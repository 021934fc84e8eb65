"""Occupancy-grid threshold and early-termination sweep on lego (docs/speed.md).

    .venv/bin/python docs/scripts/grid_sweep.py cache/speed/w128-int8 ../shared/data/lego_400

For each grid (opacity threshold, dilation) baked from the bundle's source checkpoint, renders
the first 5 held-out views and 5 training views (evenly spread) with the bundle on ort-cpu,
skipping empty cells and stopping rays below the transmittance, and compares with the same
bundle rendered plain. Prints a Markdown table.
"""

import sys
import time

import numpy as np

from nerfexport.deploy.bundle import open_bundle
from nerfexport.model.checkpoint import load_checkpoint
from nerfexport.data.datasets import load_scene
from nerfexport.export.grid import bake
from nerfexport.data.metrics import psnr
from nerfexport.deploy.render import Renderer, SceneSettings
from nerfexport.deploy.networks import make_networks
from nerfexport.deploy.runtime import load_runtime


def render(r, scene, imgs, poses):
    r.timings.reset()
    outs, ts = [], []
    for p in poses:
        t = time.perf_counter()
        outs.append(r.render_view(scene.H, scene.W, scene.focal, p)["rgb"])
        ts.append(time.perf_counter() - t)
    return np.stack(outs), 1e3 * float(np.median(ts)), r.timings.samples / len(poses)


def main(bundle: str, data: str) -> None:
    b = open_bundle(bundle)
    model = load_checkpoint(b.manifest.source["checkpoint"])
    scene = load_scene(data, downscale=4, white_bkgd=True, test_every=20)
    test_i, test_p = scene.subset("test")
    test_i, test_p = test_i[:5], test_p[:5]
    tr_i, tr_p = scene.subset("train")
    k = np.linspace(0, len(tr_p) - 1, 5).astype(int)
    tr_i, tr_p = tr_i[k], tr_p[k]
    spec = load_runtime("ort-cpu")
    nets = make_networks(spec, bundle=b)
    s = SceneSettings.from_manifest(b.manifest)
    mk = lambda grid=None, stop=0.0: Renderer(nets["coarse"], nets["fine"], s, chunk=spec.chunk, grid=grid,
                                             early_stop=stop, workers=spec.workers)
    plain = mk()
    ref_t, ms_plain, ev_plain = render(plain, scene, test_i, test_p)
    ref_tr, _, _ = render(plain, scene, tr_i, tr_p)
    p_t = np.mean([psnr(a, g) for a, g in zip(ref_t, test_i)])
    p_tr = np.mean([psnr(a, g) for a, g in zip(ref_tr, tr_i)])
    print(f"{bundle} on ort-cpu, lego 100x100, {s.n_coarse}+{s.n_fine} samples; plain: {ms_plain:.0f} ms/frame, "
          f"{ev_plain:,.0f} evaluations/frame, PSNR {p_t:.2f} dB (test), {p_tr:.2f} dB (train)\n")
    print("| grid opacity threshold | dilation | occupied | early stop | evaluations/frame | ms/frame | "
          "PSNR test | vs plain (test) | PSNR change (train views) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [(None, 0, 1e-3)] + [(a, 1, 1e-3) for a in (1e-3, 0.05, 0.2, 0.5)] + [(0.2, 0, 1e-3),
                                                                                          (0.2, 1, 0.0), (0.2, 1, 1e-2)]
    for alpha, dil, stop in rows:
        grid = None
        if alpha is not None:
            grid, info = bake(model, list(b.manifest.occupancy.aabb), b.manifest.occupancy.res, alpha, dil)
        r = mk(grid, stop)
        out_t, ms, ev = render(r, scene, test_i, test_p)
        out_tr, _, _ = render(r, scene, tr_i, tr_p)
        pt = np.mean([psnr(a, g) for a, g in zip(out_t, test_i)])
        ptr = np.mean([psnr(a, g) for a, g in zip(out_tr, tr_i)])
        occ = "no grid" if grid is None else f"{100 * grid.fraction:.1f}%"
        print(f"| {'-' if alpha is None else alpha:} | {dil if grid is not None else '-'} | {occ} | {stop:g} | {ev:,.0f} | "
              f"{ms:.0f} | {pt:.2f} | {pt - p_t:+.3f} | {ptr - p_tr:+.3f} |", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
