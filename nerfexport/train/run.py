"""Training and evaluation from files to files: what ``nerfexport train`` and ``eval`` run.

Each function checks its inputs first (nothing is loaded or written for a bad value), then
loads the dataset, runs, and writes its output atomically; it reports through ``progress``
callbacks and returns values. Errors are :class:`TrainError` (or the loaders' own
``DatasetError`` / ``CheckpointError``), one sentence each.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nerfexport.data.nseval import ns_eval, read_psnr
from nerfexport.data.datasets import DataArgs, Scene, recorded_scene
from nerfexport.data.fileio import atomic_write
from nerfexport.model.checkpoint import check_writable, load_checkpoint
from nerfexport.train import defaults
from nerfexport.train.device import autocast_dtype, bf16_warning, pick_device
from nerfexport.train.evaluate import EvalResult, evaluate
from nerfexport.train.factory import new_model
from nerfexport.train.loop import TrainConfig, TrainResult, train

ProgressFn = Callable[[dict], None]
PRECISIONS = ("auto", "bf16", "fp32")


class TrainError(ValueError):
    """A training or evaluation option is unusable."""


@dataclass
class ModelShape:
    """The network to train: ``depth`` layers of ``width``, a fine network or not, and the sample
    counts stored in the checkpoint for rendering."""

    width: int = 256
    depth: int = 8
    fine: bool = True
    render_coarse: int = 64
    render_fine: int = 128


def check_train_options(shape: ModelShape, tc: TrainConfig) -> None:
    """Raise :class:`TrainError` for the first unusable option."""
    if min(shape.width, shape.depth, tc.steps, tc.batch_rays, tc.n_coarse, tc.eval_views) < 1 or tc.n_fine < 0:
        raise TrainError("width, depth, steps, batch-rays, n-coarse and eval-views must be positive")
    if min(shape.render_coarse, shape.render_fine + 1) < 1:
        raise TrainError("render-coarse must be at least 1 and render-fine at least 0")
    if (shape.fine and shape.render_fine > 0 and shape.render_coarse < 3) or (shape.fine and tc.n_fine > 0 and tc.n_coarse < 3):
        raise TrainError("fine samples need at least 3 coarse samples per ray (--n-coarse, --render-coarse)")
    if tc.precision not in PRECISIONS:
        raise TrainError(f"precision must be auto, bf16 or fp32, not {tc.precision!r}")
    if tc.grid_every < 1:
        raise TrainError("grid-every must be positive")
    if tc.grow_from is not None and not (1 <= tc.grow_from <= shape.width):
        raise TrainError(f"grow-from must be between 1 and --width ({shape.width}), not {tc.grow_from}")
    if not (0.0 <= tc.grow_at <= 1.0):
        raise TrainError(f"grow-at is a fraction of the budget in [0, 1], not {tc.grow_at}")
    if tc.max_minutes is not None and not tc.max_minutes > 0:
        raise TrainError(f"minutes must be positive, not {tc.max_minutes}")
    if tc.eval_every_minutes is not None and not tc.eval_every_minutes > 0:
        raise TrainError(f"eval-every must be positive, not {tc.eval_every_minutes}")
    from nerfexport.data.safety import UnsafeInput, finite
    try:   # every float flag finite and in range (a NaN learning rate trains a NaN model)
        finite(tc.lr, "--lr", 0.0, 1.0, lo_open=True)
        finite(tc.lr_final, "--lr-final", 0.0, 1.0)
        for name, v in (("--minutes", tc.max_minutes), ("--eval-every", tc.eval_every_minutes)):
            if v is not None:
                finite(v, name, 0.0, 1e7, lo_open=True)
        if shape.width > 4096 or shape.depth > 64:
            raise UnsafeInput(f"--width is at most 4096 and --depth at most 64 (not {shape.width}, {shape.depth})")
    except UnsafeInput as e:
        raise TrainError(str(e)) from None


def train_config(data: DataArgs, overrides: dict) -> tuple[TrainConfig, str]:
    """The :class:`TrainConfig` ``nerfexport train`` runs: the measured preset for the device and
    the kind of scene (:mod:`nerfexport.train.defaults`) with the user's ``overrides`` (fields of
    TrainConfig) on top. Returns it and the preset's name."""
    unknown = set(overrides) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise TrainError(f"unknown training options: {sorted(unknown)}")
    try:
        dev = pick_device(overrides.get("device", "auto"))
    except (RuntimeError, ValueError) as e:
        raise TrainError(str(e)) from None
    forward = data.ndc and (Path(data.path) / "poses_bounds.npy").is_file()
    name = defaults.preset_name(dev.type, forward)
    return TrainConfig(**defaults.resolve(name, overrides)), name


