"""Issue 34: the density sampler's own (numpy) time on test frame 0 of lego_400, one thread, with a
stand-in network that reads the bundle's baked density (so the network costs almost nothing and
the sampling is what is left). Renders it REPEAT times and prints each wall time and split.

    .venv/bin/python docs/scripts/sampler_cost.py BUNDLE [REPEAT]"""
import sys
import time

import numpy as np

from nerfexport.data.datasets import load_scene
from nerfexport.deploy.bundle import open_bundle
from nerfexport.deploy.render import Renderer, SceneSettings


def main():
    b = open_bundle(sys.argv[1])
    dg = b.density()

    def stand_in(p, v):
        return np.zeros((len(p), 3), np.float32), dg(p)[:, None]

    s = SceneSettings.from_manifest(b.manifest)
    s.n_fine = 32
    r = Renderer(stand_in, stand_in, s, chunk=256, grid=b.occupancy(), early_stop=1e-3, segment=64, proposal=dg)
    sc = load_scene("/work/shared/data/lego_400", 1, True, 20)
    _, poses = sc.subset("test")
    for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 2):
        r.timings.reset()
        t = time.perf_counter()
        r.render_view(sc.H, sc.W, sc.cam, poses[0])
        print(f"wall {time.perf_counter() - t:.2f} s", {k: round(v, 3) for k, v in r.timings.as_dict().items()},
              flush=True)


if __name__ == "__main__":
    main()
