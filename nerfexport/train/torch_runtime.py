"""The torch baseline: a checkpoint's networks in PyTorch eager behind the renderer's network
interface, and the runtime family (:data:`TORCH`) that ``nerfexport render model.pt --runtime
torch`` and the bench render checkpoints with.

This is the train side's view of rendering (it imports torch); the deploy side never imports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nerfexport.deploy.networks import Source
from nerfexport.deploy.render import SceneSettings
from nerfexport.deploy.runtime import RuntimeSpec, RuntimeUnavailable


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


def _device(spec: RuntimeSpec):
    from nerfexport.train.device import pick_device
    try:
        return pick_device(str(spec.device))
    except (RuntimeError, ValueError) as e:
        raise RuntimeUnavailable(f"runtime {spec.name}: {e}") from None


class TorchFamily:
    """The torch runtime's family (:class:`nerfexport.deploy.networks.Family`): it renders a
    checkpoint (``nerfexport render model.pt --runtime torch``), plain, as nerf-pytorch does."""

    renders = "checkpoint"

    def check(self, spec: RuntimeSpec) -> None:
        check_torch_runtime(spec)
        _device(spec)

    def open(self, spec: RuntimeSpec, path: Path) -> Source:
        from nerfexport.model.checkpoint import load_checkpoint
        from nerfexport.train.device import bf16_warning
        note = bf16_warning(spec.precision, _device(spec))
        model, meta, _ = load_checkpoint(path, with_train_state=True)
        archs = {w: getattr(model, w).cfg.to_dict() if getattr(model, w) is not None else None
                 for w in ("coarse", "fine")}
        return Source(Path(path), settings_of(model), model.cfg.camera, meta.get("data"),
                      lambda n_fine=None: torch_networks(spec, model), plain=True, warnings=[note] if note else [],
                      precision=spec.precision, size_bytes=Path(path).stat().st_size, architectures=archs)


TORCH = TorchFamily()
