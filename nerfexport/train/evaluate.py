"""Held-out evaluation of a torch model: PSNR and SSIM over whole test views, and the cheap
periodic check of :func:`nerfexport.train.loop.train` (PSNR on a fixed random subset of held-out
pixels).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from nerfexport.data.datasets import Scene
from nerfexport.data.metrics import psnr, ssim
from nerfexport.deploy.rays import view_rays
from nerfexport.model.mlp import NeRF
from nerfexport.train.render import render_image, render_rays


@dataclass
class EvalResult:
    psnr: float
    ssim: float
    per_view_psnr: list[float]
    images: np.ndarray | None = None  # (V, H, W, 3) renders when kept
    per_view_ssim: list[float] = field(default_factory=list)
    seconds: float = 0.0


def evaluate(model: NeRF, scene: Scene, split: str = "test", max_views: int | None = None,
             n_coarse: int | None = None, n_fine: int | None = None, keep_images: bool = False,
             amp: torch.dtype | None = None, chunk: int | None = None) -> EvalResult:
    """Mean PSNR and SSIM of ``model`` over the views of ``split``, rendered deterministically.

    Args:
        model: The NeRF (put back in its training mode afterwards).
        scene: The dataset.
        split: The split to evaluate on.
        max_views: Only the first ``max_views`` views of the split, when given.
        n_coarse, n_fine: Samples per ray; the model's own counts when None.
        keep_images: Keep the renders in the result.
        amp: The autocast dtype, or None for plain fp32.
        chunk: Rays per network batch (see :func:`~nerfexport.train.render.render_image`).

    Returns:
        An :class:`EvalResult`: mean and per-view PSNR and SSIM, the renders ``(V, H, W, 3)``
        when kept, and the seconds it took.
    """
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    images, poses = scene.subset(split)
    if max_views is not None:
        images, poses = images[:max_views], poses[:max_views]
    ps, ss, outs = [], [], []
    for img, pose in zip(images, poses):
        out = render_image(model, scene.H, scene.W, scene.cam, pose, n_coarse, n_fine, chunk=chunk, amp=amp)
        ps.append(psnr(out["rgb"], img))
        ss.append(ssim(out["rgb"], img))
        if keep_images:
            outs.append(out["rgb"])
    model.train(was_training)
    return EvalResult(float(np.mean(ps)), float(np.mean(ss)), ps, np.stack(outs) if keep_images else None,
                      [float(x) for x in ss], time.perf_counter() - t0)


def eval_pixels(scene: Scene, n: int, views: int, seed: int = 0, split: str = "test") -> dict[str, np.ndarray]:
    """A fixed random subset of held-out pixels (the periodic evaluation of
    :func:`nerfexport.train.loop.train`).

    Args:
        scene: The dataset.
        n: Pixels to draw (without replacement; all of them when the views hold fewer).
        views: Draw from the first ``views`` views of the split.
        seed: The draw's seed: the same pixels for the same arguments.
        split: The split to draw from.

    Returns:
        ``{"o", "d", "v", "rgb"}``: the pixels' rays and target colours, float32 arrays of shape ``(n, 3)``.
    """
    images, poses = scene.subset(split)
    images, poses = images[:views], poses[:views]
    rng = np.random.default_rng(seed)
    HW = scene.H * scene.W
    flat = rng.choice(len(poses) * HW, size=min(n, len(poses) * HW), replace=False)
    which, pix = flat // HW, flat % HW
    out = {"o": [], "d": [], "v": [], "rgb": []}
    for i in np.unique(which):
        sel = pix[which == i]
        o, d, v = view_rays(scene.H, scene.W, scene.cam, poses[i], scene.ndc)
        for k, a in (("o", o), ("d", d), ("v", v), ("rgb", images[i].reshape(-1, 3))):
            out[k].append(np.asarray(a, np.float32)[sel])
    return {k: np.concatenate(a) for k, a in out.items()}


@torch.no_grad()
def pixel_psnr(model: NeRF, rays: dict[str, torch.Tensor], n_coarse: int, n_fine: int,
               amp: torch.dtype | None) -> float:
    """PSNR of ``model`` on the pixels of :func:`eval_pixels` (deterministic sampling).

    Args:
        model: The NeRF (put back in its training mode afterwards).
        rays: :func:`eval_pixels`' arrays as tensors on the model's device, each of shape ``(n, 3)``.
        n_coarse, n_fine: Samples per ray.
        amp: The autocast dtype, or None for plain fp32.

    Returns:
        The PSNR in dB over all ``n`` pixels (colours clamped to [0, 1]).
    """
    was_training = model.training
    model.eval()
    chunk = max(64, 32768 // max(1, n_coarse + n_fine))
    err = 0.0
    for s in range(0, rays["o"].shape[0], chunk):
        out_c, out_f = render_rays(model, rays["o"][s:s + chunk], rays["d"][s:s + chunk], rays["v"][s:s + chunk],
                                   n_coarse, n_fine, False, amp)
        out = out_f if out_f is not None else out_c
        err += float(((out.rgb.clamp(0, 1) - rays["rgb"][s:s + chunk]) ** 2).sum())
    model.train(was_training)
    mse = err / (3 * rays["o"].shape[0])
    return -10.0 * math.log10(max(mse, 1e-10))
