"""A density grid that stands in for the coarse network: the coarse pass only places the fine
samples (its colour is never shown), so its densities can be read from a grid of the model's
density instead of running a network.

``DensityGrid`` holds densities at the ``(res+1)^3`` corners of the cells of a box and
interpolates them trilinearly (zero outside the box). numpy only.
"""

from __future__ import annotations

from typing import Callable

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
        fx, fy, fz = (np.ascontiguousarray(f[:, k]) for k in range(3))

        def lerp(a, b, t):   # a + t (b - a), in place in a
            b -= a
            b *= t
            a += b
            return a

        def corner(dx, dy, dz):
            return np.take(self._flat, base + ((dx * n + dy) * n + dz))

        # along z, then y, then x: the trilinear weights, seven interpolations
        c = [[lerp(corner(dx, dy, 0), corner(dx, dy, 1), fz) for dy in (0, 1)] for dx in (0, 1)]
        out = lerp(lerp(c[0][0], c[0][1], fy), lerp(c[1][0], c[1][1], fy), fx)
        out[~inside] = 0.0
        return out


# --- baked into a bundle (issue 34): ``density.npz`` beside ``occupancy.npz`` -------------------

DENSITY_FILE = "density.npz"
LEVELS = 255   # densities are stored as uint8 codes of log(1 + density), 0 = no density


def encode(values: np.ndarray) -> tuple[np.ndarray, float]:
    """``uint8`` codes of ``log1p(values)`` and the ``scale`` that maps code 255 back to the largest:
    ``density = expm1(code * scale)`` (about 2.7% steps at a largest density of 1,000)."""
    v = np.maximum(np.nan_to_num(np.asarray(values, np.float32), nan=0.0, posinf=0.0), 0.0)
    top = float(np.log1p(v.max())) if v.size else 0.0
    scale = top / LEVELS if top > 0 else 1.0
    return np.clip(np.rint(np.log1p(v) / scale), 0, LEVELS).astype(np.uint8), scale


def decode(codes: np.ndarray, scale: float) -> np.ndarray:
    return np.expm1(codes.astype(np.float32) * np.float32(scale)).astype(np.float32)


def save_density(grid: DensityGrid, path) -> float:
    """Write ``grid``'s corner densities as deflated uint8 codes; returns the code scale (the
    manifest records it with the resolution and box)."""
    codes, scale = encode(grid.values)
    with open(path, "wb") as f:
        np.savez_compressed(f, codes=codes.reshape(-1))
    return scale


def load_density(path, res: int, aabb, scale: float) -> DensityGrid:
    """Read what :func:`save_density` wrote (``allow_pickle=False``). Raises ``ValueError``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            codes = z["codes"]
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        raise ValueError(f"{path} is not a density grid ({e})") from None
    n = (int(res) + 1) ** 3
    if codes.dtype != np.uint8 or codes.ndim != 1 or codes.size != n:
        raise ValueError(f"{path} does not hold {res + 1}^3 density codes")
    return DensityGrid(decode(codes, scale).reshape(res + 1, res + 1, res + 1), aabb)


def occupied_corners(occ: np.ndarray, res: int) -> np.ndarray:
    """``(res+1)^3`` bool: the corners of a ``res^3`` grid's cells that lie in the occupied cells
    of ``occ (r, r, r)`` (``res`` a multiple of ``r``), the only corners a renderer reads."""
    r = occ.shape[0]
    if res % r:
        raise ValueError(f"a density grid of {res}^3 cells cannot refine an occupancy grid of {r}^3")
    k = res // r
    fine = np.repeat(np.repeat(np.repeat(occ, k, 0), k, 1), k, 2)
    out = np.zeros((res + 1,) * 3, bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                out[dx:dx + res, dy:dy + res, dz:dz + res] |= fine
    return out


def bake_density(density: Callable[[np.ndarray], np.ndarray], occupancy, res: int | None = None,
                 chunk: int = 65536, corners: np.ndarray | None = None) -> DensityGrid:
    """A :class:`DensityGrid` of ``density(points (N,3)) -> (N,)`` at the ``(res+1)^3`` corners
    of ``occupancy``'s box (an :class:`nerfexport.deploy.occupancy.OccupancyBits`; ``res`` a
    multiple of its resolution, its own by default), evaluated only at the corners of occupied
    cells (zero elsewhere: the renderer never reads them). ``corners``: densities already
    evaluated at every corner (``(res+1)^3``), used instead of calling ``density``."""
    res = int(occupancy.res if res is None else res)
    need = occupied_corners(occupancy.occupied, res)
    values = np.zeros(need.shape, np.float32)
    if corners is not None:
        values[need] = np.asarray(corners, np.float32).reshape(need.shape)[need]
    else:
        lo, hi = occupancy.aabb[:3], occupancy.aabb[3:]
        idx = np.argwhere(need).astype(np.float32)
        pts = lo + idx * ((hi - lo) / res)
        out = np.empty(len(pts), np.float32)
        for a in range(0, len(pts), chunk):
            out[a:a + chunk] = np.asarray(density(np.ascontiguousarray(pts[a:a + chunk], np.float32)),
                                          np.float32).reshape(-1)
        values[need] = np.maximum(out, 0.0)
    return DensityGrid(values, occupancy.aabb)
