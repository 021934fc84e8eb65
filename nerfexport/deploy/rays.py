"""Camera rays in numpy (no torch: the lean renderer shares this module).

Conventions follow nerf-pytorch: camera-to-world matrices in the OpenGL convention
(camera looks down -z, y up), pixel ``(i, j)`` at column ``i`` and row ``j`` with no
half-pixel offset, and the NDC warp of forward-facing LLFF scenes.
"""

from __future__ import annotations

import numpy as np


# The box of NDC space that forward-facing rays cross (t in [0, 1] runs z from -1 to 1; x and y a
# little past +-1 at the image corners): the occupancy grid's box for NDC scenes, in training and in
# the bundle.
NDC_BOX = (-1.05, -1.05, -1.0, 1.05, 1.05, 1.0)


def pinhole(H: int, W: int, focal) -> tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)`` in pixels of a camera given as ``focal``: one focal length (square
    pixels, the principal point at the image centre ``(W/2, H/2)``) or already four numbers
    ``(fx, fy, cx, cy)`` (a general pinhole, as nerfstudio's ``fl_x, fl_y, cx, cy``)."""
    if np.ndim(focal) == 0:
        f = float(focal)
        return f, f, 0.5 * W, 0.5 * H
    fx, fy, cx, cy = (float(v) for v in focal)
    return fx, fy, cx, cy


def intrinsics(H: int, W: int, focal) -> np.ndarray:
    """3x3 pinhole matrix of ``focal`` (see :func:`pinhole`: a focal length with the principal
    point at the image centre, or ``(fx, fy, cx, cy)``)."""
    fx, fy, cx, cy = pinhole(H, W, focal)
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def get_rays(H: int, W: int, K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rays through every pixel of an ``H x W`` image.

    Returns ``origins (H*W, 3)`` and ``directions (H*W, 3)`` (not normalised: unit z in camera
    space, as nerf-pytorch), float32, row-major pixel order.
    """
    i, j = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64), indexing="xy")
    dirs = np.stack([(i - K[0, 2]) / K[0, 0], -(j - K[1, 2]) / K[1, 1], -np.ones_like(i)], -1)
    c2w = np.asarray(c2w, dtype=np.float64)
    rays_d = dirs.reshape(-1, 3) @ c2w[:3, :3].T
    rays_o = np.broadcast_to(c2w[:3, 3], rays_d.shape)
    return np.ascontiguousarray(rays_o, dtype=np.float32), np.ascontiguousarray(rays_d, dtype=np.float32)


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


def pose_spherical(theta_deg: float, phi_deg: float, radius: float) -> np.ndarray:
    """Camera-to-world matrix on a sphere looking at the origin (nerf-pytorch ``pose_spherical``)."""
    t = np.eye(4)
    t[2, 3] = radius
    phi = np.deg2rad(phi_deg)
    rot_phi = np.array([[1, 0, 0, 0], [0, np.cos(phi), -np.sin(phi), 0], [0, np.sin(phi), np.cos(phi), 0], [0, 0, 0, 1]])
    th = np.deg2rad(theta_deg)
    rot_theta = np.array([[np.cos(th), 0, -np.sin(th), 0], [0, 1, 0, 0], [np.sin(th), 0, np.cos(th), 0], [0, 0, 0, 1]])
    c2w = rot_theta @ rot_phi @ t
    c2w = np.array([[-1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]]) @ c2w
    return c2w.astype(np.float32)
