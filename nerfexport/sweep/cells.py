"""The cells of a sweep and the stages they share.

A cell is one combination of the axes on one scene; it is the last of a chain of stages:
``teacher`` (train the scene's teacher when it is a dataset, evaluate it) -> the model
(``shrink``; ``scratch``: the width trained from scratch; method ``none``: the teacher itself)
-> ``export`` -> ``bench``. Cells that share a prefix of the chain share its stages: one shrink
for every precision and runtime of a (scene, method, width, fine-tune), one export for every
runtime and skipping of a (shrink, precision, calibration). Axes that do not apply are folded
away (calibration of an fp32 export, width of method ``none``, precision of a torch runtime, which
renders the checkpoint), so no two cells compute the same thing.

Every stage has a key: the sha256 of what it depends on (the scene file's hash, the settings of
this stage and of the stages before it, nerfexport's version); a cell's key is its last stage's.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from nerfexport import __version__
from nerfexport.sweep.spec import SceneSpec, SweepSpec

SHRINK_DEFAULTS = {"eval_views": 10, "eval_samples": [32, 64], "calib_rays": 1024, "seed": 0}
EXPORT_DEFAULTS = {"calib_rays": 512, "grid": True, "grid_res": 128, "grid_alpha": 0.2}
BENCH_DEFAULTS = {"views": 5, "repeat": 3, "samples": None}


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_hash(path: Path) -> str:
    from nerfexport.data.fileio import sha256
    return sha256(path)


def folder_hash(path: Path) -> str:
    """A dataset folder's fingerprint: every file's relative path and size, and the contents of
    its small files (camera files: ``transforms_*.json``, ``poses_bounds.npy``). Images are not
    read (a dataset of hundreds of views hashes in milliseconds); a changed image of the same
    size is not noticed."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            p = Path(root) / f
            rel = p.relative_to(path).as_posix()
            try:
                size = p.stat().st_size
            except OSError:
                continue
            h.update(f"{rel}\0{size}\0".encode())
            if size <= (1 << 20) and (p.suffix in (".json", ".npy", ".txt")):
                h.update(p.read_bytes())
    return h.hexdigest()


def scene_hash(scene: SceneSpec) -> str:
    src = file_hash(scene.checkpoint) if scene.checkpoint is not None else folder_hash(scene.dataset)
    data = folder_hash(scene.data) if scene.data is not None else None
    return digest({"source": src, "data": data})


@dataclass
class Stage:
    """One unit of work: ``kind`` is teacher, shrink, scratch, export or bench; ``deps`` are
    the keys of the stages whose results it takes (``soft``: taken if they finished, for the
    from-scratch budget); ``params``: what the stage function needs (JSON-able)."""

    key: str
    kind: str
    scene: str
    params: dict
    deps: list[str] = field(default_factory=list)
    soft: list[str] = field(default_factory=list)
    gpu: bool = False


@dataclass
class Cell:
    scene: str
    method: str
    width: int | None
    finetune: int | None
    precision: str | None
    calibration: str | None
    runtime: str | None
    skip: bool | None
    stages: list[str]

    @property
    def key(self) -> str:
        return self.stages[-1]

    def recipe(self) -> dict:
        return {"scene": self.scene, "method": self.method, "width": self.width, "finetune": self.finetune,
                "precision": self.precision, "calibration": self.calibration,
                "runtime": None if self.runtime is None else Path(self.runtime).stem if self.runtime.endswith(".toml")
                else self.runtime, "skip": self.skip}


@dataclass
class Plan:
    cells: list[Cell]
    stages: dict[str, Stage]   # key -> stage, in an order where every stage follows its deps


def _runtime_info(ref: str) -> dict:
    from nerfexport.deploy.runtime import load_runtime, runs_on_tensorrt
    spec = load_runtime(ref)
    text = Path(spec.path).read_bytes() if spec.path else b""
    return {"name": spec.name, "ref": ref, "kind": spec.kind, "sha256": hashlib.sha256(text).hexdigest(),
            "gpu": bool(spec.uses_cuda), "trt": spec.kind == "tensorrt", "trt_target": runs_on_tensorrt(spec)}


