"""``nerfexport tune``: measure, on this machine and this bundle, the renderer settings that are
fastest while the picture stays within a tolerance of the plain render, and write them as a
runtime TOML file (``--runtime my-cpu.toml`` afterwards).

What is searched, in this order (each step keeps the best of the one before):

1. fine samples per ray (the bundle's, then fewer): the fewest whose PSNR against the ground
   truth stays within ``tolerance`` dB of the plain render's (every sample evaluated, the
   bundle's counts); without ground truth, against the plain render itself (at least
   ``40 - 10 log10`` of the tolerance... see :data:`NO_TRUTH_PSNR`);
2. rays per chunk;
3. threads: one intra-op thread per call with one worker per core, or all cores in one call
   (each step starts from the best of the one before).

Every timing is the median of ``repeat`` renders of each view after one warm-up render, in this
process; numpy only (the deploy side).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from nerfexport.data.datasets import DataArgs
from nerfexport.data.fileio import atomic_write
from nerfexport.data.safety import check_output_file, writes_through
from nerfexport.data.metrics import psnr
from nerfexport.deploy.bundle import open_bundle
from nerfexport.deploy.render import Renderer, make_renderer
from nerfexport.deploy.networks import make_networks, render_settings
from nerfexport.deploy.runtime import RuntimeSpec, RuntimeSpecError, load_runtime
from nerfexport.deploy.views import Views, select_views

FINE_CANDIDATES = (128, 96, 64, 48, 32)
CHUNK_CANDIDATES = (128, 256, 512, 1024)
NO_TRUTH_PSNR = 40.0   # without ground truth: a setting must stay this close (PSNR) to the plain render


class TuneError(ValueError):
    """The tuning cannot run with these inputs."""


@dataclass
class Trial:
    what: str
    samples: tuple[int, int]
    chunk: int
    threads: int
    workers: int
    median_ms: float
    evaluations: float
    psnr: float          # against the ground truth, or against the plain render without one
    kept: bool = False


@dataclass
class TuneResult:
    spec: RuntimeSpec
    trials: list[Trial] = field(default_factory=list)
    plain_ms: float = 0.0
    plain_psnr: float | None = None
    reference: str = "ground truth"
    out: Path | None = None


def _render(spec: RuntimeSpec, bundle, views: Views, repeat: int, skip: bool = True):
    density = bundle.density() if skip and spec.sampler == "density" else None   # read once a bundle
    r: Renderer = make_renderer(spec, make_networks(spec, bundle=bundle), render_settings(spec, bundle.manifest),
                                bundle.occupancy(), skip, density=density)
    r.render_view(views.H, views.W, views.focal, views.poses[0])   # warm-up
    r.timings.reset()
    imgs, times = [], []
    for pose in views.poses:
        ts = []
        for _ in range(repeat):
            t = time.perf_counter()
            out = r.render_view(views.H, views.W, views.focal, pose)["rgb"]
            ts.append(time.perf_counter() - t)
        imgs.append(out)
        times.append(float(np.median(ts)))
    return imgs, float(np.median(times)) * 1e3, r.timings.samples / (len(views.poses) * repeat)


def _score(imgs, truth) -> float:
    return float(np.mean([psnr(a, b) for a, b in zip(imgs, truth)]))


def tune_runtime(bundle_path: str | Path, out: str | Path, base: str = "ort-cpu", views: int = 2,
                 tolerance: float = 0.1, repeat: int = 1, data: DataArgs | None = None,
                 fine: tuple[int, ...] = FINE_CANDIDATES,
                 chunks: tuple[int, ...] = CHUNK_CANDIDATES,
                 progress: Callable[[dict], None] | None = None) -> TuneResult:
    """Measure the fastest renderer settings for a bundle on this machine and write them as a
    runtime file.

    Args:
        bundle_path: the bundle folder.
        out: the ``.toml`` runtime file to write.
        base: the runtime to start from (a name or file; onnxruntime on the CPU).
        views: held-out views to measure on (orbit views when the bundle records no dataset).
        tolerance: the largest PSNR loss against the plain render, dB.
        repeat: renders of each view per setting.
        data: the dataset (the one the bundle records by default).
        fine, chunks: the fine-sample counts and rays per chunk to try.
        progress: gets ``{"event": "note", "text"}`` lines.

    Returns:
        A :class:`TuneResult`: the tuned spec, every trial, the plain render's time and PSNR.
    """
    emit = progress or (lambda e: None)
    out = Path(out)
    spec0 = _check_inputs(bundle_path, out, base, views, tolerance, repeat, data)
    b = open_bundle(bundle_path)
    if spec0.sampler == "density" and (b.manifest.density is None or b.manifest.occupancy is None):
        raise RuntimeSpecError(f"{base} uses the density sampler, which needs the bundle's density and occupancy "
                               "grids (export it again with this nerfexport)")
    v = _tune_views(b, bundle_path, views, data)
    n_c, n_f = b.manifest.scene.n_coarse, b.manifest.scene.n_fine
    emit({"event": "note", "text": f"reference: the plain render ({n_c}+{n_f} samples, every one evaluated) of "
                                   f"{len(v.poses)} view(s) of {v.W}x{v.H}"})
    plain_spec = dataclasses.replace(spec0, samples=None)
    plain, plain_ms, _ = _render(plain_spec, b, v, 1, skip=False)
    res = TuneResult(spec0, plain_ms=plain_ms)
    if v.images is not None:
        truth, res.plain_psnr, res.reference = v.images, _score(plain, v.images), "ground truth"
        floor = res.plain_psnr - tolerance
    else:
        truth, res.reference = plain, "the plain render"
        floor = NO_TRUTH_PSNR
    best = dataclasses.replace(spec0, samples=[n_c, n_f])

    def trial(what: str, spec: RuntimeSpec) -> Trial:
        imgs, ms, ev = _render(spec, b, v, repeat)
        t = Trial(what, tuple(spec.samples or (n_c, n_f)), spec.chunk, spec.threads, spec.workers, ms, ev,
                  _score(imgs, truth))
        res.trials.append(t)
        emit({"event": "note", "text": f"  {what}: {t.samples[0]}+{t.samples[1]} samples, chunk {t.chunk}, "
                                       f"{t.threads} thread(s) x {t.workers} worker(s): {ms:.0f} ms, "
                                       f"{ev:,.0f} evaluations, {t.psnr:.2f} dB"})
        return t

    # 1. fine samples: the fewest that keep the picture
    keep = None
    for nf in sorted({x for x in fine if 0 < x <= n_f} | {n_f}, reverse=True):
        t = trial("samples", dataclasses.replace(best, samples=[n_c, nf]))
        if t.psnr >= floor:
            keep = t
        else:
            break
    if keep is None:
        raise TuneError(f"even the bundle's own {n_c}+{n_f} samples with skipping fall below the tolerance")
    keep.kept = True
    best = dataclasses.replace(best, samples=list(keep.samples))
    # 2. rays per chunk, 3. threads: the fastest
    # (each step's options are made from the best of the step before)
    steps = (("chunk", lambda sp: [dataclasses.replace(sp, chunk=c) for c in chunks]),
             ("threads", lambda sp: [dataclasses.replace(sp, threads=1, workers=os.cpu_count() or 1),
                                     dataclasses.replace(sp, threads=0, workers=1)]))
    for what, make in steps:
        ts = [(trial(what, o), o) for o in make(best)]
        t, best = min(ts, key=lambda x: x[0].median_ms)
        t.kept = True
    res.spec = best
    res.out = out
    _write_runtime(out, runtime_toml(best, res))
    return res


def _check_inputs(bundle_path, out: Path, base: str, views: int, tolerance: float, repeat: int,
                  data: DataArgs | None) -> RuntimeSpec:
    """Refuse unusable options before anything is measured; the ``base`` runtime."""
    if out.suffix != ".toml":
        raise TuneError(f"--out {out} must be a .toml file (a runtime file)")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise TuneError(f"cannot write {out}: {out.parent} does not exist")
    if views < 1 or repeat < 1 or not 0 <= tolerance < 1e6:
        raise TuneError("--views and --repeat must be at least 1 and --tolerance a finite number, zero or more")
    check_output_file(out, [bundle_path, data and data.path], "--out")
    spec0 = load_runtime(base)
    if spec0.kind != "onnxruntime" or spec0.uses_cuda:
        raise TuneError(f"tune measures onnxruntime on the CPU; {spec0.name} is {spec0.kind} "
                        f"{'on a GPU' if spec0.uses_cuda else ''}".rstrip())
    return spec0


def _tune_views(b, bundle_path, views: int, data: DataArgs | None) -> Views:
    """The bundle's first ``views`` held-out views, or orbit views without a dataset."""
    s = b.manifest.scene
    cam = None if s.camera is None else s.camera.to_dict()
    try:
        v = select_views("test", cam, s.near, s.far, s.ndc, b.manifest.data, data, str(bundle_path))
        return Views(v.poses[:views], v.images[:views], v.H, v.W, v.focal)
    except ValueError:
        v = select_views("spiral", cam, s.near, s.far, s.ndc, None)
        return Views(v.poses[:views], None, v.H, v.W, v.focal)


