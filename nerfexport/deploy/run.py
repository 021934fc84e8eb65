"""Rendering from files to files: what ``nerfexport render`` runs (:func:`run_render`), for a
bundle or, through the torch family handed in from the train side, a checkpoint.

The PNGs (and ``spiral.gif`` for an orbit) are written into a temporary folder beside ``out``
and renamed into place at the end, so ``out`` appears whole or not at all.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from nerfexport.data.datasets import DatasetError
from nerfexport.data.fileio import temp_dir_for
from nerfexport.data.safety import MARKER, check_output_folder, mark, swap_into_place
from nerfexport.data.metrics import psnr
from nerfexport.deploy.networks import Family, open_source
from nerfexport.deploy.render import Renderer, Sampler, make_renderer
from nerfexport.deploy.runtime import RuntimeSpecError, load_runtime
from nerfexport.deploy.views import ViewRequest, Views

ProgressFn = Callable[[dict], None]


@dataclass
class RenderSummary:
    """What a render did: views, size, runtime, median frame time, evaluations per frame, the
    network's share of the time, PSNR against ground truth (when there is one), files written."""

    views: int
    H: int
    W: int
    runtime: str
    samples: tuple[int, int]
    median_ms: float
    evaluations_per_frame: float
    network_share: float
    psnr: float | None
    out: Path
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


OUTPUT_SUFFIXES = (".png", ".gif", ".mp4")


RENDERS = "renders"   # the kind written in the marker file of a render folder


def render_inputs(req: ViewRequest | None, *more) -> list:
    """What a render reads: the bundle or checkpoint, the dataset (given or recorded), the camera path."""
    req = req or ViewRequest()
    out = [m for m in more if m is not None and not isinstance(m, dict)]
    out += [p for p in (req.data and req.data.path, req.camera_path) if p is not None]
    out += [m["path"] for m in more if isinstance(m, dict) and isinstance(m.get("path"), str)]
    return out


def check_output(out: Path, inputs=(), force: bool = False) -> Path:
    """``out`` may be replaced: absent, empty, or an earlier render folder (it holds nerfexport's
    marker file), or anything but a symlink, a file or an input with ``force``."""
    return check_output_folder(out, RENDERS, inputs, force, what="render folder")


def skip_note(r: Renderer, grid, skip: bool, where: Path) -> str:
    if r.grid is not None:
        how = ("" if r.proposal is None else
               f"; fine samples from the baked density ({r.n_proposal} depths a ray, no coarse network)")
        if r.proposal is not None and getattr(r.proposal, "res", 0) <= grid.res:
            # lego's teacher lost 2.3 dB on ort-cpu-fast from such a bundle, 0.17 dB once exported again
            how += (f"; its density grid is no finer than the occupancy grid ({grid.res}^3: exported before the "
                    "density sampler's finer grid), which places samples worse: export it again")
        return (f"empty-space skipping: {grid.res}^3 grid, {100 * grid.fraction:.1f}% occupied; early termination "
                f"below transmittance {r.early_stop:g}{how}")
    if skip and r.early_stop > 0:
        return f"no occupancy grid in {where}; early termination below transmittance {r.early_stop:g}"
    return "plain rendering: every sample evaluated"


