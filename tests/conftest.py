"""Small fixtures the tests make themselves: a tiny Blender scene, a tiny LLFF scene, tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nerfexport.model.mlp import MLPConfig, NeRF, NeRFConfig
from nerfexport.data.rays import pose_spherical

torch.set_num_threads(2)


def tiny_config(width: int = 32, depth: int = 4, fine: bool = True, viewdirs: bool = True) -> NeRFConfig:
    mlp = lambda: MLPConfig(widths=[width] * depth, skips=[depth // 2 - 1] if depth > 2 else [],
                            feature_width=width, view_widths=[width // 2], use_viewdirs=viewdirs)
    return NeRFConfig(coarse=mlp(), fine=mlp() if fine else None, n_coarse=8, n_fine=8)


@pytest.fixture
def tiny_model() -> NeRF:
    torch.manual_seed(0)
    return NeRF(tiny_config())


def write_blender(root: Path, n: tuple[int, int, int] = (3, 2, 2), size: int = 8) -> Path:
    """A Blender-format folder with RGBA images: a red square on a transparent background."""
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "val", "test"), n):
        (root / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i in range(count):
            img = np.zeros((size, size, 4), np.uint8)
            img[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = (255, 0, 0, 255)
            img[0, 0] = (0, 255, 0, 128)
            Image.fromarray(img, "RGBA").save(root / split / f"r_{i}.png")
            pose = pose_spherical(float(rng.uniform(-180, 180)), -30.0, 4.0)
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))
    return root


@pytest.fixture
def blender_dir(tmp_path: Path) -> Path:
    return write_blender(tmp_path / "blender")


def write_llff(root: Path, n: int = 5, size: tuple[int, int] = (12, 16), factor: int = 2) -> Path:
    """An LLFF folder: ``poses_bounds.npy`` for forward-facing cameras and ``images_{factor}/``."""
    H, W = size
    rows = []
    for i in range(n):
        # LLFF columns are [down, right, backwards]: a camera at x = 0.1 i looking down -z.
        R = np.stack([np.array([0, -1, 0]), np.array([1, 0, 0]), np.array([0, 0, 1])], 1).astype(float)
        t = np.array([0.1 * i, 0.0, 0.0])
        hwf = np.array([H * factor, W * factor, 20.0 * factor])
        m = np.concatenate([R, t[:, None], hwf[:, None]], 1)
        rows.append(np.concatenate([m.reshape(-1), [2.0, 10.0]]))
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "poses_bounds.npy", np.array(rows))
    (root / f"images_{factor}").mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / f"images_{factor}" / f"{i:03d}.png")
    return root


@pytest.fixture
def llff_dir(tmp_path: Path) -> Path:
    return write_llff(tmp_path / "llff")