def plan(spec: SweepSpec, hashes: dict[str, str] | None = None) -> Plan:
    """Expand ``spec``'s axes into cells and the stages they need.

    Args:
        spec: The sweep file, read (:func:`nerfexport.sweep.spec.load_sweep`).
        hashes: Scene name -> :func:`scene_hash` (computed when not given).

    Returns:
        A :class:`Plan`: the cells (no two computing the same thing) and the stages by key, each
        after the stages it needs.
    """
    ax = spec.axes
    shrink = {**SHRINK_DEFAULTS, **spec.shrink}
    export = {**EXPORT_DEFAULTS, **spec.export}
    bench = {**BENCH_DEFAULTS, **spec.bench}
    runtimes = {r: _runtime_info(r) for r in ax.runtime}
    stages: dict[str, Stage] = {}
    cells: list[Cell] = []

    def add(st: Stage) -> str:
        stages.setdefault(st.key, st)
        return st.key

    for sc in spec.scenes:
        sh = (hashes or {}).get(sc.name) or scene_hash(sc)
        root = {"version": __version__, "scene": sh, "data": sc.data_args(), "train": sc.train,
                "kind": "dataset" if sc.dataset is not None else "checkpoint"}
        evals = {"eval_views": shrink["eval_views"], "eval_samples": shrink["eval_samples"]}
        teacher = add(Stage(digest({**root, "stage": "teacher", **evals}), "teacher", sc.name,
                            {"scene": _scene_params(sc), **evals}))
        models = _model_stages(spec, sc, root, teacher, add)
        for method, width, ft, mkey in models:
            if spec.until == "shrink":
                cells.append(Cell(sc.name, method, width, ft, None, None, None, None, [teacher, mkey]))
                continue
            exports = {}   # (precision, calibration, trt, target) -> key
            for rt in (runtimes.values() if spec.until == "bench" else [None]):
                if rt is not None and rt["kind"] == "torch":   # renders the checkpoint: no export, no skipping
                    p = {"runtime": rt, **bench}
                    key = add(Stage(digest({"model": mkey, "stage": "bench", **p}), "bench", sc.name,
                                    {"scene": _scene_params(sc), **p}, [mkey], gpu=rt["gpu"]))
                    cells.append(Cell(sc.name, method, width, ft, None, None, rt["ref"], None, [teacher, mkey, key]))
                    continue
                for prec in ax.precision:
                    for cal in (ax.calibration if prec == "int8" else [None]):
                        trt = bool(rt and rt["trt"])
                        target = "tensorrt" if rt and rt["trt_target"] else "cpu"
                        p = {"precision": prec, "calibration": cal, "tensorrt": trt,
                             "target": target if prec == "int8" else None, **export}
                        ekey = exports.get((prec, cal, trt, p["target"]))
                        if ekey is None:
                            ekey = add(Stage(digest({"model": mkey, "stage": "export", **p}), "export", sc.name,
                                             {"scene": _scene_params(sc), **p}, [mkey], gpu=trt))
                            exports[(prec, cal, trt, p["target"])] = ekey
                        if rt is None:
                            cells.append(Cell(sc.name, method, width, ft, prec, cal, None, None,
                                              [teacher, mkey, ekey]))
                            continue
                        for skip in ax.skip:
                            p = {"runtime": rt, "skip": skip, **bench}
                            key = add(Stage(digest({"export": ekey, "stage": "bench", **p}), "bench", sc.name,
                                            {"scene": _scene_params(sc), **p}, [mkey, ekey], gpu=rt["gpu"]))
                            cells.append(Cell(sc.name, method, width, ft, prec, cal, rt["ref"], skip,
                                              [teacher, mkey, ekey, key]))
    seen, uniq = set(), []
    for c in cells:
        if c.key not in seen:
            seen.add(c.key)
            uniq.append(c)
    return Plan(uniq, stages)


def _model_stages(spec: SweepSpec, sc: SceneSpec, root: dict, teacher: str, add) -> list[tuple]:
    """The model stages of scene ``sc`` (``shrink`` per method, width and fine-tune; ``scratch``
    per width; method ``none``: the teacher itself), added through ``add``; returns
    ``(method, width, finetune, stage key)`` for each."""
    ax = spec.axes
    shrink = {**SHRINK_DEFAULTS, **spec.shrink}
    evals = {"eval_views": shrink["eval_views"], "eval_samples": shrink["eval_samples"]}
    models = []
    for method in ax.method:
        if method == "none":
            models.append((method, None, None, teacher))
            continue
        for width in ax.width:
            if method == "scratch":
                continue
            for ft in ax.finetunes(width):
                p = {"method": method, "width": width, "finetune": ft, **shrink, "distill": spec.distill}
                models.append((method, width, ft, add(Stage(digest({**root, "stage": "shrink", **p}), "shrink",
                                                              sc.name, {"scene": _scene_params(sc), **p},
                                                              [teacher]))))
    if "scratch" in ax.method:
        for width in ax.width:
            siblings = [k for m, w, _, k in models if w == width and m not in ("none", "scratch")]
            p = {"width": width, **evals, "seed": shrink["seed"], **spec.scratch}
            budget = {} if "minutes" in spec.scratch else {"siblings": sorted(siblings)}
            key = digest({**root, "stage": "scratch", **p, **budget})
            models.append(("scratch", width, None, add(Stage(key, "scratch", sc.name, {"scene": _scene_params(sc),
                                                                                    **p}, [teacher],
                                                              [] if budget == {} else siblings))))
    return models


def _scene_params(sc: SceneSpec) -> dict:
    return {"name": sc.name, "checkpoint": None if sc.checkpoint is None else str(sc.checkpoint),
            "dataset": None if sc.dataset is None else str(sc.dataset), "train": sc.train, **sc.data_args()}
