"""Checkpoint files: one ``model.pt`` with config and both networks, loaded without pickle code.

Layout (a plain dict saved with ``torch.save``)::

    {"format": "nerfexport", "version": 1, "config": NeRFConfig.to_dict(),
     "coarse": state_dict, "fine": state_dict | None, "meta": {...}, "train_state": {...} | absent}

Loading uses ``torch.load(weights_only=True)``, so a file that tries to run code is
rejected; shapes are checked against the config before any weight is copied. nerf-pytorch
``*.tar`` checkpoints (``network_fn_state_dict``, ``network_fine_state_dict``) are imported
by inferring the per-layer widths from the weight shapes.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from nerfexport.data.fileio import atomic_write, sha256
from nerfexport.model.mlp import MLPConfig, NeRF, NeRFConfig

FORMAT = "nerfexport"
VERSION = 1


class CheckpointError(ValueError):
    """The file is not a usable checkpoint."""


file_sha256 = sha256  # one implementation, in the torch-free fileio module


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never half-written."""
    path = Path(path)
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except IsADirectoryError:
        raise CheckpointError(f"output path {path} is a folder") from None
    except OSError as e:
        what = f"{e.filename} {e.strerror}" if e.filename and e.strerror else str(e)
        raise CheckpointError(f"cannot write {path}: {what}") from None


def check_writable(path: str | Path) -> None:
    """Raise :class:`CheckpointError` now if ``path`` cannot be written later."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CheckpointError(f"output path {path} is a folder")
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise CheckpointError(f"cannot write {path}: {parent} {what}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CheckpointError(f"cannot write {path}: permission denied")


def _unpickler_reason(e: Exception) -> str:
    """The short reason in torch's weights-only refusal (``Unsupported global: GLOBAL posix.system``)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if "WeightsUnpickler error:" in ln:
            rest = ln.split("WeightsUnpickler error:", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return rest.split(". ")[0][:120] or "not a weights-only file"
        if "unsupported GLOBAL" in ln:  # "Trying to load unsupported GLOBAL posix.system whose module ..."
            return ln[ln.index("unsupported GLOBAL"):].split(" whose")[0][:120]
    return "not a torch weights file"


def _raw_load(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        with warnings.catch_warnings():  # e.g. torch's note on a pickle protocol it does not expect
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path} was refused: the weights-only loader found something other than tensors "
                              f"and plain data ({_unpickler_reason(e)})") from None
    except Exception:  # torch.load raises many kinds on a file that is not a checkpoint
        raise CheckpointError(f"{path} is not a checkpoint (it cannot be read as a torch file)") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a checkpoint (top level is {type(obj).__name__}, not a dict)")
    return obj


def _load_state(module: torch.nn.Module, state: Any, what: str, path: Path) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: {what} weights are missing")
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise CheckpointError(f"{path}: {what} weights do not match the config "
                              f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in own.items():
        t = state[k]
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{path}: {what}.{k} is not a tensor")
        if tuple(t.shape) != tuple(v.shape):
            raise CheckpointError(f"{path}: {what}.{k} has shape {tuple(t.shape)} but the config's widths "
                                  f"give {tuple(v.shape)}")
    module.load_state_dict({k: state[k].float() for k in own})


def save_checkpoint(model: NeRF, path: str | Path, meta: dict | None = None,
                    train_state: dict | None = None) -> None:
    obj = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "coarse": {k: v.detach().cpu().contiguous() for k, v in model.coarse.state_dict().items()},
        "fine": None if model.fine is None else
        {k: v.detach().cpu().contiguous() for k, v in model.fine.state_dict().items()},
        "meta": meta or {},
    }
    if train_state is not None:
        obj["train_state"] = train_state
    atomic_save(obj, path)