def describe_config(tc: TrainConfig, preset: str) -> str:
    """One line naming the recipe a run uses."""
    budget = f"{tc.max_minutes:g} minutes" if tc.max_minutes else f"{tc.steps} steps"
    grow = f", {tc.grow_from} wide until {100 * tc.grow_at:.0f} %" if tc.grow_from else ""
    return (f"recipe ({preset} preset and your flags): {budget}, {tc.batch_rays} rays x {tc.n_coarse}+{tc.n_fine} "
            f"samples a step, occupancy grid {'on' if tc.occupancy else 'off'}{grow}")


def run_train(data: DataArgs, out: str | Path, shape: ModelShape, tc: TrainConfig, resume: bool = True,
              progress: ProgressFn | None = None, recipe: str | None = None) -> tuple[TrainResult, Scene]:
    """Train a fresh model of ``shape`` on ``data`` and write the checkpoint ``out``.

    Args:
        data: The dataset to load.
        out: The checkpoint path (checked writable before anything is loaded).
        shape: The network's widths, depth and sample counts.
        tc: The training recipe (``tc.n_fine`` is set to 0 without a fine network).
        resume: Continue an interrupted run found at ``out``.
        progress: Gets ``{"event": "note", "text"}`` (the loader's notes, a bf16 warning, the
            ``recipe``), ``{"event": "scene", "scene"}``, ``{"event": "start", "total", "minutes"}``
            and the training loop's events (:func:`nerfexport.train.loop.train`).
        recipe: A line describing the recipe, sent as a note.

    Returns:
        ``(result, scene)``: the loop's :class:`~nerfexport.train.loop.TrainResult` and the loaded scene.
    """
    emit = progress or (lambda e: None)
    check_train_options(shape, tc)
    if not shape.fine:
        tc.n_fine = 0
    check_writable(out)
    try:
        dev = pick_device(tc.device)
    except (RuntimeError, ValueError) as e:
        raise TrainError(str(e)) from None
    scene = data.load()
    for text in scene.notes:   # what the loader assumed (held-out views, moved cameras): the first lines
        emit({"event": "note", "text": text})
    note = bf16_warning(tc.precision, dev)
    if note:
        emit({"event": "note", "text": note})
    emit({"event": "scene", "scene": scene})
    if recipe:
        emit({"event": "note", "text": recipe})
    emit({"event": "start", "total": tc.steps, "minutes": tc.max_minutes})
    model = new_model(scene, shape.width, shape.depth, shape.fine, shape.render_coarse, shape.render_fine)
    return train(model, scene, tc, out, resume=resume, progress=emit), scene


