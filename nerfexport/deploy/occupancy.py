"""The occupancy bits of a bundle: which cells of the scene box hold matter.

The renderer evaluates the networks only at samples in occupied cells (see
:mod:`nerfexport.deploy.render`). A grid is stored in the bundle as ``occupancy.npz`` (the bits
packed, ``res^3 / 8`` bytes: 256 KiB at ``res = 128``, then deflated) and read back with
``allow_pickle=False``; :mod:`nerfexport.export.grid` bakes it from the model's density.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

GRID_FILE = "occupancy.npz"


class GridError(ValueError):
    """The occupancy grid or its description is unusable."""


@dataclass
class OccupancyBits:
    """A binary occupancy grid: ``occupied (res, res, res)`` bool over ``aabb = (xmin, ymin, zmin, xmax, ymax, zmax)``."""

    occupied: np.ndarray
    aabb: np.ndarray
    outside: bool = False      # whether points outside the box count as occupied

    def __post_init__(self) -> None:
        self.occupied = np.ascontiguousarray(self.occupied, dtype=bool)
        self.aabb = np.asarray(self.aabb, np.float32).reshape(6)
        r = self.occupied.shape
        if len(r) != 3 or len(set(r)) != 1 or r[0] < 1:
            raise GridError(f"an occupancy grid must be a cube of cells, got shape {r}")
        if not np.all(self.aabb[3:] > self.aabb[:3]):
            raise GridError(f"occupancy box {self.aabb.tolist()} is empty")
        self.res = r[0]
        self._flat = self.occupied.reshape(-1)
        # the query looks up a copy padded with one empty cell on every side, so that points
        # outside the box need no separate test: u + 1 clipped to [0, res + 1] lands on the border
        self._padded = np.pad(self.occupied, 1, constant_values=bool(self.outside)).reshape(-1)
        self._scale = (self.res / (self.aabb[3:] - self.aabb[:3])).astype(np.float32)
        self._shift = (1.0 - self.aabb[:3] * self._scale).astype(np.float32)

    def matter_box(self) -> np.ndarray | None:
        """``(6,)`` box around the occupied cells, one cell wider on every side: no ray that
        misses it meets an occupied cell (``None`` when the outside counts as occupied; an empty
        grid gives an empty box)."""
        if self.outside:
            return None
        ijk = np.argwhere(self.occupied)
        if ijk.size == 0:
            return np.array([0, 0, 0, -1, -1, -1], np.float32)
        cell = (self.aabb[3:] - self.aabb[:3]) / self.res
        return np.concatenate((self.aabb[:3] + (ijk.min(0) - 1) * cell,
                               self.aabb[:3] + (ijk.max(0) + 2) * cell)).astype(np.float32)

    @property
    def fraction(self) -> float:
        """Fraction of cells occupied."""
        return float(self._flat.mean())

    def query(self, pts: np.ndarray) -> np.ndarray:
        """Occupancy ``(...)`` bool of points ``(..., 3)``; outside the box: :attr:`outside`."""
        u = np.asarray(pts, np.float32) * self._scale + self._shift     # cell coordinates + 1
        np.clip(u, 0.0, self.res + 1, out=u)
        ijk = u.astype(np.int32)
        p = self.res + 2
        return self._padded[(ijk[..., 0] * p + ijk[..., 1]) * p + ijk[..., 2]]

    def query_rays(self, o: np.ndarray, d: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Occupancy ``(R, m)`` bool of the points ``o + d z`` of rays ``o, d (R, 3)`` at depths
        ``z (R, m)``, as :meth:`query` gives, without making the ``(R, m, 3)`` points: each axis's
        cell coordinate is a line in ``z`` (the density sampler's lattice, :mod:`nerfexport.deploy.proposal`)."""
        a = np.asarray(o, np.float32) * self._scale + self._shift     # (R, 3) cell coordinates + 1 at z = 0
        b = np.asarray(d, np.float32) * self._scale
        z = np.asarray(z, np.float32)
        p = self.res + 2
        idx = None
        u = np.empty(z.shape, np.float32)
        for k in range(3):
            np.multiply(z, b[:, k:k + 1], out=u)
            u += a[:, k:k + 1]
            np.clip(u, 0.0, self.res + 1, out=u)
            i = u.astype(np.int32)
            if idx is None:
                idx = i
            else:
                idx *= p
                idx += i
        return self._padded[idx]

    def save(self, path: str | Path) -> None:
        """Packed bits, deflated ``.npz`` (read back with ``allow_pickle=False``)."""
        with open(path, "wb") as f:
            np.savez_compressed(f, bits=np.packbits(self._flat))

    @classmethod
    def load(cls, path: str | Path, res: int, aabb, outside: bool = False) -> "OccupancyBits":
        try:
            with np.load(path, allow_pickle=False) as z:
                packed = z["bits"]
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
            raise GridError(f"{path} is not an occupancy grid ({e})") from None
        n = int(res) ** 3
        if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != (n + 7) // 8:
            raise GridError(f"{path} does not hold {res}^3 packed bits")
        return cls(np.unpackbits(packed)[:n].astype(bool).reshape(res, res, res), np.asarray(aabb, np.float32),
                   bool(outside))

    def describe(self) -> dict:
        return {"file": GRID_FILE, "res": self.res, "aabb": [float(x) for x in self.aabb],
                "fraction": self.fraction, "outside": "occupied" if self.outside else "empty"}
