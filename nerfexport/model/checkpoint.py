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


def check_writable(path: str | Path, inputs=()) -> None:
    """Raise :class:`CheckpointError` now if ``path`` cannot be written later, or must not be: a
    symlink, a FIFO or socket, or one of the command's ``inputs``."""
    from nerfexport.data.safety import UnsafeInput, check_output_file
    path = Path(path)
    try:
        check_output_file(path, inputs)
    except UnsafeInput as e:
        raise CheckpointError(str(e)) from None
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


MAX_DIM = 1 << 16          # no layer of a NeRF is wider than this


def _check_config(cfg: NeRFConfig, path: Path) -> None:
    """The scene values of a config: finite bounds, bounded sample counts, a usable camera."""
    from nerfexport.data.safety import UnsafeInput, finite
    from nerfexport.deploy.manifest import MAX_SAMPLES, check_camera
    try:
        finite(cfg.near, "near", 0.0)
        finite(cfg.far, "far", cfg.near, 1e6, lo_open=True)
        for name, n in (("n_coarse", cfg.n_coarse), ("n_fine", cfg.n_fine)):
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_SAMPLES:
                raise UnsafeInput(f"{name} must be an integer in [0, {MAX_SAMPLES}], not {n!r}")
        cam = cfg.camera
        if cam:
            if not isinstance(cam, dict):
                raise UnsafeInput(f"camera must be a table, not {type(cam).__name__}")
            check_camera(cam.get("H"), cam.get("W"), cam.get("focal", cam.get("fx")), "the recorded camera")
    except ValueError as e:
        raise CheckpointError(f"{path}: bad config ({e})") from None


def _build(cfg: NeRFConfig, states: dict[str, Any], path: Path) -> NeRF:
    """The network of ``cfg``, built first on the meta device (no memory) and compared, parameter
    by parameter, with the file's ``states`` (``{"coarse": sd, "fine": sd}``; any layer kind the
    config makes); then the memory it takes is checked, and only then is it materialised."""
    from nerfexport.data.safety import UnsafeInput, check_memory
    try:
        with torch.device("meta"):
            meta_model = NeRF(cfg)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise CheckpointError(f"{path}: bad config ({e})") from None
    total = 0
    for which, names in states.items():
        module = getattr(meta_model, which)
        if module is None:
            continue
        for k, v in module.state_dict().items():
            if any(d > MAX_DIM for d in v.shape):
                raise CheckpointError(f"{path}: {names[0]}.{k} would be {tuple(v.shape)}; no layer is wider "
                                      f"than {MAX_DIM}")
            total += v.numel() * 4
        _check_state(module, names[1], names[0], path)
    try:
        check_memory(total, f"{path}: its networks")
    except UnsafeInput as e:
        raise CheckpointError(str(e)) from None
    return NeRF(cfg)


def _check_state(module: torch.nn.Module, state: Any, what: str, path: Path) -> None:
    """Keys and shapes of ``state`` against ``module`` (which may live on the meta device); every
    tensor a dense float array whose storage holds its elements, all of them finite."""
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
        if not t.is_floating_point() or t.is_sparse or t.device.type != "cpu":
            raise CheckpointError(f"{path}: {what}.{k} is not a dense float tensor")
        if t.numel() and t.untyped_storage().nbytes() < t.numel() * t.element_size():
            raise CheckpointError(f"{path}: {what}.{k} claims more elements than its data holds")
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: {what}.{k} holds NaN or infinite weights")


def _load_state(module: torch.nn.Module, state: Any, what: str, path: Path) -> None:
    _check_state(module, state, what, path)    # keys, shapes, dtype, storage and finiteness
    module.load_state_dict({k: state[k].float() for k in module.state_dict()})


