"""The shrink study: every scoring method at several widths, before and after distillation,
against the teacher and against networks of the same widths trained from scratch.

Rows are appended to a JSON file as they finish, so an interrupted study resumes where it
stopped. ``markdown_table`` turns the JSON into the table of ``docs/shrink.md``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from nerfexport.deploy.machine import machine
from nerfexport.model import checkpoint as ckpt
from nerfexport.data.datasets import DataArgs, Scene
from nerfexport.shrink.distill import DistillConfig
from nerfexport.data.fileio import atomic_write
from nerfexport.shrink.scoring import METHODS
from nerfexport.shrink.pipeline import parameter_counts, shrink_pipeline
from nerfexport.shrink.spec import SPEC_METHODS, EvalSpec, ShrinkSpec
from nerfexport.train.device import autocast_dtype
from nerfexport.train.evaluate import evaluate, pixel_psnr
from nerfexport.train.factory import new_model
from nerfexport.train.loop import TrainConfig, train
from nerfexport.train.evaluate import eval_pixels as draw_pixels


def _load_rows(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"rows": []}


def _save(path: Path, doc: dict) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(doc, indent=1).encode()))


def scratch_extra_minutes(rows: list[dict]) -> float:
    """What shrinking and fine-tuning a width cost, from its shrink rows (``row["seconds"]``):
    the median row's minutes (robust to one row slowed by other load on the machine)."""
    costs = sorted(sum(r["seconds"].values()) for r in rows)
    return (costs[len(costs) // 2] if costs else 0.0) / 60.0


def scratch_train_config(train_config: dict | None, meta: dict | None, minutes: float,
                         step_seconds: float | None, seed: int = 0) -> TrainConfig:
    """The teacher's training recipe (``train_config``, as its checkpoint records it) for a
    from-scratch baseline with a budget of ``minutes``: with ``step_seconds`` (seconds per step
    of that width on an idle machine) a step count; without, wall-clock minutes, with the
    learning rate decaying over a rough guess from the teacher's steps per minute (``meta``)."""
    known = set(TrainConfig.__dataclass_fields__)
    tc = TrainConfig(**{k: v for k, v in (train_config or {}).items() if k in known})
    # a teacher grown from a narrower width (make teacher: 128, then 256) records that growth; the
    # baseline trains its own width throughout, as the shrunk students have it
    tc.grow_from = None
    if step_seconds:
        tc.steps, tc.max_minutes = int(round(minutes * 60.0 / step_seconds)), None
    else:
        train_minutes = float((meta or {}).get("train_seconds", 0.0)) / 60.0
        est = float((meta or {}).get("steps", 0) or 0) / max(train_minutes, 1e-9)  # teacher's steps/minute
        tc.steps, tc.max_minutes = max(1, int(est * minutes * 4)), minutes  # decay over a rough guess
    tc.eval_every_minutes, tc.seed = None, seed
    return tc


@dataclass
class StudyOptions:
    """What :func:`run_study` compares and how.

    Attributes:
        widths: The widths (the cost of) every method shrinks to.
        methods: Shrink methods (``ShrinkSpec.method`` values).
        finetune: Distillation steps per width (default: 500 each).
        eval_views: Held-out test views of every evaluation.
        eval_samples: ``(coarse, fine)`` samples per ray of every evaluation.
        calib_rays: Training rays for the calibration statistics.
        distill_cfg: The distillation's settings (its steps and seed come from here).
        scratch: Also train each width from scratch (for the shrink rows' time plus the teacher's).
        seed: Seeds calibration, distillation and the baselines.
        step_seconds: Seconds per training step of each width on an idle machine: the scratch
            budget becomes a step count.
        eval_pixels: Score on that many fixed pixels of the views (PSNR only) instead of whole views.
    """

    widths: tuple[int, ...] = (128, 64)
    methods: tuple[str, ...] = METHODS
    finetune: dict[int, int] | None = None
    eval_views: int = 10
    eval_samples: tuple[int, int] = (32, 64)
    calib_rays: int = 1024
    distill_cfg: DistillConfig | None = None
    scratch: bool = True
    seed: int = 0
    step_seconds: dict[int, float] | None = None
    eval_pixels: int | None = None


def run_study(teacher_path: str | Path, scene: Scene, out_dir: str | Path, options: StudyOptions | None = None,
              progress: Callable[[dict], None] | None = None) -> dict:
    """Run (or resume) the study; returns the JSON document (also in ``out_dir/study.json``).

    Students are saved as ``out_dir/{method}-w{width}.pt`` (the export and bench stages reuse
    them). The from-scratch baselines get the teacher's training time plus the median cost of
    shrinking and fine-tuning that width. With ``options.step_seconds`` (seconds per training step
    of each width, measured on an idle machine) that budget becomes a step count, so the baseline
    gets the same compute however busy the machine is, and its learning rate decays over exactly
    those steps; without it the budget is wall-clock time.

    Args:
        teacher_path: The teacher checkpoint.
        scene: Its scene, at the resolution the evaluations use.
        out_dir: Folder for ``study.json`` and the students (resumed when it holds them).
        options: What to compare (:class:`StudyOptions`; default: its defaults).
        progress: Gets ``{"event": "stage"|"teacher"|"row", ...}``.

    Returns:
        ``{"teacher": {...}, "settings": {...}, "rows": [...]}``.
    """
    o = replace(options) if options is not None else StudyOptions()
    o.finetune = o.finetune or {w: 500 for w in o.widths}
    o.distill_cfg = o.distill_cfg or DistillConfig()
    emit = progress or (lambda e: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath = out_dir / "study.json"
    doc = _load_rows(jpath)
    done = {(r["kind"], r["method"], r["width"]) for r in doc["rows"]}
    teacher, meta, state = ckpt.load_checkpoint(teacher_path, with_train_state=True)
    if "teacher" not in doc:
        _teacher_row(doc, teacher_path, teacher, meta, state, scene, o, emit)
        _save(jpath, doc)
        emit({"event": "teacher", **doc["teacher"]})
    doc["settings"]["finetune"] = {str(k): v for k, v in o.finetune.items()}  # a resumed study may change them

    def add(row: dict) -> None:
        doc["rows"].append(row)
        _save(jpath, doc)
        emit({"event": "row", **row})

    for width in o.widths:
        for method in o.methods:
            if ("shrink", method, width) not in done:
                emit({"event": "stage", "stage": f"{method} w{width}"})
                add(_shrink_row(teacher_path, teacher, meta, scene, out_dir, method, width, o))
    # teacher-free baselines: the same widths trained from scratch for the teacher's training
    # time plus what shrinking and fine-tuning that width cost (after the shrink rows)
    if o.scratch:
        for width in o.widths:
            if ("scratch", "scratch", width) not in done:
                add(_scratch_row(doc, teacher, meta, scene, out_dir, width, o, emit))
    return doc


def _teacher_row(doc: dict, teacher_path, teacher, meta: dict | None, state: dict | None, scene: Scene,
                 o: StudyOptions, emit) -> None:
    """Evaluate the teacher as the students will be; fill ``doc["teacher"]`` and ``doc["settings"]``."""
    amp = autocast_dtype("auto", torch.device("cpu"))
    nc, nf = o.eval_samples
    emit({"event": "stage", "stage": "teacher evaluation"})
    t = time.perf_counter()
    if o.eval_pixels:     # the estimate shrink_pipeline makes of the students, on the same pixels
        held = {k: torch.from_numpy(a) for k, a in draw_pixels(scene, o.eval_pixels, o.eval_views, o.seed).items()}
        psnr_t, ssim_t = pixel_psnr(teacher, held, nc, nf, amp), None
    else:
        r = evaluate(teacher, scene, "test", o.eval_views, nc, nf, amp=amp)
        psnr_t, ssim_t = r.psnr, r.ssim
    doc["teacher"] = {"path": str(teacher_path), "psnr": psnr_t, "ssim": ssim_t,
                      "params": parameter_counts(teacher)["total"],
                      "width": max(teacher.coarse.cfg.widths), "bytes": Path(teacher_path).stat().st_size,
                      "macs": sum(n.cfg.macs() for n in (teacher.coarse, teacher.fine) if n is not None),
                      "train_minutes": _train_minutes(meta), "eval_seconds": time.perf_counter() - t,
                      "train_config": (state or {}).get("train_config")}
    doc["settings"] = {"eval_views": o.eval_views, "eval_samples": list(o.eval_samples), "calib_rays": o.calib_rays,
                       "finetune": {str(k): v for k, v in o.finetune.items()}, "distill": o.distill_cfg.to_dict(),
                       "seed": o.seed, "machine": f"{machine()}, torch {torch.__version__}",
                       "eval_pixels": o.eval_pixels, "resolution": [scene.H, scene.W],
                       "precision": eval_precision()}


def _train_minutes(meta: dict | None) -> float:
    return float((meta or {}).get("train_seconds", 0.0)) / 60.0


def _shrink_row(teacher_path, teacher, meta: dict | None, scene: Scene, out_dir: Path, method: str, width: int,
                o: StudyOptions) -> dict:
    """Shrink the teacher by ``method`` to ``width``, distil, save the student; its row."""
    spec = ShrinkSpec(method=method, width=width, finetune=o.finetune[width], calib_rays=o.calib_rays, seed=o.seed)
    student, rep = shrink_pipeline(teacher, scene, spec, EvalSpec(o.eval_views, o.eval_samples, o.eval_pixels),
                                   distill_cfg=o.distill_cfg)
    path = out_dir / f"{method}-w{width}.pt"
    ckpt.save_checkpoint(student, path, meta={"shrunk_from": str(teacher_path), "method": method,
                                              "width": width, "finetune": o.finetune[width],
                                              "data": (meta or {}).get("data") or scene.load_args})
    s = rep.seconds
    tuned = rep.psnr_after_finetune is not None
    return {"kind": "shrink", "method": method, "chose": rep.method, "width": width,
            "params": rep.params_after["total"], "macs": sum(rep.macs_after.values()),
            "bytes": path.stat().st_size, "psnr_pruned": rep.psnr_before_finetune,
            "ssim_pruned": rep.ssim_before_finetune,
            "psnr": rep.psnr_after_finetune if tuned else rep.psnr_before_finetune,
            "ssim": rep.ssim_after_finetune if tuned else rep.ssim_before_finetune,
            "finetune_steps": o.finetune[width],
            "seconds": {"prune": s.get("calibrate", 0.0) + s.get("prune", 0.0), "bank": s.get("bank", 0.0),
                        "finetune": s.get("finetune", 0.0)},
            "checkpoint": str(path)}


def _scratch_row(doc: dict, teacher, meta: dict | None, scene: Scene, out_dir: Path, width: int, o: StudyOptions,
                 emit) -> dict:
    """Train ``width`` from scratch for the teacher's time plus the median shrink row's; its row."""
    tc0 = (doc["teacher"].get("train_config") or {})
    rows = [r for r in doc["rows"] if r["kind"] == "shrink" and r["width"] == width]
    minutes = _train_minutes(meta) + scratch_extra_minutes(rows)
    emit({"event": "stage", "stage": f"scratch w{width} ({minutes:.1f} min)"})
    model = new_model(scene, width, len(teacher.coarse.cfg.widths), teacher.fine is not None,
                      teacher.cfg.n_coarse, teacher.cfg.n_fine, seed=o.seed)
    step_seconds = (o.step_seconds or {}).get(width)
    tc = scratch_train_config(tc0, meta, minutes, step_seconds, o.seed)
    path = out_dir / f"scratch-w{width}.pt"
    t = time.perf_counter()
    res = train(model, scene, tc, path, resume=True)
    wall = time.perf_counter() - t
    nc, nf = o.eval_samples
    r = evaluate(model, scene, "test", o.eval_views, nc, nf, amp=autocast_dtype("auto", torch.device("cpu")))
    return {"kind": "scratch", "method": "scratch", "width": width, "params": parameter_counts(model)["total"],
            "bytes": path.stat().st_size, "psnr_pruned": None, "ssim_pruned": None, "psnr": r.psnr,
            "ssim": r.ssim, "finetune_steps": None, "steps": res.steps, "budget_minutes": minutes,
            "step_seconds": step_seconds, "wall_seconds": wall,
            "seconds": {"train": minutes * 60.0 if o.step_seconds and width in o.step_seconds else res.train_seconds},
            "checkpoint": str(path)}


METHOD_LABELS = {"uniform": "uniform (random)", "magnitude-in": "magnitude, incoming", "magnitude-out":
                 "magnitude, outgoing", "magnitude": "magnitude, in x out", "activation": "activation-aware",
                 "coreset": "coreset (Mussay et al.)", "data-coreset": "data-aware coreset",
                 "lowrank": "low rank (activation-aware)",
                 "auto": "auto (best of lowrank, coreset, magnitude, data-coreset)", "scratch": "trained from scratch"}


def eval_precision() -> str:
    """What the held-out evaluations on this machine's CPU run in: ``bf16`` or ``fp32``."""
    return "bf16" if autocast_dtype("auto", torch.device("cpu")) is not None else "fp32"


def _ssim(x) -> str:
    return "" if x is None else f"{x:.3f}"


def markdown_table(doc: dict) -> str:
    """The study as a Markdown table (teacher first, then each width's rows). ``cost``: the
    student's multiply-adds per evaluated point against the teacher's (both networks)."""
    t = doc["teacher"]
    s = doc["settings"]
    where = (f"{s['eval_pixels']:,} fixed pixels of {s['eval_views']} test views (PSNR only)" if s.get("eval_pixels")
             else f"{s['eval_views']} test views")
    res = f" at {s['resolution'][1]}x{s['resolution'][0]}" if s.get("resolution") else ""
    lines = [f"Held-out PSNR/SSIM on {where}{res}, {s['eval_samples'][0]}+{s['eval_samples'][1]} "
             f"samples per ray{f' ({p})' if (p := s.get('precision')) else ''}; parameters and fp32 checkpoint "
             f"size are for coarse + fine together. "
             f"Machine: {s['machine']}.", "",
             "| method | width (cost of) | cost | parameters | size [MB] | PSNR before distillation | "
             "PSNR distilled | vs teacher [dB] | SSIM | time [min] |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| teacher | {t.get('width', '')} | 1.00 | {t['params']:,} | {t['bytes'] / 1e6:.2f} | | {t['psnr']:.2f} | "
             f"0.00 | {_ssim(t['ssim'])} | {t['train_minutes']:.1f} (training) |"]
    for width in sorted({r["width"] for r in doc["rows"]}, reverse=True):
        for r in sorted((r for r in doc["rows"] if r["width"] == width),
                        key=lambda r: (r["kind"] == "scratch", list(METHOD_LABELS).index(r["method"])
                                       if r["method"] in METHOD_LABELS else 99)):
            mins = sum(r["seconds"].values()) / 60.0
            pr = "" if r["psnr_pruned"] is None else f"{r['psnr_pruned']:.2f}"
            how = (f"{mins:.1f} (training, {r.get('steps', 0):,} steps)" if r["kind"] == "scratch"
                   else f"{mins:.1f} ({r['finetune_steps']} steps)")
            cost = f"{r['macs'] / t['macs']:.2f}" if r.get("macs") and t.get("macs") else ""
            label = METHOD_LABELS.get(r["method"], r["method"])
            if r.get("chose") and r["chose"] != r["method"]:
                label += f": {r['chose']}"
            lines.append(f"| {label} | {width} | {cost} | {r['params']:,} | "
                         f"{r['bytes'] / 1e6:.2f} | {pr} | {r['psnr']:.2f} | {r['psnr'] - t['psnr']:+.2f} | "
                         f"{_ssim(r['ssim'])} | {how} |")
    return "\n".join(lines) + "\n"


def run_export_study(models: dict[str, str | Path], scene: Scene, out_dir: str | Path,
                     methods=("minmax", "entropy", "percentile"), views: int = 10, calib_rays: int = 512,
                     threads: int | None = None, seed: int = 0, progress: Callable[[dict], None] | None = None) -> dict:
    """fp32 and static int8 (each calibration method) bundles of each model, rendered through
    onnxruntime on the CPU at the models' own sample counts; rows are cached in ``export.json``."""
    from nerfexport.deploy.bundle import open_bundle
    from nerfexport.shrink.calibration import draw_samples
    from nerfexport.export.bundle_writer import ExportOptions, export_bundle
    from nerfexport.export.quantize import Int8Settings
    from nerfexport.deploy.render import Renderer, SceneSettings, render_and_score
    from nerfexport.deploy.ort_network import OrtNetwork

    emit = progress or (lambda e: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath = out_dir / "export.json"
    doc = _load_rows(jpath)
    doc.setdefault("settings", {"views": views, "calib_rays": calib_rays, "runtime": "onnxruntime CPU",
                                "machine": f"{os.cpu_count()} cores"})
    images, poses = scene.subset("test")
    images, poses = images[:views], poses[:views]
    done = {(r["model"], r["precision"], r.get("method")) for r in doc["rows"]}
    for label, path in models.items():
        model, meta, _ = ckpt.load_checkpoint(path, with_train_state=True)
        calib = None
        for prec, method in [("fp32", None)] + [("int8", m) for m in methods]:
            if (label, prec, method) in done:
                continue
            emit({"event": "stage", "stage": f"{label} {prec} {method or ''}"})
            if prec == "int8" and calib is None:
                calib = draw_samples(model, scene, calib_rays, seed)
            bdir = out_dir / f"{label}-{prec}{'-' + method if method else ''}"
            opts = ExportOptions(precision=prec, int8=Int8Settings(method=method or "minmax"), calib_rays=calib_rays)
            t = time.perf_counter()
            export_bundle(model, bdir, opts, source=path, calib=calib, force=True)
            export_s = time.perf_counter() - t
            b = open_bundle(bdir)
            r = Renderer(OrtNetwork(b.network_path("coarse"), threads=threads),
                         OrtNetwork(b.network_path("fine"), threads=threads) if b.network_path("fine") else None,
                         SceneSettings.from_manifest(b.manifest), chunk=256,
                         workers=max(1, (os.cpu_count() or 1) // max(1, threads or (os.cpu_count() or 1))))
            sc = render_and_score(r, images, poses, scene.H, scene.W, scene.cam)
            row = {"model": label, "checkpoint": str(path), "precision": prec, "method": method,
                   "params": parameter_counts(model)["total"], "bytes": b.size_bytes(),
                   "checkpoint_bytes": Path(path).stat().st_size, "psnr": sc.psnr, "ssim": sc.ssim,
                   "export_seconds": export_s, "samples": [b.manifest.scene.n_coarse, b.manifest.scene.n_fine],
                   "bundle": str(bdir)}
            doc["rows"].append(row)
            _save(jpath, doc)
            emit({"event": "row", **row})
    return doc


def export_markdown(doc: dict, reference: str) -> str:
    """The export study as a Markdown table; sizes relative to ``reference``'s fp32 bundle."""
    ref = next(r for r in doc["rows"] if r["model"] == reference and r["precision"] == "fp32")
    s = doc["settings"]
    lines = [f"PSNR/SSIM on {s['views']} held-out views rendered by the lean renderer through onnxruntime's CPU "
             f"provider at {ref['samples'][0]}+{ref['samples'][1]} samples per ray; int8 is static QDQ (U8S8, "
             f"per-channel symmetric weights) calibrated on {s['calib_rays']} training rays.", "",
             "| model | precision | calibration | bundle [MB] | smaller than teacher fp32 | PSNR | vs own fp32 [dB] | SSIM |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for model in dict.fromkeys(r["model"] for r in doc["rows"]):
        rows = [r for r in doc["rows"] if r["model"] == model]
        fp = next((r for r in rows if r["precision"] == "fp32"), None)
        for r in rows:
            d = "" if fp is None else f"{r['psnr'] - fp['psnr']:+.2f}"
            lines.append(f"| {model} | {r['precision']} | {r['method'] or ''} | {r['bytes'] / 1e6:.3f} | "
                         f"{ref['bytes'] / r['bytes']:.1f}x | {r['psnr']:.2f} | {d} | {r['ssim']:.3f} |")
    return "\n".join(lines) + "\n"


class StudyError(ValueError):
    """A study option is unusable."""


def _pairs(text: str, key=int, value=int, what: str = "") -> dict:
    try:
        return {key(k): value(v) for k, v in (x.split(":") for x in text.split(","))}
    except ValueError:
        raise StudyError(f"{what} is like 128:600,64:600, not {text!r}") from None


def shrink_study(teacher: str | Path, out: str | Path, widths: str = "128,64", methods: str = ",".join(METHODS),
                 finetune: str = "128:600,64:600", data: DataArgs | None = None, eval_views: int = 10,
                 eval_samples=(32, 64), scratch: bool = True,
                 step_seconds: str | None = None, doc: str | Path | None = None, figure: str | Path | None = None,
                 progress: Callable[[dict], None] | None = None, eval_pixels: int | None = None
                 ) -> tuple[dict, str]:
    """``nerfexport shrink-study``: parse the options, run (or resume) :func:`run_study`, write
    the Markdown table to ``doc`` and the figure to ``figure`` when given; returns the study and
    its table."""
    from nerfexport.data.datasets import recorded_scene
    try:
        ws = [int(w) for w in widths.split(",")]
    except ValueError:
        raise StudyError(f"--widths is like 128,64, not {widths!r}") from None
    ft = _pairs(finetune, what="--finetune")
    sps = _pairs(step_seconds, value=float, what="--step-seconds") if step_seconds else None
    ms = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in ms if m not in SPEC_METHODS]
    if bad:
        raise StudyError(f"unknown method(s) {bad}; choose from {', '.join(SPEC_METHODS)}")
    if eval_pixels is not None and eval_pixels < 1:
        raise StudyError(f"--eval-pixels must be at least 1, not {eval_pixels}")
    if set(ws) - set(ft):
        raise StudyError(f"--finetune gives no steps for width(s) {sorted(set(ws) - set(ft))}")
    net, meta, _ = ckpt.load_checkpoint(teacher, with_train_state=True)
    scene, _ = recorded_scene(meta.get("data"), data, net.cfg.ndc, str(teacher))
    res = run_study(teacher, scene, out, StudyOptions(ws, ms, ft, eval_views, tuple(eval_samples), scratch=scratch,
                                                      step_seconds=sps, eval_pixels=eval_pixels), progress)
    table = markdown_table(res)
    if doc is not None:
        atomic_write(doc, lambda f: f.write(table.encode()))
    if figure is not None:
        from nerfexport.data.plots import plot_shrink_study
        plot_shrink_study(res, figure)
    return res, table


def export_study(models: list[str], out: str | Path, methods: str = "minmax,entropy,percentile",
                 data: DataArgs | None = None, views: int = 10,
                 calib_rays: int = 512, threads: int | None = None, doc: str | Path | None = None,
                 progress: Callable[[dict], None] | None = None) -> tuple[dict, str]:
    """``nerfexport export-study``: ``models`` are ``LABEL=CHECKPOINT`` (the first is the
    reference); runs :func:`run_export_study` and writes the table to ``doc`` when given."""
    from nerfexport.data.datasets import recorded_scene
    from nerfexport.export.quantize import CALIBRATION_METHODS
    pairs = {}
    for m in models:
        if "=" not in m:
            raise StudyError(f"{m!r} must be LABEL=CHECKPOINT")
        k, v = m.split("=", 1)
        pairs[k] = v
    ms = [x for x in methods.split(",") if x]
    if set(ms) - set(CALIBRATION_METHODS):
        raise StudyError(f"methods must be among {', '.join(CALIBRATION_METHODS)}")
    first = Path(next(iter(pairs.values())))
    net, meta, _ = ckpt.load_checkpoint(first, with_train_state=True)
    scene, _ = recorded_scene(meta.get("data"), data, net.cfg.ndc, str(first))
    res = run_export_study(pairs, scene, out, ms, views, calib_rays, threads, progress=progress)
    table = export_markdown(res, next(iter(pairs)))
    if doc is not None:
        atomic_write(doc, lambda f: f.write(table.encode()))
    return res, table
