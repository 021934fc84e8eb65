"""PSNR of checkpoints on the 4,096 fixed native-resolution pixels that `nerfexport shrink` reports
(eval_pixels(scene, 4096, 10, seed 0) of the recorded dataset, 64+64 samples, the CPU's autocast).

    python docs/scripts/pixel_psnr.py model.pt [more.pt ...]
"""
import sys

import torch

from nerfexport.data.datasets import recorded_scene
from nerfexport.model.checkpoint import load_checkpoint
from nerfexport.train.device import autocast_dtype
from nerfexport.train.evaluate import eval_pixels, pixel_psnr

amp = autocast_dtype("auto", torch.device("cpu"))
for path in sys.argv[1:]:
    model, meta, _ = load_checkpoint(path, with_train_state=True)
    scene, _ = recorded_scene(meta.get("data"), ndc=model.cfg.ndc, owner=path)
    px = {k: torch.from_numpy(a) for k, a in eval_pixels(scene, 4096, 10, 0).items()}
    cost = sum(n.cfg.macs() for n in (model.coarse, model.fine) if n is not None)
    print(f"{path}: {pixel_psnr(model, px, 64, 64, amp):.2f} dB on 4,096 pixels of 10 views at {scene.W}x{scene.H}, "
          f"{cost:,} multiply-adds a point (both networks)")
