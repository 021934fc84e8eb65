"""``nerfexport sweep``: read the sweep file, skip the cells already finished, run the rest on
Ray, and write the table.

The output folder holds the cache::

    OUT/cells/KEY.json          one finished (or failed) cell: recipe, row, its stages' results
    OUT/stages/KEY/stage.json   one finished stage, with its checkpoint or bundle in files/
    OUT/sweep.json, sweep.md    the table, one row per cell of this sweep file
    OUT/pareto-SCENE.png        PSNR against frame time and size (with matplotlib)
    OUT/report.md               the study table, when the file asks for one ([sweep] report)

Every file is written atomically as soon as its stage or cell ends, so an interrupted sweep
loses only what was running; a rerun executes only the cells without a finished JSON (failed
cells are tried again) and reuses every finished stage.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nerfexport.data.fileio import atomic_write
from nerfexport.sweep import table as tbl
from nerfexport.sweep.cells import BENCH_DEFAULTS, EXPORT_DEFAULTS, SHRINK_DEFAULTS, Cell, Plan, plan, scene_hash
from nerfexport.sweep.spec import SweepSpec, SweepSpecError, load_sweep

ProgressFn = Callable[[dict], None]


class SweepError(ValueError):
    """A sweep option or output folder is unusable."""


@dataclass
class SweepResult:
    doc: dict                       # what sweep.json holds
    executed: int = 0               # cells run now (finished or failed)
    cached: int = 0                 # cells taken from OUT/cells
    failed: int = 0                 # cells that failed now
    stages: dict = field(default_factory=dict)   # stage kind -> tasks run now
    files: list[str] = field(default_factory=list)
    where: str = ""                 # where Ray ran (None when nothing had to run)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _dump(path: Path, obj) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1, default=str).encode()))


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None   # missing, or left unreadable: treated as not finished


def save_stage(out: Path, key: str, kind: str, res: dict) -> None:
    d = out / "stages" / key
    if d.exists():
        shutil.rmtree(d)
    (d / "files").mkdir(parents=True)
    from nerfexport.sweep.stages import write_files
    write_files(res.get("files") or {}, d / "files")
    _dump(d / "stage.json", {"key": key, "kind": kind, "info": res["info"], "files": sorted(res.get("files") or {})})


def load_stage(out: Path, key: str, with_files: bool) -> dict | None:
    d = out / "stages" / key
    meta = _load_json(d / "stage.json")
    if not isinstance(meta, dict) or "info" not in meta:
        return None
    files = {}
    if with_files:
        for rel in meta.get("files", []):
            p = d / "files" / rel
            if not p.is_file():
                return None
            files[rel] = p.read_bytes()
    return {"info": meta["info"], "files": files}


def _settings(spec: SweepSpec) -> dict:
    sh, ex, be = {**SHRINK_DEFAULTS, **spec.shrink}, {**EXPORT_DEFAULTS, **spec.export}, {**BENCH_DEFAULTS, **spec.bench}
    return {"eval_views": sh["eval_views"], "eval_samples": sh["eval_samples"], "calib_rays": sh["calib_rays"],
            "bench_views": be["views"], "repeat": be["repeat"], "bench_samples": be["samples"],
            "export_calib_rays": ex["calib_rays"], "grid": ex["grid"], "until": spec.until, "cpus": spec.cpus}


def _infos(cell: Cell, p: Plan, outcome: dict) -> dict:
    kinds = {}
    for k in cell.stages:
        st = p.stages[k]
        kind = {"shrink": "model", "scratch": "model"}.get(st.kind, st.kind)
        kinds[kind] = outcome[k]["info"]
    if cell.method == "none":
        kinds["model"] = kinds["teacher"]
    return kinds


def _machine() -> str:
    from nerfexport.sweep.stages import node
    import importlib.metadata as md
    try:
        torch = f", torch {md.version('torch')}"
    except md.PackageNotFoundError:
        torch = ""
    return node()["machine"] + torch


def _check_options(address: str | None, max_ms: float | None, max_mb: float | None, num_cpus: int | None) -> None:
    """Raise :class:`SweepError` for the first unusable option of :func:`run_sweep`."""
    for name, v in (("--max-ms", max_ms), ("--max-mb", max_mb)):
        if v is not None and not v > 0:
            raise SweepError(f"{name} must be positive, not {v}")
    if num_cpus is not None and num_cpus < 1:
        raise SweepError(f"--num-cpus must be at least 1, not {num_cpus}")
    if num_cpus is not None and (address or os.environ.get("RAY_ADDRESS")):
        raise SweepError("--num-cpus sizes the Ray started on this machine; a cluster has the CPUs its nodes declare")


def _output_folder(out: Path) -> Path:
    """``out`` with its ``cells`` and ``stages`` folders (made when missing)."""
    if out.exists() and not out.is_dir():
        raise SweepError(f"output {out} exists and is not a folder")
    (out / "cells").mkdir(parents=True, exist_ok=True)
    (out / "stages").mkdir(exist_ok=True)
    return out


def _finished_cells(p: Plan, out: Path) -> dict[str, dict]:
    """Cell key -> its finished (ok) JSON in ``out/cells``, for the cells of ``p`` that have one."""
    finished: dict[str, dict] = {}
    for c in p.cells:
        doc = _load_json(out / "cells" / f"{c.key}.json")
        if isinstance(doc, dict) and doc.get("status") == "ok" and isinstance(doc.get("row"), dict):
            finished[c.key] = doc
    return finished


def _run_stages(spec: SweepSpec, p: Plan, run_keys: set[str], done: dict[str, dict], where: tuple,
                on_result, timer: dict, emit: ProgressFn) -> tuple[str, dict]:
    """Run the stages ``run_keys`` on Ray (``where``: the address and the local Ray's CPUs), with
    the finished ``done`` as their inputs; returns where Ray ran and the tasks run per stage kind."""
    from nerfexport.sweep import engine
    started, at = engine.connect(*where)
    try:
        timer["mode"] = engine.timer_mode()[0]
        sources = {s.name: s.checkpoint.read_bytes() for s in spec.scenes
                   if s.checkpoint is not None and any(p.stages[k].kind == "teacher" and p.stages[k].scene == s.name
                                                       for k in run_keys)}
        emit({"event": "start", "where": at, "stages": len(run_keys)})
        sub = {k: st for k, st in p.stages.items() if k in run_keys or k in done}
        rep = engine.run_stages(sub, done, spec.cpus, on_result, sources)
    finally:
        engine.shutdown(started)
    return at, rep.executed


def _write_tables(out: Path, spec: SweepSpec, doc: dict, cells: list[dict], result: SweepResult) -> None:
    """``sweep.json``, ``sweep.md`` and the report the file asks for, listed in ``result.files``."""
    _dump(out / "sweep.json", doc)
    md = tbl.markdown(doc)
    atomic_write(out / "sweep.md", lambda f: f.write(md.encode()))
    result.files = [str(out / "sweep.json"), str(out / "sweep.md")]
    if spec.report != "table":
        text = tbl.report(cells, spec.report, _machine())
        atomic_write(out / "report.md", lambda f: f.write(text.encode()))
        result.files.append(str(out / "report.md"))


def _timings(cells: list[dict]) -> str:
    """The table's sentence on how the cells were timed (and which were timed under load)."""
    loaded = sum(1 for c in cells if c.get("row", {}).get("under_load"))
    modes = {c["row"].get("timer") for c in cells if c["row"].get("ms_per_frame") is not None}
    how = {"per-node": "one per node at a time", "one at a time": "one at a time on the whole cluster (not every "
           "node has a nerfexport_timer resource)"}
    timer_text = ("no cell was timed" if not modes else "bench cells ran after every other stage of their run had "
                  "finished, " + " or ".join(how.get(m, "as recorded") for m in sorted(modes, key=str)))
    return (f"Timings: {timer_text}." + (f" {loaded} cell(s) were timed while other work took over "
                                     f"{100 * tbl.LOAD:.0f}% of their machine's CPU: their timings were taken "
                                     "under load." if loaded else ""))


def _figures(out: Path, spec: SweepSpec, doc: dict, cells: list[dict], result: SweepResult) -> None:
    """The Pareto figure of each scene (and the shrink-study figure the file asks for), listed in
    ``result.files``; without matplotlib, a note."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        result.notes.append("no Pareto figures: they need matplotlib (pip install 'nerfexport[bench]')")
        return
    for scene in dict.fromkeys(r["scene"] for r in doc["rows"]):
        if any(r["scene"] == scene and r["status"] == "ok" for r in doc["rows"]):
            f = out / f"pareto-{scene}.png"
            tbl.pareto_figure(doc["rows"], scene, f)
            result.files.append(str(f))
    if spec.report == "shrink-study":
        from nerfexport.data.plots import plot_shrink_study
        for scene in dict.fromkeys(r["scene"] for r in doc["rows"]):
            try:
                sdoc = tbl.shrink_study_doc(cells, scene, _machine())
            except StopIteration:
                continue
            if sdoc["rows"]:
                plot_shrink_study(sdoc, out / f"shrink-{scene}.png")
                result.files.append(str(out / f"shrink-{scene}.png"))


def _what_to_run(p: Plan, todo: list[Cell], out: Path) -> tuple[set[str], dict[str, dict]]:
    """The stages the unfinished cells need that have no finished result in ``out`` (and what
    those need in turn); and the finished ones they need, with their files where a stage to run
    takes them."""
    for _ in range(len(p.stages) + 1):
        run_keys: set[str] = set()
        done: dict[str, dict] = {}
        frontier = list(dict.fromkeys(k for c in todo for k in c.stages))
        while frontier:
            k = frontier.pop(0)
            if k in done or k in run_keys:
                continue
            info = load_stage(out, k, with_files=False)
            if info is None:
                run_keys.add(k)
                frontier += p.stages[k].deps + p.stages[k].soft
            else:
                done[k] = info
        lost = False
        for k in {d for r in run_keys for d in p.stages[r].deps} & set(done):
            full = load_stage(out, k, with_files=True)
            if full is None:   # its files are gone: run it again (and what it needs)
                shutil.rmtree(out / "stages" / k, ignore_errors=True)
                lost = True
            else:
                done[k] = full
        if not lost:
            return run_keys, done
    raise SweepError(f"{out}/stages keeps losing files; remove the folder and run again")


def run_sweep(path: str | Path, out: str | Path, address: str | None = None, max_ms: float | None = None,
              max_mb: float | None = None, num_cpus: int | None = None,
              progress: ProgressFn | None = None) -> SweepResult:
    """Run (or resume) the sweep file ``path`` into the folder ``out`` (the cache).

    Args:
        address: A Ray cluster (else ``RAY_ADDRESS``, else a local Ray with ``num_cpus`` CPUs).
        max_ms, max_mb: Limits the table marks cells against (frame time, bundle size).
        progress: Gets ``{"event": "plan"|"start"|"cell", ...}``.

    Returns:
        A :class:`SweepResult`: ``sweep.json``'s document, the counts and the files written.
    """
    import ray  # noqa: F401  (the sweep extra: say so before anything is read or run)

    t0 = time.perf_counter()
    emit = progress or (lambda e: None)
    _check_options(address, max_ms, max_mb, num_cpus)
    spec = load_sweep(path)
    out = _output_folder(Path(out))
    p = plan(spec, {s.name: scene_hash(s) for s in spec.scenes})
    settings = _settings(spec)
    finished = _finished_cells(p, out)
    todo = [c for c in p.cells if c.key not in finished]
    run_keys, done = _what_to_run(p, todo, out)
    emit({"event": "plan", "cells": len(p.cells), "cached": len(finished), "stages": len(run_keys)})
    result = SweepResult(doc={}, cached=len(finished))
    cells_by_stage: dict[str, list[Cell]] = {}
    for k, c in ((k, c) for c in todo for k in c.stages):
        cells_by_stage.setdefault(k, []).append(c)
    written: dict[str, dict] = {}

    def write_cell(c: Cell, outcome: dict) -> None:
        from nerfexport.sweep.engine import Failure
        err = next((outcome[k].error for k in c.stages if isinstance(outcome.get(k), Failure)), None)
        if err is None and not all(k in outcome for k in c.stages):
            return
        infos = {} if err else _infos(c, p, outcome)
        rec = c.recipe()
        doc = {"key": c.key, "recipe": rec, "status": "failed" if err else "ok", "error": err,
               "row": tbl.cell_row(rec, c.key, infos, err), "stages": infos, "settings": settings,
               "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        _dump(out / "cells" / f"{c.key}.json", doc)
        written[c.key] = doc
        result.executed += 1
        result.failed += err is not None
        emit({"event": "cell", "status": doc["status"], "label": tbl.label(rec), "scene": rec["scene"],
              "error": err, "psnr": doc["row"].get("psnr"), "done": len(written), "total": len(todo)})

    outcome: dict = dict(done)
    timer = {"mode": None}
    if todo:
        from nerfexport.sweep import engine

        def on_result(st, res) -> None:
            if not isinstance(res, engine.Failure):
                if st.kind == "bench":
                    res["info"]["timer"] = timer["mode"]
                save_stage(out, st.key, st.kind, res)
            outcome[st.key] = res
            for c in cells_by_stage.get(st.key, []):
                if c.key not in written:
                    write_cell(c, outcome)

        for c in todo:   # cells whose stages were all cached (a cell JSON lost)
            if all(k in done for k in c.stages):
                write_cell(c, outcome)
    if run_keys:   # (then todo is not empty: on_result is defined)
        result.where, result.stages = _run_stages(spec, p, run_keys, done, (address, num_cpus), on_result, timer, emit)
    cells = [written.get(c.key) or finished.get(c.key) for c in p.cells]
    cells = [c for c in cells if c is not None]
    limits = {"max_ms": max_ms, "max_mb": max_mb}
    doc = tbl.sweep_doc(str(spec.path), spec.description, cells, settings, limits, _timings(cells))
    doc["run"] = {"executed": result.executed, "cached": result.cached, "failed": result.failed,
                  "stages": result.stages, "where": result.where or None, "seconds": time.perf_counter() - t0}
    _write_tables(out, spec, doc, cells, result)
    _figures(out, spec, doc, cells, result)
    result.doc = doc
    result.seconds = time.perf_counter() - t0
    return result


__all__ = ["SweepError", "SweepResult", "SweepSpecError", "run_sweep"]
