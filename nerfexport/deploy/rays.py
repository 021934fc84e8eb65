"""Camera rays in numpy (no torch: the lean renderer shares this module).

Conventions follow nerf-pytorch: camera-to-world matrices in the OpenGL convention
(camera looks down -z, y up), pixel ``(i, j)`` at column ``i`` and row ``j`` with no
half-pixel offset, and the NDC warp of forward-facing LLFF scenes.
"""

from __future__ import annotations

import numpy as np

from nerfexport.data.rays import get_rays, intrinsics, pinhole


# The box of NDC space that forward-facing rays cross (t in [0, 1] runs z from -1 to 1; x and y a
# little past +-1 at the image corners): the occupancy grid's box for NDC scenes, in training and in
# the bundle.
NDC_BOX = (-1.05, -1.05, -1.0, 1.05, 1.05, 1.0)





def ndc_rays(H: int, W: int, focal, near: float, rays_o: np.ndarray, rays_d: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Warp rays ``(N,3)`` into normalised device coordinates (nerf-pytorch ``ndc_rays``).

    The ray origins are first moved onto the plane ``z = -near``; in NDC the scene spans
    ``t`` in ``[0, 1]``. ``focal`` as in :func:`pinhole` (``fx`` scales x, ``fy`` scales y).
    """
    fx, fy, _, _ = pinhole(H, W, focal)
    rays_o = np.asarray(rays_o, dtype=np.float64)
    rays_d = np.asarray(rays_d, dtype=np.float64)
    t = -(near + rays_o[..., 2]) / rays_d[..., 2]
    rays_o = rays_o + t[..., None] * rays_d
    ox, oy, oz = rays_o[..., 0], rays_o[..., 1], rays_o[..., 2]
    dx, dy, dz = rays_d[..., 0], rays_d[..., 1], rays_d[..., 2]
    o0 = -1.0 / (W / (2.0 * fx)) * ox / oz
    o1 = -1.0 / (H / (2.0 * fy)) * oy / oz
    o2 = 1.0 + 2.0 * near / oz
    d0 = -1.0 / (W / (2.0 * fx)) * (dx / dz - ox / oz)
    d1 = -1.0 / (H / (2.0 * fy)) * (dy / dz - oy / oz)
    d2 = -2.0 * near / oz
    return (np.stack([o0, o1, o2], -1).astype(np.float32), np.stack([d0, d1, d2], -1).astype(np.float32))


def view_rays(H: int, W: int, focal, c2w: np.ndarray, ndc: bool = False
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Everything the renderer needs for one view; ``focal`` is a focal length or ``(fx, fy,
    cx, cy)`` (:func:`pinhole`).

    Returns ``origins (H*W,3)``, ``directions (H*W,3)`` (in NDC when ``ndc``) and unit
    ``viewdirs (H*W,3)`` taken from the world-space directions before any NDC warp.
    """
    rays_o, rays_d = get_rays(H, W, intrinsics(H, W, focal), c2w)
    viewdirs = rays_d / np.linalg.norm(rays_d, axis=-1, keepdims=True)
    if ndc:
        rays_o, rays_d = ndc_rays(H, W, focal, 1.0, rays_o, rays_d)
    return rays_o, rays_d, viewdirs.astype(np.float32)


def band_rays(H: int, W: int, focal, c2w: np.ndarray, ndc: bool, r0: int, r1: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`view_rays` of the rows ``r0 <= j < r1`` of an ``H x W`` view alone (a tile of a
    large frame: memory in proportion to the band, not the image); equal to those rows of
    :func:`view_rays`."""
    fx, fy, cx, cy = pinhole(H, W, focal)
    rays_o, rays_d = get_rays(r1 - r0, W, intrinsics(r1 - r0, W, (fx, fy, cx, cy - r0)), c2w)
    viewdirs = rays_d / np.linalg.norm(rays_d, axis=-1, keepdims=True)
    if ndc:
        rays_o, rays_d = ndc_rays(H, W, focal, 1.0, rays_o, rays_d)
    return rays_o, rays_d, viewdirs.astype(np.float32)