def video_writer():
    """imageio-ffmpeg's ``write_frames`` when it is installed (``pip install imageio-ffmpeg``), else None."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    return imageio_ffmpeg.write_frames


def write_mp4(frames: list[np.ndarray], path: Path, fps: float, write_frames) -> None:
    """H.264 MP4 of ``frames (H, W, 3) uint8`` (edge-padded to even sizes, as yuv420p needs)."""
    h, w = frames[0].shape[:2]
    ph, pw = h % 2, w % 2
    gen = write_frames(str(path), (w + pw, h + ph), fps=fps, macro_block_size=1, quality=8,
                       output_params=["-loglevel", "error"])
    gen.send(None)
    try:
        for f in frames:
            gen.send(np.ascontiguousarray(np.pad(f, ((0, ph), (0, pw), (0, 0)), mode="edge")))
    finally:
        gen.close()


def _extra_images(out: dict, req: ViewRequest, tmp: Path, i: int) -> None:
    from PIL import Image
    if req.depth:
        mm = np.clip(np.nan_to_num(out["depth"], nan=0.0) * 1000.0, 0, 65535).astype(np.uint16)
        Image.fromarray(mm).save(tmp / f"depth-{i:03d}.png")
    if req.opacity:
        Image.fromarray((np.clip(out["acc"], 0, 1) * 255 + 0.5).astype(np.uint8)).save(tmp / f"opacity-{i:03d}.png")


def render_to_folder(r: Renderer, views: Views, out: str | Path, runtime: str,
                     progress: ProgressFn | None = None, req: ViewRequest | None = None) -> RenderSummary:
    """Render every view of ``views`` with ``r`` into PNGs in ``out`` (atomically): ``NNN.png``,
    ``depth-NNN.png`` / ``opacity-NNN.png`` when ``req`` asks, and for a sequence ``spiral.gif``
    and, where imageio-ffmpeg is installed, ``spiral.mp4``."""
    from PIL import Image
    emit = progress or (lambda e: None)
    req = req or ViewRequest()
    out = check_output(Path(out), render_inputs(req), req.force)
    writer = video_writer() if views.orbit else None
    if views.orbit and writer is None:
        emit({"event": "note", "text": "no MP4: imageio-ffmpeg is not installed (pip install imageio-ffmpeg); "
                                       "writing the GIF"})
    tmp = temp_dir_for(out)
    frames, scores, walls = [], [], []
    emit({"event": "start", "total": len(views.poses)})
    try:
        for i, pose in enumerate(views.poses):
            t0 = time.perf_counter()
            o = r.render_view(views.H, views.W, views.focal, pose)
            walls.append(time.perf_counter() - t0)
            rgb = o["rgb"]
            frame = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
            Image.fromarray(frame).save(tmp / f"{i:03d}.png")
            _extra_images(o, req, tmp, i)
            if views.orbit:
                frames.append(frame)
            if views.images is not None:
                scores.append(psnr(rgb, views.images[i]))
            emit({"event": "step", "step": i + 1})
        if views.orbit:
            gif = [Image.fromarray(f) for f in frames]
            gif[0].save(tmp / "spiral.gif", save_all=True, append_images=gif[1:],
                        duration=max(20, round(1000 / views.fps)), loop=0)
            if writer is not None:
                write_mp4(frames, tmp / "spiral.mp4", views.fps, writer)
        mark(tmp, RENDERS)
        swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    t, n = r.timings, len(views.poses)
    busy = t.rays + t.sampling + t.network + t.compositing
    return RenderSummary(n, views.H, views.W, runtime, (r.s.n_coarse, r.s.n_fine),
                         float(np.median(walls)) * 1e3, t.samples / n, t.network / busy if busy else 0.0,
                         float(np.mean(scores)) if scores else None, out,
                         sorted(str(p) for p in out.iterdir() if p.name != MARKER))


def early_stop_value(early_stop: float | None) -> float | None:
    if early_stop is not None and not 0.0 <= early_stop < 1.0:
        raise DatasetError(f"--early-stop is a transmittance in [0, 1), not {early_stop}")
    return early_stop


def run_render(target: str | Path, runtime: str = "ort-cpu", req: ViewRequest | str = "test",
               out: str | Path = "renders", skip: bool = True, early_stop: float | None = None,
               progress: ProgressFn | None = None, sampler: Sampler | None = None,
               families: Mapping[str, Family] | None = None) -> RenderSummary:
    """Render views of a bundle (or, with a family that renders one, a checkpoint) into PNGs.

    Args:
        target: a bundle folder, or a checkpoint file for the torch runtime.
        runtime: a runtime name (``ort-cpu``) or TOML file; its kind picks the family in
            ``families`` (:data:`nerfexport.deploy.networks.FAMILIES`, the bundle runtimes, by
            default; :func:`nerfexport.bench.runtimes.run_render` adds the torch baseline).
        req: a :class:`ViewRequest`, or just ``test``, ``spiral`` or test-view numbers like ``0,3``.
        out: the folder for ``NNN.png`` (and ``spiral.gif``/``.mp4``), replaced atomically.
        skip: empty-space skipping and early termination (a checkpoint always renders plain).
        early_stop: the transmittance a ray stops at (default 1e-3 with ``skip``).
        progress: gets ``{"event": "warning" | "note", "text"}`` lines and one ``step`` per view.
        sampler: :func:`nerfexport.deploy.render.make_renderer`'s (auto by default).

    Returns:
        A :class:`RenderSummary` (views, size, median ms/frame, PSNR against ground truth).
    """
    emit = progress or (lambda e: None)
    req = ViewRequest(req) if isinstance(req, str) else req
    target, out = Path(target), Path(out)
    early_stop_value(early_stop)
    spec = load_runtime(runtime)
    src = open_source(spec, target, families)
    st = src.settings
    v = req.select(src.camera, st.near, st.far, st.ndc, src.data, str(target))
    check_output(out, render_inputs(req, target, src.data), req.force)
    for text in src.warnings:
        emit({"event": "warning", "text": text})
    if v.note:
        emit({"event": "note", "text": v.note})
    skip = skip and not src.plain
    grid = src.occupancy()
    try:
        r = make_renderer(spec, src.networks(None), st, grid, skip, early_stop, src.density() if skip else None,
                          None if src.plain else sampler)
    except ValueError as e:   # a sampler the bundle cannot serve
        raise RuntimeSpecError(str(e)) from None
    emit({"event": "note", "text": skip_note(r, grid, skip, target)})
    return render_to_folder(r, v, out, spec.name, progress, req)
