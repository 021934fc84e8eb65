"""The embedded procedural scene: a Blender-format dataset made here, with no data or network.

Three solid, textured objects (a striped sphere, a checkered box and a small glossy sphere)
lit by one directional light with a Blinn-Phong highlight, so their colour depends on the
view direction and the view branch of the NeRF has something to learn. Ray-cast analytically
in numpy with 2x2 supersampling; the background is transparent (alpha 0), like the NeRF
synthetic scenes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from nerfexport.data.rays import get_rays, intrinsics, pose_spherical

CAMERA_ANGLE_X = 0.6911112070083618  # the NeRF synthetic scenes' field of view
RADIUS = 4.0
_LIGHT = np.array([0.4, -0.3, 0.85]) / np.linalg.norm([0.4, -0.3, 0.85])


def _hit_sphere(o, d, c, r):
    oc = o - c
    b = (oc * d).sum(-1)
    cc = (oc * oc).sum(-1) - r * r
    disc = b * b - cc
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    t = np.where((disc > 0) & (t > 1e-4), t, np.inf)
    return t


def _hit_box(o, d, lo, hi):
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t0, t1 = (lo - o) * inv, (hi - o) * inv
    tmin = np.minimum(t0, t1).max(-1)
    tmax = np.maximum(t0, t1).min(-1)
    return np.where((tmax >= tmin) & (tmin > 1e-4), tmin, np.inf)


def _shade(o, d):
    """Colour (N,3) and coverage (N,) of rays ``o, d (N,3)`` (d unit length)."""
    spheres = [(np.array([0.45, -0.2, 0.1]), 0.55), (np.array([-0.35, 0.55, -0.25]), 0.3)]
    box_lo, box_hi = np.array([-0.85, -0.75, -0.6]), np.array([-0.05, 0.05, 0.2])
    ts = np.stack([_hit_sphere(o, d, c, r) for c, r in spheres] + [_hit_box(o, d, box_lo, box_hi)], -1)
    which = ts.argmin(-1)
    t = ts.min(-1)
    hit = np.isfinite(t)
    p = o + d * np.where(hit, t, 0.0)[:, None]
    n = np.zeros_like(p)
    base = np.zeros_like(p)
    shin = np.full(len(p), 32.0)
    ks = np.full(len(p), 0.35)
    # big sphere: latitude stripes, orange/cream
    m = which == 0
    c0 = spheres[0][0]
    n[m] = (p[m] - c0) / spheres[0][1]
    stripe = (np.floor((p[m, 2] - c0[2]) * 6.0) % 2)[:, None]
    base[m] = stripe * np.array([0.95, 0.55, 0.1]) + (1 - stripe) * np.array([0.95, 0.9, 0.75])
    # small sphere: glossy blue
    m = which == 1
    n[m] = (p[m] - spheres[1][0]) / spheres[1][1]
    base[m] = np.array([0.15, 0.3, 0.85])
    shin[m], ks[m] = 96.0, 0.8
    # box: green/white checkerboard, face normals
    m = which == 2
    q = p[m]
    centre, half = 0.5 * (box_lo + box_hi), 0.5 * (box_hi - box_lo)
    rel = (q - centre) / half
    axis = np.abs(rel).argmax(-1)
    nb = np.zeros_like(q)
    nb[np.arange(len(q)), axis] = np.sign(rel[np.arange(len(q)), axis])
    n[m] = nb
    check = (np.floor(q * 5.0).sum(-1) % 2)[:, None]
    base[m] = check * np.array([0.2, 0.7, 0.3]) + (1 - check) * np.array([0.95, 0.95, 0.95])
    ks[m] = 0.2
    diffuse = np.clip((n * _LIGHT).sum(-1), 0.0, 1.0)[:, None]
    h = _LIGHT[None, :] - d
    h /= np.linalg.norm(h, axis=-1, keepdims=True)
    spec = (np.clip((n * h).sum(-1), 0.0, 1.0) ** shin * ks)[:, None]
    rgb = np.clip(base * (0.25 + 0.75 * diffuse) + spec, 0.0, 1.0)
    return np.where(hit[:, None], rgb, 0.0), hit.astype(np.float64)


def render_view(c2w: np.ndarray, size: int, supersample: int = 2) -> np.ndarray:
    """RGBA image ``(size, size, 4)`` float in [0, 1] of the scene from camera ``c2w``."""
    s = size * supersample
    focal = 0.5 * s / np.tan(0.5 * CAMERA_ANGLE_X)
    o, d = get_rays(s, s, intrinsics(s, s, focal), c2w)
    o, d = o.astype(np.float64), d.astype(np.float64)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    rgb, a = _shade(o, d)
    rgba = np.concatenate([rgb * a[:, None], a[:, None]], -1).reshape(size, supersample, size, supersample, 4)
    rgba = rgba.mean(axis=(1, 3))
    alpha = rgba[..., 3:]
    rgb = np.where(alpha > 0, rgba[..., :3] / np.maximum(alpha, 1e-8), 0.0)  # un-premultiply for PNG
    return np.concatenate([rgb, alpha], -1)


WALL_Z = -1.5          # the forward-facing scene's back wall
FORWARD_DISTANCE = 3.5 # its cameras' distance from the origin, looking down -z


def _wall(o, d):
    """Colour (N,3) of the forward-facing scene's back wall (a plane ``z = WALL_Z``): a two-tone
    checkerboard under a soft vertical gradient, so every pixel has texture."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (WALL_Z - o[:, 2]) / d[:, 2]
    p = o + d * np.where(t > 0, t, 0.0)[:, None]
    check = (np.floor(p[:, 0] * 2.5) + np.floor(p[:, 1] * 2.5)) % 2
    base = np.where(check[:, None] > 0, np.array([0.55, 0.35, 0.45]), np.array([0.85, 0.8, 0.6]))
    shade = np.clip(0.75 + 0.12 * p[:, 1:2], 0.4, 1.0)
    return np.where((t > 0)[:, None], base * shade, 0.0)


