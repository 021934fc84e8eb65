"""The views to render: a dataset's test views (with ground truth) or an orbit around the scene.

numpy only: the deploy side reads the dataset's images itself (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nerfexport.data.datasets import DataArgs, DatasetError, recorded_scene
from nerfexport.deploy.manifest import Camera, check_camera
from nerfexport.data.rays import pose_spherical

SPIRAL_FRAMES = 40
MAX_PATH_FRAMES = 10_000
MAX_PATH_BYTES = 64 << 20


@dataclass
class Views:
    """``poses (V, 4, 4)`` camera-to-world, ground truth ``images (V, H, W, 3)`` or ``None``,
    and the camera; ``orbit`` for the spiral (written as a GIF too)."""

    poses: np.ndarray
    images: np.ndarray | None
    H: int
    W: int
    focal: float | tuple   # a focal length, or (fx, fy, cx, cy) for a general pinhole (deploy.rays.pinhole)
    orbit: bool = False       # a sequence (orbit or camera path): written as a GIF (and an MP4) too
    note: str | None = None   # which dataset was used, when it came from a record
    fps: float = 12.5

    def resized(self, resolution: tuple[int, int] | None = None, scale: float | None = None) -> "Views":
        """These views at ``resolution`` ``(W, H)`` or ``scale`` times their size (see
        :func:`resize_camera`); the ground truth is dropped when the size changes."""
        H, W, focal = resize_camera(self.H, self.W, self.focal, resolution, scale)
        if (H, W) == (self.H, self.W):
            return self
        return Views(self.poses, None, H, W, focal, self.orbit, self.note, self.fps)


def orbit_views(camera: dict | None, near: float, far: float, ndc: bool, frames: int = SPIRAL_FRAMES) -> Views:
    """An orbit at 30 degrees elevation, radius halfway between ``near`` and ``far``, with the
    recorded training camera ``{"H", "W", "focal"[, "fx", "fy", "cx", "cy"]}``."""
    if ndc or not camera:
        raise DatasetError("spiral views need a 360-degree scene with a recorded camera; use --views test")
    cam = Camera.parse(camera, "the recorded camera")
    H, W, focal = cam.H, cam.W, cam.cam
    radius = 0.5 * (float(near) + float(far))
    poses = np.stack([pose_spherical(a, -30.0, radius) for a in np.linspace(-180, 180, frames, endpoint=False)])
    return Views(poses.astype(np.float32), None, H, W, focal, True)


def resize_camera(H: int, W: int, focal, resolution: tuple[int, int] | None = None,
                  scale: float | None = None) -> tuple[int, int, float]:
    """The camera ``(H, W, focal)`` rendered at ``resolution`` ``(W, H)`` or ``scale`` times its
    size: the focal length follows the width (a new aspect ratio changes the vertical field of
    view only). A pinhole ``focal = (fx, fy, cx, cy)`` keeps its pixel aspect, and its principal
    point stays at the same fraction of the image (pixel centres at ``i + 0.5``). Checked against
    the manifest's limits."""
    if resolution is not None and scale is not None:
        raise DatasetError("give --resolution or --scale, not both")
    if resolution is not None:
        new_w, new_h = resolution
    elif scale is not None:
        if not (np.isfinite(scale) and 0 < scale <= 1e3):
            raise DatasetError(f"--scale must be a positive number of at most 1000 (got {scale})")
        new_w, new_h = max(1, round(W * scale)), max(1, round(H * scale))
    else:
        return H, W, focal
    if np.ndim(focal):
        fx, fy, cx, cy = (float(v) for v in focal)
        new_h, new_w, _ = check_camera(new_h, new_w, fx, "the requested resolution")
        s = new_w / W
        return new_h, new_w, (fx * s, fy * s, (cx + 0.5) * s - 0.5, (cy + 0.5) * new_h / H - 0.5)
    new_h, new_w, _ = check_camera(new_h, new_w, focal, "the requested resolution")
    return new_h, new_w, float(focal) * new_w / W


