"""Export from files to files: what ``nerfexport export`` runs.

Options come from the command line and an optional recipe's ``[export]`` table (the command
line wins). Every option and the output folder are checked before the checkpoint is loaded;
the bundle is built in a temporary folder and renamed into place
(:func:`nerfexport.export.bundle_writer.export_bundle`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from nerfexport.data.datasets import DataArgs, recorded_scene
from nerfexport.deploy.manifest import Manifest
from nerfexport.export.bundle_writer import ExportError, ExportOptions, export_bundle, prepare_output
from nerfexport.export.quantize import Int8Settings
from nerfexport.model.checkpoint import load_checkpoint

ProgressFn = Callable[[dict], None]


@dataclass
class ExportRequest:
    """What the command line asks for; ``None`` means "the recipe's value, else the default"."""

    int8: bool = False
    fp16: bool = False
    tensorrt: bool = False
    recipe: str | None = None
    calibration: str | None = None
    calib_rays: int | None = None
    target: str | None = None
    max_psnr_drop: float | None = None   # None: DEFAULT_MAX_PSNR_DROP for int8 (when check_int8 and test views exist)
    eval_views: int = 3
    grid: bool = True
    grid_res: int = 128
    grid_alpha: float = 0.2
    force: bool = False
    check_int8: bool = True   # False: no default check (sweeps measure int8 as quantized)
    density_scale: int = 2


DEFAULT_CALIBRATION = "percentile"   # at 99.99 %: 0.1-0.2 dB closer to fp32 than minmax on lego (docs/int8.md)
DEFAULT_MAX_PSNR_DROP = 0.25         # dB an int8 bundle may lose on held-out pixels before layers stay float


def _max_psnr_drop(req: ExportRequest, ex: dict, int8: bool) -> float | None:
    """The request's ``--max-psnr-drop``, else its recipe's, else the default check for int8."""
    if req.max_psnr_drop is not None:
        return req.max_psnr_drop
    if "max_psnr_drop" in ex:
        return ex["max_psnr_drop"]
    return DEFAULT_MAX_PSNR_DROP if int8 and req.check_int8 else None


def export_options(req: ExportRequest) -> tuple[ExportOptions, str | None]:
    """Checked :class:`ExportOptions` from the request over its recipe; and a note naming the recipe."""
    ex, note = {}, None
    if req.recipe is not None:
        from nerfexport.shrink.recipe import load_recipe
        r = load_recipe(req.recipe)
        ex, note = dict(r.export), f"recipe {r.path}: {r.description}"
    int8, fp16 = req.int8 or bool(ex.get("int8", False)), req.fp16 or bool(ex.get("fp16", False))
    tensorrt = req.tensorrt or bool(ex.get("tensorrt", False))
    if int8 and fp16:
        raise ExportError("a bundle has one precision: give --int8 or --fp16, not both")
    if req.eval_views < 1:
        raise ExportError(f"--eval-views must be at least 1, not {req.eval_views}")
    settings = Int8Settings(method=req.calibration or ex.get("calibration", DEFAULT_CALIBRATION),
                            target=req.target or ("tensorrt" if tensorrt else "cpu"),
                            per_channel=bool(ex.get("per_channel", True)))
    opts = ExportOptions(precision="int8" if int8 else "fp16" if fp16 else "fp32", int8=settings,
                         calib_rays=req.calib_rays if req.calib_rays is not None else int(ex.get("calib_rays", 512)),
                         max_psnr_drop=_max_psnr_drop(req, ex, int8),
                         eval_views=req.eval_views, tensorrt=tensorrt, grid=req.grid, grid_res=req.grid_res,
                         grid_alpha=req.grid_alpha, density_scale=req.density_scale)
    opts.validate()
    return opts, note


EVAL_PIXELS = 8192   # the --max-psnr-drop check's pixels (one fixed random set of the test views)


def bundle_scorer(scene, views: int, threads: int | None = None,
                  pixels: int | None = EVAL_PIXELS) -> Callable[[Path], float]:
    """``bundle_dir -> PSNR`` on the first ``views`` test views at the scene's resolution (load it
    at the model's native one: int8 errors sit on fine edges that a downscaled view averages
    away), rendered by onnxruntime on the CPU: on one fixed random set of ``pixels`` of those
    views (the same for every bundle; a 400x400 view of an 8x256 NeRF takes a minute here, and
    the check renders once per int8 layer), or on the whole views with ``pixels=None``."""
    from nerfexport.deploy.bundle import open_bundle
    from nerfexport.deploy.render import Renderer, SceneSettings, render_and_score
    from nerfexport.deploy.ort_network import OrtNetwork
    images, poses = scene.subset("test")
    images, poses = images[:views], poses[:views]
    held = None
    if pixels:
        from nerfexport.train.evaluate import eval_pixels
        held = eval_pixels(scene, int(pixels), views)

    def score(path) -> float:
        b = open_bundle(path)
        nets = {w: OrtNetwork(b.network_path(w), threads=threads) if b.network_path(w) else None
                for w in ("coarse", "fine")}
        r = Renderer(nets["coarse"], nets["fine"], SceneSettings.from_manifest(b.manifest), chunk=1024)
        if held is None:
            return render_and_score(r, images, poses, scene.H, scene.W, scene.cam).psnr
        from nerfexport.data.metrics import psnr
        rgb = np.clip(r.render_rays(held["o"], held["d"], held["v"])["rgb"], 0.0, 1.0)
        return float(psnr(rgb, held["rgb"]))
    return score


def run_export(path: str | Path, out: str | Path, req: ExportRequest, data: DataArgs | None = None,
               progress: ProgressFn | None = None) -> Manifest:
    """Export the checkpoint ``path`` as the bundle ``out``; returns its manifest. ``data``: the
    dataset (its unset values, or all of it: the one the checkpoint records). ``progress`` gets
    ``{"event": "note", "text"}`` and the writer's stage and layer events."""
    emit = progress or (lambda e: None)
    data = data if data is not None else DataArgs()
    path, out = Path(path), Path(out)
    opts, note = export_options(req)
    if note:
        emit({"event": "note", "text": note})
    prepare_output(out, req.force, [path, data.path])
    if opts.tensorrt:
        from nerfexport.export.tensorrt import check_tensorrt
        check_tensorrt(opts.int8 if opts.precision == "int8" else None)
    net, meta, _ = load_checkpoint(path, with_train_state=True)
    record = (meta or {}).get("data")

    def load_scene():
        scene, note = recorded_scene(record, data, net.cfg.ndc, owner=str(path))
        if note:
            emit({"event": "note", "text": note})
        return scene

    calib = scorer = scene = None
    if opts.precision == "int8":
        from nerfexport.shrink.calibration import draw_samples
        scene = load_scene()
        calib = draw_samples(net, scene, opts.calib_rays, opts.seed)
        emit({"event": "note", "text": f"calibration: {calib.coarse_pts.shape[0]:,} coarse and "
                                       f"{calib.fine_pts.shape[0]:,} fine samples on {calib.n_rays} training rays "
                                       f"({opts.int8.method}, {opts.int8.activation_format})"})
        if opts.max_psnr_drop is not None and not len(scene.splits.get("test", ())):
            if req.max_psnr_drop is not None:
                raise ExportError(f"--max-psnr-drop scores held-out views, and {data.path or path}'s dataset has no "
                                  "test views")
            emit({"event": "note", "text": "no int8 check: the dataset has no test views to score it on"})
            opts.max_psnr_drop = None
        if opts.max_psnr_drop is not None:
            scorer = bundle_scorer(scene, opts.eval_views)
    if opts.grid and not net.cfg.ndc:
        if scene is None and (data.path is not None or (record or {}).get("path")):
            scene = load_scene()
        if scene is None:
            opts.grid = False
            emit({"event": "note", "text": f"no occupancy grid: {path} does not record its dataset, whose cameras "
                                           "place the grid (pass --data to bake one)"})
        else:
            from nerfexport.export.grid import ray_points, scene_box
            opts.grid_box = scene_box(scene.poses[:, :3, 3], net.cfg.near, False)
            train_poses = scene.subset("train")[1]
            opts.grid_probe = ray_points(train_poses, scene.H, scene.W, scene.cam, net.cfg.near, net.cfg.far, False)
    return export_bundle(net, out, opts, source=path, calib=calib, evaluate=scorer, force=req.force, progress=emit,
                         data=record or (scene.load_args if scene is not None else None))
