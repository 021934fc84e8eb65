"""The models training starts from: a fresh nerf-pytorch-shaped NeRF for a scene, its narrow
twin (``grow_from``), and the optimizer carried across the widening from one to the other.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from nerfexport.data.datasets import Scene
from nerfexport.model.mlp import MLPConfig, NeRF, NeRFConfig


def new_model(scene: Scene, width: int = 256, depth: int = 8, fine: bool = True,
              n_coarse: int = 64, n_fine: int = 128, use_viewdirs: bool = True, seed: int = 0) -> NeRF:
    """A fresh nerf-pytorch-shaped model for ``scene``.

    Args:
        scene: The dataset: its bounds, background, NDC flag and camera go into the config.
        width, depth: Every trunk layer ``width`` wide, ``depth`` of them.
        fine: Whether to have a fine network (``n_fine`` is 0 without one).
        n_coarse, n_fine: The sample counts stored in the config for rendering.
        use_viewdirs: Whether colour depends on the view direction.
        seed: Seeds torch's global generator before the weights are drawn.

    Returns:
        The :class:`~nerfexport.model.mlp.NeRF`, on the CPU, in training mode.
    """
    torch.manual_seed(seed)
    mlp = MLPConfig.uniform(depth, width, use_viewdirs)
    cfg = NeRFConfig(coarse=mlp, fine=MLPConfig.uniform(depth, width, use_viewdirs) if fine else None,
                     near=scene.near, far=scene.far, white_bkgd=scene.white_bkgd, ndc=scene.ndc,
                     n_coarse=n_coarse, n_fine=n_fine if fine else 0,
                     camera=camera_record(scene))
    return NeRF(cfg)


def camera_record(scene: Scene) -> dict:
    """The checkpoint's record of the training camera: ``{"H", "W", "focal"}``, plus ``"fx", "fy",
    "cx", "cy"`` for a general pinhole (read by ``deploy.manifest.Camera.parse``)."""
    cam = {"H": scene.H, "W": scene.W, "focal": scene.focal}
    if scene.pinhole is not None:
        cam.update(zip(("fx", "fy", "cx", "cy"), (float(v) for v in scene.pinhole)))
    return cam


def narrow_config(cfg: NeRFConfig, width: int) -> NeRFConfig:
    """``cfg`` with every trunk and feature layer ``width`` wide and the view branch in proportion
    (the architecture that :func:`train` starts from with ``grow_from``)."""
    def nar(m: MLPConfig | None) -> MLPConfig | None:
        if m is None:
            return None
        return replace(m, widths=[width] * len(m.widths), feature_width=width,
                       view_widths=[max(1, round(v * width / m.widths[-1])) for v in m.view_widths])
    return replace(cfg, coarse=nar(cfg.coarse), fine=nar(cfg.fine))


def widened_optimizer(model: NeRF, old: NeRF, opt: torch.optim.Optimizer, maps: dict) -> torch.optim.Optimizer:
    """An Adam over ``model``'s parameters that carries ``opt``'s moments for the weights that ``old``
    had (placed by ``maps``); a new weight starts with no momentum and its tensor's mean second
    moment, so its first updates are no larger than its neighbours'."""
    new_opt = torch.optim.Adam(model.parameters(), lr=opt.param_groups[0]["lr"], betas=opt.param_groups[0]["betas"])
    old_params = dict(old.named_parameters())
    for name, p in model.named_parameters():
        st = opt.state.get(old_params[name])
        if not st:
            continue
        base, kind = name.rsplit(".", 1)
        r, c = maps[base]
        where = (r[:, None], c[None, :]) if kind == "weight" else (r,)
        m = torch.zeros_like(p)
        v = torch.full_like(p, float(st["exp_avg_sq"].mean()))
        m[where], v[where] = st["exp_avg"], st["exp_avg_sq"]
        new_opt.state[p] = {"step": st["step"].clone(), "exp_avg": m, "exp_avg_sq": v}
    return new_opt
