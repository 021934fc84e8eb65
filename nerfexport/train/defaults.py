"""The training recipe ``nerfexport train`` uses when no flag asks otherwise, by device and scene kind.

Measured on the 2-core CPUs this project is developed on (docs/teacher.md, docs/train-defaults.md):
nerf-pytorch's GPU settings (1,024 rays x 64+64 samples a step) make about one step in 4 s on a
504x378 forward-facing scene there, so a CPU gets few samples per step and many steps instead:
128 rays, 16 coarse + 24 fine samples, the occupancy grid (in NDC space for forward-facing
scenes), a 128-wide network widened to 256 at 75 % of the budget, and a 30-minute budget (the
lego scene at 100x100 reaches 25 dB in 20 minutes on a Zen 5 CPU and 24.3 dB on a Zen 4, which
makes about 60 % of the steps; 30 minutes is the budget that gives 24.5 dB on both). A CUDA
device gets nerf-pytorch's settings, which are its authors' measured choice for a GPU.
"""

from __future__ import annotations

# the fields of TrainConfig a preset sets; the rest keep TrainConfig's defaults
CPU = {"max_minutes": 30.0, "steps": 10_000_000, "batch_rays": 128, "n_coarse": 16, "n_fine": 24,
       "occupancy": True, "grid_every": 64, "grow_from": 128, "grow_at": 0.75, "lr": 5e-4, "lr_final": 5e-5}
# nerf-pytorch's configs (lego / fern): 1,024 rays, 64 coarse + 128 fine (64 + 64 for LLFF)
GPU_BLENDER = {"max_minutes": 30.0, "steps": 10_000_000, "batch_rays": 1024, "n_coarse": 64, "n_fine": 128,
               "occupancy": True, "grid_every": 32, "grow_from": None, "lr": 5e-4, "lr_final": 5e-5}
GPU_LLFF = {**GPU_BLENDER, "n_fine": 64}
# the settings before 2026-12-03 (nerf-pytorch's, for any device): kept to measure against
OLD = {"max_minutes": None, "steps": 5000, "batch_rays": 1024, "n_coarse": 64, "n_fine": 64,
       "occupancy": True, "grid_every": 32, "grow_from": None, "lr": 5e-4, "lr_final": 5e-5}
PRESETS = {"cpu": CPU, "gpu-blender": GPU_BLENDER, "gpu-llff": GPU_LLFF, "old": OLD}


def preset_name(device_type: str, ndc: bool) -> str:
    """The preset for a torch device type (``cpu`` or ``cuda``) and a scene kind (``ndc``: forward-facing)."""
    if device_type == "cuda":
        return "gpu-llff" if ndc else "gpu-blender"
    return "cpu"


def resolve(preset: str, overrides: dict) -> dict:
    """The preset's fields with the user's ``overrides`` on top. ``--steps`` without
    ``--minutes`` means that many steps, with no time budget."""
    out = dict(PRESETS[preset])
    if "steps" in overrides and "max_minutes" not in overrides:
        out["max_minutes"] = None
    out.update(overrides)
    return out
