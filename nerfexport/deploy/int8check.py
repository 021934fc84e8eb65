"""Do this CPU's int8 kernels compute what the int8 graph says? (no torch)

An int8 bundle is a QDQ graph: every quantized tensor passes through a ``QuantizeLinear`` /
``DequantizeLinear`` pair. onnxruntime runs it two ways:

* with graph optimizations on (what rendering uses), the pairs and the ``Gemm`` between them
  are fused into integer kernels (``QGemm``) picked for this CPU by MLAS;
* with every optimization off (``ORT_DISABLE_ALL``), each node runs as written: the pairs
  round and clip in float and the ``Gemm`` is a float ``Gemm``. That is a faithful simulation
  of the quantized model, the same on every CPU.

The two agree to a rounding step where the kernels are exact. Where they are not, the
difference is as large as quantization itself: on x86 CPUs without VNNI (AVX2, AVX-512 F
without VNNI) MLAS multiplies uint8 activations by int8 weights with ``VPMADDUBSW``, which
adds each pair of products into a signed 16-bit value and saturates above 32,767; with 8-bit
weights a pair reaches 2 x 255 x 127 = 64,770. Weights of at most 7 bits (|w| <= 63:
2 x 255 x 63 = 32,130) cannot saturate there (see :mod:`nerfexport.export.quantize`).

:func:`network_gap` compares one network's kernels with its simulation on given points;
:func:`ray_points` draws the points a network sees when it renders (real rays of a bundle's
views); :func:`check_bundle` does both for every int8 network of a bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Kernels against simulation, mean over the points. Exact kernels differ from the simulation only
# where a value lands on the other side of a rounding boundary (float sums in another order):
# measured 1e-4 to 6e-4 in rgb on real rays of the lego teacher and on the synthetic networks of
# ``nerfexport doctor``; a saturating kernel differs by 1e-2 (the AVX2 CPU).
RGB_TOLERANCE = 3e-3          # mean |rgb kernels - rgb simulation| (rgb in [0, 1])
DENSITY_TOLERANCE = 0.03      # mean |density difference| / mean |density of the simulation|


@dataclass
class Gap:
    """One network's kernels against its simulation on ``points`` inputs."""

    network: str
    points: int
    rgb_mean: float | None       # None for a density-only graph
    rgb_max: float | None
    density_rel: float
    rgb_tolerance: float = RGB_TOLERANCE
    density_tolerance: float = DENSITY_TOLERANCE

    @property
    def ok(self) -> bool:
        return (self.rgb_mean is None or self.rgb_mean <= self.rgb_tolerance) and \
            self.density_rel <= self.density_tolerance

    def describe(self) -> str:
        rgb = "" if self.rgb_mean is None else \
            f"mean |rgb| {self.rgb_mean:.2g} (max {self.rgb_max:.2g}, tolerance {self.rgb_tolerance:g}), "
        return (f"{self.network}: kernels against float simulation on {self.points:,} points: {rgb}"
                f"density {100 * self.density_rel:.2g}% (tolerance {100 * self.density_tolerance:g}%)")

    def as_dict(self) -> dict:
        return {"network": self.network, "points": self.points, "rgb_mean": self.rgb_mean, "rgb_max": self.rgb_max,
                "density_rel": self.density_rel, "rgb_tolerance": self.rgb_tolerance,
                "density_tolerance": self.density_tolerance, "ok": self.ok}


def _session(model, optimized: bool, threads: int | None):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads:
        so.intra_op_num_threads = int(threads)
    src = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def outputs_of(a: tuple, b: tuple, network: str = "network") -> Gap:
    """The :class:`Gap` between two ``(rgb, density)`` outputs (``a`` the kernels', ``b`` the simulation's)."""
    dens_a, dens_b = np.asarray(a[1], np.float64), np.asarray(b[1], np.float64)
    rel = float(np.abs(dens_a - dens_b).mean() / max(float(np.abs(dens_b).mean()), 1e-6))
    if a[0] is None:
        return Gap(network, int(dens_a.shape[0]), None, None, rel)
    d = np.abs(np.asarray(a[0], np.float64) - np.asarray(b[0], np.float64))
    return Gap(network, int(dens_a.shape[0]), float(d.mean()), float(d.max()), rel)


