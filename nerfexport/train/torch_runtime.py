"""The torch baseline: a checkpoint's networks in PyTorch eager behind the renderer's network
interface, and ``nerfexport render model.pt --runtime torch``.

This is the train side's view of rendering (it imports torch); the deploy side never imports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nerfexport.deploy.render import SceneSettings, make_renderer
from nerfexport.deploy.run import RenderSummary, check_output, early_stop_value, render_inputs, render_to_folder
from nerfexport.deploy.runtime import RuntimeSpec, RuntimeSpecError, RuntimeUnavailable, load_runtime
from nerfexport.deploy.views import ViewRequest


class TorchNetwork:
    """A checkpoint's network in PyTorch eager: ``(points (N,3), viewdirs (N,3)) -> (rgb (N,3), density (N,1))``."""

    def __init__(self, net, device: str = "auto", precision: str = "fp32", threads: int = 0) -> None:
        import torch
        self.torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
        self.device = torch.device(dev)
        self.net = net.to(self.device).eval()
        self.amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def __call__(self, points: np.ndarray, viewdirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp or torch.bfloat16,
                                                    enabled=self.amp is not None):
            raw = self.net(torch.from_numpy(points).to(self.device), torch.from_numpy(viewdirs).to(self.device))
            raw = raw.float()
            out = torch.sigmoid(raw[:, :3]), torch.relu(raw[:, 3:4])
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return out[0].cpu().numpy(), out[1].cpu().numpy()


def check_torch_runtime(spec: RuntimeSpec) -> None:
    """Raise :class:`RuntimeUnavailable` when the torch runtime ``spec`` cannot run here."""
    import torch
    if str(spec.device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeUnavailable("runtime torch was asked for CUDA but torch sees no CUDA device")


def torch_networks(spec: RuntimeSpec, model) -> dict:
    """``{"coarse": TorchNetwork, "fine": TorchNetwork | None}`` for a loaded checkpoint model."""
    check_torch_runtime(spec)
    return {w: TorchNetwork(getattr(model, w), str(spec.device), spec.precision, spec.threads)
            if getattr(model, w) is not None else None for w in ("coarse", "fine")}


def settings_of(model) -> SceneSettings:
    c = model.cfg
    return SceneSettings(c.near, c.far, c.white_bkgd, c.ndc, c.n_coarse, c.n_fine)


def run_render_checkpoint(path: str | Path, runtime: str = "torch", req: ViewRequest | str = "test",
                          out: str | Path = "renders", skip: bool = True, early_stop: float | None = None,
                          progress=None) -> RenderSummary:
    """Render the views ``req`` asks for of the checkpoint ``path`` with the torch runtime (plain,
    as nerf-pytorch does) into ``out``."""
    from nerfexport.model.checkpoint import load_checkpoint
    from nerfexport.train.device import bf16_warning, pick_device
    emit = progress or (lambda e: None)
    req = ViewRequest(req) if isinstance(req, str) else req
    early_stop_value(early_stop)
    spec = load_runtime(runtime)
    if spec.kind != "torch":
        raise RuntimeSpecError(f"runtime {spec.name} renders a bundle folder (nerfexport export); {path} is not one")
    check_torch_runtime(spec)
    try:
        device = pick_device(str(spec.device))
    except (RuntimeError, ValueError) as e:
        raise RuntimeUnavailable(f"runtime {spec.name}: {e}") from None
    note = bf16_warning(spec.precision, device)
    if note:
        emit({"event": "warning", "text": note})
    model, meta, _ = load_checkpoint(path, with_train_state=True)
    c = model.cfg
    v = req.select(c.camera, c.near, c.far, c.ndc, meta.get("data"), str(path))
    check_output(Path(out), render_inputs(req, path, meta.get("data")), req.force)
    if v.note:
        emit({"event": "note", "text": v.note})
    r = make_renderer(spec, torch_networks(spec, model), settings_of(model), None, False, early_stop)
    emit({"event": "note", "text": "plain rendering: every sample evaluated"})
    return render_to_folder(r, v, out, spec.name, progress, req)
