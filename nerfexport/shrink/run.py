"""Shrinking from files to files: what ``nerfexport shrink`` runs.

Options come from the command line and an optional recipe's ``[shrink]`` table (the command
line wins; a target given there replaces the recipe's target). Every input is checked and both
outputs (the checkpoint and its JSON report) are checked writable before any work; both are
written atomically at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from nerfexport.data.datasets import DataArgs, recorded_scene
from nerfexport.data.fileio import atomic_write
from nerfexport.model.checkpoint import check_writable, file_sha256, load_checkpoint, save_checkpoint
from nerfexport.shrink.pipeline import ShrinkReport, shrink_pipeline
from nerfexport.shrink.spec import TARGETS, EvalSpec, ShrinkSpec, resolve_device
from nerfexport.shrink.recipe import load_recipe

ProgressFn = Callable[[dict], None]
DEFAULT_METHOD = "auto"        # lowrank, coreset, magnitude or data-coreset, whichever shrinks best (docs/shrink.md)
DEFAULT_MINUTES = 20.0         # distillation budget: the real model flattens after 15-20 minutes here (docs/shrink.md)
STEP_CEILING = 10_000_000      # the step count when only a time budget ends the distillation


class ShrinkError(ValueError):
    """The shrink cannot be done with these inputs."""


def shrink_spec(options: dict, recipe: str | None = None) -> tuple[ShrinkSpec, str | None]:
    """The :class:`ShrinkSpec` from command-line ``options`` over the recipe's ``[shrink]`` table
    (a target given on the command line replaces the recipe's; without a budget, 20 minutes).

    Args:
        options: ``ShrinkSpec`` fields from the command line; ``None`` values are unset.
        recipe: A recipe file or shipped name, or ``None``.

    Returns:
        The checked spec and a note naming the recipe (``None`` without one). Raises
        :class:`ShrinkError` or :class:`nerfexport.shrink.recipe.RecipeError`.
    """
    fields, note = {}, None
    if recipe is not None:
        r = load_recipe(recipe)
        fields.update(r.shrink)
        note = f"recipe {r.path}: {r.description}"
    given = {k: v for k, v in options.items() if v is not None}
    if any(k in given for k in TARGETS):
        for k in TARGETS:
            fields.pop(k, None)
    fields.update(given)
    fields.setdefault("method", DEFAULT_METHOD)
    # the budget: steps alone (a recipe's or --finetune) are exact; else minutes with steps as a ceiling
    if "finetune" not in fields and "minutes" not in fields:
        fields["minutes"] = DEFAULT_MINUTES
    if "minutes" in given and "finetune" not in given and "finetune" in fields:
        fields.pop("finetune")   # --minutes replaces a recipe's step count
    if fields.get("minutes") is not None:
        fields.setdefault("finetune", STEP_CEILING)
    try:
        spec = ShrinkSpec(**fields)
        spec.validate()
    except (TypeError, ValueError) as e:
        raise ShrinkError(str(e)) from None
    return spec, note


@dataclass
class ShrinkOutputs:
    student: object
    report: ShrinkReport
    checkpoint: Path
    report_path: Path


def run_shrink(path: str | Path, out: str | Path, spec: ShrinkSpec, data: DataArgs | None = None,
               evaluation: EvalSpec | None = None, progress: ProgressFn | None = None) -> ShrinkOutputs:
    """Shrink the checkpoint ``path`` by ``spec``, distil, and write ``out`` and its report
    ``out.with_suffix(".json")``.

    Args:
        path: The teacher checkpoint.
        out: The student checkpoint to write (a ``.pt`` name; the report goes beside it).
        spec: What to shrink to and how (:func:`shrink_spec`).
        data: Overrides the dataset recorded in the checkpoint (its unset values: the recorded ones).
        evaluation: Held-out views (0: none; default 10), samples per ray, pixels (:class:`EvalSpec`).
        progress: Gets ``{"event": "note", "text"}``, ``{"event": "start", "total"}`` and the
            pipeline's stage and step events.

    Returns:
        :class:`ShrinkOutputs`: the student (on the CPU), its report and the two files.
    """
    emit = progress or (lambda e: None)
    path, out = Path(path), Path(out)
    report = out.with_suffix(".json")
    ev = evaluation if evaluation is not None else EvalSpec()
    eval_samples = ev.samples or (None, None)
    if ev.views is not None and ev.views < 0:
        raise ShrinkError(f"--eval-views must be zero or more, not {ev.views}")
    if any(n is not None and n < (1 if i == 0 else 0) for i, n in enumerate(eval_samples)):
        raise ShrinkError("--eval-coarse must be at least 1 and --eval-fine at least 0")
    if report.resolve() == out.resolve():
        raise ShrinkError(f"--out {out} would be overwritten by its own JSON report; give the checkpoint a .pt name")
    for p in (out, report):
        if p.resolve() == path.resolve():
            raise ShrinkError(f"refusing to overwrite the input {path}; choose another --out")
    check_writable(out)
    check_writable(report)   # the report too: refuse now, not after the work
    try:
        resolve_device(spec.device)   # --device cuda without a GPU: say so before loading anything
    except ValueError as e:
        raise ShrinkError(str(e)) from None
    teacher, meta, _ = load_checkpoint(path, with_train_state=True)
    try:
        targets = spec.targets(teacher)
    except ValueError as e:
        raise ShrinkError(str(e)) from None
    scene, note = recorded_scene((meta or {}).get("data"), data, teacher.cfg.ndc, owner=str(path))
    if note:
        emit({"event": "note", "text": note})
    budget = f"{spec.minutes:g} minutes of distillation" if spec.minutes else f"{spec.finetune} distillation steps"
    emit({"event": "start", "total": max(spec.finetune, 1), "minutes": spec.minutes,
          "text": f"shrinking {path} with {spec.method} (seed {spec.seed}), {budget}"})
    samples = eval_samples if any(n is not None for n in eval_samples) else None
    student, rep = shrink_pipeline(teacher, scene, spec, replace(ev, views=ev.views or None, samples=samples),
                                   progress=emit, targets=targets)
    rep.source = {"path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size}
    save_checkpoint(student, out, meta={"shrunk_from": str(path), "shrink": spec.to_dict(),
                                        "data": (meta or {}).get("data") or scene.load_args, "dataset": scene.source})
    rep.files = {"checkpoint": str(out), "bytes": out.stat().st_size, "report": str(report)}
    doc = json.dumps(rep.to_dict(), indent=1).encode()
    try:
        atomic_write(report, lambda f: f.write(doc))
    except BaseException:
        out.unlink(missing_ok=True)   # both outputs or neither
        raise
    return ShrinkOutputs(student, rep, out, report)

