"""A sweep's results: one row per cell (JSON and Markdown), a Pareto figure per scene, the best
cell per scene under limits, and the tables of ``nerfexport shrink-study`` and ``export-study``
rebuilt from the cells (``[sweep] report``).

Metric names follow nerfstudio's ``ns-eval``: ``psnr``, ``psnr_std``, ``ssim``, ``ssim_std``,
``fps``, ``num_rays_per_sec``; and nerfexport's ``ms_per_frame`` (median), ``size_mb`` (what the
device stores: the bundle, or the checkpoint for a torch runtime), ``params``. ``psnr`` is the
last stage's: rendered by the runtime for a bench cell, the torch evaluation (at
``[shrink] eval_samples``) for a shrink-only cell; ``model_psnr`` is always the latter.
"""

from __future__ import annotations

import time
from pathlib import Path

LOAD = 0.25   # other work took more than this share of a machine's CPU while a bench timed on it: under load


def cell_row(recipe: dict, key: str, infos: dict[str, dict], error: str | None = None) -> dict:
    """The table row of one cell from its stages' infos (``teacher``, ``model``, ``export``, ``bench``)."""
    t, m, e, b = (infos.get(k) or {} for k in ("teacher", "model", "export", "bench"))
    row = {"key": key, **recipe, "status": "failed" if error else "ok", "error": error}
    if error:
        return row
    size = e.get("bytes", m.get("bytes")) if not b else b.get("bytes")
    row.update({"params": m.get("params"), "checkpoint_mb": _mb(m.get("bytes")), "size_mb": _mb(size),
                "psnr_pruned": m.get("psnr_pruned"), "ssim_pruned": m.get("ssim_pruned"),
                "model_psnr": m.get("psnr"), "model_ssim": m.get("ssim"), "teacher_psnr": t.get("psnr"),
                "model_vs_teacher_db": None if m.get("psnr") is None or t.get("psnr") is None
                else m["psnr"] - t["psnr"]})
    if b:
        row.update({k: b.get(k) for k in ("psnr", "psnr_std", "ssim", "ssim_std", "fps", "num_rays_per_sec",
                                           "ms_per_frame", "peak_rss_mb", "samples_per_frame", "views")})
        row["cpu_busy_outside"] = b.get("cpu_busy_outside")
        row["under_load"] = bool((b.get("cpu_busy_outside") or 0.0) > LOAD)
        row["timer"] = b.get("timer")
    else:
        row.update({"psnr": m.get("psnr"), "ssim": m.get("ssim")})
    row["seconds"] = {k: v.get("seconds") for k, v in infos.items() if v and k != "teacher" and "seconds" in v}
    row["hosts"] = sorted({v.get("host") for v in infos.values() if v and v.get("host")})
    row["ray_nodes"] = {k: v.get("ray_node") for k, v in infos.items() if v and v.get("ray_node")}
    return row


def _mb(n) -> float | None:
    return None if n is None else n / 1e6


def best_cells(rows: list[dict], max_ms: float | None = None, max_mb: float | None = None) -> dict[str, dict | None]:
    """Per scene, the finished cell of highest PSNR whose frame time and size fit the limits
    (a cell without a frame time does not fit a ``max_ms``); ``None`` where none fits."""
    out: dict[str, dict | None] = {}
    for r in rows:
        out.setdefault(r["scene"], None)
        if r["status"] != "ok" or r.get("psnr") is None:
            continue
        if max_ms is not None and (r.get("ms_per_frame") is None or r["ms_per_frame"] > max_ms):
            continue
        if max_mb is not None and (r.get("size_mb") is None or r["size_mb"] > max_mb):
            continue
        if out[r["scene"]] is None or r["psnr"] > out[r["scene"]]["psnr"]:
            out[r["scene"]] = r
    return out


def label(r: dict) -> str:
    parts = [r["method"] if r["method"] != "none" else "teacher"]
    if r.get("width"):
        parts.append(f"w{r['width']}")
    if r.get("finetune") is not None:
        parts.append(f"ft{r['finetune']}")
    if r.get("precision"):
        parts.append(r["precision"] + (f"/{r['calibration']}" if r.get("calibration") else ""))
    if r.get("runtime"):
        parts.append(r["runtime"] + ("" if r.get("skip") in (None, True) else " plain"))
    return " ".join(parts)


