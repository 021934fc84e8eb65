"""Scenes from one ``transforms.json`` (nerfstudio's and instant-ngp's format) and Blender folders
that hold only ``transforms_train.json`` (and perhaps ``transforms_test.json``).

The format (nerfstudio's "Data conventions" page, instant-ngp's ``docs/nerf_dataset_tips.md``):

* intrinsics at the top of the file or in each frame (a frame's value wins): ``fl_x``, ``fl_y``
  (or instant-ngp's ``camera_angle_x`` / ``camera_angle_y``), ``cx``, ``cy``, ``w``, ``h``; a
  missing ``fl_y`` is ``fl_x``, a missing ``cx``/``cy`` is the image centre. Frames whose
  intrinsics differ are refused (one camera for the scene is supported).
* ``cx``, ``cy`` in nerfstudio's and instant-ngp's convention: pixel ``(i, j)``'s ray passes
  through ``(i + 0.5, j + 0.5)``. nerfexport's ray generator (nerf-pytorch's, as the Blender loader)
  shoots through ``(i, j)``, so the scene's principal point is ``(cx - 0.5, cy - 0.5)``: the file's
  camera is honoured exactly, and a file with ``cx = W/2 + 0.5`` gives the Blender loader's rays.
* distortion (``k1``-``k4``, ``p1``, ``p2`` not zero) and camera models other than a pinhole
  (``OPENCV_FISHEYE``, ``EQUIRECTANGULAR``, ...) are refused in one line: undistort the images first.
* each frame: ``file_path`` (inside the folder; no extension means ``.png``) and
  ``transform_matrix``, camera-to-world in the OpenGL convention as in the Blender scenes.
  ``applied_transform`` (nerfstudio) is already applied to those matrices; it is only checked.
* ``--downscale N``: images from ``images_N/`` (nerfstudio's downscaled copies, same file names)
  when that folder exists, else the full images averaged down here; the intrinsics follow.
* splits: ``train_filenames`` / ``val_filenames`` / ``test_filenames`` (nerfstudio) when the file
  names them, else every :data:`HOLDOUT`-th frame (in the file's order) is held out for val and test.
* scene bounds: instant-ngp maps a position ``p`` to ``p * scale + offset`` (defaults 0.33 and
  0.5, its ``nerf_loader``) and marches rays in the cube ``[0.5 - aabb_scale/2, 0.5 +
  aabb_scale/2]^3``; with any of ``aabb_scale``, ``scale``, ``offset`` that cube, mapped back, is
  the scene box. Without them the scene is a sphere around the point the cameras look at
  (least squares over their optical axes) of half the median camera distance (the Blender scenes:
  cameras at 4, the object within 2). ``near``/``far`` (nerfexport's own keys) are taken as
  given; otherwise derived from the cameras and that box or sphere.
* coordinates: the scene is moved so that its centre is the origin and scaled so that the median
  camera distance is 4 (as colmap2nerf's output and the Blender scenes; the occupancy grid and the
  orbit views assume a scene around the origin); a scene within 0.1 % of that is left as it is.

Every value is checked (finite, in range, files inside the folder, bounded counts); a bad file
raises :class:`~nerfexport.data.datasets.DatasetError` in one line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from nerfexport.data.datasets import (DatasetError, Scene, _area_downscale, _check_factor, _composite, _read_image,
                                      load_blender)
from nerfexport.data.fileio import OutsideFolder, confine

TRANSFORMS = "transforms.json"
HOLDOUT = 8                    # every 8th frame held out (LLFF's llffhold, nerfstudio's eval_interval)
MAX_FRAMES = 10_000
MAX_JSON_BYTES = 64 << 20
MAX_SIDE = 8192                # pixels per image side
RADIUS = 4.0                   # median camera distance after normalisation
SNAP = 1e-3                    # closer than this (relative) to centred and RADIUS-sized: left as it is
PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "SIMPLE_RADIAL", "RADIAL")
DISTORTION = ("k1", "k2", "k3", "k4", "p1", "p2")
INTRINSIC_KEYS = ("fl_x", "fl_y", "camera_angle_x", "camera_angle_y", "cx", "cy", "w", "h") + DISTORTION


def _number(x, name: str, where: str, lo: float | None = None, hi: float | None = None,
            positive: bool = False) -> float:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    if ok and lo is not None:
        ok = x >= lo
    if ok and hi is not None:
        ok = x <= hi
    if ok and positive:
        ok = x > 0
    if not ok:
        rng = " positive" if positive else ""
        rng += f" in [{lo}, {hi}]" if lo is not None or hi is not None else ""
        raise DatasetError(f"{where}: {name} must be a finite{rng} number, not {x!r}")
    return float(x)


def _matrix(m, name: str, where: str) -> np.ndarray:
    try:
        a = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {name} is not a matrix of numbers") from None
    if a.shape not in ((4, 4), (3, 4)) or not np.isfinite(a).all() or np.abs(a).max() > 1e6:
        raise DatasetError(f"{where}: {name} must be a 4x4 (or 3x4) matrix of finite numbers under 1e6")
    return a


def _pose(m, where: str) -> np.ndarray:
    a = _matrix(m, "a transform_matrix", where)
    if a.shape == (4, 4) and np.abs(a[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise DatasetError(f"{where}: a transform_matrix's last row must be 0 0 0 1")
    R = a[:3, :3]
    if np.abs(R.T @ R - np.eye(3)).max() > 1e-2 or np.linalg.det(R) < 0:
        raise DatasetError(f"{where}: a transform_matrix's rotation is not orthonormal (scaled or mirrored axes)")
    out = np.eye(4)
    out[:3] = a[:3]
    return out


def _read_meta(path: Path) -> dict:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DatasetError(f"{path} cannot be read ({type(e).__name__})") from None
    if size > MAX_JSON_BYTES:
        raise DatasetError(f"{path} is larger than {MAX_JSON_BYTES / 2**20:g} MB; refused")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DatasetError(f"{path} cannot be read as JSON ({type(e).__name__})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise DatasetError(f"{path}: expected a non-empty \"frames\" list")
    if len(meta["frames"]) > MAX_FRAMES:
        raise DatasetError(f"{path} lists {len(meta['frames'])} frames; at most {MAX_FRAMES} are loaded")
    return meta


def _camera_model(meta: dict, where: str) -> None:
    model = meta.get("camera_model", "PINHOLE")
    if not isinstance(model, str):
        raise DatasetError(f"{where}: camera_model must be a name like \"OPENCV\"")
    if model.upper() not in PINHOLE_MODELS:
        raise DatasetError(f"{where}: camera_model {model} is not a pinhole camera; nerfexport reads pinhole "
                           "cameras only: undistort the images to a pinhole camera first (e.g. COLMAP's "
                           "image_undistorter) and write that camera's fl_x, fl_y, cx, cy")


def _intrinsics(meta: dict, frame: dict, img_w: int, img_h: int, where: str) -> tuple:
    """``(w, h, fx, fy, cx, cy)`` of a frame at the size the file states (else the image's own)."""
    def get(key):
        return frame[key] if key in frame else meta.get(key)
    for key in DISTORTION:
        v = get(key)
        if v is not None and _number(v, key, where) != 0.0:
            given = ", ".join(f"{k}={get(k)}" for k in DISTORTION if get(k) not in (None, 0, 0.0))
            raise DatasetError(f"{where}: distortion {given} is not undistorted by nerfexport: undistort the images "
                               "(e.g. COLMAP's image_undistorter or ns-process-data) and write their pinhole "
                               "fl_x, fl_y, cx, cy with k1-k4, p1, p2 zero or absent")
    w = img_w if get("w") is None else _number(get("w"), "w", where, 1, MAX_SIDE)
    h = img_h if get("h") is None else _number(get("h"), "h", where, 1, MAX_SIDE)
    if not (float(w).is_integer() and float(h).is_integer()):
        raise DatasetError(f"{where}: w and h must be whole numbers of pixels")
    if get("fl_x") is not None:
        fx = _number(get("fl_x"), "fl_x", where, positive=True)
    elif get("camera_angle_x") is not None:
        ax = _number(get("camera_angle_x"), "camera_angle_x", where, positive=True)
        if ax >= math.pi:
            raise DatasetError(f"{where}: camera_angle_x must be below pi radians, not {ax}")
        fx = 0.5 * w / math.tan(0.5 * ax)
    else:
        raise DatasetError(f"{where}: no focal length: give fl_x (or camera_angle_x) at the top or in every frame")
    if get("fl_y") is not None:
        fy = _number(get("fl_y"), "fl_y", where, positive=True)
    elif get("camera_angle_y") is not None:
        ay = _number(get("camera_angle_y"), "camera_angle_y", where, positive=True)
        if ay >= math.pi:
            raise DatasetError(f"{where}: camera_angle_y must be below pi radians, not {ay}")
        fy = 0.5 * h / math.tan(0.5 * ay)
    else:
        fy = fx
    cx = 0.5 * w if get("cx") is None else _number(get("cx"), "cx", where, -w, 2 * w)
    cy = 0.5 * h if get("cy") is None else _number(get("cy"), "cy", where, -h, 2 * h)
    if max(fx, fy) > 1e3 * max(w, h):
        raise DatasetError(f"{where}: a focal length of {max(fx, fy):g} pixels for a {w:g}x{h:g} image is not plausible")
    return int(w), int(h), fx, fy, cx, cy


def _image_path(root: Path, fp, downscale: int, where: str) -> tuple[Path, int]:
    """The image file of ``file_path`` and the factor still to average down here."""
    try:
        path = confine(root, fp, "image")
    except OutsideFolder as e:
        raise DatasetError(f"{where}: {e}") from None
    if path.suffix == "":
        path = path.with_suffix(".png")
    if downscale > 1:
        sub = root / f"images_{downscale}"
        if sub.is_dir():
            try:
                return confine(root, f"images_{downscale}/{path.name}", "image"), 1
            except OutsideFolder as e:
                raise DatasetError(f"{where}: {e}") from None
    return path, downscale


def _focus(poses: np.ndarray) -> np.ndarray | None:
    """The point nearest to every camera's optical axis (least squares), or None when the axes
    are (nearly) parallel or the point is behind most cameras."""
    o, d = poses[:, :3, 3], -poses[:, :3, 2]
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    P = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    A, b = P.sum(0), (P @ o[:, :, None]).sum(0)[:, 0]
    if len(poses) < 2 or np.linalg.cond(A) > 1e6:
        return None
    c = np.linalg.solve(A, b)
    in_front = ((c[None] - o) * d).sum(-1) > 0
    return c if in_front.mean() > 0.5 else None


def _bounds(pos: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[float, float]:
    """near: the closest any camera is to the box ``[lo, hi]`` (a small fraction of the camera
    distance when one is inside it); far: the farthest corner of the box from any camera."""
    gap = np.maximum(np.maximum(lo[None] - pos, pos - hi[None]), 0.0)
    near = float(np.linalg.norm(gap, axis=-1).min())
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    far = float(np.linalg.norm(pos[:, None] - corners[None], axis=-1).max())
    return near, far


def _round(x: float, up: bool) -> float:
    """``x`` rounded outwards to 3 significant digits (so 1.9999999 is 2 and the bounds stay bounds)."""
    if x <= 0:
        return x
    e = 10.0 ** (math.floor(math.log10(x)) - 2)
    q = x / e
    q = math.ceil(q - 1e-3) if up else math.floor(q + 1e-3)
    return float(q * e)


def _split_indices(meta: dict, names: list[str], root: Path, where: str, test_every: int) -> tuple[dict, str | None]:
    keys = [f"{s}_filenames" for s in ("train", "val", "test")]
    if not any(k in meta for k in keys):
        n = len(names)
        if n < 2:
            raise DatasetError(f"{where} has one frame; holding one out needs at least 2 (or name the splits)")
        held = np.arange(0, n, HOLDOUT)
        train = np.setdiff1d(np.arange(n), held)
        note = f"{where} names no split: every {HOLDOUT}th frame ({len(held)} of {n}) is held out for val and test"
        return {"train": train, "val": held, "test": held[::test_every]}, note
    index = {}
    for i, nm in enumerate(names):
        index.setdefault(nm, i)
    splits = {}
    for s in ("train", "val", "test"):
        lst = meta.get(f"{s}_filenames")
        if lst is None:
            continue
        if not isinstance(lst, list) or len(lst) > MAX_FRAMES:
            raise DatasetError(f"{where}: {s}_filenames must be a list of at most {MAX_FRAMES} file names")
        idx = []
        for fp in lst:
            try:
                p = confine(root, fp, "image").relative_to(root).as_posix()
            except OutsideFolder as e:
                raise DatasetError(f"{where}: {e}") from None
            p = p if Path(p).suffix else p + ".png"
            if p not in index:
                raise DatasetError(f"{where}: {s}_filenames names {fp!r}, which no frame has")
            idx.append(index[p])
        splits[s] = np.array(idx, dtype=int)
    if "train" not in splits or not len(splits["train"]):
        raise DatasetError(f"{where}: the file names splits but no train_filenames")
    if "test" not in splits:
        splits["test"] = splits.get("val", np.array([], dtype=int))
    if "val" not in splits:
        splits["val"] = splits["test"]
    if not len(splits["test"]):
        raise DatasetError(f"{where}: the file names splits but no test (or val) frames")
    splits["test"] = splits["test"][::test_every]
    return splits, None


def load_transforms(root: str | Path, downscale: int = 1, white_bkgd: bool = True, test_every: int = 1) -> Scene:
    """Load ``root/transforms.json`` (nerfstudio or instant-ngp) as a :class:`Scene`; see the
    module's docstring for what is read and how. ``scene.notes`` says what was assumed."""
    root = Path(root)
    _check_factor(downscale)
    path = root / TRANSFORMS
    if not path.is_file():
        raise DatasetError(f"{root}: {TRANSFORMS} is missing")
    meta = _read_meta(path)
    where = str(path)
    _camera_model(meta, where)
    notes = []
    images, poses, cams, names, alpha, first = [], [], set(), [], False, None   # names: file_path as written, for the splits
    for k, fr in enumerate(meta["frames"]):
        fw = f"{where}: frame {k}"
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise DatasetError(f"{fw} needs \"file_path\" and \"transform_matrix\"")
        pose = _pose(fr["transform_matrix"], fw)
        img_path, here = _image_path(root, fr["file_path"], downscale, fw)
        raw = _read_image(img_path)
        if max(raw.shape[:2]) > MAX_SIDE:
            raise DatasetError(f"{img_path} is larger than {MAX_SIDE} pixels a side; refused")
        alpha = alpha or raw.shape[-1] == 4
        img = _area_downscale(_composite(raw, white_bkgd), here)
        full_w, full_h = (raw.shape[1], raw.shape[0]) if here > 1 or downscale == 1 else (
            raw.shape[1] * downscale, raw.shape[0] * downscale)
        w, h, fx, fy, cx, cy = _intrinsics(meta, fr, full_w, full_h, fw)
        # averaged here: a ragged edge is cropped, coordinates scale by 1/here; a copy in images_N: by its size
        sx, sy = (1.0 / here, 1.0 / here) if here > 1 else (img.shape[1] / w, img.shape[0] / h)
        if abs(img.shape[1] / w * downscale - 1) > 0.02 or abs(img.shape[0] / h * downscale - 1) > 0.02:
            raise DatasetError(f"{img_path} is {raw.shape[1]}x{raw.shape[0]} pixels; {where} says {w}x{h}"
                               + (f" (downscaled {downscale}x)" if downscale > 1 else ""))
        # nerfstudio / instant-ngp: pixel centres at +0.5; nerfexport's rays pass through integer pixels
        cam = (fx * sx, fy * sy, cx * sx - 0.5, cy * sy - 0.5)
        first = first or cam
        cams.add(tuple(round(v, 4) for v in cam))   # the same camera up to 1e-4 pixels
        images.append(img.astype(np.float32))
        poses.append(pose)
        p = confine(root, fr["file_path"], "image").relative_to(root).as_posix()
        names.append(p if Path(p).suffix else p + ".png")
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DatasetError(f"{where}: images differ in size {sorted(s[:2] for s in shapes)}; one camera is supported")
    if len(cams) != 1:
        raise DatasetError(f"{where}: frames have {len(cams)} different intrinsics (fl_x, fl_y, cx, cy); "
                           "one camera for all frames is supported")
    if "applied_transform" in meta:
        _matrix(meta["applied_transform"], "applied_transform", where)
    splits, note = _split_indices(meta, names, root, where, test_every)
    if note:
        notes.append(note)
    P = np.stack(poses)
    box = _ngp_box(meta, where)
    near, far = _near_far(meta, P, box, where)
    P, near, far, moved = _normalise(P, box, near, far)
    if "near" not in meta and "far" not in meta:   # derived: rounded outwards (1.9999999 is 2)
        near, far = _round(near, False), _round(far, True)
    if moved:
        notes.append(moved)
    H, W = images[0].shape[:2]
    fx, fy, cx, cy = first
    pin = (fx, fy, cx, cy)
    centred = abs(fx - fy) <= 1e-9 * fx and abs(cx - 0.5 * W) <= 1e-6 and abs(cy - 0.5 * H) <= 1e-6
    scene = Scene(np.stack(images), P.astype(np.float32), H, W, float(fx), near, far, white_bkgd and alpha, False,
                  splits, "transforms", str(root))
    scene.pinhole = None if centred else pin
    scene.notes = notes
    return scene


def _ngp_box(meta: dict, where: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The scene box in the file's coordinates from instant-ngp's aabb_scale, scale and offset."""
    if not any(k in meta for k in ("aabb_scale", "scale", "offset")):
        return None
    a = _number(meta.get("aabb_scale", 1), "aabb_scale", where, 1, 128)
    s = _number(meta.get("scale", 0.33), "scale", where, positive=True)
    off = meta.get("offset", [0.5, 0.5, 0.5])
    if not isinstance(off, list) or len(off) != 3:
        raise DatasetError(f"{where}: offset must be three numbers")
    off = np.array([_number(v, "offset", where, -1e6, 1e6) for v in off])
    # instant-ngp: p_ngp = p * scale + offset, rays marched in [0.5 - a/2, 0.5 + a/2]^3
    lo, hi = (0.5 - 0.5 * a - off) / s, (0.5 + 0.5 * a - off) / s
    return lo, hi


def _near_far(meta: dict, P: np.ndarray, box, where: str) -> tuple[float, float]:
    pos = P[:, :3, 3]
    if box is None:
        c = _focus(P)
        c = pos.mean(0) if c is None else c
        d = np.linalg.norm(pos - c, axis=-1)
        r = 0.5 * float(np.median(d))
        if r <= 0:
            raise DatasetError(f"{where}: every camera is at the same place; the scene's bounds cannot be derived")
        near = max(float(d.min()) - r, 0.04 * r)
        far = float(d.max()) + r
    else:
        near, far = _bounds(pos, *box)
        c = 0.5 * (box[0] + box[1])
        near = max(near, 0.01 * float(np.median(np.linalg.norm(pos - c, axis=-1))))
    if "near" in meta or "far" in meta:
        near = _number(meta.get("near", near), "near", where, positive=True)
        far = _number(meta.get("far", far), "far", where, positive=True)
    if not near < far:
        raise DatasetError(f"{where}: near ({near:g}) must be below far ({far:g})")
    if far / near > 1e5:
        raise DatasetError(f"{where}: far / near is {far / near:.3g}; the scene's bounds are not usable")
    return near, far


def _normalise(P: np.ndarray, box, near: float, far: float):
    """Move the scene's centre to the origin and scale the median camera distance to
    :data:`RADIUS`; a scene within :data:`SNAP` of that is left as it is. Returns the poses, the
    bounds and a note (None when nothing moved)."""
    pos = P[:, :3, 3]
    if box is not None:
        c = 0.5 * (box[0] + box[1])
    else:
        c = _focus(P)
        c = pos.mean(0) if c is None else c
    d = float(np.median(np.linalg.norm(pos - c, axis=-1)))
    if float(np.linalg.norm(c)) <= SNAP * d:
        c = np.zeros(3)
    s = RADIUS / d if d > 0 else 1.0
    if abs(s - 1.0) <= SNAP:
        s = 1.0
    if not c.any() and s == 1.0:
        return P, near, far, None
    P = P.copy()
    P[:, :3, 3] = (pos - c) * s
    return P, near * s, far * s, (f"cameras centred on ({c[0]:.3g}, {c[1]:.3g}, {c[2]:.3g}) and scaled by {s:.4g} "
                                  f"(median distance {RADIUS:g})")


def load_blender_partial(root: str | Path, downscale: int = 1, white_bkgd: bool = True, test_every: int = 1) -> Scene:
    """A Blender folder with ``transforms_train.json`` and perhaps ``transforms_test.json`` but
    not all three split files: every :data:`HOLDOUT`-th training view is held out as the val split
    (and the test split when there is no test file). ``scene.notes`` says so."""
    root = Path(root)
    has_test = (root / "transforms_test.json").is_file()
    splits = ("train", "test") if has_test else ("train",)
    scene = load_blender(root, downscale, white_bkgd, splits=splits, test_every=test_every)
    train = scene.splits["train"]
    if len(train) < 2:
        raise DatasetError(f"{root}: transforms_train.json has {len(train)} view; holding views out needs at least 2")
    held = train[::HOLDOUT]
    scene.splits["train"] = np.setdiff1d(train, held)
    scene.splits["val"] = held
    missing = "transforms_val.json is missing" if has_test else "transforms_val.json and transforms_test.json are missing"
    if not has_test:
        scene.splits["test"] = held[::test_every]
    scene.notes = [f"{root}: {missing}: every {HOLDOUT}th training view ({len(held)} of {len(train)}) is held out "
                   f"as the {'val split' if has_test else 'val and test splits'} and not trained on"]
    return scene
