"""The views to render: a dataset's test views (with ground truth) or an orbit around the scene.

numpy only: the deploy side reads the dataset's images itself (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nerfexport.data.datasets import DatasetError, recorded_scene
from nerfexport.deploy.manifest import check_camera
from nerfexport.deploy.rays import pose_spherical

SPIRAL_FRAMES = 40


@dataclass
class Views:
    """``poses (V, 4, 4)`` camera-to-world, ground truth ``images (V, H, W, 3)`` or ``None``,
    and the camera; ``orbit`` for the spiral (written as a GIF too)."""

    poses: np.ndarray
    images: np.ndarray | None
    H: int
    W: int
    focal: float
    orbit: bool = False
    note: str | None = None   # which dataset was used, when it came from a record


def orbit_views(camera: dict | None, near: float, far: float, ndc: bool, frames: int = SPIRAL_FRAMES) -> Views:
    """An orbit at 30 degrees elevation, radius halfway between ``near`` and ``far``, with the
    recorded training camera ``{"H", "W", "focal"}``."""
    if ndc or not camera:
        raise DatasetError("spiral views need a 360-degree scene with a recorded camera; use --views test")
    H, W, focal = check_camera(camera.get("H"), camera.get("W"), camera.get("focal"), "the recorded camera")
    radius = 0.5 * (float(near) + float(far))
    poses = np.stack([pose_spherical(a, -30.0, radius) for a in np.linspace(-180, 180, frames, endpoint=False)])
    return Views(poses.astype(np.float32), None, H, W, focal, True)


def resize_camera(H: int, W: int, focal: float, resolution: tuple[int, int] | None = None,
                  scale: float | None = None) -> tuple[int, int, float]:
    """The camera ``(H, W, focal)`` rendered at ``resolution`` ``(W, H)`` or ``scale`` times its
    size: square pixels, the focal length follows the width (a new aspect ratio changes the
    vertical field of view only). Checked against the manifest's limits."""
    if resolution is not None and scale is not None:
        raise DatasetError("give --resolution or --scale, not both")
    if resolution is not None:
        new_w, new_h = resolution
    elif scale is not None:
        if not (np.isfinite(scale) and scale > 0):
            raise DatasetError(f"--scale must be a positive number (got {scale})")
        new_w, new_h = max(1, round(W * scale)), max(1, round(H * scale))
    else:
        return H, W, focal
    new_h, new_w, _ = check_camera(new_h, new_w, focal, "the requested resolution")
    return new_h, new_w, float(focal) * new_w / W


def parse_resolution(spec: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)`` (width, height)."""
    try:
        w, h = spec.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise DatasetError(f"--resolution is WIDTHxHEIGHT like 640x480 (got {spec!r})") from None


def parse_view_list(spec: str) -> list[int] | None:
    """``"test"`` -> ``None`` (all test views); ``"0,3"`` -> ``[0, 3]``."""
    if spec == "test":
        return None
    try:
        return [int(v) for v in spec.split(",")]
    except ValueError:
        raise DatasetError(f"--views is test, spiral or test-view numbers like 0,3 (got {spec!r})") from None


def dataset_views(record: dict | None, data=None, downscale: int | None = None, test_every: int | None = None,
               which: list[int] | None = None, first: int | None = None, ndc: bool = True,
               owner: str = "the bundle") -> Views:
    """The dataset's test views with their ground truth: ``which`` (indices), else the ``first``
    N, else all. The dataset is ``data`` or the one ``record``\\ed by the bundle or checkpoint."""
    scene, note = recorded_scene(record, data, downscale, test_every, None, ndc, owner)
    images, poses = scene.subset("test")
    if which is not None:
        bad = [i for i in which if not 0 <= i < len(poses)]
        if bad:
            raise DatasetError(f"view {bad[0]} is out of range: the dataset has {len(poses)} test views "
                               f"(0-{len(poses) - 1})")
        images, poses = images[which], poses[which]
    elif first is not None:
        images, poses = images[:first], poses[:first]
    return Views(poses, images, scene.H, scene.W, scene.focal, False, note)


def select_views(views: str, camera: dict | None, near: float, far: float, ndc: bool, record: dict | None,
                 data=None, downscale: int | None = None, test_every: int | None = None,
                 owner: str = "the bundle") -> Views:
    """The views ``render --views`` asks for: ``spiral`` (an orbit with the recorded ``camera``),
    ``test`` or test-view numbers like ``0,3`` (the dataset, given or the recorded one)."""
    if views == "spiral":
        return orbit_views(camera, near, far, ndc)
    return dataset_views(record, data, downscale, test_every, parse_view_list(views), ndc=ndc, owner=owner)