def forward_view(c2w: np.ndarray, H: int, W: int, focal: float, supersample: int = 2) -> np.ndarray:
    """RGB image ``(H, W, 3)`` in [0, 1] of the forward-facing scene (the three objects before the
    back wall) from camera ``c2w``."""
    s = supersample
    o, d = get_rays(H * s, W * s, intrinsics(H * s, W * s, focal * s), c2w)
    o, d = o.astype(np.float64), d.astype(np.float64)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    rgb, a = _shade(o, d)
    rgb = rgb * a[:, None] + _wall(o, d) * (1.0 - a[:, None])
    return rgb.reshape(H, s, W, s, 3).mean(axis=(1, 3))


def forward_poses(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` cameras ``FORWARD_DISTANCE`` in front of the scene on a jittered 5-wide grid 1.2 x 0.8
    across, all looking down -z (an LLFF-style hand-held capture)."""
    cols = 5
    rows = -(-n // cols)
    out = []
    for i in range(n):
        x = -0.6 + 1.2 * (i % cols) / max(1, cols - 1) + rng.uniform(-0.05, 0.05)
        y = -0.4 + 0.8 * (i // cols) / max(1, rows - 1) + rng.uniform(-0.05, 0.05)
        c2w = np.eye(4)
        c2w[:3, 3] = (x, y, FORWARD_DISTANCE)
        out.append(c2w)
    return out


def make_forward_scene(out: str | Path, width: int = 504, height: int = 378, n: int = 20, seed: int = 0) -> Path:
    """Write the procedural scene as an LLFF forward-facing dataset (``poses_bounds.npy`` and
    ``images/`` at ``width`` x ``height``, a 55-degree horizontal field of view) to ``out``,
    created whole via a temporary folder. LLFF holds out every 8th view for testing."""
    if min(width, height) < 8 or max(width, height) > 4096 or n < 2:
        raise SceneError("width and height must be 8 to 4096 pixels and there must be at least 2 views")
    focal = 0.5 * width / np.tan(np.radians(27.5))

    def fill(tmp: Path) -> None:
        (tmp / "images").mkdir()
        rows = []
        for i, c2w in enumerate(forward_poses(n, np.random.default_rng(seed))):
            img = forward_view(c2w, height, width, focal)
            Image.fromarray((img * 255.0 + 0.5).astype(np.uint8), "RGB").save(tmp / "images" / f"{i:03d}.png")
            r, u, b = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2]
            m = np.stack([-u, r, b, c2w[:3, 3], np.array([height, width, focal])], 1)  # LLFF: [down, right, back]
            z = FORWARD_DISTANCE - WALL_Z
            rows.append(np.concatenate([m.reshape(-1), [FORWARD_DISTANCE - 1.2, z * 1.15]]))
        np.save(tmp / "poses_bounds.npy", np.array(rows))
        (tmp / "README.txt").write_text(f"nerfexport procedural forward-facing scene, seed {seed}, {width}x{height}, "
                                        f"{n} views, LLFF format.\n")
    return _write_folder(out, fill)


def _write_folder(out: str | Path, fill) -> Path:
    """Create the folder ``out`` whole: ``fill(tmp)`` writes into a temporary folder beside it,
    which is then renamed into place (an empty ``out`` is replaced; anything else is refused)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) if out.is_dir() else out.exists():
        raise FileExistsError(f"{out} already exists and is not empty")
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    from nerfexport.data.fileio import temp_dir_for
    tmp = temp_dir_for(out)
    try:
        fill(tmp)
        if out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def camera_poses(n: int, rng: np.random.Generator | None, elevation: float = -30.0) -> list[np.ndarray]:
    """``n`` cameras on the upper hemisphere (random with ``rng``, else an orbit at ``elevation``)."""
    if rng is None:
        return [pose_spherical(th, elevation, RADIUS) for th in np.linspace(-180, 180, n, endpoint=False)]
    th = rng.uniform(-180, 180, n)
    ph = -np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(10)), np.sin(np.radians(80)), n)))
    return [pose_spherical(a, b, RADIUS) for a, b in zip(th, ph)]


class SceneError(ValueError):
    """The embedded scene cannot be made with these options."""


FORMATS = ("blender", "nerfstudio")


def make_scene(out: str | Path, size: int = 64, n_train: int = 40, n_val: int = 5, n_test: int = 8,
               seed: int = 0, fmt: str = "blender") -> Path:
    """Write a Blender-format dataset to ``out`` (created whole via a temporary folder).

    Returns the folder. Train and val views are random on the upper hemisphere; test views
    orbit at 30 degrees elevation. ``fmt="nerfstudio"``: the same images and cameras in one
    nerfstudio ``transforms.json`` (``fl_x``... and the split lists), with the principal point
    at ``size/2 + 0.5`` in nerfstudio's pixel-centre convention: the camera the Blender loader
    uses, so both formats give the same rays.
    """
    if size < 8 or min(n_train, n_val, n_test) < 1:
        raise SceneError("size must be at least 8 and every split needs at least one view")
    if fmt not in FORMATS:
        raise SceneError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    rng = np.random.default_rng(seed)

    def fill(tmp: Path) -> None:
        if fmt == "nerfstudio":
            return fill_nerfstudio(tmp)
        for split, poses in (("train", camera_poses(n_train, rng)), ("val", camera_poses(n_val, rng)),
                             ("test", camera_poses(n_test, None))):
            (tmp / split).mkdir()
            frames = []
            for i, c2w in enumerate(poses):
                img = render_view(c2w, size)
                Image.fromarray((img * 255.0 + 0.5).astype(np.uint8), "RGBA").save(tmp / split / f"r_{i}.png")
                frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": np.asarray(c2w).tolist()})
            (tmp / f"transforms_{split}.json").write_text(
                json.dumps({"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}, indent=1))
        (tmp / "README.txt").write_text(f"nerfexport procedural scene, seed {seed}, {size}x{size}, Blender format.\n")

    def fill_nerfstudio(tmp: Path) -> None:
        focal = 0.5 * size / np.tan(0.5 * CAMERA_ANGLE_X)
        meta = {"camera_model": "PINHOLE", "fl_x": focal, "fl_y": focal, "cx": 0.5 * size + 0.5,
                "cy": 0.5 * size + 0.5, "w": size, "h": size, "frames": []}
        for split, poses in (("train", camera_poses(n_train, rng)), ("val", camera_poses(n_val, rng)),
                             ("test", camera_poses(n_test, None))):
            (tmp / split).mkdir()
            meta[f"{split}_filenames"] = []
            for i, c2w in enumerate(poses):
                img = render_view(c2w, size)
                Image.fromarray((img * 255.0 + 0.5).astype(np.uint8), "RGBA").save(tmp / split / f"r_{i}.png")
                meta["frames"].append({"file_path": f"{split}/r_{i}.png", "transform_matrix": np.asarray(c2w).tolist()})
                meta[f"{split}_filenames"].append(f"{split}/r_{i}.png")
        (tmp / "transforms.json").write_text(json.dumps(meta, indent=1))
        (tmp / "README.txt").write_text(f"nerfexport procedural scene, seed {seed}, {size}x{size}, nerfstudio format.\n")
    return _write_folder(out, fill)