def network_gap(model, pts: np.ndarray, dirs: np.ndarray, network: str = "network",
                threads: int | None = None, batch: int = 16384) -> Gap:
    """Kernels (all graph optimizations) against the float simulation (none) of one ONNX graph
    (a path or an ``onnx.ModelProto`` with the bundles' interface) on ``pts, dirs (N,3)``."""
    pts = np.ascontiguousarray(pts, np.float32)
    dirs = np.ascontiguousarray(dirs, np.float32)
    if pts.ndim != 2 or pts.shape[1] != 3 or dirs.shape != pts.shape or pts.shape[0] == 0:
        raise ValueError("points and view directions must be two non-empty (N, 3) arrays of one size")
    outs = []
    for optimized in (True, False):
        s = _session(model, optimized, threads)
        names = [o.name for o in s.get_outputs()]
        feeds = {i.name for i in s.get_inputs()}
        parts = [s.run(names, {k: v for k, v in (("points", pts[a:a + batch]), ("viewdirs", dirs[a:a + batch]))
                               if k in feeds}) for a in range(0, pts.shape[0], batch)]
        got = {n: np.concatenate([p[i] for p in parts]) for i, n in enumerate(names)}
        outs.append((got.get("rgb"), got["density"]))
    return outputs_of(outs[0], outs[1], network)


def ray_points(bundle, n_rays: int = 256, seed: int = 0, views: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The inputs each network of ``bundle`` (a :class:`nerfexport.deploy.bundle.Bundle`) gets
    when it renders ``n_rays`` random pixels of ``views`` orbit views at the bundle's camera
    (the float simulation renders them: the points do not depend on this CPU's kernels)."""
    from nerfexport.deploy.rays import view_rays
    from nerfexport.deploy.render import Renderer, SceneSettings
    from nerfexport.deploy.views import orbit_views
    m = bundle.manifest
    s = m.scene
    # without a recorded camera (an imported checkpoint), one of a 40-degree field of view
    cam = {"H": s.camera.H, "W": s.camera.W, "focal": s.camera.focal} if s.camera is not None else \
        {"H": 100, "W": 100, "focal": 138.9}
    if s.ndc:   # a forward-facing scene: its poses are centred on the identity
        H, W, focal = cam["H"], cam["W"], s.camera.cam if s.camera is not None else cam["focal"]
        poses = np.eye(4, dtype=np.float32)[None]
    else:
        ov = orbit_views(cam, s.near, s.far, s.ndc)
        H, W, focal, poses = ov.H, ov.W, ov.focal, ov.poses
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(poses), size=min(views, len(poses)), replace=False)
    o, d, v = [], [], []
    per = -(-n_rays // len(pick))
    for i in pick:
        ro, rd, rv = view_rays(H, W, focal, poses[i], s.ndc)
        sel = rng.choice(ro.shape[0], size=min(per, ro.shape[0]), replace=False)
        o.append(ro[sel]), d.append(rd[sel]), v.append(rv[sel])
    o, d, v = (np.ascontiguousarray(np.concatenate(x)[:n_rays], np.float32) for x in (o, d, v))
    seen: dict[str, list] = {}

    def recorder(which: str):
        sess = _session(bundle.network_path(which), False, None)
        names = [x.name for x in sess.get_outputs()]

        def net(p, q):
            seen.setdefault(which, []).append((p.copy(), q.copy()))
            out = dict(zip(names, sess.run(names, {"points": p, "viewdirs": q})))
            return out["rgb"], out["density"]
        return net

    fine = recorder("fine") if bundle.network_path("fine") else None
    Renderer(recorder("coarse"), fine, SceneSettings.from_manifest(m), chunk=1024).render_rays(o, d, v)
    return {w: (np.concatenate([a for a, _ in xs]), np.concatenate([b for _, b in xs])) for w, xs in seen.items()}


def check_bundle(path, n_rays: int = 256, max_points: int = 16384, seed: int = 0,
                 threads: int | None = None) -> list[Gap]:
    """Kernels against simulation for every network of the int8 bundle at ``path``, on at most
    ``max_points`` of the points it sees on ``n_rays`` real rays."""
    from nerfexport.deploy.bundle import open_bundle
    b = open_bundle(path)
    if b.manifest.precision != "int8":
        raise ValueError(f"{path} is a {b.manifest.precision} bundle; the kernel check is for int8 bundles")
    gaps = []
    rng = np.random.default_rng(seed)
    for which, (pts, dirs) in ray_points(b, n_rays, seed).items():
        if pts.shape[0] > max_points:
            idx = np.sort(rng.choice(pts.shape[0], max_points, replace=False))
            pts, dirs = pts[idx], dirs[idx]
        gaps.append(network_gap(b.network_path(which), pts, dirs, which, threads))
    return gaps