def _write_runtime(out: Path, text: str) -> None:
    """Write the runtime file ``out`` atomically; what is written must load, or it is never put
    in place."""
    if not writes_through(out):
        import tempfile
        with tempfile.NamedTemporaryFile("wb", dir=Path(out).parent, prefix=f".{Path(out).name}.check.",
                                         suffix=".toml") as f:
            f.write(text.encode())
            f.flush()
            load_runtime(Path(f.name))
    atomic_write(out, lambda f: f.write(text.encode()))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise RuntimeSpecError(f"cannot write {type(v).__name__} to a runtime file")


def runtime_toml(spec: RuntimeSpec, res: TuneResult) -> str:
    """The runtime file for ``spec``, with what was measured as comments."""
    import platform
    best = min((t for t in res.trials if t.kept), key=lambda t: t.median_ms, default=None)
    lines = [f"# written by nerfexport tune on {platform.node() or 'this machine'} "
             f"({os.cpu_count()} cores), {time.strftime('%Y-%m-%d %H:%M')}",
             f"# plain render {res.plain_ms:.0f} ms/frame; tuned "
             f"{best.median_ms:.0f} ms/frame, {best.psnr:.2f} dB against {res.reference}"
             + (f" (plain {res.plain_psnr:.2f} dB)" if res.plain_psnr is not None else "") if best else "# no trial"]
    fields = {"description": f"{spec.description} (tuned)".strip(), "kind": spec.kind, "providers": spec.providers,
              "threads": spec.threads, "workers": spec.workers, "graph_optimization": spec.graph_optimization,
              "chunk": spec.chunk, "encoding": spec.encoding, "segment": spec.segment, "samples": spec.samples,
              "early_stop": spec.early_stop, "sampler": spec.sampler, "proposal_segment": spec.proposal_segment,
              "proposal_softness": spec.proposal_softness, "proposal_spacing": spec.proposal_spacing}
    lines += [f"{k} = {_toml_value(v)}" for k, v in fields.items() if v is not None]
    if spec.provider_options:
        for prov, opts in spec.provider_options.items():
            lines.append(f"\n[provider_options.{prov}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in opts.items()]
    return "\n".join(lines) + "\n"