def load_checkpoint(path: str | Path, with_train_state: bool = False):
    """Load ``model.pt`` (or a nerf-pytorch ``*.tar``) as an eval-mode :class:`NeRF`.

    Returns ``model`` or, with ``with_train_state``, ``(model, meta, train_state | None)``.
    """
    path = Path(path)
    obj = _raw_load(path)
    if obj.get("format") != FORMAT:
        if "network_fn_state_dict" in obj:
            model, meta = _from_nerf_pytorch(obj, path)
            model.eval()
            return (model, meta, None) if with_train_state else model
        raise CheckpointError(f"{path} is not a nerfexport or nerf-pytorch checkpoint")
    if not isinstance(obj.get("version"), int) or obj["version"] > VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {obj.get('version')}; "
                              f"this nerfexport reads up to {VERSION}")
    try:
        cfg = NeRFConfig.from_dict(obj["config"])
        model = NeRF(cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad config ({e})") from None
    _load_state(model.coarse, obj.get("coarse"), "coarse", path)
    if cfg.fine is not None:
        _load_state(model.fine, obj.get("fine"), "fine", path)
    elif obj.get("fine") is not None:
        raise CheckpointError(f"{path}: holds fine weights but its config has no fine network")
    model.eval()
    meta = obj.get("meta") or {}
    if with_train_state:
        return model, meta, obj.get("train_state")
    return model


def _mlp_config_from_nerf_pytorch(sd: dict, path: Path, what: str) -> MLPConfig:
    """Infer widths, skips and encodings of a nerf-pytorch network from its weight shapes."""
    try:
        n = 0
        while f"pts_linears.{n}.weight" in sd:
            n += 1
        if n == 0:
            raise KeyError("pts_linears.0.weight")
        w = [tuple(sd[f"pts_linears.{i}.weight"].shape) for i in range(n)]
        input_ch = w[0][1]
        if (input_ch % 3) or ((input_ch // 3 - 1) % 2):
            raise ValueError(f"input width {input_ch} is not a positional encoding of 3-D points")
        multires = (input_ch // 3 - 1) // 2
        widths = [o for o, _ in w]
        skips = [i - 1 for i in range(1, n) if w[i][1] == widths[i - 1] + input_ch]
        use_viewdirs = "views_linears.0.weight" in sd
        if not use_viewdirs:
            return MLPConfig(widths=widths, skips=skips, feature_width=widths[-1], view_widths=[max(1, widths[-1] // 2)],
                             multires=multires, multires_views=4, use_viewdirs=False)
        feature_width = sd["feature_linear.weight"].shape[0]
        nv = 0
        while f"views_linears.{nv}.weight" in sd:
            nv += 1
        view_widths = [sd[f"views_linears.{i}.weight"].shape[0] for i in range(nv)]
        views_in = sd["views_linears.0.weight"].shape[1] - feature_width
        if (views_in % 3) or ((views_in // 3 - 1) % 2):
            raise ValueError(f"view input width {views_in} is not a positional encoding of directions")
        return MLPConfig(widths=widths, skips=skips, feature_width=feature_width, view_widths=view_widths,
                         multires=multires, multires_views=(views_in // 3 - 1) // 2, use_viewdirs=True)
    except (KeyError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: {what} is not a nerf-pytorch NeRF state dict ({e})") from None


def import_nerf_pytorch(path: str | Path, near: float = 2.0, far: float = 6.0, white_bkgd: bool = True,
                        ndc: bool = False, n_coarse: int = 64, n_fine: int = 128) -> tuple[NeRF, dict]:
    """Read a nerf-pytorch ``*.tar``; the scene settings are not in the file and are given here
    (defaults: nerf-pytorch's Blender settings). Returns the model and its metadata."""
    path = Path(path)
    obj = _raw_load(path)
    if "network_fn_state_dict" not in obj:
        raise CheckpointError(f"{path} is not a nerf-pytorch checkpoint (no network_fn_state_dict)")
    model, meta = _from_nerf_pytorch(obj, path, near, far, white_bkgd, ndc, n_coarse, n_fine)
    model.eval()
    return model, meta


def _from_nerf_pytorch(obj: dict, path: Path, near: float = 2.0, far: float = 6.0, white_bkgd: bool = True,
                       ndc: bool = False, n_coarse: int = 64, n_fine: int = 128) -> tuple[NeRF, dict]:
    fn = obj["network_fn_state_dict"]
    fine = obj.get("network_fine_state_dict")
    c_cfg = _mlp_config_from_nerf_pytorch(fn, path, "network_fn_state_dict")
    f_cfg = _mlp_config_from_nerf_pytorch(fine, path, "network_fine_state_dict") if fine else None
    try:
        cfg = NeRFConfig.from_dict(NeRFConfig(coarse=c_cfg, fine=f_cfg, near=near, far=far, white_bkgd=white_bkgd,
                                              ndc=ndc, n_coarse=n_coarse, n_fine=n_fine).to_dict())
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    model = NeRF(cfg)
    _load_state(model.coarse, fn, "network_fn_state_dict", path)
    if fine:
        _load_state(model.fine, fine, "network_fine_state_dict", path)
    meta = {"imported_from": "nerf-pytorch", "global_step": int(obj.get("global_step", 0))}
    return model, meta


def convert_nerf_pytorch(src: str | Path, out: str | Path, **options) -> tuple[NeRF, dict]:
    """``nerfexport import``: read the nerf-pytorch checkpoint ``src`` (``options`` as
    :func:`import_nerf_pytorch`) and write it as the checkpoint ``out``."""
    check_writable(out)
    net, meta = import_nerf_pytorch(src, **options)
    save_checkpoint(net, out, meta=meta)
    return net, meta