def parse_resolution(spec: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)`` (width, height)."""
    try:
        w, h = spec.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise DatasetError(f"--resolution is WIDTHxHEIGHT like 640x480 (got {spec!r})") from None


def camera_path_views(path) -> Views:
    """The cameras of a nerfstudio ``camera_path.json`` (what its viewer's render panel exports):
    ``render_width``, ``render_height``, ``fps``, and ``camera_path``, a list of
    ``{"camera_to_world": 16 numbers (a row-major 4x4, OpenGL axes as in the NeRF datasets),
    "fov": vertical field of view in degrees}``; optionally ``fl_x``, ``fl_y``, ``cx``, ``cy`` at
    the top (a general pinhole, as in ``transforms.json``). The poses are taken in the scene's own
    coordinates (nerfstudio's for Blender scenes, whose dataparser leaves them as they are).
    Every value is checked: a bad file raises :class:`DatasetError` naming what is wrong."""
    import json
    from pathlib import Path
    path = Path(path)
    where = f"camera path {path}"
    from nerfexport.data.safety import UnsafeInput, load_json
    try:   # a regular file of bounded size (not /dev/zero), nested to a bounded depth
        doc = load_json(path, "camera path", MAX_PATH_BYTES)
    except UnsafeInput as e:
        raise DatasetError(str(e)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("camera_path"), list) or not doc["camera_path"]:
        raise DatasetError(f"{where}: expected a nerfstudio camera path with a non-empty \"camera_path\" list")
    if doc.get("camera_type", "perspective") != "perspective":
        raise DatasetError(f"{where}: only perspective cameras are supported (got {doc.get('camera_type')!r})")
    cams = doc["camera_path"]
    if len(cams) > MAX_PATH_FRAMES:
        raise DatasetError(f"{where} has {len(cams)} cameras; at most {MAX_PATH_FRAMES} are rendered")
    H, W, _ = check_camera(doc.get("render_height"), doc.get("render_width"), 1.0, where)
    fps = doc.get("fps", 24)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 240:
        raise DatasetError(f"{where}: fps must be a number in (0, 240]")
    poses, fovs = [], []
    for i, c in enumerate(cams):
        try:
            m = np.asarray(c["camera_to_world"], dtype=np.float64)
            fov = float(c["fov"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{where}: camera {i} needs \"camera_to_world\" (16 numbers) and \"fov\"") from None
        if m.size != 16 or not np.isfinite(m).all() or np.abs(m).max() > 1e6:
            raise DatasetError(f"{where}: camera {i}'s camera_to_world is not 16 finite numbers")
        if not abs(np.linalg.det(m.reshape(4, 4)[:3, :3])) > 1e-6:
            raise DatasetError(f"{where}: camera {i}'s camera_to_world has no rotation (its 3x3 part is singular)")
        if not 0.0 < fov < 180.0:
            raise DatasetError(f"{where}: camera {i}'s fov must be in (0, 180) degrees, not {fov}")
        poses.append(m.reshape(4, 4))
        fovs.append(fov)
    if max(fovs) - min(fovs) > 1e-6:
        raise DatasetError(f"{where}: the cameras change their field of view; one fov for the whole path is supported")
    focal = 0.5 * H / np.tan(np.radians(fovs[0]) / 2.0)
    H, W, focal = check_camera(H, W, focal, where)
    if any(k in doc for k in ("fl_x", "fl_y", "cx", "cy")):
        focal = _path_pinhole(doc, H, W, focal, where)
    return Views(np.stack(poses).astype(np.float32), None, H, W, focal, True, None, float(fps))


def _path_pinhole(doc: dict, H: int, W: int, focal: float, where: str) -> tuple:
    """A camera path's general pinhole (nerfexport's extension, transforms.json's names): ``fl_x``,
    ``fl_y``, ``cx``, ``cy`` in pixels of the render size, pixel centres at ``i + 0.5``; a missing
    focal length comes from ``fov``, a missing principal point is the image centre."""
    def num(k, default, lo, hi):
        v = doc.get(k, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or not lo < v < hi:
            raise DatasetError(f"{where}: {k} must be a number in ({lo:g}, {hi:g}), not {v!r}")
        return float(v)
    fx = num("fl_x", focal, 0, 1e3 * max(H, W))
    fy = num("fl_y", fx, 0, 1e3 * max(H, W))
    cx = num("cx", 0.5 * W, -W, 2 * W)
    cy = num("cy", 0.5 * H, -H, 2 * H)
    return fx, fy, cx - 0.5, cy - 0.5


def parse_view_list(spec: str) -> list[int] | None:
    """``"test"`` -> ``None`` (all test views); ``"0,3"`` -> ``[0, 3]``."""
    if spec == "test":
        return None
    try:
        return [int(v) for v in spec.split(",")]
    except ValueError:
        raise DatasetError(f"--views is test, spiral or test-view numbers like 0,3 (got {spec!r})") from None


def dataset_views(record: dict | None, data: DataArgs | None = None, which: list[int] | None = None,
                  first: int | None = None, ndc: bool = True, owner: str = "the bundle") -> Views:
    """The dataset's test views with their ground truth: ``which`` (indices), else the ``first``
    N, else all. The dataset is ``data`` (its unset values: the recorded ones) or the one
    ``record``\\ed by the bundle or checkpoint."""
    scene, note = recorded_scene(record, data, ndc, owner)
    images, poses = scene.subset("test")
    if which is not None:
        bad = [i for i in which if not 0 <= i < len(poses)]
        if bad:
            raise DatasetError(f"view {bad[0]} is out of range: the dataset has {len(poses)} test views "
                               f"(0-{len(poses) - 1})")
        images, poses = images[which], poses[which]
    elif first is not None:
        images, poses = images[:first], poses[:first]
    return Views(poses, images, scene.H, scene.W, scene.cam, False, note)


@dataclass
class ViewRequest:
    """What ``render`` is asked to draw: ``views`` (``test``, ``spiral`` or test-view numbers),
    or a nerfstudio ``camera_path`` file instead; the dataset ``data`` (default: the recorded one); a new
    size (``resolution`` ``(W, H)`` or ``scale``); and the extra images: ``depth`` (16-bit PNGs,
    distance along the ray in the scene's units x 1000, clipped to 65.535) and ``opacity`` (8-bit PNGs)."""

    views: str = "test"
    camera_path: object = None
    data: DataArgs | None = None
    resolution: tuple[int, int] | None = None
    scale: float | None = None
    depth: bool = False
    opacity: bool = False
    force: bool = False   # replace an output folder nerfexport did not write

    def select(self, camera: dict | None, near: float, far: float, ndc: bool, record: dict | None,
               owner: str = "the bundle") -> Views:
        """The views, at the size asked for (checked before anything renders)."""
        if self.camera_path is not None:
            v = camera_path_views(self.camera_path)
        else:
            v = select_views(self.views, camera, near, far, ndc, record, self.data, owner)
        return v.resized(self.resolution, self.scale)


def select_views(views: str, camera: dict | None, near: float, far: float, ndc: bool, record: dict | None,
                 data: DataArgs | None = None, owner: str = "the bundle") -> Views:
    """The views ``render --views`` asks for: ``spiral`` (an orbit with the recorded ``camera``),
    ``test`` or test-view numbers like ``0,3`` (the dataset, given or the recorded one)."""
    if views == "spiral":
        return orbit_views(camera, near, far, ndc)
    return dataset_views(record, data, parse_view_list(views), ndc=ndc, owner=owner)
