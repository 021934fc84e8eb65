"""A density grid that stands in for the coarse network: the coarse pass only places the fine
samples (its colour is never shown), so its densities can be read from a grid of the model's
density instead of running a network.

``DensityGrid`` holds densities at the ``(res+1)^3`` corners of the cells of a box and
interpolates them trilinearly (zero outside the box). numpy only.
"""

from __future__ import annotations

import numpy as np


class DensityGrid:
    """``values (res+1, res+1, res+1)`` densities at the cell corners of ``aabb`` (xmin, ymin,
    zmin, xmax, ymax, zmax); :meth:`__call__` interpolates them at points ``(N, 3)``."""

    def __init__(self, values: np.ndarray, aabb) -> None:
        v = np.asarray(values, np.float32)
        if v.ndim != 3 or len(set(v.shape)) != 1 or v.shape[0] < 2 or not np.isfinite(v).all():
            raise ValueError(f"a density grid is a finite cube of at least 2^3 corner values, got shape {v.shape}")
        self.values, self.res = v, v.shape[0] - 1
        self.aabb = np.asarray(aabb, np.float32).reshape(6)
        self._scale = (self.res / (self.aabb[3:] - self.aabb[:3])).astype(np.float32)
        self._flat = v.reshape(-1)

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        """Densities ``(N,)`` at ``pts (N, 3)``."""
        u = (np.asarray(pts, np.float32) - self.aabb[:3]) * self._scale
        inside = ((u >= 0) & (u <= self.res)).all(-1)
        u = np.clip(u, 0.0, self.res - 1e-4)
        i = u.astype(np.int32)
        f = u - i
        n = self.res + 1
        base = (i[:, 0] * n + i[:, 1]) * n + i[:, 2]
        out = np.zeros(len(u), np.float32)
        for dx in (0, 1):
            wx = f[:, 0] if dx else 1.0 - f[:, 0]
            for dy in (0, 1):
                wy = f[:, 1] if dy else 1.0 - f[:, 1]
                for dz in (0, 1):
                    wz = f[:, 2] if dz else 1.0 - f[:, 2]
                    out += wx * wy * wz * self._flat[base + (dx * n + dy) * n + dz]
        return np.where(inside, out, 0.0).astype(np.float32)
