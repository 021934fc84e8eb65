"""Benchmark: render the same views with several (bundle or checkpoint, runtime) configurations.

Each configuration runs in its own Python process (``python -m nerfexport.bench.bench WORKER.json``)
so that its peak memory is its own and no runtime's threads or imports disturb another's;
the worker renders every view ``repeat`` times after one warm-up frame and saves its renders.
The parent scores them against ground truth and against the teacher (the configuration named
as reference), and writes ``bench.json``, ``bench.md`` and the figures.

Median frame times are the numbers to quote; they are also given as ratios to the reference
measured in the same run, because the machine is shared and noisy.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerfexport.bench.peak import LAYER_ROWS
from nerfexport.data.nseval import ns_eval
from nerfexport.deploy.machine import machine
from nerfexport.data.datasets import DataArgs


@dataclass
class BenchItem:
    """One configuration: ``path`` is a bundle folder or a checkpoint; ``runtime`` a runtime name or
    file; ``plain``: no empty-space skipping or early termination (a bundle with a grid otherwise
    uses both); ``sampler``: where the fine samples go (``"density"``: the bundle's baked density
    grid, no coarse network; ``None``: the renderer's default)."""

    path: str
    runtime: str
    label: str = ""
    plain: bool = False
    sampler: str | None = None

    @classmethod
    def parse(cls, text: str) -> "BenchItem":
        """``PATH@RUNTIME``, ``LABEL=PATH@RUNTIME``, either with ``:plain`` or ``:density``
        appended. Raises :class:`BenchError` for an item that names no path or no runtime or an
        unknown suffix."""
        label = ""
        if "=" in text.split("@")[0]:
            label, text = text.split("=", 1)
        if "@" not in text:
            raise BenchError(f"bench item {text!r} must be PATH@RUNTIME (e.g. bundle@ort-cpu)")
        path, runtime = text.rsplit("@", 1)
        suffix = runtime.rsplit(":", 1)[1] if ":" in runtime else ""
        if suffix in SUFFIXES:
            runtime = runtime[: -len(suffix) - 1]
        if not path or not runtime:
            raise BenchError(f"bench item {text!r} names no {'path' if not path else 'runtime'} (PATH@RUNTIME)")
        if ":" in runtime and not Path(runtime).is_file():
            raise BenchError(f"bench item {text!r}: unknown suffix :{runtime.rsplit(':', 1)[1]} "
                             f"(the suffixes are {', '.join(':' + k for k in SUFFIXES)})")
        plain, sampler = suffix == "plain", "density" if suffix == "density" else None
        return cls(path, runtime, label or f"{Path(path).name}@{runtime}" + (f" {suffix}" if suffix in SUFFIXES else ""),
                   plain, sampler)


SUFFIXES = ("plain", "density")


class BenchError(ValueError):
    """A bench item or option is unusable; nothing has been measured or written."""


def check_items(items: list[BenchItem]) -> dict | None:
    """Check every item before anything is measured: the path exists, the runtime file loads,
    the runtime's kind fits the path (torch renders a checkpoint, the others a bundle folder),
    and the bundle or checkpoint opens. Returns the first item's recorded dataset (or ``None``).
    Raises :class:`BenchError`, :class:`nerfexport.deploy.bundle.BundleError`,
    :class:`nerfexport.deploy.runtime.RuntimeSpecError` or the checkpoint's error, naming the item."""
    from nerfexport.bench.runtimes import families
    from nerfexport.deploy.bundle import open_bundle
    from nerfexport.deploy.runtime import load_runtime
    data, fams = None, families()
    for k, it in enumerate(items):
        p = Path(it.path)
        if not p.exists():
            raise BenchError(f"bench item {it.label!r}: {it.path} does not exist")
        spec = load_runtime(it.runtime)
        if p.is_dir():
            if fams[spec.kind].renders != "bundle":
                raise BenchError(f"bench item {it.label!r}: the {spec.kind} runtime renders a checkpoint, "
                                 "not a bundle folder")
            rec = open_bundle(p).manifest.data
        else:
            if fams[spec.kind].renders != "checkpoint":
                raise BenchError(f"bench item {it.label!r}: runtime {spec.name} renders a bundle folder, "
                                 f"and {it.path} is not one")
            from nerfexport.model.checkpoint import load_checkpoint
            rec = load_checkpoint(p, with_train_state=True)[1].get("data")
        if k == 0:
            data = rec
    return data


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB. On Linux from ``VmHWM`` (reset by ``exec``);
    ``ru_maxrss`` survives ``exec``, so a worker started from a large process (the demo, which
    trained in-process) would report its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(job: dict) -> dict:
    """Render ``job["poses"]`` with one configuration; returns timings and the path of the renders."""
    from nerfexport.bench.peak import network_ops
    from nerfexport.bench.runtimes import families
    from nerfexport.deploy.networks import open_source
    from nerfexport.deploy.render import computes_colour, make_renderer
    from nerfexport.deploy.runtime import load_runtime
    spec = load_runtime(job["runtime"])
    if "chunk" in job and job["chunk"]:
        spec.chunk = int(job["chunk"])
    base_rss = _peak_rss_mb()
    src = open_source(spec, job["path"], families())
    nets = src.networks(int(job["n_fine"]) if job.get("n_coarse") else None)
    settings, archs = src.settings, src.architectures
    grid = src.occupancy()
    density = src.density() if (job.get("sampler") or getattr(spec, "sampler", None)) == "density" else None
    if job.get("n_coarse"):
        settings.n_coarse, settings.n_fine = int(job["n_coarse"]), int(job["n_fine"])
    # a checkpoint (the torch baseline) renders plain, as nerf-pytorch does
    r = make_renderer(spec, nets, settings, grid, skip=not src.plain and not job.get("plain", False),
                      early_stop=job.get("early_stop"), density=density, sampler=job.get("sampler"))
    # a network that computes only the density (the coarse one before a fine one, on onnxruntime)
    # is counted at the operations it runs
    ops = {w: network_ops(a, colour=computes_colour(nets.get(w)))
           for w, a in archs.items() if a}
    ops.setdefault("fine", ops["coarse"])
    H, W, focal = job["H"], job["W"], job["focal"]
    poses = np.array(job["poses"], np.float32)
    r.render_view(H, W, focal, poses[0])  # warm-up (session initialisation, caches)
    stages = ("rays", "sampling", "network", "compositing")
    times, breakdown, renders = [], [], []
    for rep in range(job["repeat"]):
        for i, pose in enumerate(poses):
            r.timings.reset()
            t = time.perf_counter()
            out = r.render_view(H, W, focal, pose)
            wall = time.perf_counter() - t
            times.append(wall)
            b = r.timings.as_dict()
            # stage times are summed over the worker threads: express them as shares of the frame's wall time
            busy = sum(b[k] for k in stages)
            for k in stages:
                b[k] = b[k] / busy * wall if busy > 0 else 0.0
            b["ops"] = b["coarse_samples"] * ops["coarse"] + (b["samples"] - b["coarse_samples"]) * ops["fine"]
            b["gops"] = b["ops"] / b["network"] / 1e9 if b["network"] > 0 else 0.0
            breakdown.append(b)
            if rep == 0:
                renders.append(out["rgb"])
    np.save(job["renders"], np.stack(renders).astype(np.float32))
    med = lambda k: float(np.median([b[k] for b in breakdown]))
    own = None
    if spec.kind == "onnxruntime" and src.precision in ("int8", "fp32"):   # after the timed renders
        from nerfexport.bench.peak import evaluations_gemm
        own = evaluations_gemm(src.precision, archs, {w: computes_colour(nets.get(w)) for w in ("coarse", "fine")},
                               {"coarse": med("coarse_samples"), "fine": med("samples") - med("coarse_samples")})
    return {"frame_ms": [t * 1e3 for t in times], "median_ms": float(np.median(times) * 1e3),
            "breakdown_ms": {k: med(k) * 1e3 for k in stages},
            "samples_per_frame": float(np.mean([b["samples"] for b in breakdown[:len(poses)]])),
            "network_gops": med("gops"), "shape_gemm_gops": own, "ops_per_sample": ops, "rays_per_frame": H * W,
            "skip": r.grid is not None, "early_stop": r.early_stop,
            "sampler": "density" if r.proposal is not None else "network",
            "grid_fraction": grid.fraction if grid is not None else None, "workers": r.workers,
            "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": base_rss, "bytes": int(src.size_bytes),
            "precision": src.precision, "widths": archs["coarse"]["widths"], "chunk": spec.chunk, "runtime_kind": spec.kind,
            "samples": [settings.n_coarse, settings.n_fine], "threads": spec.threads,
            "coarse_samples_per_frame": float(np.mean([b["coarse_samples"] for b in breakdown[:len(poses)]]))}


def run_item(item: BenchItem, job: dict, timeout: float = 3600) -> dict:
    """Run one configuration in a fresh process; raise ``RuntimeError`` with the worker's last line."""
    with tempfile.TemporaryDirectory(prefix="nerfexport-bench-") as tmp:
        jpath = Path(tmp) / "job.json"
        opath = Path(tmp) / "out.json"
        jpath.write_text(json.dumps({**job, "path": item.path, "runtime": item.runtime, "plain": item.plain,
                                     "sampler": item.sampler,
                                     "out": str(opath)}))
        res = subprocess.run([sys.executable, "-m", "nerfexport.bench.bench", str(jpath)], capture_output=True, text=True,
                             timeout=timeout)
        if res.returncode != 0:
            lines = [l for l in (res.stderr or res.stdout).strip().splitlines() if l.strip()]
            raise RuntimeError(lines[-1] if lines else f"worker exited with {res.returncode}")
        return json.loads(opath.read_text())


def measure_peak(sizes: tuple[int, ...] = (1024, 2048, 4096), timeout: float = 600) -> dict:
    """int8 and fp32 GEMM peaks (:func:`nerfexport.bench.peak.gemm_peak`) in a fresh process."""
    res = subprocess.run([sys.executable, "-m", "nerfexport.bench.peak", ",".join(map(str, sizes))], capture_output=True,
                         text=True, timeout=timeout)
    if res.returncode != 0:
        lines = [l for l in (res.stderr or res.stdout).strip().splitlines() if l.strip()]
        raise RuntimeError(lines[-1] if lines else f"peak probe exited with {res.returncode}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_bench(items: list[BenchItem], images: np.ndarray, poses: np.ndarray, H: int, W: int, focal: float,
              out_dir: str | Path, repeat: int = 3, reference: int = 0, samples: tuple[int, int] | None = None,
              progress=None, peak_sizes: tuple[int, ...] | None = (1024, 2048, 4096)) -> dict:
    """Benchmark ``items`` on the views ``poses`` (ground truth ``images``); ``reference`` indexes
    the teacher configuration that ratios and "vs teacher" scores refer to. Check the items with
    :func:`check_items` first. Everything is written in a temporary folder and moved into
    ``out_dir`` at the end; when no configuration could run, :class:`BenchError` is raised and
    nothing is written. ``doc["files"]`` lists what was written."""
    from nerfexport.data.fileio import temp_dir_for
    emit = progress or (lambda e: None)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BenchError(f"output {out_dir} exists and is not a folder")
    work = temp_dir_for(out_dir)   # everything is written here, then moved into out_dir
    try:
        doc = _run(items, images, poses, H, W, focal, work, repeat, reference, samples, emit, peak_sizes)
        from nerfexport.data.safety import check_output_folder, mark
        check_output_folder(out_dir, "bench", what="bench output folder")
        out_dir.mkdir(exist_ok=True)
        mark(out_dir, "bench")   # an earlier bench output: the next bench may write here again
        written = []
        for f in sorted(work.iterdir()):
            os.replace(f, out_dir / f.name)
            written.append(str(out_dir / f.name))
        for r in doc["rows"]:
            if "renders" in r:
                r["renders"] = str(out_dir / Path(r["renders"]).name)
        doc["files"] = [w for w in written if not w.endswith(".npy")]
        (out_dir / "bench.json").write_text(json.dumps(doc, indent=1))
    finally:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    return doc


def _run(items, images, poses, H, W, focal, out_dir: Path, repeat, reference, samples, emit, peak_sizes) -> dict:
    from nerfexport.data.metrics import psnr, ssim
    rows = []
    peak = None
    if peak_sizes:
        emit({"event": "peak"})
        try:
            peak = measure_peak(tuple(peak_sizes))
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
            emit({"event": "skipped", "label": "GEMM peak", "reason": str(e)})
    for k, item in enumerate(items):
        emit({"event": "item", "index": k, "label": item.label})
        renders = out_dir / f"renders-{k}.npy"
        job = {"poses": poses.tolist(), "H": H, "W": W, "focal": focal, "repeat": repeat, "renders": str(renders)}
        if samples:
            job["n_coarse"], job["n_fine"] = samples
        try:
            r = run_item(item, job)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            rows.append({"label": item.label, "path": item.path, "runtime": item.runtime, "error": str(e)})
            emit({"event": "skipped", "label": item.label, "reason": str(e)})
            continue
        rows.append({"label": item.label, "path": item.path, "runtime": item.runtime, **r, "renders": str(renders)})
        emit({"event": "done", "label": item.label, "median_ms": r["median_ms"]})
    ok = [r for r in rows if "error" not in r]
    ref = rows[reference] if reference < len(rows) and "error" not in rows[reference] else (ok[0] if ok else None)
    ref_imgs = np.load(ref["renders"]) if ref else None
    for r in ok:
        imgs = np.load(r["renders"])
        r["per_view_psnr"] = [float(psnr(a, b)) for a, b in zip(imgs, images)]
        r["per_view_ssim"] = [float(ssim(a, b)) for a, b in zip(imgs, images)]
        r["psnr"], r["ssim"] = float(np.mean(r["per_view_psnr"])), float(np.mean(r["per_view_ssim"]))
        if ref is not None:
            r["psnr_vs_teacher"] = float(np.mean([psnr(a, b) for a, b in zip(imgs, ref_imgs)])) if r is not ref else None
            r["speedup_vs_teacher"] = ref["median_ms"] / r["median_ms"]
            r["psnr_delta"] = r["psnr"] - ref["psnr"] if "psnr" in ref else None
        r["rays_per_s"] = r["rays_per_frame"] / (r["median_ms"] / 1e3)
        r["samples_per_s"] = r["samples_per_frame"] / (r["median_ms"] / 1e3)
        if peak is not None and r["runtime_kind"] == "onnxruntime":
            p = peak["int8" if r["precision"] == "int8" else "fp32"]["gops"]
            r["fraction_of_peak"] = r["network_gops"] / p
            lay = (peak.get("layers") or {}).get("int8" if r["precision"] == "int8" else "fp32", {})
            w = str(max(r["widths"])) if r.get("widths") else None
            if w in lay:
                r["layer_gemm_gops"] = lay[w]
                r["fraction_of_layer_gemm"] = r["network_gops"] / lay[w]
        if r.get("shape_gemm_gops"):
            r["fraction_of_shape_gemm"] = r["network_gops"] / r["shape_gemm_gops"]
    if ref is not None:
        for r in ok:
            r["psnr_delta"] = r["psnr"] - ref["psnr"]
    # speed-ups against the first checkpoint row on each torch runtime (fp32 and bf16: what users run today)
    for name in ("torch", "torch-bf16"):
        base = next((r for r in ok if Path(str(r["path"])).is_file() and r["runtime"] == name), None)
        if base is not None:
            for r in ok:
                r[f"speedup_vs_{name.replace('-', '_')}"] = base["median_ms"] / r["median_ms"]
    doc = {"machine": machine(), "views": int(len(poses)), "H": H, "W": W, "repeat": repeat,
           "samples": list(samples) if samples else None, "reference": ref["label"] if ref else None,
           "gemm_peak": peak,
           "created": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}
    if not ok:
        raise BenchError("no configuration could run on this machine: "
                         + "; ".join(f"{r['label']}: {r['error']}" for r in rows))
    (out_dir / "bench.json").write_text(json.dumps(doc, indent=1))
    (out_dir / "ns-eval.json").write_text(json.dumps(ns_eval_rows(doc), indent=1))
    (out_dir / "bench.md").write_text(markdown(doc))
    from nerfexport.data.plots import plot_bench_grid, plot_pareto
    plot_pareto(doc, out_dir / "pareto.png")
    plot_bench_grid(doc, images[0], out_dir / "grid.png")
    return doc


# the bench's own fields copied into each ns-eval document's results, after the standard ones
NS_EXTRA = ("median_ms", "frame_ms", "precision", "runtime", "speedup_vs_teacher", "psnr_delta", "psnr_vs_teacher",
            "samples_per_frame", "samples_per_s", "network_gops", "fraction_of_peak", "bytes", "per_view_psnr",
            "per_view_ssim")


def ns_eval_rows(doc: dict) -> list[dict]:
    """One nerfstudio ns-eval document per configuration that ran (``ns-eval.json``): the label as
    the experiment, ``nerfexport <runtime>`` as the method, the bundle or checkpoint, and the
    frame rate from the median frame time."""
    out = []
    for r in doc["rows"]:
        if "error" in r:
            continue
        extra = {k: r[k] for k in NS_EXTRA if k in r}
        out.append(ns_eval(r["path"], r["per_view_psnr"], r["per_view_ssim"], r["median_ms"] / 1e3,
                           r["rays_per_frame"], method=f"nerfexport {r['runtime']}", experiment=r["label"],
                           machine=doc["machine"], views=doc["views"], **extra))
    return out


def parse_samples(text: str | None) -> tuple[int, int] | None:
    """``"64,128"`` -> ``(64, 128)``; ``None`` -> ``None`` (each item's own)."""
    if not text:
        return None
    try:
        smp = tuple(int(x) for x in text.split(","))
    except ValueError:
        smp = ()
    if len(smp) != 2 or not (1 <= smp[0] <= 4096 and 0 <= smp[1] <= 4096) or (smp[1] > 0 and smp[0] < 3):
        raise BenchError("--samples is like 64,128 (at most 4096 each; fine samples need at least 3 coarse)")
    return smp


def run_bench_items(items: list[str], out_dir: str | Path, data: DataArgs | None = None, views: int = 10,
                    repeat: int = 3, samples: str | None = None, peak: bool = True, progress=None) -> dict:
    """``nerfexport bench``: parse and check every item (``[LABEL=]PATH@RUNTIME[:plain|:density]``) and
    option before anything is measured, take the first ``views`` test views of the dataset (given,
    or recorded in the first item), and :func:`run_bench` them."""
    import matplotlib  # noqa: F401  (the figures, at the end: the bench extra must be there before measuring)

    from nerfexport.deploy.views import dataset_views
    emit = progress or (lambda e: None)
    smp = parse_samples(samples)
    if views < 1 or repeat < 1:
        raise BenchError("--views and --repeat must be at least 1")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BenchError(f"output {out_dir} exists and is not a folder")
    parsed = [BenchItem.parse(x) for x in items]
    from nerfexport.data.safety import check_output_folder
    check_output_folder(out_dir, "bench", [p.path for p in parsed] + [data and data.path],
                        what="bench output folder")
    record = check_items(parsed)
    ndc = bool((record or {}).get("ndc", True)) if isinstance(record, dict) else True
    v = dataset_views(record, data, first=views, ndc=ndc, owner=parsed[0].path)
    if v.note:
        emit({"event": "note", "text": v.note})
    return run_bench(parsed, v.images, v.poses, v.H, v.W, v.focal, out_dir, repeat=repeat, samples=smp,
                     progress=emit, peak_sizes=(1024, 2048, 4096) if peak else None)


def markdown(doc: dict) -> str:
    lines = [f"Machine: {doc['machine']}. {doc['views']} views of {doc['W']}x{doc['H']}"
             + (f", {doc['samples'][0]}+{doc['samples'][1]} samples per ray" if doc.get("samples") else "")
             + f"; median over {doc['repeat']} renders of each view. Speed-ups are against "
               f"`{doc['reference']}` in the same run."]
    pk = doc.get("gemm_peak")
    if pk:
        lines[0] += (f" GEMM peak measured in the same run ({pk['int8']['runtime']}, {pk['int8']['threads']} threads, "
                     f"best of {'/'.join(str(s) for s in pk['int8']['per_size'])} cubed): int8 "
                     f"{pk['int8']['gops']:.0f} GOP/s, fp32 {pk['fp32']['gops']:.0f} GOP/s; a network's fraction of "
                     "peak is against the peak of its own precision.")
    lay = (pk or {}).get("layers")
    if lay:
        lines[0] += (f" Layer-shape GEMM ({lay['rows']} x W x W, same provider and threads): int8 "
                     + ", ".join(f"W={w} {g:.0f}" for w, g in lay["int8"].items()) + " GOP/s; fp32 "
                     + ", ".join(f"W={w} {g:.0f}" for w, g in lay["fp32"].items()) + " GOP/s.")
    if any(r.get("fraction_of_shape_gemm") is not None for r in doc["rows"]):
        lines[0] += (" Own-shape GEMM: each row's networks' own matrix products alone (MatMulInteger or MatMul at "
                     f"{LAYER_ROWS} rows, each at its shape, same threads), weighted by its evaluations, timed in "
                     "the row's process after its renders: the network's time outside its GEMMs is what it misses.")
    sp = lambda r, k: "" if r.get(k) is None else f"{r[k]:.1f}x"
    lines += ["",
              "| configuration | runtime | precision | skip | samples | size [MB] | median ms/frame | speed-up | "
              "vs torch | vs torch-bf16 | rays/s | network evals/frame | samples/s | network GOP/s | of peak | "
              "of layer GEMM | of own-shape GEMM | PSNR | SSIM | PSNR vs teacher | peak RSS [MB] | "
              "rays / sampling / network / compositing [ms] |",
              "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in doc["rows"]:
        if "error" in r:
            lines.append(f"| {r['label']} | {r['runtime']} | not run: {r['error']} ||||||||||||||||||||")
            continue
        b = r["breakdown_ms"]
        vt = "" if r.get("psnr_vs_teacher") is None else f"{r['psnr_vs_teacher']:.2f}"
        skip = "grid + early stop" if r.get("skip") else ("early stop" if r.get("early_stop") else "no")
        fr = "" if r.get("fraction_of_peak") is None else f"{100 * r['fraction_of_peak']:.0f}%"
        rt = r["runtime"]
        fl = "" if r.get("fraction_of_layer_gemm") is None else f"{100 * r['fraction_of_layer_gemm']:.0f}%"
        fo = "" if r.get("fraction_of_shape_gemm") is None else f"{100 * r['fraction_of_shape_gemm']:.0f}%"
        smp = "+".join(str(n) for n in r["samples"]) if r.get("samples") else ""
        lines.append(f"| {r['label']} | {rt} | {r['precision']} | {skip} | {smp} | {r['bytes'] / 1e6:.2f} | "
                     f"{r['median_ms']:.0f} | {r.get('speedup_vs_teacher', 1.0):.2f}x | {sp(r, 'speedup_vs_torch')} | "
                     f"{sp(r, 'speedup_vs_torch_bf16')} | {r['rays_per_s']:,.0f} | "
                     f"{r['samples_per_frame']:,.0f} | {r['samples_per_s']:,.0f} | {r.get('network_gops', 0):.0f} | {fr} | {fl} | {fo} | "
                     f"{r['psnr']:.2f} | {r['ssim']:.3f} | {vt} | {r['peak_rss_mb']:.0f} | "
                     f"{b['rays']:.0f} / {b['sampling']:.0f} / {b['network']:.0f} / {b['compositing']:.0f} |")
    return "\n".join(lines) + "\n"


def _main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    try:
        res = worker(job)
    except Exception as e:  # reported by the parent as one line
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 2
    Path(job["out"]).write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
