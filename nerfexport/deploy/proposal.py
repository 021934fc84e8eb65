"""Where the density sampler puts the fine samples (issue 34): each ray's depths on a lattice shared
by all rays (about one per cell of the baked density grid), the occupancy of those depths, the
baked density at the occupied ones, and ``n_fine`` depths by inverse CDF of the resulting
weights. numpy only; every array below is float32 unless it says otherwise.

The lattice is read in cell coordinates straight from the rays (``o + d z`` is made for the
occupied depths alone, not for every depth) and the weights come from one cumulative sum: the
image is the one the renderer made before, in about two thirds of the sampling time
(``docs/speed-native.md``, fifth session).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from nerfexport.deploy.volume import sample_pdf

PROPOSAL_FLOOR = 1e-3        # weight per occupied proposal interval added to the baked density's weights


def lattice_occupancy(grid, o: np.ndarray, d: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Occupancy ``(R, m)`` bool of the points ``o + d z`` for rays ``o, d (R, 3)`` at depths
    ``z (R, m)``: through ``grid.query_rays`` when the grid has it (no ``(R, m, 3)`` points made),
    else ``grid.query``."""
    if hasattr(grid, "query_rays"):
        return grid.query_rays(o, d, z)
    return np.asarray(grid.query(o[:, None] + d[:, None] * z[..., None]), bool)


def lattice_weights(dens: np.ndarray, z: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Compositing weights ``(R, m)`` of densities ``dens (R, m)`` at depths ``z (R, m)`` along rays
    of directions ``d (R, 3)``: :func:`nerfexport.deploy.volume.ray_weights` (the last interval
    infinitely long) as differences of one transmittance, ``exp(-S_{i-1}) - exp(-S_i)`` with
    ``S`` the cumulative optical depth (equal to it within float32 rounding; it drops the
    ``1e-10`` that nerf-pytorch adds to each transmittance factor)."""
    R, m = z.shape
    tau = np.empty((R, m + 1), np.float32)
    tau[:, 0] = 0.0
    np.subtract(z[:, 1:], z[:, :-1], out=tau[:, 1:m])
    tau[:, 1:m] *= np.linalg.norm(d, axis=-1).astype(np.float32)[:, None]
    tau[:, 1:m] *= dens[:, :-1]
    tau[:, m] = np.where(dens[:, -1] > 0, np.float32(np.inf), np.float32(0.0))   # the 1e10-long last interval
    np.cumsum(tau, axis=1, out=tau)
    np.negative(tau, out=tau)
    np.exp(tau, out=tau)
    return tau[:, :-1] - tau[:, 1:]


def place_fine_samples(o: np.ndarray, d: np.ndarray, z: np.ndarray, occ: np.ndarray,
                       density: Callable[[np.ndarray], np.ndarray], n_fine: int, dilate: int = 1,
                       softness: float = 0.1, floor: float = PROPOSAL_FLOOR) -> np.ndarray:
    """The fine depths ``(R, n_fine)``, increasing along each ray, of rays ``o, d (R, 3)`` whose
    lattice depths ``z (R, m)`` have occupancy ``occ (R, m)`` (each ray at least one occupied).

    Args:
        density: the baked density, ``points (N, 3) -> (N,)``, read at the occupied depths alone
            (empty cells hold none).
        dilate: each interval's weight becomes the largest of its own and the ``dilate`` in front
            of it (the trilinear density can put the weight up to a cell in front of the surface).
        softness: the baked density times this places the samples (below 1 the grid's blurred
            matter, which may close a gap the ray passes through, lets weight through).
        floor: weight added to every interval that touches an occupied depth, so that matter the
            density grid blurs away is still sampled.
    """
    ri, si = np.nonzero(occ)
    dens = np.zeros(z.shape, np.float32)
    if ri.size:
        pts = o[ri] + d[ri] * z[ri, si][:, None]
        dens[ri, si] = (np.asarray(density(np.ascontiguousarray(pts, np.float32)), np.float32).reshape(-1)
                        * np.float32(softness))
    w = lattice_weights(dens, z, d)[:, 1:-1]
    if dilate > 0:
        spread = w.copy()
        for i in range(1, int(dilate) + 1):
            np.maximum(spread[:, i:], w[:, :-i], out=spread[:, i:])
        w = spread
    inner = occ[:, 1:-1] | occ[:, 2:] | occ[:, :-2]
    w += np.float32(floor) * inner
    z_f = sample_pdf(0.5 * (z[:, 1:] + z[:, :-1]), w, int(n_fine))
    return np.sort(z_f, -1)   # already ordered; sorting guards against float ties