def _f(v, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def markdown(doc: dict) -> str:
    """The generic table: one row per cell, then the best cell per scene."""
    s = doc["settings"]
    lines = [f"Sweep `{doc['sweep']}`" + (f": {doc['description']}" if doc.get("description") else "") + ".",
             "",
             f"{len(doc['rows'])} cells ({doc['counts']['ok']} finished, {doc['counts']['failed']} failed) on "
             f"{', '.join(doc['machines']) or 'no machine'}; PSNR/SSIM against the ground truth of the first "
             f"{s['bench_views']} held-out views as rendered by each runtime (bench cells), or the torch "
             f"evaluation on {s['eval_views']} views at {s['eval_samples'][0]}+{s['eval_samples'][1]} samples "
             f"(shrink-only cells); frame time is the median over {s['repeat']} renders of each view after one "
             f"warm-up frame. {doc['timings']}", "",
             "| scene | method | width | fine-tune | precision | calibration | runtime | skip | parameters | size [MB] "
             "| PSNR pruned | PSNR torch | PSNR | SSIM | ms/frame | fps | status |",
             "|---|---|---:|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in doc["rows"]:
        skip = "" if r.get("skip") is None else ("yes" if r["skip"] else "no")
        status = "ok" + (" (under load)" if r.get("under_load") else "") if r["status"] == "ok" else \
            f"failed: {r['error']}"
        lines.append(f"| {r['scene']} | {r['method']} | {r.get('width') or ''} | {_f(r.get('finetune'), 'd')} | "
                     f"{r.get('precision') or ''} | {r.get('calibration') or ''} | {r.get('runtime') or ''} | {skip} | "
                     f"{_f(r.get('params'), ',')} | {_f(r.get('size_mb'), '.3f')} | {_f(r.get('psnr_pruned'), '.2f')} | "
                     f"{_f(r.get('model_psnr'), '.2f')} | {_f(r.get('psnr'), '.2f')} | {_f(r.get('ssim'), '.3f')} | "
                     f"{_f(r.get('ms_per_frame'), '.1f')} | {_f(r.get('fps'), '.2f')} | {status} |")
    lines += [""] + [f"Teacher of {name}: {t['psnr']:.2f} dB PSNR, {t['ssim']:.3f} SSIM (torch, {s['eval_views']} views "
                     f"at {s['eval_samples'][0]}+{s['eval_samples'][1]} samples), {t['params']:,} parameters, "
                     f"{t['bytes'] / 1e6:.2f} MB, {t.get('width')} wide."
                     for name, t in doc.get("teachers", {}).items()]
    lim = doc["limits"]
    what = " and ".join(x for x in (f"at most {lim['max_ms']:g} ms a frame" if lim.get("max_ms") else "",
                                    f"at most {lim['max_mb']:g} MB" if lim.get("max_mb") else "") if x)
    lines += ["", f"Best cell per scene (highest PSNR{', ' + what if what else ''}):", ""]
    for scene, r in doc["best"].items():
        lines.append(f"- {scene}: " + ("no cell fits" if r is None else
                                       f"{label(r)}: {r['psnr']:.2f} dB, {_f(r.get('size_mb'), '.3f')} MB"
                                       + (f", {r['ms_per_frame']:.1f} ms/frame" if r.get('ms_per_frame') else "")))
    return "\n".join(lines) + "\n"


def _front(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    front, best = [], -1e9
    for x, y in sorted(pts):
        if y > best:
            front.append((x, y))
            best = y
    return front


def pareto_figure(rows: list[dict], scene: str, out: str | Path) -> None:
    """PSNR against frame time (when measured) and against size, for one scene's finished cells."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nerfexport.data.fileio import atomic_write
    rows = [r for r in rows if r["scene"] == scene and r["status"] == "ok" and r.get("psnr") is not None]
    axes_of = [("ms_per_frame", "median frame time [ms] (log)")] if any(r.get("ms_per_frame") for r in rows) else []
    axes_of.append(("size_mb", "size on the device [MB] (log)"))
    fig, axs = plt.subplots(1, len(axes_of), figsize=(6.5 * len(axes_of), 4.5), dpi=120, squeeze=False)
    cmap = plt.get_cmap("tab20")
    colour = {label(r): cmap(i % 20) for i, r in enumerate(rows)}   # a cell has one colour in both panels
    for ax, (key, xlabel) in zip(axs[0], axes_of):
        pts = [(r[key], r["psnr"], label(r)) for r in rows if r.get(key)]
        front = _front([(x, y) for x, y, _ in pts])
        ax.plot([x for x, _ in front], [y for _, y in front], "-", color="0.6", lw=1, label="Pareto front")
        for i, (x, y, lab) in enumerate(sorted(pts)):
            ax.plot(x, y, "o", color=colour[lab])
            ax.annotate(lab, (x, y), fontsize=6, xytext=(3, 4 if i % 2 == 0 else -9), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("PSNR [dB]")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{scene}: {len(rows)} cells", fontsize=9)
    fig.tight_layout()
    try:
        atomic_write(out, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)


def shrink_study_doc(cells: list[dict], scene: str, machine: str) -> dict:
    """The cells of one scene as a ``nerfexport shrink-study`` document (one row per model)."""
    teacher = next(c["stages"]["teacher"] for c in cells if c["recipe"]["scene"] == scene and c["stages"].get("teacher"))
    rows, seen = [], set()
    for c in cells:
        rc, m = c["recipe"], c["stages"].get("model")
        if rc["scene"] != scene or c["status"] != "ok" or rc["method"] == "none" or not m:
            continue
        ident = (rc["method"], rc["width"], rc["finetune"])
        if ident in seen:
            continue
        seen.add(ident)
        scratch = rc["method"] == "scratch"
        rows.append({"kind": "scratch" if scratch else "shrink", "method": rc["method"], "width": rc["width"],
                     "params": m["params"], "bytes": m["bytes"], "psnr_pruned": m.get("psnr_pruned"),
                     "ssim_pruned": m.get("ssim_pruned"), "psnr": m["psnr"], "ssim": m["ssim"],
                     "finetune_steps": rc["finetune"], "steps": m.get("steps"), "seconds": m["cost_seconds"]})
    s = cells[0]["settings"]
    from nerfexport.bench.study import eval_precision
    return {"teacher": teacher, "settings": {"eval_views": s["eval_views"], "eval_samples": s["eval_samples"],
                                             "machine": machine, "precision": eval_precision()}, "rows": rows}


def export_study_doc(cells: list[dict], scene: str) -> tuple[dict, str]:
    """The bench cells of one scene as a ``nerfexport export-study`` document, and its reference."""
    mine = [c for c in cells if c["recipe"]["scene"] == scene and c["status"] == "ok" and c["stages"].get("bench")]
    methods = {c["recipe"]["method"] for c in mine if c["recipe"]["method"] != "none"}

    def model(rc):
        if rc["method"] == "none":
            return "teacher"
        return (f"{rc['method']}-" if len(methods) > 1 else "") + f"w{rc['width']}"
    rows = []
    for c in mine:
        rc, e, b = c["recipe"], c["stages"].get("export") or {}, c["stages"]["bench"]
        rows.append({"model": model(rc), "precision": rc["precision"] or "fp32", "method": rc["calibration"],
                     "bytes": e.get("bytes", b["bytes"]), "psnr": b["psnr"], "ssim": b["ssim"],
                     "samples": e.get("samples") or [None, None]})
    s = cells[0]["settings"]
    doc = {"settings": {"views": s["bench_views"], "calib_rays": s["export_calib_rays"]}, "rows": rows}
    ref = next((r["model"] for r in rows if r["precision"] == "fp32"), rows[0]["model"] if rows else "")
    return doc, ref


def report(cells: list[dict], style: str, machine: str) -> str:
    """``style`` "shrink-study" or "export-study": the study's own table, one per scene (a heading
    each when there are several), then the cells that failed."""
    from nerfexport.bench.study import export_markdown, markdown_table
    scenes = list(dict.fromkeys(c["recipe"]["scene"] for c in cells))
    parts = []
    for scene in scenes:
        head = f"### {scene}\n\n" if len(scenes) > 1 else ""
        try:
            if style == "shrink-study":
                parts.append(head + markdown_table(shrink_study_doc(cells, scene, machine)))
            else:
                doc, ref = export_study_doc(cells, scene)
                parts.append(head + (export_markdown(doc, ref) if doc["rows"] else "(no finished bench cell)\n"))
        except StopIteration:
            parts.append(head + "(no finished cell)\n")
    failed = [c for c in cells if c["status"] != "ok"]
    if failed:
        parts.append("Cells that failed:\n\n" + "\n".join(f"- {label(c['recipe'])} ({c['recipe']['scene']}): "
                                                        f"{c['error']}" for c in failed) + "\n")
    return "\n".join(parts)


def sweep_doc(spec_path: str, description: str, cells: list[dict], settings: dict, limits: dict,
              timings: str) -> dict:
    rows = [c["row"] for c in cells]
    machines = sorted({h for c in cells for v in (c.get("stages") or {}).values() if v and v.get("machine")
                       for h in [f"{v.get('host')} ({v['machine']})"]})
    return {"sweep": spec_path, "description": description, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "settings": settings, "limits": limits, "timings": timings, "machines": machines,
            "teachers": {c["recipe"]["scene"]: c["stages"]["teacher"] for c in cells if c["stages"].get("teacher")},
            "counts": {"ok": sum(r["status"] == "ok" for r in rows), "failed": sum(r["status"] != "ok" for r in rows)},
            "best": best_cells(rows, limits.get("max_ms"), limits.get("max_mb")), "rows": rows}