def run_train_cli(data: DataArgs, out: str | Path, shape: ModelShape, given: dict, resume: bool = True,
                  progress: ProgressFn | None = None) -> TrainResult:
    """``nerfexport train``: :func:`run_train` with the measured preset under the options the user
    ``given`` (TrainConfig fields; ``grow_from`` 0 turns widening off). With a time budget and no
    ``eval_every_minutes``, the held-out pixels are evaluated five times over the budget."""
    emit = progress or (lambda e: None)
    tc, preset = train_config(data, given)
    if tc.grow_from == 0 or tc.grow_from == shape.width:
        tc.grow_from = None
    if tc.grow_from is not None and tc.grow_from > shape.width:
        tc.grow_from = None if "grow_from" not in given else tc.grow_from   # a narrow model is not grown
    if "eval_every_minutes" not in given and tc.max_minutes:
        tc.eval_every_minutes = tc.max_minutes / 5.0
    return run_train(data, out, shape, tc, resume, emit, recipe=describe_config(tc, preset))[0]


@dataclass
class EvalReport:
    """A checkpoint's quality on held-out views (``nerfexport eval``)."""

    model: str
    split: str
    psnr: float
    ssim: float
    per_view_psnr: list[float]
    n_coarse: int
    n_fine: int
    precision: str
    seconds: float
    per_view_ssim: list[float] = field(default_factory=list)
    rays_per_view: int = 0

    def to_dict(self) -> dict:
        """nerfstudio's ns-eval layout (:mod:`nerfexport.data.nseval`): the torch renderer's
        frame rate over the whole evaluation, our fields after the standard ones."""
        n = max(1, len(self.per_view_psnr))
        return ns_eval(self.model, self.per_view_psnr, self.per_view_ssim, self.seconds / n, self.rays_per_view,
                       method="nerfexport (torch, training-time renderer)", split=self.split, views=n,
                       per_view_psnr=self.per_view_psnr, per_view_ssim=self.per_view_ssim, n_coarse=self.n_coarse,
                       n_fine=self.n_fine, precision=self.precision, seconds=self.seconds)


def run_import(src: str | Path, out: str | Path, data: DataArgs | None = None, **options) -> tuple[object, dict]:
    """``nerfexport import``: the nerf-pytorch checkpoint ``src`` (``options`` as
    :func:`nerfexport.model.checkpoint.import_nerf_pytorch`) written as the checkpoint ``out``.
    With ``data`` (the images it was trained on, at the resolution it was trained at), the
    dataset and that resolution are recorded, so that ``eval``, ``shrink`` and ``export`` find
    them and evaluate at the training resolution."""
    from nerfexport.model.checkpoint import import_nerf_pytorch, save_checkpoint
    check_writable(out, [src])
    net, meta = import_nerf_pytorch(src, **options)
    if data is not None:
        data.ndc = net.cfg.ndc
        scene = data.load()
        net.cfg.camera = {"H": scene.H, "W": scene.W, "focal": scene.focal}
        meta = {**meta, "data": scene.load_args, "dataset": scene.source}
    save_checkpoint(net, out, meta=meta)
    return net, meta


