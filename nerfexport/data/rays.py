"""The pinhole camera in numpy (no torch): intrinsics, one ray per pixel, orbit poses. The lowest
floor's share of ray generation: the procedural scene casts its rays with it, and the deploy side's
ray generator (:mod:`nerfexport.deploy.rays`) builds on it.

Conventions follow nerf-pytorch: camera-to-world matrices in the OpenGL convention
(camera looks down -z, y up), pixel ``(i, j)`` at column ``i`` and row ``j`` with no
half-pixel offset.
"""

from __future__ import annotations

import numpy as np


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
