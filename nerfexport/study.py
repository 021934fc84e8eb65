"""The shrink study: every scoring method at several widths, before and after distillation,
against the teacher and against networks of the same widths trained from scratch.

Rows are appended to a JSON file as they finish, so an interrupted study resumes where it
stopped. ``markdown_table`` turns the JSON into the table of ``docs/shrink.md``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from . import checkpoint as ckpt
from .calibration import draw_samples
from .datasets import Scene
from .distill import DistillConfig, build_bank, distill
from .fileio import atomic_write
from .scoring import METHODS
from .shrink import ShrinkSpec, parameter_counts, shrink_model
from .train import TrainConfig, autocast_dtype, evaluate, new_model, train


def _load_rows(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"rows": []}


def _save(path: Path, doc: dict) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(doc, indent=1).encode()))


def run_study(teacher_path: str | Path, scene: Scene, out_dir: str | Path, widths=(128, 64), methods=METHODS,
              finetune: dict[int, int] | None = None, eval_views: int = 10, eval_samples=(32, 64),
              calib_rays: int = 1024, distill_cfg: DistillConfig | None = None, scratch: bool = True,
              seed: int = 0, progress: Callable[[dict], None] | None = None) -> dict:
    """Run (or resume) the study; returns the JSON document (also in ``out_dir/study.json``).

    ``finetune``: distillation steps per width. Students are saved as
    ``out_dir/{method}-w{width}.pt`` (the export and bench stages reuse them).
    """
    emit = progress or (lambda e: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath = out_dir / "study.json"
    doc = _load_rows(jpath)
    done = {(r["kind"], r["method"], r["width"]) for r in doc["rows"]}
    teacher, meta, state = ckpt.load_checkpoint(teacher_path, with_train_state=True)
    amp = autocast_dtype("auto", torch.device("cpu"))
    nc, nf = eval_samples
    finetune = finetune or {w: 500 for w in widths}
    dc = distill_cfg or DistillConfig()
    train_minutes = float((meta or {}).get("train_seconds", 0.0)) / 60.0
    if "teacher" not in doc:
        emit({"event": "stage", "stage": "teacher evaluation"})
        t = time.perf_counter()
        r = evaluate(teacher, scene, "test", eval_views, nc, nf, amp=amp)
        doc["teacher"] = {"path": str(teacher_path), "psnr": r.psnr, "ssim": r.ssim,
                          "params": parameter_counts(teacher)["total"],
                          "width": max(teacher.coarse.cfg.widths), "bytes": Path(teacher_path).stat().st_size,
                          "train_minutes": train_minutes, "eval_seconds": time.perf_counter() - t,
                          "train_config": (state or {}).get("train_config")}
        doc["settings"] = {"eval_views": eval_views, "eval_samples": list(eval_samples), "calib_rays": calib_rays,
                           "finetune": {str(k): v for k, v in finetune.items()}, "distill": dc.to_dict(),
                           "seed": seed, "machine": f"{platform.processor() or platform.machine()}, "
                                                     f"{os.cpu_count()} cores, torch {torch.__version__}"}
        _save(jpath, doc)
        emit({"event": "teacher", **doc["teacher"]})

    def add(row: dict) -> None:
        doc["rows"].append(row)
        _save(jpath, doc)
        emit({"event": "row", **row})

    # teacher-free baselines: the same widths trained from scratch for the teacher's training
    # time plus what shrinking and fine-tuning that width cost (filled in after the shrink rows)
    calib = bank = None
    for width in widths:
        for method in methods:
            if ("shrink", method, width) in done:
                continue
            if calib is None:
                emit({"event": "stage", "stage": "calibration and teacher bank"})
                t = time.perf_counter()
                calib = draw_samples(teacher, scene, calib_rays, seed)
                calib_s = time.perf_counter() - t
                bank = build_bank(teacher, scene, dc.bank_rays, dc.n_coarse, dc.n_fine, seed, amp)
            emit({"event": "stage", "stage": f"{method} w{width}"})
            t = time.perf_counter()
            student, info = shrink_model(teacher, ShrinkSpec(method=method, width=width, seed=seed), calib)
            prune_s = time.perf_counter() - t + calib_s
            before = evaluate(student, scene, "test", eval_views, nc, nf, amp=amp)
            cfg = replace(dc, steps=finetune[width], seed=seed)
            res = distill(student, bank, cfg, teacher.cfg.white_bkgd)
            after = evaluate(student, scene, "test", eval_views, nc, nf, amp=amp)
            path = out_dir / f"{method}-w{width}.pt"
            ckpt.save_checkpoint(student, path, meta={"shrunk_from": str(teacher_path), "method": method,
                                                      "width": width, "finetune": finetune[width],
                                                      "data": (meta or {}).get("data") or scene.load_args})
            add({"kind": "shrink", "method": method, "width": width, "params": info.params_after["total"],
                 "bytes": path.stat().st_size, "psnr_pruned": before.psnr, "ssim_pruned": before.ssim,
                 "psnr": after.psnr, "ssim": after.ssim, "finetune_steps": finetune[width],
                 "seconds": {"prune": prune_s, "bank": bank.seconds, "finetune": res.seconds},
                 "checkpoint": str(path)})
    if scratch:
        tc0 = (doc["teacher"].get("train_config") or {})
        for width in widths:
            if ("scratch", "scratch", width) in done:
                continue
            rows = [r for r in doc["rows"] if r["kind"] == "shrink" and r["width"] == width]
            extra = max((sum(r["seconds"].values()) for r in rows), default=0.0) / 60.0
            minutes = train_minutes + extra
            emit({"event": "stage", "stage": f"scratch w{width} ({minutes:.1f} min)"})
            model = new_model(scene, width, len(teacher.coarse.cfg.widths), teacher.fine is not None,
                              teacher.cfg.n_coarse, teacher.cfg.n_fine, seed=seed)
            known = set(TrainConfig.__dataclass_fields__)
            tc = TrainConfig(**{k: v for k, v in tc0.items() if k in known})
            tc.steps, tc.max_minutes, tc.eval_every_minutes, tc.seed = 10 ** 6, minutes, None, seed
            path = out_dir / f"scratch-w{width}.pt"
            res = train(model, scene, tc, path, resume=True)
            r = evaluate(model, scene, "test", eval_views, nc, nf, amp=amp)
            add({"kind": "scratch", "method": "scratch", "width": width, "params": parameter_counts(model)["total"],
                 "bytes": path.stat().st_size, "psnr_pruned": None, "ssim_pruned": None, "psnr": r.psnr,
                 "ssim": r.ssim, "finetune_steps": None, "steps": res.steps,
                 "seconds": {"train": res.train_seconds}, "checkpoint": str(path)})
    return doc


METHOD_LABELS = {"uniform": "uniform (random)", "magnitude-in": "magnitude, incoming", "magnitude-out":
                 "magnitude, outgoing", "magnitude": "magnitude, in x out", "activation": "activation-aware",
                 "coreset": "coreset (Mussay et al.)", "data-coreset": "data-aware coreset",
                 "scratch": "trained from scratch"}


def markdown_table(doc: dict) -> str:
    """The study as a Markdown table (teacher first, then each width's rows)."""
    t = doc["teacher"]
    s = doc["settings"]
    lines = [f"Held-out PSNR/SSIM on {s['eval_views']} test views at {s['eval_samples'][0]}+{s['eval_samples'][1]} "
             f"samples per ray (bf16); parameters and fp32 checkpoint size are for coarse + fine together. "
             f"Machine: {s['machine']}.", "",
             "| method | width | parameters | size [MB] | PSNR pruned | PSNR fine-tuned | vs teacher [dB] | SSIM | "
             "time [min] |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| teacher | {t.get('width', '')} | {t['params']:,} | {t['bytes'] / 1e6:.2f} | | {t['psnr']:.2f} | 0.00 | {t['ssim']:.3f} | "
             f"{t['train_minutes']:.1f} (training) |"]
    for width in sorted({r["width"] for r in doc["rows"]}, reverse=True):
        for r in sorted((r for r in doc["rows"] if r["width"] == width),
                        key=lambda r: (r["kind"] == "scratch", list(METHOD_LABELS).index(r["method"]))):
            mins = sum(r["seconds"].values()) / 60.0
            pr = "" if r["psnr_pruned"] is None else f"{r['psnr_pruned']:.2f}"
            how = (f"{mins:.1f} (training)" if r["kind"] == "scratch"
                   else f"{mins:.1f} ({r['finetune_steps']} steps)")
            lines.append(f"| {METHOD_LABELS.get(r['method'], r['method'])} | {width} | {r['params']:,} | "
                         f"{r['bytes'] / 1e6:.2f} | {pr} | {r['psnr']:.2f} | {r['psnr'] - t['psnr']:+.2f} | "
                         f"{r['ssim']:.3f} | {how} |")
    return "\n".join(lines) + "\n"
