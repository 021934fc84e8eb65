"""What each stage of a sweep runs, on whichever machine it lands on (no Ray here).

Every stage takes its parameters (JSON-able, from :mod:`nerfexport.sweep.cells`) and the
results of the stages before it, and returns ``{"info": {...}, "files": {name: bytes}}``: the
checkpoint or bundle travels as bytes, so that the stages of one cell may run on different
nodes of a cluster with no shared folder (the datasets must be at the same path on every node).
Each stage calls the function the matching command runs: shrinking is
:func:`nerfexport.shrink.pipeline.shrink_pipeline`, exporting
:func:`nerfexport.export.run.run_export`, benchmarking
:func:`nerfexport.bench.bench.run_item` (the bench's own worker process).
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

SHAPE_KEYS = ("width", "depth", "fine", "render_coarse", "render_fine")


def write_files(files: dict[str, bytes], root: Path) -> None:
    from nerfexport.data.fileio import confine
    for rel, data in files.items():
        p = confine(root, rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def read_files(root: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file()}


def node() -> dict:
    from nerfexport.deploy.machine import machine
    return {"host": socket.gethostname(), "machine": machine()}


def _data(sp: dict):
    """The scene's :class:`~nerfexport.data.datasets.DataArgs` (its ``data_args``: unset values
    are the recorded ones)."""
    from nerfexport.data.datasets import DataArgs
    return DataArgs(sp["data"], sp["downscale"], None, sp["test_every"])


def _scene(sp: dict, record, ndc: bool, owner: str):
    from nerfexport.data.datasets import recorded_scene
    return recorded_scene(record, _data(sp), ndc, owner)[0]


def _amp():
    import torch

    from nerfexport.train.device import autocast_dtype
    return autocast_dtype("auto", torch.device("cpu"))


def _load(files: dict, tmp: Path, name: str = "model.pt"):
    from nerfexport.model.checkpoint import load_checkpoint
    path = tmp / name
    path.write_bytes(files["model.pt"])
    return (path, *load_checkpoint(path, with_train_state=True))


def teacher(params: dict, source: bytes | None = None) -> dict:
    """Train the scene's teacher (a dataset scene) or take its checkpoint (``source``), and
    evaluate it on the held-out views."""
    from nerfexport.shrink.pipeline import parameter_counts
    from nerfexport.train.evaluate import evaluate
    sp = params["scene"]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nerfexport-sweep-") as tmp:
        tmp = Path(tmp)
        if sp["dataset"] is not None:
            from nerfexport.data.datasets import DataArgs
            from nerfexport.train.run import ModelShape, run_train_cli
            opts = dict(sp["train"])
            shape = ModelShape(**{k: opts.pop(k) for k in SHAPE_KEYS if k in opts})
            if "minutes" in opts:
                opts["max_minutes"] = opts.pop("minutes")
            data = DataArgs(Path(sp["dataset"]), sp["downscale"] or 1, True, sp["test_every"] or 1)
            run_train_cli(data, tmp / "model.pt", shape, opts, resume=False)   # what `nerfexport train` runs
            source = (tmp / "model.pt").read_bytes()
        path, model, meta, state = _load({"model.pt": source}, tmp)
        scene = _scene(sp, meta.get("data"), model.cfg.ndc, sp["checkpoint"] or sp["dataset"])
        t = time.perf_counter()
        nc, nf = params["eval_samples"]
        r = evaluate(model, scene, "test", params["eval_views"], nc, nf, amp=_amp())
        info = {"psnr": r.psnr, "ssim": r.ssim, "params": parameter_counts(model)["total"],
                "width": max(model.coarse.cfg.widths), "depth": len(model.coarse.cfg.widths),
                "bytes": len(source), "train_minutes": float(meta.get("train_seconds", 0.0)) / 60.0,
                "steps": meta.get("steps"), "train_config": (state or {}).get("train_config"),
                "eval_seconds": time.perf_counter() - t, "seconds": time.perf_counter() - t0, **node()}
    return {"info": info, "files": {"model.pt": source}}


def shrink(params: dict, teacher_result: dict) -> dict:
    """Shrink the teacher by one method to one width and distil it (``nerfexport shrink``'s
    pipeline), evaluating before and after the fine-tuning."""
    from nerfexport.model.checkpoint import save_checkpoint
    from nerfexport.shrink.distill import DistillConfig
    from nerfexport.shrink.pipeline import shrink_pipeline
    from nerfexport.shrink.run import ShrinkError, shrink_spec
    from nerfexport.shrink.spec import EvalSpec
    sp = params["scene"]
    t0 = time.perf_counter()
    spec, _ = shrink_spec({k: params[k] for k in ("method", "width", "finetune", "calib_rays", "seed")})
    with tempfile.TemporaryDirectory(prefix="nerfexport-sweep-") as tmp:
        tmp = Path(tmp)
        path, model, meta, _ = _load(teacher_result["files"], tmp, "teacher.pt")
        try:
            targets = spec.targets(model)
        except ValueError as e:
            raise ShrinkError(str(e)) from None
        scene = _scene(sp, meta.get("data"), model.cfg.ndc, sp["checkpoint"] or sp["dataset"])
        ev = EvalSpec(params["eval_views"], tuple(params["eval_samples"]), pixels=None)
        student, rep = shrink_pipeline(model, scene, spec, ev, DistillConfig(**params["distill"]), targets=targets)
        out = tmp / "model.pt"
        save_checkpoint(student, out, meta={"shrunk_from": sp["checkpoint"] or sp["dataset"], "shrink": spec.to_dict(),
                                            "data": meta.get("data") or scene.load_args, "dataset": scene.source})
        data = out.read_bytes()
    s = rep.seconds
    tuned = rep.psnr_after_finetune is not None
    info = {"params": rep.params_after["total"], "bytes": len(data), "widths": rep.widths,
            "psnr_pruned": rep.psnr_before_finetune, "ssim_pruned": rep.ssim_before_finetune,
            "psnr": rep.psnr_after_finetune if tuned else rep.psnr_before_finetune,
            "ssim": rep.ssim_after_finetune if tuned else rep.ssim_before_finetune, "finetune_steps": spec.finetune,
            "cost_seconds": {"prune": s.get("calibrate", 0.0) + s.get("prune", 0.0), "bank": s.get("bank", 0.0),
                             "finetune": s.get("finetune", 0.0)},
            "seconds": time.perf_counter() - t0, **node()}
    return {"info": info, "files": {"model.pt": data}}


def scratch(params: dict, teacher_result: dict, *siblings: dict) -> dict:
    """The width trained from scratch with the teacher's recipe for the teacher's training time
    plus what shrinking that width cost (the median of the finished ``siblings``), or for
    ``params["minutes"]``: the baseline of ``nerfexport shrink-study``."""
    from nerfexport.bench.study import scratch_extra_minutes, scratch_train_config
    from nerfexport.model.checkpoint import save_checkpoint
    from nerfexport.shrink.pipeline import parameter_counts
    from nerfexport.train.evaluate import evaluate
    from nerfexport.train.factory import new_model
    from nerfexport.train.loop import train
    sp = params["scene"]
    t0 = time.perf_counter()
    tinfo = teacher_result["info"]
    with tempfile.TemporaryDirectory(prefix="nerfexport-sweep-") as tmp:
        tmp = Path(tmp)
        path, model, meta, state = _load(teacher_result["files"], tmp, "teacher.pt")
        scene = _scene(sp, meta.get("data"), model.cfg.ndc, sp["checkpoint"] or sp["dataset"])
        width = params["width"]
        if "minutes" in params:
            minutes = float(params["minutes"])
        else:
            rows = [{"seconds": s["info"]["cost_seconds"]} for s in siblings]
            minutes = tinfo["train_minutes"] + scratch_extra_minutes(rows)
        step_s = (params.get("step_seconds") or {}).get(width) or (params.get("step_seconds") or {}).get(str(width))
        tc = scratch_train_config((state or {}).get("train_config"), meta, minutes, step_s, params["seed"])
        net = new_model(scene, width, len(model.coarse.cfg.widths), model.fine is not None, model.cfg.n_coarse,
                        model.cfg.n_fine, seed=params["seed"])
        out = tmp / "model.pt"
        t = time.perf_counter()
        res = train(net, scene, tc, out, resume=False)
        wall = time.perf_counter() - t
        nc, nf = params["eval_samples"]
        r = evaluate(net, scene, "test", params["eval_views"], nc, nf, amp=_amp())
        save_checkpoint(net, out, meta={"scratch_of": sp["checkpoint"] or sp["dataset"], "width": width,
                                        "steps": res.steps, "train_seconds": res.train_seconds,
                                        "data": meta.get("data") or scene.load_args})
        data = out.read_bytes()
    info = {"params": parameter_counts(net)["total"], "bytes": len(data), "psnr_pruned": None, "ssim_pruned": None,
            "psnr": r.psnr, "ssim": r.ssim, "finetune_steps": None, "steps": res.steps, "budget_minutes": minutes,
            "step_seconds": step_s, "wall_seconds": wall,
            "cost_seconds": {"train": minutes * 60.0 if step_s else res.train_seconds},
            "seconds": time.perf_counter() - t0, **node()}
    return {"info": info, "files": {"model.pt": data}}


def export(params: dict, model_result: dict) -> dict:
    """Export the model as a bundle at one precision and calibration (``nerfexport export``)."""
    from nerfexport.deploy.bundle import open_bundle
    from nerfexport.export.run import ExportRequest, run_export
    sp = params["scene"]
    t0 = time.perf_counter()
    prec = params["precision"]
    req = ExportRequest(int8=prec == "int8", fp16=prec == "fp16", tensorrt=params["tensorrt"],
                        calibration=params["calibration"], calib_rays=params["calib_rays"], target=params["target"],
                        grid=params["grid"], grid_res=params["grid_res"], grid_alpha=params["grid_alpha"],
                        check_int8=False, force=True)
    with tempfile.TemporaryDirectory(prefix="nerfexport-sweep-") as tmp:
        tmp = Path(tmp)
        (tmp / "model.pt").write_bytes(model_result["files"]["model.pt"])
        run_export(tmp / "model.pt", tmp / "bundle", req, _data(sp))
        b = open_bundle(tmp / "bundle")
        info = {"bytes": b.size_bytes(), "precision": b.precision,
                "samples": [b.manifest.scene.n_coarse, b.manifest.scene.n_fine],
                "seconds": time.perf_counter() - t0, **node()}
        files = read_files(tmp / "bundle", "bundle/")
    return {"info": info, "files": files}


def _busy_seconds() -> float | None:
    """CPU seconds this machine has spent busy since boot, all cores (``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_timed(fn):
    """``fn()`` and the share of the machine's CPU that work other than ``fn``'s child
    processes took while it ran (the machine's busy time less the children's CPU time, over
    wall time x cores); ``None`` where ``/proc/stat`` cannot be read."""
    import resource
    b0, c0, t0 = _busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    res = fn()
    b1, c1, t1 = _busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    if b0 is None or b1 is None:
        return res, None
    own = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    return res, max(0.0, (b1 - b0) - own) / max((t1 - t0) * (os.cpu_count() or 1), 1e-9)


def bench(params: dict, model_result: dict, export_result: dict | None = None) -> dict:
    """Render the scene's first held-out views with one runtime, in the bench's own worker
    process (``nerfexport bench``), after one warm-up frame; score against the ground truth."""
    import numpy as np

    from nerfexport.bench.bench import BenchItem, run_item
    from nerfexport.data.metrics import psnr, ssim
    from nerfexport.deploy.views import dataset_views
    sp = params["scene"]
    t0 = time.perf_counter()
    rt = params["runtime"]
    with tempfile.TemporaryDirectory(prefix="nerfexport-sweep-") as tmp:
        tmp = Path(tmp)
        if export_result is not None:
            write_files(export_result["files"], tmp)
            from nerfexport.deploy.bundle import open_bundle
            path = tmp / "bundle"
            m = open_bundle(path).manifest
            record, ndc = m.data, m.scene.ndc
        else:
            path, model, meta, _ = _load(model_result["files"], tmp)
            record, ndc = meta.get("data"), model.cfg.ndc
        v = dataset_views(record, _data(sp), first=params["views"], ndc=ndc, owner=sp["name"])
        job = {"poses": v.poses.tolist(), "H": v.H, "W": v.W, "focal": v.focal, "repeat": params["repeat"],
               "renders": str(tmp / "renders.npy")}
        if params.get("samples"):
            job["n_coarse"], job["n_fine"] = params["samples"]
        item = BenchItem(str(path), rt["ref"], sp["name"], plain=not params.get("skip", False))
        saved = os.environ.pop("OMP_NUM_THREADS", None)   # Ray's per-task setting: the bench uses the machine
        try:
            r, busy = run_timed(lambda: run_item(item, job))   # the bench's own worker process
        finally:
            if saved is not None:
                os.environ["OMP_NUM_THREADS"] = saved
        imgs = np.load(tmp / "renders.npy")
    ps = [float(psnr(a, b)) for a, b in zip(imgs, v.images)]
    ss = [float(ssim(a, b)) for a, b in zip(imgs, v.images)]
    fps = 1e3 / r["median_ms"]
    info = {"psnr": float(np.mean(ps)), "psnr_std": float(np.std(ps)), "ssim": float(np.mean(ss)),
            "ssim_std": float(np.std(ss)), "fps": fps, "num_rays_per_sec": r["rays_per_frame"] * fps,
            "ms_per_frame": r["median_ms"], "frame_ms": r["frame_ms"], "bytes": r["bytes"],
            "samples_per_frame": r["samples_per_frame"], "breakdown_ms": r["breakdown_ms"],
            "peak_rss_mb": r["peak_rss_mb"], "skip_used": r["skip"], "views": len(ps), "H": v.H, "W": v.W,
            "cpu_busy_outside": busy, "seconds": time.perf_counter() - t0, **node()}
    return {"info": info, "files": {}}


STAGES = {"teacher": teacher, "shrink": shrink, "scratch": scratch, "export": export, "bench": bench}
