"""A binary occupancy grid over the scene box, kept up to date from the networks' own density
during training (the scheme of Instant-NGP and nerfacc), used to put samples where there is
matter and to skip rays that cross only empty space.

The grid is conservative and self-correcting: every ``update`` re-evaluates a random
quarter of the cells plus every occupied cell, with an exponential moving maximum of the
density, so a cell whose density grows again is marked occupied and sampled again.
"""

from __future__ import annotations

import torch


class OccupancyGrid:
    """``res^3`` cells over the axis-aligned box ``aabb = (xmin, ymin, zmin, xmax, ymax, zmax)``."""

    def __init__(self, aabb: torch.Tensor | list[float], res: int = 64, device: torch.device | str = "cpu",
                 decay: float = 0.95) -> None:
        self.aabb = torch.as_tensor(aabb, dtype=torch.float32, device=device)
        self.res = int(res)
        self.decay = decay
        self.device = torch.device(device)
        n = self.res**3
        self.density = torch.full((n,), float("inf"), device=device)  # unknown == occupied
        self.occupied = torch.ones(n, dtype=torch.bool, device=device)
        idx = torch.arange(self.res, device=device)
        self._grid = torch.stack(torch.meshgrid(idx, idx, idx, indexing="ij"), -1).reshape(-1, 3)

    @property
    def fraction(self) -> float:
        return float(self.occupied.float().mean())

    def cell_index(self, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``pts (..., 3)`` -> flat cell index ``(...)`` and inside-the-box mask ``(...)``."""
        lo, hi = self.aabb[:3], self.aabb[3:]
        u = (pts - lo) / (hi - lo)
        inside = ((u >= 0) & (u < 1)).all(-1)
        ijk = (u * self.res).long().clamp(0, self.res - 1)
        return (ijk[..., 0] * self.res + ijk[..., 1]) * self.res + ijk[..., 2], inside

    def query(self, pts: torch.Tensor) -> torch.Tensor:
        """Occupancy ``(...)`` bool of points ``(..., 3)``; outside the box is empty."""
        idx, inside = self.cell_index(pts)
        return self.occupied[idx] & inside

    @torch.no_grad()
    def update(self, density_fn, threshold: float, all_cells: bool = False, chunk: int = 65536,
               generator: torch.Generator | None = None) -> None:
        """Re-evaluate ``density_fn(pts (N,3)) -> (N,)`` at a jittered point in the chosen cells.

        A cell is occupied when its running density exceeds ``min(threshold, mean density)``.
        """
        n = self.res**3
        if all_cells:
            cells = torch.arange(n, device=self.device)
        else:
            rand = torch.randperm(n, device=self.device, generator=generator)[: n // 4]
            cells = torch.unique(torch.cat((rand, self.occupied.nonzero()[:, 0])))
        lo, hi = self.aabb[:3], self.aabb[3:]
        jitter = torch.rand((cells.numel(), 3), device=self.device, generator=generator)
        pts = lo + (self._grid[cells].float() + jitter) / self.res * (hi - lo)
        dens = torch.cat([density_fn(pts[s:s + chunk]).float() for s in range(0, pts.shape[0], chunk)])
        old = self.density[cells]
        old = torch.where(torch.isinf(old), torch.zeros_like(old), old)
        self.density[cells] = torch.maximum(old * self.decay, dens)
        known = torch.where(torch.isinf(self.density), torch.zeros_like(self.density), self.density)
        thr = min(threshold, float(known.mean()))
        self.occupied = (self.density > thr) | torch.isinf(self.density)

    def state_dict(self) -> dict:
        return {"aabb": self.aabb.cpu(), "res": self.res, "density": self.density.cpu(),
                "occupied": self.occupied.cpu()}

    def load_state_dict(self, s: dict) -> None:
        self.aabb = s["aabb"].to(self.device)
        self.density = s["density"].to(self.device)
        self.occupied = s["occupied"].to(self.device)


def default_aabb(camera_positions: torch.Tensor, near: float) -> list[float]:
    """A cube around the origin that holds every point at least ``near`` from every camera of
    an inward-facing capture: half-size ``max |camera| - near`` (2.03 for the Blender scenes)."""
    r = float(camera_positions.norm(dim=-1).max()) - float(near)
    r = max(r, 1e-3)
    return [-r, -r, -r, r, r, r]


def grid_samples(grid: OccupancyGrid, rays_o: torch.Tensor, rays_d: torch.Tensor, near: float, far: float,
                 n: int, candidates: int = 128, floor: float = 0.02,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Depths drawn from the grid's occupancy: ``n - 1`` stratified draws along each ray, and
    ``far`` itself as the last sample.

    Each ray is cut into ``candidates`` equal bins; a bin's probability is 1 where its midpoint
    is occupied and ``floor`` where it is empty (so empty space is still visited now and then).
    The last sample stays at ``far`` as in plain stratified sampling: the compositor treats the
    last interval as infinite, so a last sample inside the object would turn opaque.

    Args:
        grid: The occupancy grid.
        rays_o, rays_d: Ray origins and directions. Tensors with shape ``(R, 3)``.
        near, far: The rays' bounds.
        n: Samples per ray.
        candidates: Bins per ray the draw chooses among.
        floor: Probability of an empty bin relative to an occupied one.
        generator: The random generator of the draws.

    Returns:
        ``(z, active)``: sorted depths, tensor with shape ``(R, n)``, and whether each ray crosses
        any occupied cell, boolean tensor with shape ``(R,)``.
    """
    R = rays_o.shape[0]
    edges = torch.linspace(near, far, candidates + 1, device=rays_o.device)
    mids = 0.5 * (edges[1:] + edges[:-1])
    occ = grid.query(rays_o[:, None, :] + rays_d[:, None, :] * mids[None, :, None])  # (R, K)
    active = occ.any(-1)
    w = occ.float() + floor
    w = torch.where(w.sum(-1, keepdim=True) > 0, w, torch.ones_like(w))  # floor 0 and nothing occupied
    cdf = torch.cumsum(w, -1)
    cdf = torch.cat((torch.zeros_like(cdf[:, :1]), cdf), -1) / cdf[:, -1:]
    m = n - 1
    u = (torch.arange(m, device=rays_o.device) + torch.rand((R, m), device=rays_o.device, generator=generator)) / m
    inds = torch.searchsorted(cdf, u.contiguous(), right=True).clamp(1, candidates)
    c0, c1 = torch.gather(cdf, 1, inds - 1), torch.gather(cdf, 1, inds)
    t = (u - c0) / (c1 - c0).clamp_min(1e-12)
    z = edges[inds - 1] + t * (edges[1] - edges[0])
    z = torch.cat((z.clamp_max(far), torch.full((R, 1), float(far), device=rays_o.device)), -1)
    return z, active
