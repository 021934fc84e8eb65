"""Every runtime family in one registry: the deploy side's bundle runtimes (onnxruntime, TensorRT)
and the train side's torch baseline for checkpoints. ``nerfexport render`` (:func:`run_render`)
and the bench's worker make their networks through it.

It lives above the train side because the torch family does: the deploy side renders with the
families it is handed and never imports torch (importing this module does not either; only
rendering a checkpoint does).
"""

from __future__ import annotations

from pathlib import Path

from nerfexport.deploy.networks import FAMILIES, Family
from nerfexport.deploy.render import Sampler
from nerfexport.deploy.run import ProgressFn, RenderSummary
from nerfexport.deploy.views import ViewRequest


def families() -> dict[str, Family]:
    """Runtime kind -> its family: :data:`nerfexport.deploy.networks.FAMILIES` and ``torch``."""
    from nerfexport.train.torch_runtime import TORCH
    return {**FAMILIES, "torch": TORCH}


def run_render(target: str | Path, runtime: str = "ort-cpu", req: ViewRequest | str = "test",
               out: str | Path = "renders", skip: bool = True, early_stop: float | None = None,
               progress: ProgressFn | None = None, sampler: Sampler | None = None) -> RenderSummary:
    """:func:`nerfexport.deploy.run.run_render` with every family: a bundle folder on onnxruntime
    or TensorRT, or a checkpoint on the torch runtime (same arguments, same summary)."""
    from nerfexport.deploy.run import run_render as render
    return render(target, runtime, req, out, skip, early_stop, progress, sampler, families=families())
