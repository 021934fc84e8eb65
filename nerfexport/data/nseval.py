"""Results in nerfstudio's ``ns-eval`` layout, so the ecosystem's tools read ours.

``ns-eval`` writes ``{"experiment_name", "method_name", "checkpoint", "results": {"psnr",
"psnr_std", "ssim", "ssim_std", ..., "num_rays_per_sec", "fps"}}``; nerfexport writes the
same keys and adds its own (per-view values, sample counts, precision, runtime) inside
``results``. numpy only: used by the train side (``eval --json``) and the deploy side (``bench``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

METHOD = "nerfexport"
KEYS = ("psnr", "psnr_std", "ssim", "ssim_std", "num_rays_per_sec", "fps")


def ns_eval(checkpoint: str | Path, psnrs: list[float], ssims: list[float], seconds_per_frame: float | None,
            rays_per_frame: int | None, method: str = METHOD, experiment: str | None = None,
            **extra) -> dict:
    """One ns-eval document: mean and standard deviation of the per-view ``psnrs`` and ``ssims``,
    frames per second and rays per second from ``seconds_per_frame`` and ``rays_per_frame`` (None
    where not measured), and ``extra`` results (JSON values) after them."""
    p, s = np.asarray(psnrs, float), np.asarray(ssims, float)
    fps = None if not seconds_per_frame else 1.0 / float(seconds_per_frame)
    results = {"psnr": float(p.mean()), "psnr_std": float(p.std()),
               "ssim": float(s.mean()) if s.size else None, "ssim_std": float(s.std()) if s.size else None,
               "num_rays_per_sec": None if fps is None or rays_per_frame is None else float(rays_per_frame) * fps,
               "fps": fps}
    results.update(extra)
    return {"experiment_name": experiment or Path(checkpoint).stem, "method_name": method,
            "checkpoint": str(checkpoint), "results": results}


def read_psnr(doc: dict) -> float:
    """The mean PSNR of an ns-eval document (``results.psnr``), or of the flat layout nerfexport
    wrote before (``psnr``). Raises KeyError or TypeError for anything else."""
    if "results" in doc:
        return float(doc["results"]["psnr"])
    return float(doc["psnr"])
