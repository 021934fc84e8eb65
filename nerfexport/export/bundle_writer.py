"""The export stage: a checkpoint becomes a self-describing bundle folder.

::

    bundle/
      manifest.json     format version, scene, sample counts, widths, precision, calibration,
                        source checkpoint hash, every file's hash
      coarse.onnx       points (N,3), viewdirs (N,3) -> rgb (N,3), density (N,1)
      fine.onnx         (absent for a model without a fine network)
      occupancy.npy     binary occupancy grid for empty-space skipping (packed bits; see grid.py)
      *.engine          TensorRT engines, with --tensorrt

One precision per bundle (fp32, fp16 or int8), so that a bundle is exactly what a device
stores. The folder is written under a temporary name beside the target and renamed into
place: it appears whole or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx

from nerfexport import __version__
from nerfexport.data.fileio import temp_dir_for
from nerfexport.data.safety import UnsafeInput, check_output_folder, swap_into_place
from nerfexport.data.fileio import sha256
from nerfexport.deploy.bundle import open_bundle
from nerfexport.deploy.manifest import FORMAT, MANIFEST, VERSION, Camera, Grid, Manifest, Network, Scene, is_bundle
from nerfexport.export.onnx_graph import OPSET, mlp_to_onnx
from nerfexport.export.quantize import Int8Settings, quantize_int8, quantized_layers

PRECISIONS = ("fp32", "fp16", "int8")


class ExportError(ValueError):
    """The export cannot be done with these inputs."""


@dataclass
class ExportOptions:
    precision: str = "fp32"
    int8: Int8Settings = field(default_factory=Int8Settings)
    calib_rays: int = 512
    calib_points: int = 65536     # per network, at most
    max_psnr_drop: float | None = None
    eval_views: int = 3           # held-out views for the int8 PSNR check (with max_psnr_drop)
    tensorrt: bool = False        # also build TensorRT engines (inside the temporary folder)
    seed: int = 0
    grid: bool = False            # bake an occupancy grid (the CLI default; needs grid_box unless NDC)
    grid_res: int = 128
    grid_alpha: float = 0.2       # a cell is occupied above the density of this opacity per coarse spacing
    grid_dilation: int = 1
    grid_box: list | None = None  # the box the grid covers (grid.scene_box); NDC scenes need none
    grid_probe: tuple | None = None  # samples along training rays (grid.ray_points): is outside the box empty?
    density: bool = True          # with the grid, also the density at its occupied cells' corners (density.npz)
    density_scale: int = 2        # the density grid is this many times finer than the occupancy grid (the
    #                               sampler on lego's sharp student: -0.21 dB at 1, -0.01 dB at 2; speed-native.md)

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.calib_rays < 1:
            raise ExportError("--calib-rays must be at least 1")
        if self.max_psnr_drop is not None and not self.max_psnr_drop >= 0:
            raise ExportError("--max-psnr-drop must be zero or more")
        if self.precision == "int8":
            self.int8.validate()
        if self.grid:
            if not 2 <= self.grid_res <= 512:
                raise ExportError(f"--grid-res must be between 2 and 512, not {self.grid_res}")
            if not 0.0 < self.grid_alpha < 1.0:
                raise ExportError(f"--grid-alpha must be in (0, 1), not {self.grid_alpha}")
            if self.grid_dilation < 0:
                raise ExportError("--grid-dilation must be zero or more")
            if self.density and not (1 <= self.density_scale and self.grid_res * self.density_scale <= 512):
                raise ExportError(f"the density grid must be 1 to {512 // self.grid_res} times as fine as the "
                                  f"occupancy grid, not {self.density_scale}")


def _metadata(model, which: str, precision: str, source_sha: str) -> dict[str, str]:
    c = model.cfg
    net = getattr(model, which)
    return {"nerfexport.format": FORMAT, "nerfexport.version": str(VERSION), "network": which,
            "precision": precision, "near": repr(c.near), "far": repr(c.far), "white_bkgd": str(c.white_bkgd),
            "ndc": str(c.ndc), "n_coarse": str(c.n_coarse), "n_fine": str(c.n_fine),
            "widths": json.dumps(net.cfg.to_dict()), "source_sha256": source_sha}


def _own_bundle(out: Path) -> bool:
    """An earlier bundle that holds nothing but the files its manifest names."""
    try:
        m = Manifest.read(out)
    except ValueError:
        return False
    names = {MANIFEST} | {e.file for _, e in m.files()}
    for p in out.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            continue
        if str(p.relative_to(out)) not in names:
            return False
    return True


def prepare_output(out: str | Path, force: bool, inputs=()) -> Path:
    """Refuse to replace a folder that is not an earlier bundle (holding only its own files)
    unless ``force``; never a symlink, a file, or a folder that holds an input."""
    try:
        out = check_output_folder(out, "bundle", inputs, force, owned=_own_bundle)
    except UnsafeInput as e:
        raise ExportError(str(e)) from None
    parent = out.parent if str(out.parent) else Path(".")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"cannot write {out}: permission denied")
    return out


_swap_into_place = swap_into_place


def export_bundle(model, out: str | Path, opts: ExportOptions, source: str | Path | None = None,
                  calib=None, evaluate: Callable | None = None, force: bool = False,
                  progress: Callable[[dict], None] | None = None, data: dict | None = None) -> Manifest:
    """Write the bundle of ``model`` (a :class:`nerfexport.model.mlp.NeRF`) to ``out``; returns its manifest.

    ``calib``: a :class:`nerfexport.shrink.calibration.CalibrationSet` (needed for int8).
    ``evaluate(bundle_dir) -> psnr``: renders held-out views of a bundle folder; needed for
    ``opts.max_psnr_drop`` (the int8 layers are then checked one by one and the most sensitive
    kept in float until the drop is within the limit).
    """
    emit = progress or (lambda e: None)
    opts.validate()
    out = prepare_output(out, force, [source])
    if opts.precision == "int8":
        if calib is None:
            raise ExportError("int8 export needs calibration samples")
        if opts.max_psnr_drop is not None and evaluate is None:
            raise ExportError("--max-psnr-drop needs held-out views to measure the drop")
    if opts.grid and opts.grid_box is None and not model.cfg.ndc:
        raise ExportError("the occupancy grid needs the scene box from the training cameras (pass the data, "
                          "or export without a grid)")
    src_sha = sha256(source) if source is not None else ""
    t0 = time.perf_counter()
    tmp = temp_dir_for(out)   # removes what a killed export of the same output left
    try:
        nets = {"coarse": model.coarse, "fine": model.fine}
        cal_data, equalized = None, None
        if opts.precision == "int8":
            cal_data = _calibration_data(calib, [w for w, n in nets.items() if n is not None], opts)
            if opts.int8.equalize > 0:
                # the same function, with even rank-space ranges for the quantizer (low-rank layers)
                from nerfexport.export.equalize import equalize_rank_space
                eq, equalized = equalize_rank_space(model, cal_data, opts.int8.equalize, opts.int8.percentile)
                nets = {"coarse": eq.coarse, "fine": eq.fine}
        fp32_files = {}
        for which, net in nets.items():
            if net is None:
                continue
            st = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
            prec = "fp16" if opts.precision == "fp16" else "fp32"
            m = mlp_to_onnx(st, net.cfg, name=f"nerf_{which}", dtype=prec,
                            metadata=_metadata(model, which, opts.precision, src_sha))
            path = tmp / f"{which}.onnx"
            onnx.save(m, str(path))
            fp32_files[which] = path
        quant = None
        if opts.precision == "int8":
            quant = _quantize_all(model, tmp, fp32_files, opts, cal_data, evaluate, emit, src_sha)
            quant["equalized_layers"] = {w: sorted(v) for w, v in (equalized or {}).items()}
        grid_info = density_info = None
        if opts.grid:
            from nerfexport.deploy.occupancy import GRID_FILE
            from nerfexport.export.grid import bake, scene_box
            emit({"event": "stage", "stage": "occupancy grid"})
            box = opts.grid_box if opts.grid_box is not None else scene_box(None, model.cfg.near, True)
            corners = {} if opts.density else None
            g, grid_info = bake(model, box, opts.grid_res, opts.grid_alpha, opts.grid_dilation, probe=opts.grid_probe,
                                keep=corners)
            g.save(tmp / GRID_FILE)
            grid_info = Grid.parse({**grid_info, "file": GRID_FILE, "sha256": sha256(tmp / GRID_FILE),
                                    "bytes": (tmp / GRID_FILE).stat().st_size}, "occupancy grid", "the export")
            if opts.density:
                density_info = _bake_density(model, g, corners["corners"], tmp, opts.density_scale)
        manifest = _manifest(model, tmp, opts, source, src_sha, calib, quant)
        manifest.occupancy = grid_info
        manifest.density = density_info
        manifest.data = data or None   # where the training and test views came from (render --views test)
        manifest.export_seconds = time.perf_counter() - t0
        manifest.write(tmp)
        if opts.tensorrt:
            from nerfexport.export.tensorrt import build_engines
            emit({"event": "stage", "stage": "TensorRT engines"})
            manifest = build_engines(tmp)
        open_bundle(tmp)  # the bundle checks out before it is put in place
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _bake_density(model, occupancy, corners, tmp: Path, scale: int = 1):
    """``density.npz``: the model's density at the corners of a grid ``scale`` times as fine as
    the occupancy grid, in its occupied cells alone (``scale`` 1: the corner densities the grid
    bake evaluated, no further network evaluations). The renderer's density sampler places the
    fine samples from it (issue 34)."""
    from nerfexport.deploy.density import DENSITY_FILE, bake_density, save_density
    from nerfexport.deploy.manifest import Density
    if scale == 1:
        dg = bake_density(None, occupancy, corners=corners)
    else:
        from nerfexport.export.grid import _query
        net = model.fine if model.fine is not None else model.coarse
        dg = bake_density(lambda p: _query(net, p, None, 65536)[0], occupancy, occupancy.res * scale)
    scale = save_density(dg, tmp / DENSITY_FILE)
    return Density(DENSITY_FILE, sha256(tmp / DENSITY_FILE), (tmp / DENSITY_FILE).stat().st_size, dg.res,
                   tuple(float(x) for x in occupancy.aabb), scale)


def _calibration_data(calib, networks, opts: ExportOptions) -> dict:
    """``{network: (points (N,3), directions (N,3))}``: at most ``opts.calib_points`` of each
    network's calibration samples (the fine network's are the coarse ones where it has none)."""
    from nerfexport.shrink.calibration import subsample

    data = {}
    for which in networks:
        pts, dirs = calib.for_network(which)
        if pts.shape[0] == 0:
            pts, dirs = calib.for_network("coarse")
        data[which] = subsample(pts, dirs, opts.calib_points, opts.seed)
    return data


def _quantize_all(model, tmp: Path, fp32_files: dict, opts: ExportOptions, data: dict, evaluate, emit,
                  src_sha) -> dict:
    work = tmp / ".fp32"
    work.mkdir()
    for which, p in fp32_files.items():
        shutil.move(str(p), work / p.name)

    def build(exclude: dict[str, tuple[str, ...]], dest: Path) -> None:
        for which in fp32_files:
            s = Int8Settings(**{**opts.int8.__dict__, "exclude": exclude.get(which, ())})
            quantize_int8(work / f"{which}.onnx", dest / f"{which}.onnx", *data[which], s)
            m = onnx.load(str(dest / f"{which}.onnx"))
            del m.metadata_props[:]
            for k, v in _metadata(model, which, "int8", src_sha).items():
                m.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
            onnx.save(m, str(dest / f"{which}.onnx"))

    def psnr_of(files_dir: Path) -> float:
        _manifest(model, files_dir, opts, None, src_sha, None, None).write(files_dir)
        return float(evaluate(files_dir))

    exclude = {w: tuple(opts.int8.exclude) for w in fp32_files}
    report = {"sensitivity": None, "psnr_fp32": None, "psnr_int8": None, "float_layers": {}}
    emit({"event": "stage", "stage": "quantize"})
    build(exclude, tmp)
    if opts.max_psnr_drop is not None:
        ref = work / "ref"
        ref.mkdir()
        for p in fp32_files.values():
            shutil.copy(work / p.name, ref / p.name)
        emit({"event": "stage", "stage": "fp32 reference"})
        p32 = psnr_of(ref)
        emit({"event": "stage", "stage": "int8 check"})
        p8 = psnr_of(tmp)
        report.update(psnr_fp32=p32, psnr_int8=p8)
        if p32 - p8 > opts.max_psnr_drop:
            # per-layer cost: quantize one layer at a time (everything else float)
            emit({"event": "stage", "stage": "per-layer sensitivity"})
            layers = {w: quantized_layers(tmp / f"{w}.onnx") for w in fp32_files}
            cost = []
            probe = work / "probe"
            probe.mkdir()
            for w, names in layers.items():
                for name in names:
                    ex = {x: tuple(layers[x]) for x in fp32_files}
                    ex[w] = tuple(n for n in names if n != name)
                    build(ex, probe)
                    cost.append((p32 - psnr_of(probe), w, name))
                    emit({"event": "layer", "network": w, "layer": name, "drop": cost[-1][0]})
            cost.sort(reverse=True)
            report["sensitivity"] = [{"network": w, "layer": n, "psnr_drop": c} for c, w, n in cost]
            for c, w, name in cost:
                exclude[w] = tuple(sorted(set(exclude[w]) | {name}))
                build(exclude, tmp)
                p8 = psnr_of(tmp)
                emit({"event": "kept-float", "network": w, "layer": name, "psnr": p8})
                if p32 - p8 <= opts.max_psnr_drop:
                    break
            report["psnr_int8"] = p8
    report["float_layers"] = {w: list(v) for w, v in exclude.items()}
    shutil.rmtree(work)
    (tmp / MANIFEST).unlink(missing_ok=True)
    return report


def _manifest(model, root: Path, opts: ExportOptions, source, src_sha: str, calib, quant) -> Manifest:
    c = model.cfg
    nets = {}
    for which in ("coarse", "fine"):
        net = getattr(model, which)
        p = root / f"{which}.onnx"
        nets[which] = None if net is None or not p.is_file() else \
            Network(p.name, sha256(p), p.stat().st_size, net.cfg.to_dict())
    cam = c.camera or {}
    scene = Scene(float(c.near), float(c.far), bool(c.white_bkgd), bool(c.ndc), int(c.n_coarse), int(c.n_fine),
                  Camera.parse(cam, "the checkpoint's camera") if cam else None)
    m = Manifest(precision=opts.precision, scene=scene, networks=nets, opset=OPSET,
                 created_by=f"nerfexport {__version__}",
                 source={"checkpoint": str(source) if source else None, "sha256": src_sha})
    if opts.precision == "int8":
        m.calibration = {**(calib.summary() if calib is not None else {}),
                         "points_per_network": opts.calib_points, **opts.int8.to_dict()}
        if quant is not None:
            m.calibration["float_layers"] = quant["float_layers"]
            m.calibration["equalized_layers"] = quant.get("equalized_layers", {})
            m.quantization_check = {k: quant[k] for k in ("psnr_fp32", "psnr_int8", "sensitivity")}
            m.quantization_check["max_psnr_drop"] = opts.max_psnr_drop
    return m
