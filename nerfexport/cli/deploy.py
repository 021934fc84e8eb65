"""Deploy-side commands: ``render`` and ``doctor``. They import no torch unless asked to render a
checkpoint with the torch runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nerfexport.cli.app import DEFAULT_BUNDLE, app, default_file, guard, say
from nerfexport.cli.progress import Reporter


@app.command()
@guard
def render(target: Annotated[Optional[Path], typer.Argument(help="bundle folder (default: ./bundle), or a "
                                                            "checkpoint for --runtime torch")] = None,
           runtime: Annotated[str, typer.Option(help="ort-cpu, ort-cuda, ort-trt, tensorrt, torch, or a TOML "
                                                "file")] = "ort-cpu",
           views: Annotated[str, typer.Option(help="test, spiral, or test-view numbers like 0,3")] = "test",
           camera_path: Annotated[Optional[Path], typer.Option(help="a nerfstudio camera_path.json to render "
                                                               "instead of --views")] = None,
           resolution: Annotated[Optional[str], typer.Option(help="render at WIDTHxHEIGHT, e.g. 640x480")] = None,
           scale: Annotated[Optional[float], typer.Option(help="render at this multiple of the size")] = None,
           depth: Annotated[bool, typer.Option("--depth", help="also depth-NNN.png (16-bit, millimetres "
                                               "of the scene's units)")] = False,
           opacity: Annotated[bool, typer.Option("--opacity", help="also opacity-NNN.png")] = False,
           out: Annotated[Path, typer.Option("--out", "-o", help="folder for the PNGs (and spiral.gif/.mp4)")] = Path(
               "renders"),
           data: Annotated[Optional[Path], typer.Option("--data", help="dataset (default: recorded in the "
                                                        "bundle)")] = None,
           downscale: Annotated[Optional[int], typer.Option()] = None,
           test_every: Annotated[Optional[int], typer.Option()] = None,
           skip: Annotated[bool, typer.Option("--skip/--no-skip", help="empty-space skipping with the bundle's "
                                              "occupancy grid, and early ray termination")] = True,
           early_stop: Annotated[Optional[float], typer.Option(help="stop a ray once its transmittance is below "
                                                              "this (default 1e-3 with --skip; 0 never)")] = None,
           force: Annotated[bool, typer.Option("--force", help="replace an output folder that is not an "
                                               "earlier render")] = False,
           sampler: Annotated[str, typer.Option(help="where the fine samples go, with --skip: density (from the "
                                                "bundle's baked density grid, no coarse network), network (the "
                                                "coarse network's weights) or auto (docs/speed-native.md)")] = "auto",
           ) -> None:
    """Render views of a bundle with the lean renderer (numpy + the runtime; no torch) and write PNGs."""
    from nerfexport.data.datasets import DataArgs
    from nerfexport.deploy.views import ViewRequest, parse_resolution
    path = default_file(target, (DEFAULT_BUNDLE, "the bundle"))
    req = ViewRequest(views, camera_path, DataArgs(data, downscale, None, test_every),
                      parse_resolution(resolution) if resolution else None, scale, depth, opacity, force)
    from nerfexport.bench.runtimes import run_render
    with Reporter(f"render ({runtime})") as report:
        s = run_render(path, runtime, req, out, skip, early_stop, report, sampler)
    say(f"rendered {s.views} view(s) of {s.W}x{s.H} with {s.runtime} ({s.samples[0]}+{s.samples[1]} samples): "
        f"median {s.median_ms:.0f} ms/frame, {s.evaluations_per_frame:,.0f} network evaluations/frame "
        f"(network {100 * s.network_share:.0f}% of the time)")
    if s.psnr is not None:
        say(f"PSNR against the dataset's test views: {s.psnr:.2f} dB")
    say(f"wrote {s.out}/ ({', '.join(sorted({Path(f).suffix for f in s.files}))})")


@app.command()
@guard
def tune(bundle: Annotated[Optional[Path], typer.Argument(help="bundle folder (default: ./bundle)")] = None,
         out: Annotated[Path, typer.Option("-o", "--out", help="runtime TOML to write")] = Path("my-cpu.toml"),
         base: Annotated[str, typer.Option(help="runtime to start from (onnxruntime on the CPU)")] = "ort-cpu",
         views: Annotated[int, typer.Option(help="held-out views to measure on")] = 2,
         tolerance: Annotated[float, typer.Option(help="largest PSNR loss against the plain render, dB")] = 0.1,
         repeat: Annotated[int, typer.Option(help="renders of each view per setting")] = 1,
         data: Annotated[Optional[Path], typer.Option("--data", help="dataset (default: recorded in the bundle)")] = None,
         downscale: Annotated[Optional[int], typer.Option()] = None,
         test_every: Annotated[Optional[int], typer.Option()] = None) -> None:
    """Measure the fastest renderer settings for this bundle on this machine (samples within a PSNR
    tolerance, chunk, threads) and write them as a runtime file: then `render --runtime my-cpu.toml`."""
    from nerfexport.data.datasets import DataArgs
    from nerfexport.deploy.tune import tune_runtime
    path = default_file(bundle, (DEFAULT_BUNDLE, "the bundle"))
    with Reporter("tune") as report:
        r = tune_runtime(path, out, base, views, tolerance, repeat, DataArgs(data, downscale, None, test_every),
                         progress=report)
    s = r.spec
    kept = min((t for t in r.trials if t.kept), key=lambda t: t.median_ms)
    say(f"plain render {r.plain_ms:.0f} ms/frame; tuned {kept.median_ms:.0f} ms/frame ({r.plain_ms / kept.median_ms:.1f}x) "
        f"with {s.samples[0]}+{s.samples[1]} samples, chunk {s.chunk}, {s.threads or 'all'} thread(s) x {s.workers} "
        f"worker(s): {kept.psnr:.2f} dB against {r.reference}")
    say(f"wrote {out} (nerfexport render --runtime {out})")


@app.command()
@guard
def doctor(probe: Annotated[bool, typer.Option("--probe/--no-probe", help="run a tiny network on each available "
                                               "runtime")] = True,
           int8: Annotated[bool, typer.Option("--int8/--no-int8", help="check this CPU's int8 kernels against the "
                                              "float simulation of the same graphs")] = True,
           bundle: Annotated[Optional[Path], typer.Option(help="also check this int8 bundle's networks on points "
                                                          "of real rays")] = None) -> None:
    """One table for bug reports: every shipped runtime (available or not, and why), versions, GPU, CPU features,
    and whether this CPU's int8 kernels compute what an int8 graph says."""
    from nerfexport.bench.doctor import diagnose, table
    say(table(diagnose(probe, bundle=bundle, int8=int8)))