def save_checkpoint(model: NeRF, path: str | Path, meta: dict | None = None,
                    train_state: dict | None = None) -> None:
    """Write ``model`` as a nerfexport checkpoint, atomically.

    Args:
        model: The NeRF (its config and both networks' weights, moved to the CPU).
        path: The checkpoint file.
        meta: JSON-like metadata (dataset, training history, final evaluation).
        train_state: What resuming needs (step, optimizer, generator, grid), when given.
    """
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

    Args:
        path: The checkpoint file (every field checked; :class:`CheckpointError` when one is wrong).
        with_train_state: Also return the metadata and the train state.

    Returns:
        ``model``, or with ``with_train_state`` ``(model, meta, train_state | None)``.
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
        if not isinstance(obj.get("config"), dict):
            raise TypeError("config is not a table")
        cfg = NeRFConfig.from_dict(obj["config"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: bad config ({e})") from None
    _check_config(cfg, path)
    if cfg.fine is None and obj.get("fine") is not None:
        raise CheckpointError(f"{path}: holds fine weights but its config has no fine network")
    meta = obj.get("meta") or {}
    train_state = obj.get("train_state")
    check_meta(meta, train_state, path)
    model = _build(cfg, {"coarse": ("coarse", obj.get("coarse")), "fine": ("fine", obj.get("fine"))}, path)
    _load_state(model.coarse, obj.get("coarse"), "coarse", path)
    if cfg.fine is not None:
        _load_state(model.fine, obj.get("fine"), "fine", path)
    if train_state is not None:
        check_optimizer(model, train_state, path)
    model.eval()
    if with_train_state:
        return model, meta, train_state
    return model


def _no_tensors(x, where: str, path: Path, depth: int = 0) -> None:
    if depth > 32:
        raise CheckpointError(f"{path}: {where} is nested too deeply")
    if isinstance(x, torch.Tensor):
        raise CheckpointError(f"{path}: {where} holds a tensor where plain values belong")
    if isinstance(x, dict):
        for k, v in x.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{path}: {where} has a key that is not a string")
            _no_tensors(v, f"{where}.{k}", path, depth + 1)
    elif isinstance(x, (list, tuple)):
        for v in x:
            _no_tensors(v, where, path, depth + 1)
    elif not (x is None or isinstance(x, (str, int, float, bool))):
        raise CheckpointError(f"{path}: {where} holds a {type(x).__name__}")


def _number(x, name: str, path: Path, integer: bool = False) -> None:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")
    if not ok or (integer and (not isinstance(x, int) or x < 0)):
        raise CheckpointError(f"{path}: {name} must be a {'non-negative integer' if integer else 'finite number'}, "
                              f"not {x!r}")


def _history(hist, where: str, path: Path) -> None:
    if not isinstance(hist, list) or not all(isinstance(h, dict) for h in hist):
        raise CheckpointError(f"{path}: {where} must be a list of tables")
    for h in hist:
        for k in ("step", "minutes", "psnr", "ssim"):
            if k in h:
                _number(h[k], f"{where} {k}", path, integer=(k == "step"))


def check_meta(meta, train_state, path: Path) -> None:
    """The plain fields of a checkpoint (``meta`` and ``train_state``) have the types the commands
    read: tables, numbers and strings, no tensors (raises :class:`CheckpointError`)."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: meta must be a table, not {type(meta).__name__}")
    _no_tensors(meta, "meta", path)
    for k in ("steps", "global_step"):
        if k in meta:
            _number(meta[k], f"meta.{k}", path, integer=True)
    if "train_seconds" in meta:
        _number(meta["train_seconds"], "meta.train_seconds", path)
    if "history" in meta:
        _history(meta["history"], "meta.history", path)
    if meta.get("final_eval") is not None:
        _history([meta["final_eval"]], "meta.final_eval", path)
    for k in ("data", "dataset"):
        if meta.get(k) is not None and not isinstance(meta[k], (dict if k == "data" else str)):
            raise CheckpointError(f"{path}: meta.{k} has the wrong type ({type(meta[k]).__name__})")
    if isinstance(meta.get("data"), dict) and not isinstance(meta["data"].get("path", ""), str):
        raise CheckpointError(f"{path}: meta.data.path must be a string")
    if train_state is None:
        return
    if not isinstance(train_state, dict):
        raise CheckpointError(f"{path}: train_state must be a table, not {type(train_state).__name__}")
    _number(train_state.get("step"), "train_state.step", path, integer=True)
    if "train_seconds" in train_state:
        _number(train_state["train_seconds"], "train_state.train_seconds", path)
    if "history" in train_state:
        _history(train_state["history"], "train_state.history", path)
    plain = {k: v for k, v in train_state.items() if k not in ("optimizer", "generator", "grid")}
    _no_tensors(plain, "train_state", path)


def check_optimizer(model: NeRF, state: dict, path: Path) -> None:
    """An Adam state saved with a run matches ``model``'s parameters (shapes, one entry each) and
    the random generator state is one torch can set; raises :class:`CheckpointError`."""
    if "optimizer" not in state:
        return
    bad = CheckpointError(f"{path}: train_state.optimizer does not match the model's parameters")
    opt, params = state["optimizer"], list(model.parameters())
    if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list):
        raise bad
    groups = opt["param_groups"]
    ids = [i for g in groups if isinstance(g, dict) for i in (g.get("params") or [])]
    if len(groups) != 1 or sorted(ids) != list(range(len(params))):
        raise bad
    g = groups[0]
    for k in ("lr", "eps", "weight_decay"):
        if k in g and not (isinstance(g[k], (int, float)) and g[k] == g[k] and abs(g[k]) != float("inf")):
            raise bad
    for i, st in opt["state"].items():
        if not isinstance(i, int) or not 0 <= i < len(params) or not isinstance(st, dict):
            raise bad
        for k in ("exp_avg", "exp_avg_sq"):
            t = st.get(k)
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(params[i].shape) or \
                    t.untyped_storage().nbytes() < t.numel() * t.element_size():
                raise bad
        if not isinstance(st.get("step"), (torch.Tensor, int, float)):
            raise bad
    gen = state.get("generator")
    ref = torch.Generator().get_state()
    if not isinstance(gen, torch.Tensor) or gen.dtype != ref.dtype or tuple(gen.shape) != tuple(ref.shape):
        raise CheckpointError(f"{path}: train_state.generator is not a random generator state")


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
    for name, sd in (("network_fn_state_dict", fn), ("network_fine_state_dict", fine)):
        if sd is not None and not (isinstance(sd, dict) and all(isinstance(v, torch.Tensor) for v in sd.values())):
            raise CheckpointError(f"{path}: {name} is not a table of tensors")
    c_cfg = _mlp_config_from_nerf_pytorch(fn, path, "network_fn_state_dict")
    f_cfg = _mlp_config_from_nerf_pytorch(fine, path, "network_fine_state_dict") if fine else None
    try:
        cfg = NeRFConfig.from_dict(NeRFConfig(coarse=c_cfg, fine=f_cfg, near=near, far=far, white_bkgd=white_bkgd,
                                              ndc=ndc, n_coarse=n_coarse, n_fine=n_fine).to_dict())
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    _check_config(cfg, path)
    step = obj.get("global_step", 0)
    if isinstance(step, torch.Tensor) and step.numel() == 1 and not step.is_floating_point():
        step = int(step)
    _number(step, "global_step", path, integer=True)
    model = _build(cfg, {"coarse": ("network_fn_state_dict", fn),
                         "fine": ("network_fine_state_dict", fine if fine else None)}, path)
    _load_state(model.coarse, fn, "network_fn_state_dict", path)
    if fine:
        _load_state(model.fine, fine, "network_fine_state_dict", path)
    meta = {"imported_from": "nerf-pytorch", "global_step": step}
    return model, meta


def convert_nerf_pytorch(src: str | Path, out: str | Path, **options) -> tuple[NeRF, dict]:
    """``nerfexport import``: read the nerf-pytorch checkpoint ``src`` (``options`` as
    :func:`import_nerf_pytorch`) and write it as the checkpoint ``out``."""
    check_writable(out, [src])
    net, meta = import_nerf_pytorch(src, **options)
    save_checkpoint(net, out, meta=meta)
    return net, meta
