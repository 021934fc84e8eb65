"""The lean renderer: numpy plus a network callable, never torch.

Hierarchical volume rendering exactly as training renders a test view (nerf-pytorch's
``render_rays`` with ``perturb=0``): ``n_coarse`` evenly spaced depths from near to far, the
coarse network, ``n_fine`` depths by inverse CDF of the coarse weights (deterministic), the
fine network on all ``n_coarse + n_fine`` sorted depths, and alpha compositing with a
``1e10`` last interval and distances scaled by ``|d|``.

A *network* is any callable ``(points (N,3) float32, viewdirs (N,3) float32) ->
(rgb (N,3), density (N,1))`` with the activations applied (a bundle's ONNX graphs through a
runtime). A coarse network followed by a fine one may return ``rgb`` as ``None``
(:func:`computes_colour` is false for it): only its density is composited, into the weights
that place the fine samples. Rays are processed in chunks so memory stays bounded for any image
size; the time spent in each stage (ray generation, sampling, network, compositing) is
accumulated in :class:`Timings`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from nerfexport.deploy.proposal import lattice_occupancy, place_fine_samples
from nerfexport.deploy.rays import band_rays, view_rays
from nerfexport.deploy.runtime import SAMPLERS, Sampler   # where the fine samples go (see make_renderer)
from nerfexport.deploy.volume import (box_segments, composite, lattice_window, linspace_depths, proposal_samples,
                                      sample_pdf)

Network = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def computes_colour(net) -> bool:
    """Whether ``net`` returns a colour (a network may declare ``outputs`` without ``"rgb"``)."""
    return "rgb" in getattr(net, "outputs", ("rgb",))


@dataclass
class Timings:
    """Seconds per stage, summed over everything rendered since the last :meth:`reset`."""

    rays: float = 0.0
    sampling: float = 0.0
    network: float = 0.0
    compositing: float = 0.0
    samples: int = 0           # network evaluations (both networks)
    coarse_samples: int = 0    # of which by the coarse network

    def reset(self) -> None:
        self.rays = self.sampling = self.network = self.compositing = 0.0
        self.samples = self.coarse_samples = 0

    def add(self, other: "Timings") -> None:
        for k in ("rays", "sampling", "network", "compositing", "samples", "coarse_samples"):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def as_dict(self) -> dict:
        return {"rays": self.rays, "sampling": self.sampling, "network": self.network,
                "compositing": self.compositing, "samples": self.samples, "coarse_samples": self.coarse_samples}


@dataclass
class SceneSettings:
    near: float
    far: float
    white_bkgd: bool
    ndc: bool
    n_coarse: int
    n_fine: int

    @classmethod
    def from_manifest(cls, m) -> "SceneSettings":
        """From a :class:`nerfexport.deploy.manifest.Manifest`."""
        s = m.scene
        return cls(s.near, s.far, s.white_bkgd, s.ndc, s.n_coarse, s.n_fine)


MAX_CHUNK_POINTS = 1 << 20   # sample points in flight in one pass, over all workers
TILE_RAYS = 1 << 18          # rays of a view rendered at once (render_view cuts larger views into bands of rows)


def balanced_chunk(rays: int, chunk: int, workers: int = 1) -> int:
    """Rays per chunk, at most ``chunk``, so that ``rays`` split into a number of chunks that is a
    multiple of ``workers`` (when there are at least ``workers`` rays) and of equal size, the
    last one possibly a little shorter."""
    n = -(-rays // chunk) if rays > 0 else 1
    if workers > 1 and rays >= workers:
        n = -(-n // workers) * workers
    return max(1, -(-rays // n))


class Renderer:
    """Render rays and views of a bundle with two network callables (``fine`` may be ``None``:
    the coarse network then evaluates the fine samples, as in training).

    Empty-space skipping and early termination (both off by default here; the CLI turns them
    on when the bundle has a grid):

    * ``grid``: an :class:`nerfexport.deploy.occupancy.OccupancyBits`. Samples sit exactly where the plain
      renderer puts them, but only those in occupied cells are sent to the network; the others
      have zero density. With every cell occupied the output equals the plain renderer's.
    * ``early_stop``: a transmittance. Each pass marches its sorted samples ``segment`` at a
      time and stops evaluating a ray once its transmittance falls below ``early_stop``; what it
      would have added is at most ``early_stop`` of the ray's colour.

    ``workers`` renders that many chunks of rays at once in threads (numpy and onnxruntime
    release the GIL); pair it with single-threaded network sessions.
    """

    def __init__(self, coarse: Network, fine: Network | None, scene: SceneSettings, chunk: int = 64,
                 grid=None, early_stop: float = 0.0, segment: int = 32, workers: int = 1,
                 coarse_density: Callable[[np.ndarray], np.ndarray] | None = None,
                 proposal: Callable[[np.ndarray], np.ndarray] | None = None, n_proposal: int | None = None,
                 proposal_segment: int = 8, proposal_dilate: int | None = None, proposal_softness: float = 0.1,
                 fine_only: bool = False) -> None:
        self.coarse, self.fine, self.s, self.chunk = coarse, fine, scene, int(chunk)
        # ``proposal(points (N,3)) -> (N,)``: the baked density sampler (issue 34). No coarse
        # network: the baked density at ``n_proposal`` evenly spaced depths (about one per cell of
        # the density grid) places ``n_fine`` samples by inverse CDF, and only those are evaluated
        # by the fine network (``proposal_segment`` at a time with early termination) and composited
        self.proposal, self.proposal_segment = proposal, int(proposal_segment)
        # the baked density is trilinear between cell corners, so its weight can sit up to a cell in
        # front of the surface: each interval's weight becomes the largest of its own and the
        # ``proposal_dilate`` in front of it; by default one occupancy cell (docs/speed-native.md)
        d_res, g_res = getattr(proposal, "res", None), getattr(grid, "res", None)
        self.proposal_dilate = int(proposal_dilate if proposal_dilate is not None else
                                   max(1, int(d_res) // int(g_res)) if d_res and g_res else 1)
        # the baked density times this places the samples: below 1 the grid's blurred matter (which
        # may close a gap the ray passes through) lets weight through to what lies behind it
        self.proposal_softness = float(proposal_softness)
        # ``fine_only``: with the coarse network, the fine pass evaluates and composites its
        # ``n_fine`` samples alone (``proposal_segment`` at a time), not the coarse depths with them
        self.fine_only = bool(fine_only)
        self.n_proposal = int(n_proposal) if n_proposal else proposal_samples(proposal, scene)
        if self.proposal is not None and (scene.n_fine < 2 or self.n_proposal < 3 or self.proposal_segment < 1):
            raise ValueError("the density sampler needs at least 2 fine samples, 3 proposal depths and a positive "
                             "segment")
        # ``coarse_density(points (N,3)) -> (N,)``: the coarse pass reads densities from it (a
        # :class:`nerfexport.deploy.density.DensityGrid`) instead of running the coarse network
        self.coarse_density = coarse_density
        self.grid, self.early_stop, self.segment, self.workers = grid, float(early_stop), int(segment), int(workers)
        # rays that miss the box around the occupied cells are background at once (density sampler)
        self._box = grid.matter_box() if grid is not None and hasattr(grid, "matter_box") else None
        self._lattice = linspace_depths(scene.near, scene.far, self.n_proposal, 1)[0]
        if self.segment < 1 or self.chunk < 1 or self.workers < 1:
            raise ValueError("chunk, segment and workers must be positive")
        if not 0.0 <= self.early_stop < 1.0:
            raise ValueError(f"early_stop is a transmittance in [0, 1), not {early_stop}")
        if not computes_colour(coarse) and (fine is None or scene.n_fine <= 0):
            raise ValueError("the coarse network computes its density alone, but without fine samples its "
                             "colour is the image; make the networks for these sample counts")
        self.timings = Timings()

    def _net(self, net: Network, pts: np.ndarray, v: np.ndarray, tm: Timings):
        R, S, _ = pts.shape
        t = time.perf_counter()
        dirs = np.broadcast_to(v[:, None, :], (R, S, 3)).reshape(-1, 3)
        rgb, dens = net(np.ascontiguousarray(pts.reshape(-1, 3), dtype=np.float32),
                        np.ascontiguousarray(dirs, dtype=np.float32))
        tm.network += time.perf_counter() - t
        tm.samples += R * S
        rgb = np.zeros((R, S, 3), np.float32) if rgb is None else np.asarray(rgb, np.float32).reshape(R, S, 3)
        return rgb, np.asarray(dens, np.float32).reshape(R, S)

    def _net_at(self, net: Network, pts: np.ndarray, v: np.ndarray, flat: np.ndarray,
                rgb: np.ndarray, dens: np.ndarray, tm: Timings) -> None:
        """Evaluate the samples ``flat`` (indices into the ``R*S`` samples, row-major) of
        ``pts (R,S,3)`` into ``rgb (R,S,3)``, ``dens (R,S)``."""
        if flat.size == 0:
            return
        t = time.perf_counter()
        S = pts.shape[1]
        # one gather over flat indices (np.take) rather than 2-D fancy indexing pts[ri, si]
        c, d = net(np.take(pts.reshape(-1, 3), flat, axis=0), np.take(v, flat // S, axis=0))
        if c is not None:   # a density-only coarse network leaves the colour at zero
            rgb.reshape(-1, 3)[flat] = c
        dens.reshape(-1)[flat] = np.asarray(d, np.float32).reshape(-1)
        tm.network += time.perf_counter() - t
        tm.samples += int(flat.size)

    def _evaluate(self, net: Network, pts: np.ndarray, z: np.ndarray, d: np.ndarray, v: np.ndarray, tm: Timings,
                  segment: int | None = None):
        """Colour ``(R,S,3)`` and density ``(R,S)`` of the samples ``pts (R,S,3)`` at depths ``z (R,S)``
        (marched ``segment`` samples at a time, the renderer's own by default)."""
        if self.grid is None and self.early_stop <= 0.0:
            return self._net(net, pts, v, tm) + (None,)
        R, S = z.shape
        pts = np.ascontiguousarray(pts, dtype=np.float32)
        v = np.ascontiguousarray(v, dtype=np.float32)
        t = time.perf_counter()
        occ = self.grid.query(pts) if self.grid is not None else np.ones((R, S), bool)
        tm.sampling += time.perf_counter() - t
        rgb = np.zeros((R, S, 3), np.float32)
        dens = np.zeros((R, S), np.float32)
        if self.early_stop <= 0.0:
            self._net_at(net, pts, v, np.flatnonzero(occ), rgb, dens, tm)
            return rgb, dens, occ
        dists = np.concatenate((z[:, 1:] - z[:, :-1], np.full((R, 1), 1e10, np.float32)), -1)
        dists = dists * np.linalg.norm(d, axis=-1)[:, None]
        trans = np.ones(R, np.float32)
        segment = int(segment or self.segment)
        for a in range(0, S, segment):
            b = min(S, a + segment)
            alive = trans > self.early_stop
            if not alive.any():
                break
            ri, si = np.nonzero(occ[:, a:b] & alive[:, None])
            self._net_at(net, pts, v, ri * S + (si + a), rgb, dens, tm)
            t = time.perf_counter()
            trans *= np.exp(-(dens[:, a:b] * dists[:, a:b]).sum(-1))
            tm.compositing += time.perf_counter() - t
        return rgb, dens, occ

    def _render_chunk_proposal(self, o: np.ndarray, d: np.ndarray, v: np.ndarray):
        """The density sampler: baked density -> fine samples -> the fine network on those alone."""
        tm = Timings()
        s = self.s
        R = o.shape[0]
        t = time.perf_counter()
        bg = np.float32(1.0 if s.white_bkgd else 0.0)
        out = (np.full((R, 3), bg, np.float32), np.zeros(R, np.float32), np.zeros(R, np.float32))
        # only rays that cross the box around the occupied cells can meet matter
        lo, hi = box_segments(self._box, o, d, s.near, s.far)
        near = np.nonzero(lo <= hi)[0]
        # the proposal depths: the stretch of the evenly spaced ones that spans each ray's segment
        # inside that box (outside it nothing is occupied, so nothing else would weigh)
        z, real = lattice_window(self._lattice, lo[near], hi[near])
        occ = lattice_occupancy(self.grid, o[near], d[near], z) & real if self.grid is not None else real
        # a ray whose proposal depths all lie in empty cells crosses no matter (as the skipping
        # renderer decides); the others get an even share of weight over their occupied
        # intervals as a floor, so that matter the coarse density grid blurs away is still sampled
        sel = np.nonzero(occ.any(1))[0]
        hit = near[sel]
        if hit.size == 0:
            tm.sampling += time.perf_counter() - t
            return out + (tm,)
        o, d, v = o[hit], d[hit], v[hit]
        z_f = place_fine_samples(o, d, z[sel], occ[sel], self.proposal, s.n_fine, self.proposal_dilate,
                                 self.proposal_softness)
        pts = o[:, None] + d[:, None] * z_f[..., None]
        tm.sampling += time.perf_counter() - t
        rgb, dens, _ = self._evaluate(self.fine or self.coarse, pts, z_f, d, v, tm, self.proposal_segment)
        t = time.perf_counter()
        res = composite(rgb, dens, z_f, d, s.white_bkgd)
        tm.compositing += time.perf_counter() - t
        for full, part in zip(out, res[:3]):
            full[hit] = part
        return out + (tm,)

    def _render_chunk(self, o: np.ndarray, d: np.ndarray, v: np.ndarray):
        if self.proposal is not None and self.s.n_fine > 0:
            return self._render_chunk_proposal(o, d, v)
        tm = Timings()
        s = self.s
        R = o.shape[0]
        t = time.perf_counter()
        z = linspace_depths(s.near, s.far, s.n_coarse, R)
        pts = o[:, None] + d[:, None] * z[..., None]
        tm.sampling += time.perf_counter() - t
        if self.coarse_density is not None and s.n_fine > 0:
            t = time.perf_counter()
            dens = self.coarse_density(pts.reshape(-1, 3)).reshape(R, -1).astype(np.float32)
            rgb = np.zeros(pts.shape, np.float32)
            occ = self.grid.query(pts) if self.grid is not None else np.ones(dens.shape, bool)
            dens = np.where(occ, dens, np.float32(0.0))
            tm.sampling += time.perf_counter() - t
        else:
            rgb, dens, occ = self._evaluate(self.coarse, pts, z, d, v, tm)
        tm.coarse_samples = tm.samples
        t = time.perf_counter()
        res = composite(rgb, dens, z, d, s.white_bkgd)
        tm.compositing += time.perf_counter() - t
        if s.n_fine == 0:
            return res[0], res[1], res[2], tm
        out = None
        if self.grid is not None:
            # a ray whose coarse samples all lie in empty cells crosses no matter: it is background
            # (the grid is dilated by a cell, so a ray through an occupied cell spends at least two
            # cells' length, about one coarse spacing, in occupied ones)
            hit = np.nonzero(occ.any(1))[0]
            if hit.size < R:
                out = (np.full((R, 3), 1.0 if s.white_bkgd else 0.0, np.float32), np.zeros(R, np.float32),
                       np.zeros(R, np.float32))
                o, d, v, z, res = o[hit], d[hit], v[hit], z[hit], [x[hit] for x in res]
                if hit.size == 0:
                    return out + (tm,)
        t = time.perf_counter()
        z_f = sample_pdf(0.5 * (z[:, 1:] + z[:, :-1]), res[3][:, 1:-1], s.n_fine)
        z = np.sort(z_f, -1) if self.fine_only else np.sort(np.concatenate((z, z_f), -1), -1)
        pts = o[:, None] + d[:, None] * z[..., None]
        tm.sampling += time.perf_counter() - t
        rgb, dens, _ = self._evaluate(self.fine or self.coarse, pts, z, d, v, tm,
                                      self.proposal_segment if self.fine_only else None)
        t = time.perf_counter()
        res = composite(rgb, dens, z, d, s.white_bkgd)
        tm.compositing += time.perf_counter() - t
        if out is not None:
            for full, part in zip(out, res[:3]):
                full[hit] = part
            return out + (tm,)
        return res[0], res[1], res[2], tm

    def ray_chunk(self) -> int:
        """Rays per chunk: the runtime's ``chunk``, fewer when the samples per ray (up to 4096 +
        4096 from a manifest) would put more than :data:`MAX_CHUNK_POINTS` points in flight
        across the workers: the memory of a pass stays bounded whatever the bundle says."""
        per_ray = max(1, int(self.s.n_coarse) + int(self.s.n_fine), self.n_proposal + int(self.s.n_fine))
        return max(1, min(self.chunk, MAX_CHUNK_POINTS // (per_ray * max(1, self.workers))))

    def render_rays(self, o: np.ndarray, d: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
        """Render rays (chunked; ``workers`` chunks at once).

        Args:
            o: ray origins ``(R, 3)``.
            d: ray directions ``(R, 3)`` (not normalised; NDC rays for a forward-facing scene).
            v: unit view directions ``(R, 3)``.

        Returns:
            ``{"rgb": (R, 3), "depth": (R,), "acc": (R,)}``, float32.

        With several workers the stage times in :attr:`timings` are summed over the threads.
        The rays are cut into the fewest chunks of at most ``chunk`` rays whose number is a
        multiple of ``workers``, all of (nearly) equal size, so the workers get equal numbers of
        rays (their work still differs with how much of each chunk the grid skips)."""
        chunk = balanced_chunk(o.shape[0], self.ray_chunk(), self.workers)
        starts = range(0, o.shape[0], chunk)
        job = lambda a: self._render_chunk(o[a:a + chunk], d[a:a + chunk], v[a:a + chunk])
        if self.workers > 1 and len(starts) > 1:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(self.workers) as ex:
                parts = list(ex.map(job, starts))
        else:
            parts = [job(a) for a in starts]
        for p in parts:
            self.timings.add(p[3])
        return {k: np.concatenate([p[i] for p in parts]) for i, k in enumerate(("rgb", "depth", "acc"))}

    def render_view(self, H: int, W: int, focal: float, c2w: np.ndarray) -> dict[str, np.ndarray]:
        """Render one view.

        Args:
            H, W: the image size in pixels.
            focal: the focal length in pixels, or ``(fx, fy, cx, cy)``.
            c2w: the camera-to-world matrix ``(3, 4)`` or ``(4, 4)``.

        Returns:
            ``{"rgb": (H, W, 3)`` clipped to [0, 1], ``"depth": (H, W), "acc": (H, W)}``, float32.

        A view of more than :data:`TILE_RAYS` pixels is rendered in bands of rows, so that its rays (and the
        float64 arrays that make them) take memory in proportion to a band, not to the frame."""
        rows = max(1, TILE_RAYS // max(1, W))
        out = {"rgb": np.empty((H, W, 3), np.float32), "depth": np.empty((H, W), np.float32),
               "acc": np.empty((H, W), np.float32)}
        for r0 in range(0, H, rows):
            r1 = min(H, r0 + rows)
            t = time.perf_counter()
            if r0 == 0 and r1 == H:
                o, d, v = view_rays(H, W, focal, c2w, self.s.ndc)
            else:
                o, d, v = band_rays(H, W, focal, c2w, self.s.ndc, r0, r1)
            self.timings.rays += time.perf_counter() - t
            part = self.render_rays(o, d, v)
            out["rgb"][r0:r1] = np.clip(part["rgb"], 0.0, 1.0).reshape(r1 - r0, W, 3)
            out["depth"][r0:r1] = part["depth"].reshape(r1 - r0, W)
            out["acc"][r0:r1] = part["acc"].reshape(r1 - r0, W)
        return out

DEFAULT_EARLY_STOP = 1e-3   # transmittance; measured on lego (docs/speed.md)


DEFAULT_SAMPLER: Sampler = "network"   # what "auto" picks for a bundle with a density grid (docs/speed-native.md)


def make_renderer(spec, nets: dict, settings: SceneSettings, grid=None, skip: bool = True,
                  early_stop: float | None = None, density=None, sampler: Sampler | None = None) -> Renderer:
    """The renderer a runtime ``spec`` asks for (chunk, workers).

    Args:
        spec: the runtime (its ``chunk``, ``workers``, ``segment``, ``early_stop``, ``sampler`` and the
            density sampler's ``proposal_segment``, ``proposal_softness`` and ``proposal_spacing``).
        nets: ``{"coarse": net, "fine": net | None}``, each
            ``(points (N,3), viewdirs (N,3)) -> (rgb (N,3) | None, density (N,1))``.
        settings: the scene's bounds and samples per ray.
        grid: the bundle's occupancy grid (:class:`nerfexport.deploy.occupancy.OccupancyBits`) or ``None``.
        skip: empty-space skipping with ``grid`` and early termination; without, the plain renderer.
        early_stop: the transmittance a ray stops at (the runtime's ``early_stop``, else
            :data:`DEFAULT_EARLY_STOP`).
        density: the bundle's baked density grid, ``points (N,3) -> (N,)``, or ``None``.
        sampler: where the fine samples go (below); ``None`` or ``"auto"``: the runtime's ``sampler``.

    Returns:
        A :class:`Renderer`; raises ``ValueError`` for a sampler the bundle cannot serve.

    ``sampler`` (with ``skip``): ``"density"`` places the fine samples from the bundle's baked
    ``density`` grid with no coarse network (:class:`Renderer`'s ``proposal``), ``"network"``
    from the coarse network's weights, ``"auto"`` (``None``) :data:`DEFAULT_SAMPLER` when the
    bundle has a density grid and an occupancy grid, else the coarse network."""
    if sampler in (None, "auto"):   # not chosen: the runtime file's, else the rule below
        sampler = getattr(spec, "sampler", None) or "auto"
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, not {sampler!r}")
    if sampler == "density" and skip and (density is None or grid is None):   # plain renders need neither
        raise ValueError("the density sampler needs the bundle's density and occupancy grids (export it again "
                         "with this nerfexport)")
    if sampler == "auto":
        sampler = DEFAULT_SAMPLER if density is not None and grid is not None else "network"
    use = skip and sampler == "density" and settings.n_fine >= 2 and nets.get("fine") is not None
    early_stop = getattr(spec, "early_stop", None) if early_stop is None else early_stop
    stop = (DEFAULT_EARLY_STOP if early_stop is None else early_stop) if skip else 0.0
    return Renderer(nets["coarse"], nets["fine"], settings, chunk=spec.chunk, grid=grid if skip else None,
                    early_stop=stop, workers=getattr(spec, "workers", 1), segment=getattr(spec, "segment", 32),
                    proposal=density if use else None, proposal_segment=getattr(spec, "proposal_segment", 8),
                    proposal_softness=getattr(spec, "proposal_softness", 0.1),
                    n_proposal=proposal_samples(density, settings, getattr(spec, "proposal_spacing", 1.0)) if use else None)


@dataclass
class ViewScores:
    psnr: float
    ssim: float
    per_view_psnr: list[float] = field(default_factory=list)
    images: np.ndarray | None = None      # (V, H, W, 3) when kept
    seconds: float = 0.0


def render_and_score(renderer: Renderer, images: np.ndarray, poses: np.ndarray, H: int, W: int, focal: float,
                     keep_images: bool = False, progress: Callable[[int], None] | None = None) -> ViewScores:
    """Render each pose and score it against ``images (V,H,W,3)``: mean PSNR and SSIM."""
    from nerfexport.data.metrics import psnr, ssim
    ps, ss, outs = [], [], []
    t = time.perf_counter()
    for i, (img, pose) in enumerate(zip(images, poses)):
        rgb = renderer.render_view(H, W, focal, pose)["rgb"]
        ps.append(psnr(rgb, img))
        ss.append(ssim(rgb, img))
        if keep_images:
            outs.append(rgb)
        if progress:
            progress(i + 1)
    return ViewScores(float(np.mean(ps)), float(np.mean(ss)), ps, np.stack(outs) if keep_images else None,
                      time.perf_counter() - t)
