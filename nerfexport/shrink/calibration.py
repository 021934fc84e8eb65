"""Calibration samples: real network inputs drawn along training rays the way the renderer draws them.

Shrinking (activation statistics, mean folding) and int8 export (activation ranges) both need
the points each network actually sees at render time:

* the coarse network sees ``n_coarse`` stratified depths between near and far;
* the fine network sees those plus ``n_fine`` depths drawn by inverse CDF from the coarse
  network's compositing weights (nerf-pytorch evaluates the fine network on all of them).

Depths are jittered within their bins so that the samples cover the whole ray, not just the
deterministic bin centres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nerfexport.data.datasets import Scene
from nerfexport.model.mlp import NeRF
from nerfexport.train.render import run_network, scene_rays
from nerfexport.train.volume import composite, sample_pdf, stratified_samples


@dataclass
class CalibrationSet:
    """Network inputs, float32 numpy: ``*_pts (N,3)`` points, ``*_dirs (N,3)`` unit view directions."""

    coarse_pts: np.ndarray
    coarse_dirs: np.ndarray
    fine_pts: np.ndarray
    fine_dirs: np.ndarray
    n_rays: int
    seed: int

    def for_network(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        if which not in ("coarse", "fine"):
            raise ValueError(f"network must be coarse or fine, not {which!r}")
        return (self.coarse_pts, self.coarse_dirs) if which == "coarse" else (self.fine_pts, self.fine_dirs)

    def summary(self) -> dict:
        """Statistics that a manifest or report records about the calibration data."""
        out = {"rays": self.n_rays, "seed": self.seed}
        for name in ("coarse", "fine"):
            p, _ = self.for_network(name)
            out[name] = {"points": int(p.shape[0]),
                         "min": [float(v) for v in p.min(0)] if len(p) else None,
                         "max": [float(v) for v in p.max(0)] if len(p) else None}
        return out


@torch.no_grad()
def draw_samples(model: NeRF, scene: Scene, n_rays: int = 1024, seed: int = 0,
                 n_coarse: int | None = None, n_fine: int | None = None, split: str = "train",
                 chunk: int = 2048) -> CalibrationSet:
    """Sample ``n_rays`` random rays of ``split`` and return the points each network sees on them.

    Args:
        model: The network whose samples are drawn (its coarse weights place the fine samples).
        scene: The scene whose ``split`` views give the rays.
        n_rays: ``R``, the number of rays (at least 1).
        seed: Seeds the rays and the depths.
        n_coarse, n_fine: Samples per ray (default: the model's render settings ``cfg.n_coarse``,
            ``cfg.n_fine``).
        split: Which views.
        chunk: Rays per forward pass.

    Returns:
        A :class:`CalibrationSet`: ``R * n_coarse`` coarse points and directions ``(N, 3)`` and
        ``R * (n_coarse + n_fine)`` fine ones (none when the model has no fine network or
        ``n_fine`` is 0).
    """
    if n_rays < 1:
        raise ValueError("calibration needs at least one ray")
    n_coarse = model.cfg.n_coarse if n_coarse is None else n_coarse
    n_fine = model.cfg.n_fine if n_fine is None else n_fine
    rays = scene_rays(scene, split)
    rng = np.random.default_rng(seed)
    idx = rng.choice(rays["o"].shape[0], size=min(n_rays, rays["o"].shape[0]), replace=False)
    o, d, v = (torch.from_numpy(rays[k][idx]) for k in ("o", "d", "v"))
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    cp, cd, fp, fd = [], [], [], []
    for s in range(0, o.shape[0], chunk):
        oo, dd, vv = o[s:s + chunk], d[s:s + chunk], v[s:s + chunk]
        near = torch.full((oo.shape[0],), model.cfg.near)
        far = torch.full((oo.shape[0],), model.cfg.far)
        z = stratified_samples(near, far, n_coarse, True, gen)
        pts = oo[:, None] + dd[:, None] * z[..., None]
        cp.append(pts.reshape(-1, 3)), cd.append(vv[:, None].expand(-1, n_coarse, 3).reshape(-1, 3))
        if n_fine > 0:  # the fine inputs (of the coarse network itself when there is no fine one)
            out_c = composite(run_network(model.coarse, pts, vv, None), z, dd, model.cfg.white_bkgd)
            z_mid = 0.5 * (z[:, 1:] + z[:, :-1])
            z_f = sample_pdf(z_mid, out_c.weights[:, 1:-1], n_fine, det=False, generator=gen)
            z_all, _ = torch.sort(torch.cat((z, z_f), -1), -1)
            pts_f = oo[:, None] + dd[:, None] * z_all[..., None]
            S = z_all.shape[1]
            fp.append(pts_f.reshape(-1, 3)), fd.append(vv[:, None].expand(-1, S, 3).reshape(-1, 3))
    model.train(was_training)
    cat = lambda xs: torch.cat(xs).numpy().astype(np.float32) if xs else np.zeros((0, 3), np.float32)
    return CalibrationSet(cat(cp), cat(cd), cat(fp), cat(fd), int(o.shape[0]), seed)


def subsample(pts: np.ndarray, dirs: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` rows of ``(pts, dirs)``, chosen at random without replacement."""
    if pts.shape[0] <= n:
        return pts, dirs
    idx = np.sort(np.random.default_rng(seed).choice(pts.shape[0], n, replace=False))
    return pts[idx], dirs[idx]
