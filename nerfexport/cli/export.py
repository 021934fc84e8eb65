"""Export commands: ``export`` and ``export-study``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nerfexport.cli.app import DEFAULT_BUNDLE, DEFAULT_MODEL, SHRUNK_MODEL, app, default_file, guard, say
from nerfexport.cli.progress import Reporter


@app.command()
@guard
def export(model: Annotated[Optional[Path], typer.Argument(help="checkpoint (default: ./shrunk.pt, else "
                                                           "./model.pt)")] = None,
           out: Annotated[Path, typer.Option("-o", "--out", help="bundle folder to write")] = DEFAULT_BUNDLE,
           int8: Annotated[bool, typer.Option("--int8", help="static int8 (QDQ), calibrated on training rays")] = False,
           fp16: Annotated[bool, typer.Option("--fp16", help="fp16 weights and compute (for GPU runtimes)")] = False,
           tensorrt: Annotated[bool, typer.Option("--tensorrt", help="also build TensorRT engines (needs a GPU)")] = False,
           recipe: Annotated[Optional[str], typer.Option(help="recipe whose [export] table sets these options")] = None,
           calibration: Annotated[Optional[str], typer.Option(help="int8 calibration: percentile (99.99 %, "
                                                             "the default), minmax or entropy")] = None,
           calib_rays: Annotated[Optional[int], typer.Option(help="training rays for int8 calibration "
                                                            "(default 512)")] = None,
           target: Annotated[Optional[str], typer.Option(help="int8 activation format for: cpu (U8S8) or tensorrt "
                                                        "(S8S8); default cpu, tensorrt with --tensorrt")] = None,
           max_psnr_drop: Annotated[Optional[float], typer.Option(help="keep the most sensitive layers in float "
                                                                 "until int8 is within this many dB of fp32 on held-out "
                                                                 "pixels (default 0.25 with --int8; inf: every layer "
                                                                 "int8, still measured)")] = None,
           eval_views: Annotated[int, typer.Option(help="held-out views for the --max-psnr-drop check")] = 3,
           grid: Annotated[bool, typer.Option("--grid/--no-grid", help="bake an occupancy grid for empty-space "
                                              "skipping")] = True,
           grid_res: Annotated[int, typer.Option(help="occupancy grid cells per side")] = 128,
           grid_alpha: Annotated[float, typer.Option(help="a cell is occupied where the density's opacity over one "
                                                     "coarse sample spacing exceeds this")] = 0.2,
           density_scale: Annotated[int, typer.Option(help="the baked density grid (the density sampler's) is this "
                                                      "many times finer than the occupancy grid")] = 2,
           data: Annotated[Optional[Path], typer.Option("--data", help="training data (default: recorded in the "
                                                        "checkpoint)")] = None,
           downscale: Annotated[Optional[int], typer.Option()] = None,
           test_every: Annotated[Optional[int], typer.Option()] = None,
           force: Annotated[bool, typer.Option("--force", help="replace an output folder that is not a "
                                               "bundle")] = False) -> None:
    """Write a self-describing bundle: ONNX per network (fp32, fp16 or int8) and manifest.json."""
    from nerfexport.data.datasets import DataArgs
    from nerfexport.export.run import ExportRequest, run_export
    path = default_file(model, (SHRUNK_MODEL, "the shrunk model"), (DEFAULT_MODEL, "the default model"))
    req = ExportRequest(int8, fp16, tensorrt, recipe, calibration, calib_rays, target, max_psnr_drop, eval_views,
                        grid, grid_res, grid_alpha, force, density_scale=density_scale)
    with Reporter("export") as report:
        man = run_export(path, out, req, DataArgs(data, downscale, None, test_every), report)
    files = [n.file for n in man.networks.values() if n is not None]
    say(f"exported {path} as {man.precision}: {', '.join(files)} ({man.size_bytes() / 1e6:.2f} MB with the grid; "
        f"checkpoint {path.stat().st_size / 1e6:.2f} MB)")
    if man.occupancy is not None:
        occ = man.occupancy
        say(f"occupancy grid: {occ.res}^3 cells, {100 * occ.fraction:.1f}% occupied, {occ.bytes / 1e3:.0f} kB")
    q = man.quantization_check
    if q and q.get("psnr_fp32") is not None:
        say(f"int8 check on {eval_views} held-out views: fp32 {q['psnr_fp32']:.2f} dB, int8 {q['psnr_int8']:.2f} dB; "
            f"float layers: {man.calibration['float_layers']}")
    say(f"wrote {out}/")


@app.command("export-study")
@guard
def export_study(models: Annotated[list[str], typer.Argument(help="LABEL=CHECKPOINT; the first is the reference")],
                 out: Annotated[Path, typer.Option("-o", "--out", help="bundles and export.json")] = Path(
                     "cache/export-study"),
                 doc: Annotated[Optional[Path], typer.Option(help="Markdown file for the table")] = None,
                 data: Annotated[Optional[Path], typer.Option("--data")] = None,
                 downscale: Annotated[Optional[int], typer.Option()] = None,
                 test_every: Annotated[Optional[int], typer.Option()] = None,
                 views: Annotated[int, typer.Option()] = 10, calib_rays: Annotated[int, typer.Option()] = 512,
                 threads: Annotated[Optional[int], typer.Option()] = None,
                 methods: Annotated[str, typer.Option()] = "minmax,entropy,percentile") -> None:
    """fp32 vs static int8 (each calibration method): held-out PSNR through onnxruntime and bundle sizes."""
    from nerfexport.bench.study import export_study as run
    from nerfexport.data.datasets import DataArgs
    with Reporter("study") as report:
        _, table = run(models, out, methods, DataArgs(data, downscale, None, test_every), views, calib_rays, threads,
                       doc, report)
    say(table)
    if doc is not None:
        say(f"wrote {doc}")