def run_eval(path: str | Path, data: DataArgs, split: str = "test", views: int | None = None,
             n_coarse: int | None = None, n_fine: int | None = None, precision: str = "fp32",
             json_out: str | Path | None = None, progress: ProgressFn | None = None) -> EvalReport:
    """PSNR and SSIM of the checkpoint ``path`` on held-out views with the torch renderer, on the CPU.

    Args:
        path: The checkpoint.
        data: The dataset; the one recorded in the checkpoint where this leaves it open.
        split: The split to evaluate on.
        views: The first ``views`` views of the split (all when None).
        n_coarse, n_fine: Samples per ray; the checkpoint's own counts when None.
        precision: ``fp32``, ``bf16`` or ``auto``.
        json_out: Also write the report there, in nerfstudio's ns-eval layout.
        progress: Gets ``{"event": "note", "text"}`` events.

    Returns:
        An :class:`EvalReport` (mean and per-view PSNR and SSIM, sample counts, seconds).
    """
    import torch
    emit = progress or (lambda e: None)
    if views is not None and views < 1:
        raise TrainError(f"--views is a number of views, at least 1 (not {views})")
    if precision not in PRECISIONS:
        raise TrainError("precision must be fp32, bf16 or auto")
    if n_coarse is not None and n_coarse < 1 or n_fine is not None and n_fine < 0:
        raise TrainError("--n-coarse must be at least 1 and --n-fine at least 0")
    if json_out is not None:
        check_writable(json_out, [path])
    net, meta, _ = load_checkpoint(path, with_train_state=True)
    # the dataset and resolution recorded at train or import time unless given: a model is judged
    # at the resolution it was trained at (one ray per pixel at a lower one aliases)
    scene, note = recorded_scene((meta or {}).get("data"), data, net.cfg.ndc, owner=str(path))
    if note:
        emit({"event": "note", "text": note})
    if split not in scene.splits:
        raise TrainError(f"split {split!r} not in dataset (has {sorted(scene.splits)})")
    note = bf16_warning(precision)
    if note:
        emit({"event": "note", "text": note})
    amp = autocast_dtype(precision, torch.device("cpu"))
    t = time.perf_counter()
    res: EvalResult = evaluate(net, scene, split, views, n_coarse, n_fine, amp=amp)
    rep = EvalReport(str(path), split, res.psnr, res.ssim, res.per_view_psnr,
                     net.cfg.n_coarse if n_coarse is None else n_coarse, net.cfg.n_fine if n_fine is None else n_fine,
                     "bf16" if amp is not None else "fp32", time.perf_counter() - t, res.per_view_ssim,
                     scene.H * scene.W)
    if json_out is not None:
        doc = json.dumps(rep.to_dict(), indent=1).encode()
        atomic_write(json_out, lambda f: f.write(doc))
    return rep


def describe_checkpoint(path: str | Path) -> list[str]:
    """Lines describing a checkpoint: size, bounds, background, samples, each network's widths
    and parameter count, and its metadata (``nerfexport info``)."""
    from nerfexport.model.mlp import count_parameters
    path = Path(path)
    net, meta, _ = load_checkpoint(path, with_train_state=True)
    c = net.cfg
    lines = [f"{path}: {path.stat().st_size / 1e6:.2f} MB, near {c.near} far {c.far}, "
             f"{'white' if c.white_bkgd else 'black'} background, ndc {c.ndc}, samples {c.n_coarse}+{c.n_fine}"]
    for name, mlp in (("coarse", net.coarse), ("fine", net.fine)):
        if mlp is not None:
            m = mlp.cfg
            lines.append(f"  {name}: widths {m.widths} skips {m.skips} feature {m.feature_width} views {m.view_widths} "
                         f"-> {count_parameters(mlp):,} parameters, {m.macs():,} multiply-adds a point")
            if m.ranks:
                lines.append(f"    low-rank layers: {m.ranks}")
    if meta:
        lines.append("  meta: " + json.dumps({k: v for k, v in meta.items() if k != "history"}))
    return lines


def training_curve(path: str | Path, out: str | Path, title: str = "",
                   final_json: str | Path | None = None) -> list[dict]:
    """Plot a checkpoint's held-out PSNR history against training minutes into the PNG ``out``
    (with the final evaluation of ``nerfexport eval --json`` when given); returns the history."""
    from nerfexport.data.plots import plot_training_curve
    out = Path(out)
    _, meta, _ = load_checkpoint(path, with_train_state=True)
    hist = list(meta.get("history") or [])
    if isinstance(meta.get("final_eval"), dict):
        hist.append({**meta["final_eval"], "final": True})
    if not hist:
        raise TrainError(f"{path} holds no evaluation history (train with --eval-every)")
    final = None
    if final_json is not None:
        try:
            f = json.loads(Path(final_json).read_text())
            final = (hist[-1]["minutes"], read_psnr(f))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TrainError(f"{final_json} is not an eval JSON ({type(e).__name__})") from None
    check_writable(out, [path, final_json])
    plot_training_curve(hist, out, title, final)
    return hist
