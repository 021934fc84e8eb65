"""Volume rendering along rays in numpy, as nerf-pytorch's ``render_rays`` with ``perturb=0``:
evenly spaced coarse depths (:func:`linspace_depths`), fine depths by inverse CDF of the coarse
weights (:func:`sample_pdf`, deterministic), and alpha compositing (:func:`composite`); and how
many depths a baked density grid is read at along a ray (:func:`proposal_samples`)."""

from __future__ import annotations

import numpy as np


def linspace_depths(near: float, far: float, n: int, R: int) -> np.ndarray:
    """Evenly spaced depths from near to far: the deterministic coarse samples.

    Args:
        near, far: the depth range of every ray.
        n: depths per ray.
        R: rays.

    Returns:
        Depths ``(R, n)``, float32.
    """
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)
    z = (near * (1.0 - t) + far * t).astype(np.float32)
    return np.broadcast_to(z, (R, n)).copy()


def sample_pdf(bins: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Deterministic inverse-CDF samples of a piecewise-constant pdf (nerf-pytorch's ``sample_pdf``
    with ``det=True``).

    Args:
        bins: bin edges ``(R, B)``, increasing along each ray.
        weights: the pdf's unnormalised weights ``(R, B-1)``, one per bin.
        n: samples per ray.

    Returns:
        Depths ``(R, n)``, float32, increasing along each ray.
    """
    weights = weights + np.float32(1e-5)
    pdf = weights / weights.sum(-1, keepdims=True)
    cdf = np.cumsum(pdf, -1, dtype=np.float32)
    cdf = np.concatenate((np.zeros_like(cdf[:, :1]), cdf[:, :-1], np.ones_like(cdf[:, :1])), -1)  # as volume.py
    R = cdf.shape[0]
    u = np.broadcast_to(np.linspace(0.0, 1.0, n, dtype=np.float32), (R, n))
    # searchsorted(right=True) row by row in one call: row i is shifted by 2i (exact in float64,
    # and every cdf and u lies in [0, 1], so rows cannot mix)
    B = cdf.shape[-1]
    off = 2.0 * np.arange(R, dtype=np.float64)[:, None]
    inds = np.searchsorted((cdf + off).ravel(), (u + off).ravel(), side="right").reshape(R, n) - B * np.arange(R)[:, None]
    below = np.clip(inds - 1, 0, None)
    above = np.clip(inds, None, cdf.shape[-1] - 1)
    cdf_b = np.take_along_axis(cdf, below, 1)
    cdf_a = np.take_along_axis(cdf, above, 1)
    bin_b = np.take_along_axis(bins, below, 1)
    bin_a = np.take_along_axis(bins, above, 1)
    denom = cdf_a - cdf_b
    denom = np.where(denom < 1e-5, np.float32(1.0), denom)
    return (bin_b + (u - cdf_b) / denom * (bin_a - bin_b)).astype(np.float32)


def composite(rgb: np.ndarray, density: np.ndarray, z: np.ndarray, rays_d: np.ndarray, white_bkgd: bool):
    """Alpha compositing along rays (a ``1e10`` last interval, distances scaled by ``|d|``).

    Args:
        rgb: colours ``(R, S, 3)`` of the samples.
        density: densities ``(R, S)`` of the samples.
        z: sample depths ``(R, S)``, sorted.
        rays_d: ray directions ``(R, 3)`` (not normalised).
        white_bkgd: composite onto white instead of black.

    Returns:
        ``rgb (R, 3)``, ``depth (R,)``, ``acc (R,)`` (opacity) and ``weights (R, S)``.
    """
    weights = ray_weights(density, z, rays_d)
    rgb_map = (weights[..., None] * rgb).sum(-2)
    depth = (weights * z).sum(-1)
    acc = weights.sum(-1)
    if white_bkgd:
        rgb_map = rgb_map + (1.0 - acc[..., None])
    return rgb_map, depth, acc, weights


def ray_weights(density: np.ndarray, z: np.ndarray, rays_d: np.ndarray) -> np.ndarray:
    """The compositing weights of :func:`composite` alone (what places fine samples).

    Args:
        density: densities ``(R, S)`` of the samples.
        z: sample depths ``(R, S)``, sorted.
        rays_d: ray directions ``(R, 3)`` (not normalised).

    Returns:
        ``weights (R, S)``, float32: each sample's share of the ray's colour.
    """
    dists = z[:, 1:] - z[:, :-1]
    dists = np.concatenate((dists, np.full_like(dists[:, :1], 1e10)), -1) * np.linalg.norm(rays_d, axis=-1)[:, None]
    alpha = 1.0 - np.exp(-density * dists)
    trans = np.cumprod(np.concatenate((np.ones_like(alpha[:, :1]), 1.0 - alpha + np.float32(1e-10)), -1), -1)[:, :-1]
    return (alpha * trans).astype(np.float32)


MAX_PROPOSAL = 1024   # proposal depths per ray, at most


def proposal_samples(proposal, scene, spacing: float = 1.0) -> int:
    """Proposal depths per ray for a baked density grid: about one per ``spacing`` cells along a
    ray of unit direction from near to far (``scene.n_coarse`` when the source says no cell size),
    at least ``scene.n_coarse`` and at most :data:`MAX_PROPOSAL`."""
    res, box = getattr(proposal, "res", None), getattr(proposal, "aabb", None)
    if proposal is None or res is None or box is None:
        return int(scene.n_coarse)
    box = np.asarray(box, np.float64).reshape(6)
    cell = float((box[3:] - box[:3]).min()) / int(res) * float(spacing)
    n = int(np.ceil((scene.far - scene.near) / cell)) + 1
    return int(min(MAX_PROPOSAL, max(int(scene.n_coarse), n)))


def box_segments(box: np.ndarray | None, o: np.ndarray, d: np.ndarray, near: float,
                 far: float) -> tuple[np.ndarray, np.ndarray]:
    """Where rays' segments ``[near, far]`` lie inside a box (the slab test).

    Args:
        box: ``(6,)`` ``(xmin, ymin, zmin, xmax, ymax, zmax)``; ``None``: every ray, whole.
        o, d: ray origins and directions ``(R, 3)``.

    Returns:
        ``lo (R,)``, ``hi (R,)``: the depths where each ray enters and leaves the box, clipped to
        ``[near, far]``; a ray misses it when ``lo > hi``. A ray parallel to a pair of planes meets
        it when its origin lies between them.
    """
    if box is None:
        return np.full(o.shape[0], float(near)), np.full(o.shape[0], float(far))
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t0, t1 = (box[:3] - o) * inv, (box[3:] - o) * inv
    flat, inside = d == 0, (o >= box[:3]) & (o <= box[3:])
    lo = np.where(flat, np.where(inside, -np.inf, np.inf), np.fmin(t0, t1))
    hi = np.where(flat, np.where(inside, np.inf, -np.inf), np.fmax(t0, t1))
    return np.maximum(lo.max(-1), near), np.minimum(hi.min(-1), far)


def box_hits(box: np.ndarray | None, o: np.ndarray, d: np.ndarray, near: float, far: float) -> np.ndarray:
    """Which rays' segments ``[near, far]`` meet a box: ``(R,)`` bool (:func:`box_segments`)."""
    lo, hi = box_segments(box, o, d, near, far)
    return lo <= hi


def lattice_window(lattice: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stretch of a shared lattice of depths that covers each ray's segment ``[lo, hi]``.

    Args:
        lattice: ``(n,)`` increasing depths every ray shares (:func:`linspace_depths`).
        lo, hi: ``(R,)`` each ray's segment.

    Returns:
        ``z (R, m)``: for each ray the lattice depths from the last at or before ``lo`` to the first
        at or after ``hi`` (bit for bit the lattice's values), ``m`` the longest such stretch (at
        least 3), a shorter stretch continued along the lattice; where the lattice ends, its last
        depth repeats (zero-length intervals). ``real (R, m)``: false on those repeats.
    """
    n = lattice.shape[0]
    k0 = np.clip(np.searchsorted(lattice, lo, side="right") - 1, 0, n - 1)
    k1 = np.clip(np.searchsorted(lattice, hi, side="left"), 0, n - 1)
    m = int(min(n, max(3, int((k1 - k0).max()) + 1 if lo.size else 3)))
    k = k0.astype(np.int32)[:, None] + np.arange(m, dtype=np.int32)[None]
    return np.take(lattice, k, mode="clip"), k <= n - 1
