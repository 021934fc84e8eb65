"""The sweep file: scenes, the axes of the recipe, and the settings every cell shares.

Every value is untrusted: an unknown table or key, a wrong type, an unknown method, precision,
calibration or runtime, a duplicate, a missing file are each one :class:`SweepSpecError` line
naming the file and the key. Paths are relative to the sweep file's folder::

    description = "two widths, fp32 and int8, on the lego teacher"

    [[scene]]
    name = "lego"                          # names the rows and the figure (letters, digits, . _ -)
    checkpoint = "cache/lego100-teacher.pt"
    data = "data/lego_400"                 # the dataset (default: the one the checkpoint records)
    downscale = 4
    test_every = 20

    [[scene]]                              # or a dataset to train a teacher on first
    dataset = "data/toy"
    train = { width = 64, depth = 4, steps = 2000 }

    [axes]
    method = ["coreset", "magnitude"]      # scoring methods; "none": the teacher itself; "scratch":
                                           # the width trained from scratch (see [scratch])
    width = [128, 64]
    finetune = { 128 = 1500, 64 = 750 }    # distillation steps: a list (an axis) or per width
    precision = ["fp32", "int8"]
    calibration = ["minmax"]               # int8 only
    runtime = ["ort-cpu"]                  # shipped names or runtime TOML files
    skip = [true]                          # empty-space skipping + early termination in the bench

    [shrink]   eval_views, eval_samples = [coarse, fine], calib_rays, seed
    [distill]  the distillation settings (batch_rays, lr, bank_rays, ...)
    [scratch]  step_seconds = { 128 = 0.129 }, minutes
    [export]   calib_rays, grid, grid_res, grid_alpha
    [bench]    views, repeat, samples = [coarse, fine]
    [sweep]    until = "shrink" | "export" | "bench", cpus (per task), report = "table" |
               "shrink-study" | "export-study"
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

STAGES = ("shrink", "export", "bench")
REPORTS = ("table", "shrink-study", "export-study")
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_FINETUNE = 1500   # distillation steps when axes.finetune is not given (nerfexport shrink's former default)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TOP = {"description", "scene", "axes", "shrink", "distill", "scratch", "export", "bench", "sweep"}
SCENE_KEYS = {"name", "checkpoint", "dataset", "data", "downscale", "test_every", "train"}
AXES = ("method", "width", "finetune", "precision", "calibration", "runtime", "skip")
SHRINK = {"eval_views": int, "eval_samples": list, "calib_rays": int, "seed": int}
SCRATCH = {"step_seconds": dict, "minutes": float}
EXPORT = {"calib_rays": int, "grid": bool, "grid_res": int, "grid_alpha": float}
BENCH = {"views": int, "repeat": int, "samples": list}
SWEEP = {"until": str, "cpus": int, "report": str}
SHAPE = {"width": int, "depth": int, "fine": bool, "render_coarse": int, "render_fine": int}


class SweepSpecError(ValueError):
    """The sweep file cannot be used (one line: the file, the key, what is wrong)."""


@dataclass
class SceneSpec:
    """One scene: a teacher ``checkpoint``, or a ``dataset`` to train one on (``train``: the
    network's shape and training options). ``data``/``downscale``/``test_every`` override the
    dataset the checkpoint records."""

    name: str
    checkpoint: Path | None = None
    dataset: Path | None = None
    data: Path | None = None
    downscale: int | None = None
    test_every: int | None = None
    train: dict = field(default_factory=dict)

    @property
    def source(self) -> Path:
        return self.checkpoint if self.checkpoint is not None else self.dataset

    @property
    def data_path(self) -> Path | None:
        return self.data if self.data is not None else self.dataset

    def data_args(self) -> dict:
        """What the stages pass to ``recorded_scene``: data, downscale, test_every."""
        return {"data": None if self.data_path is None else str(self.data_path), "downscale": self.downscale,
                "test_every": self.test_every}


@dataclass
class Axes:
    method: list[str]
    width: list[int]
    finetune: list[int] | dict[int, list[int]]
    precision: list[str]
    calibration: list[str]
    runtime: list[str]
    skip: list[bool]

    def finetunes(self, width: int) -> list[int]:
        return self.finetune.get(width, []) if isinstance(self.finetune, dict) else self.finetune


@dataclass
class SweepSpec:
    path: Path
    description: str
    scenes: list[SceneSpec]
    axes: Axes
    shrink: dict
    distill: dict
    scratch: dict
    export: dict
    bench: dict
    until: str = "bench"
    cpus: int = 1
    report: str = "table"

    @property
    def stages(self) -> tuple[str, ...]:
        return STAGES[: STAGES.index(self.until) + 1]


def _type_ok(v, want) -> bool:
    if want is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if want is int:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, want)


def _table(doc: dict, name: str, schema: dict, where: str) -> dict:
    t = doc.get(name, {})
    if not isinstance(t, dict):
        raise SweepSpecError(f"{where}: [{name}] must be a table, got {t!r}")
    unknown = sorted(set(t) - set(schema))
    if unknown:
        raise SweepSpecError(f"{where}: unknown key(s) {', '.join(unknown)} in [{name}] "
                             f"(known: {', '.join(sorted(schema))})")
    for k, v in t.items():
        if not _type_ok(v, schema[k]):
            raise SweepSpecError(f"{where}: {name}.{k} must be {schema[k].__name__}, got {v!r}")
    return dict(t)


def _positive(v, key: str, where: str, zero: bool = False) -> None:
    if not (_type_ok(v, int) and (v >= 0 if zero else v >= 1)):
        raise SweepSpecError(f"{where}: {key} must be a{' non-negative' if zero else ' positive'} integer, got {v!r}")


def _samples(v, key: str, where: str) -> list[int]:
    if not (isinstance(v, list) and len(v) == 2 and all(_type_ok(x, int) for x in v) and v[0] >= 1 and v[1] >= 0
            and (v[1] == 0 or v[0] >= 3)):
        raise SweepSpecError(f"{where}: {key} must be [coarse, fine] samples per ray like [32, 64] "
                             f"(fine samples need at least 3 coarse), got {v!r}")
    return list(v)


def _dataclass_types(cls) -> dict[str, type]:
    """Field name -> int/float/bool/str of a dataclass (``X | None`` counts as ``X``, a ``Literal``
    of strings as ``str``)."""
    names = {"int": int, "float": float, "bool": bool, "str": str}
    out = {}
    for k, f in cls.__dataclass_fields__.items():
        t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        base = t.replace(" ", "").replace("|None", "").replace("Optional[", "").rstrip("]")
        if base.startswith(("Literal[", "typing.Literal[")):
            base = "str"
        if base in names:
            out[k] = names[base]
    return out


def _path(base: Path, v, key: str, where: str, folder: bool | None) -> Path:
    if not isinstance(v, str) or not v or "\x00" in v:
        raise SweepSpecError(f"{where}: {key} must be a path, got {v!r}")
    p = Path(v).expanduser()
    p = p if p.is_absolute() else (base / p)
    p = Path(*p.parts)   # normalised, symlinks kept
    if not p.exists():
        raise SweepSpecError(f"{where}: {key} {v!r} does not exist (looked for {p})")
    if folder is True and not p.is_dir():
        raise SweepSpecError(f"{where}: {key} {v!r} is not a folder")
    if folder is False and not p.is_file():
        raise SweepSpecError(f"{where}: {key} {v!r} is not a file")
    return p.resolve()


def _scene(t, k: int, base: Path, where: str) -> SceneSpec:
    at = f"{where}: scene {k + 1}"
    if not isinstance(t, dict):
        raise SweepSpecError(f"{at} must be a table ([[scene]]), got {t!r}")
    unknown = sorted(set(t) - SCENE_KEYS)
    if unknown:
        raise SweepSpecError(f"{at}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(SCENE_KEYS))})")
    if ("checkpoint" in t) == ("dataset" in t):
        raise SweepSpecError(f"{at} needs exactly one of checkpoint (a teacher) or dataset (to train one)")
    ck = _path(base, t["checkpoint"], "checkpoint", at, False) if "checkpoint" in t else None
    ds = _path(base, t["dataset"], "dataset", at, True) if "dataset" in t else None
    if "data" in t and ds is not None:
        raise SweepSpecError(f"{at}: data is the dataset of a checkpoint scene; a dataset scene uses its own")
    data = _path(base, t["data"], "data", at, True) if "data" in t else None
    name = t.get("name", (ck or ds).stem)
    if not isinstance(name, str) or not NAME.match(name):
        raise SweepSpecError(f"{at}: name must be letters, digits, '.', '_' or '-' (at most 64), got {name!r}")
    for key in ("downscale", "test_every"):
        if key in t:
            _positive(t[key], f"scene {name!r} {key}", where)
    train = t.get("train", {})
    if not isinstance(train, dict):
        raise SweepSpecError(f"{where}: scene {name!r} train must be a table, got {train!r}")
    if train and ck is not None:
        raise SweepSpecError(f"{where}: scene {name!r} has a checkpoint; train applies to dataset scenes only")
    if ds is not None:
        from nerfexport.train.loop import TrainConfig
        schema = {**_dataclass_types(TrainConfig), **SHAPE, "minutes": float}
        schema.pop("max_minutes", None)
        for key, v in train.items():
            if key not in schema:
                raise SweepSpecError(f"{where}: scene {name!r} train.{key} is not a training option "
                                     f"(known: {', '.join(sorted(schema))})")
            if not _type_ok(v, schema[key]):
                raise SweepSpecError(f"{where}: scene {name!r} train.{key} must be {schema[key].__name__}, got {v!r}")
    return SceneSpec(name, ck, ds, data, t.get("downscale"), t.get("test_every"), dict(train))


def _list(axes: dict, key: str, default: list, where: str) -> list:
    v = axes.get(key, default)
    if not isinstance(v, list) or not v:
        raise SweepSpecError(f"{where}: axes.{key} must be a non-empty list, got {v!r}")
    seen = []
    for x in v:
        if x in seen:
            raise SweepSpecError(f"{where}: axes.{key} lists {x!r} twice")
        seen.append(x)
    return v


def _axes(axes, where: str, base: Path, until: str) -> Axes:
    from nerfexport.export.quantize import CALIBRATION_METHODS
    from nerfexport.shrink.pipeline import SPEC_METHODS
    if not isinstance(axes, dict):
        raise SweepSpecError(f"{where}: [axes] must be a table, got {axes!r}")
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        raise SweepSpecError(f"{where}: unknown axis/axes {', '.join(unknown)} (known: {', '.join(AXES)})")
    later = {"precision": "export", "calibration": "export", "runtime": "bench", "skip": "bench"}
    for key, stage in later.items():
        if key in axes and STAGES.index(until) < STAGES.index(stage):
            raise SweepSpecError(f"{where}: axes.{key} has no effect when the sweep stops after {until} "
                                 f"([sweep] until = {until!r})")
    methods = _list(axes, "method", ["coreset"], where)
    known = SPEC_METHODS + ("none", "scratch")
    for m in methods:
        if m not in known:
            raise SweepSpecError(f"{where}: axes.method {m!r} is not one of {', '.join(known)}")
    needs_width = any(m != "none" for m in methods)
    if needs_width and "width" not in axes:
        raise SweepSpecError(f"{where}: axes.width is missing (the widths to shrink to)")
    widths = _list(axes, "width", [0], where) if needs_width else []
    for w in widths:
        _positive(w, "every axes.width", where)
    ft = axes.get("finetune", [DEFAULT_FINETUNE])
    if isinstance(ft, dict):
        per = {}
        for k, v in ft.items():
            if not (isinstance(k, str) and k.isdigit() and int(k) in widths):
                raise SweepSpecError(f"{where}: axes.finetune key {k!r} is not one of the widths {widths}")
            vals = v if isinstance(v, list) else [v]
            for s in vals:
                _positive(s, f"axes.finetune.{k}", where, zero=True)
            per[int(k)] = list(vals)
        missing = [w for w in widths if w not in per]
        if missing and any(m not in ("none", "scratch") for m in methods):
            raise SweepSpecError(f"{where}: axes.finetune gives no steps for width(s) {missing}")
        finetune = per
    else:
        finetune = _list(axes, "finetune", [DEFAULT_FINETUNE], where)
        for s in finetune:
            _positive(s, "every axes.finetune", where, zero=True)
    precision = _list(axes, "precision", ["fp32"], where)
    for p in precision:
        if p not in PRECISIONS:
            raise SweepSpecError(f"{where}: axes.precision {p!r} is not one of {', '.join(PRECISIONS)}")
    calibration = _list(axes, "calibration", ["minmax"], where)
    for c in calibration:
        if c not in CALIBRATION_METHODS:
            raise SweepSpecError(f"{where}: axes.calibration {c!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    runtimes = []
    from nerfexport.deploy.runtime import RuntimeSpecError, load_runtime
    for r in _list(axes, "runtime", ["ort-cpu"], where):
        if not isinstance(r, str) or not r:
            raise SweepSpecError(f"{where}: axes.runtime must name runtimes, got {r!r}")
        ref = r
        if r.endswith(".toml") or "/" in r:
            ref = str(_path(base, r, "axes.runtime", where, False))
        try:
            load_runtime(ref)
        except RuntimeSpecError as e:
            raise SweepSpecError(f"{where}: axes.runtime {r!r}: {e}") from None
        runtimes.append(ref)
    skip = _list(axes, "skip", [True], where)
    if not all(isinstance(s, bool) for s in skip):
        raise SweepSpecError(f"{where}: axes.skip must be a list of true/false, got {skip!r}")
    return Axes(methods, widths, finetune, precision, calibration, runtimes, skip)


MAX_CELLS = 10_000   # combinations of scenes and axes one sweep file may ask for


def _check_cells(doc: dict, where: str) -> None:
    """The number of cells (scenes x every axis), bounded before anything is checked or planned."""
    n = len(doc["scene"]) if isinstance(doc.get("scene"), list) else 1
    axes = doc.get("axes")
    if isinstance(axes, dict):
        for k, v in axes.items():
            if isinstance(v, list):
                n *= max(1, len(v))
            if n > MAX_CELLS:
                break
    if n > MAX_CELLS:
        raise SweepSpecError(f"{where} asks for more than {MAX_CELLS:,} cells (scenes x axes); split it")


def _distill_table(doc: dict, where: str) -> dict:
    """The checked ``[distill]`` table: DistillConfig fields other than the budget and seed."""
    from nerfexport.shrink.distill import DistillConfig
    dschema = {k: t for k, t in _dataclass_types(DistillConfig).items()
               if k not in ("steps", "seed", "minutes", "eval_every_minutes")}   # steps: axes.finetune
    distill = _table(doc, "distill", dschema, where)
    for k, v in distill.items():
        if dschema[k] in (int, float) and v < (0 if k.startswith("w_") else 1e-12):
            raise SweepSpecError(f"{where}: distill.{k} must be positive, got {v!r}")
    return distill


def _scratch_table(doc: dict, where: str) -> dict:
    """The checked ``[scratch]`` table, ``step_seconds`` keyed by width."""
    scratch = _table(doc, "scratch", SCRATCH, where)
    if "minutes" in scratch and not scratch["minutes"] > 0:
        raise SweepSpecError(f"{where}: scratch.minutes must be positive, got {scratch['minutes']!r}")
    if "step_seconds" in scratch:
        st = {}
        for k, v in scratch["step_seconds"].items():
            if not (k.isdigit() and _type_ok(v, float) and v > 0):
                raise SweepSpecError(f"{where}: scratch.step_seconds is like {{128 = 0.129}} "
                                     f"(width = seconds per step), got {k} = {v!r}")
            st[int(k)] = float(v)
        scratch["step_seconds"] = st
    return scratch


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check the sweep file ``path``.

    Args:
        path: A TOML sweep file (docs/sweeps/); relative paths in it are relative to it.

    Returns:
        The checked :class:`SweepSpec`. Raises :class:`SweepSpecError` (one line).
    """
    path = Path(path)
    if not path.is_file():
        raise SweepSpecError(f"sweep file {path} does not exist" if not path.exists() else f"{path} is not a file")
    where = str(path)
    from nerfexport.data.safety import UnsafeInput, load_toml
    try:
        doc = load_toml(path, "sweep file", 4 << 20)
    except UnsafeInput as e:
        raise SweepSpecError(str(e)) from None
    _check_cells(doc, where)
    unknown = sorted(set(doc) - TOP)
    if unknown:
        raise SweepSpecError(f"{where}: unknown key(s) {', '.join(unknown)} at the top level "
                             f"(known: {', '.join(sorted(TOP))})")
    base = path.resolve().parent
    desc = doc.get("description", "")
    if not isinstance(desc, str):
        raise SweepSpecError(f"{where}: description must be a string")
    scenes = doc.get("scene")
    if not isinstance(scenes, list) or not scenes:
        raise SweepSpecError(f"{where}: no scenes: add at least one [[scene]] with a checkpoint or a dataset")
    parsed = [_scene(t, k, base, where) for k, t in enumerate(scenes)]
    names = [s.name for s in parsed]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SweepSpecError(f"{where}: scene name(s) {', '.join(dup)} used twice (give each scene a name)")
    sw = _table(doc, "sweep", SWEEP, where)
    until, cpus, report = sw.get("until", "bench"), sw.get("cpus", 1), sw.get("report", "table")
    if until not in STAGES:
        raise SweepSpecError(f"{where}: sweep.until must be one of {', '.join(STAGES)}, got {until!r}")
    _positive(cpus, "sweep.cpus", where)
    if report not in REPORTS:
        raise SweepSpecError(f"{where}: sweep.report must be one of {', '.join(REPORTS)}, got {report!r}")
    axes = _axes(doc.get("axes", {}), where, base, until)
    shrink = _table(doc, "shrink", SHRINK, where)
    for key in ("eval_views", "calib_rays"):
        if key in shrink:
            _positive(shrink[key], f"shrink.{key}", where)
    if "seed" in shrink:
        _positive(shrink["seed"], "shrink.seed", where, zero=True)
    if "eval_samples" in shrink:
        _samples(shrink["eval_samples"], "shrink.eval_samples", where)
    distill = _distill_table(doc, where)
    scratch = _scratch_table(doc, where)
    export = _table(doc, "export", EXPORT, where)
    for key in ("calib_rays",):
        if key in export:
            _positive(export[key], f"export.{key}", where)
    if "grid_res" in export and not 2 <= export["grid_res"] <= 512:
        raise SweepSpecError(f"{where}: export.grid_res must be between 2 and 512, got {export['grid_res']!r}")
    if "grid_alpha" in export and not 0 < export["grid_alpha"] < 1:
        raise SweepSpecError(f"{where}: export.grid_alpha must be in (0, 1), got {export['grid_alpha']!r}")
    bench = _table(doc, "bench", BENCH, where)
    for key in ("views", "repeat"):
        if key in bench:
            _positive(bench[key], f"bench.{key}", where)
    if "samples" in bench:
        _samples(bench["samples"], "bench.samples", where)
    for name, table in (("export", export), ("bench", bench)):
        if table and STAGES.index(until) < STAGES.index(name):
            raise SweepSpecError(f"{where}: [{name}] has no effect when the sweep stops after {until}")
    if scratch and "scratch" not in axes.method:
        raise SweepSpecError(f"{where}: [scratch] is set but axes.method has no \"scratch\"")
    return SweepSpec(path.resolve(), desc, parsed, axes, shrink, distill, scratch, export, bench, until, cpus, report)
