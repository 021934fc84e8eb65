"""Shrink commands: ``shrink`` and ``shrink-study``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nerfexport.cli.app import DEFAULT_MODEL, SHRUNK_MODEL, app, default_file, guard, say
from nerfexport.cli.progress import Reporter

METHODS_HELP = ("lowrank (factorize every layer, keep every neuron), uniform, magnitude[-in|-out], activation, coreset, "
                "data-coreset, or auto (the default: shrinks with lowrank, coreset, magnitude and data-coreset and "
                "distils the one closest to the teacher on training pixels)")


@app.command()
@guard
def shrink(model: Annotated[Optional[Path], typer.Argument(help="checkpoint to shrink (default: ./model.pt)")] = None,
           out: Annotated[Path, typer.Option("-o", "--out", help="checkpoint to write; a JSON report goes "
                                             "beside it")] = SHRUNK_MODEL,
           width: Annotated[Optional[int], typer.Option(help="the cost of this width in every trunk layer and the "
                                                         "feature layer (pruning: that width; lowrank: ranks that "
                                                         "cost no more)")] = None,
           ratio: Annotated[Optional[float], typer.Option(help="keep this fraction of every layer's neurons")] = None,
           rank: Annotated[Optional[int], typer.Option(help="lowrank: this rank in every layer where it "
                                                        "saves")] = None,
           budget: Annotated[Optional[float], typer.Option(help="a fraction of the teacher's multiply-adds per "
                                                           "point, e.g. 0.25")] = None,
           view_width: Annotated[Optional[int], typer.Option(help="width of the view branch (default: in "
                                                            "proportion)")] = None,
           method: Annotated[Optional[str], typer.Option(help=METHODS_HELP)] = None,
           recipe: Annotated[Optional[str], typer.Option(help="TOML recipe (path or shipped name) with a [shrink] "
                                                        "table")] = None,
           minutes: Annotated[Optional[float], typer.Option(help="distillation time budget (default 20; "
                                                            "shrinking alone loses most of the quality)")] = None,
           finetune: Annotated[Optional[int], typer.Option(help="distillation steps (alone: exactly this many, no "
                                                          "time budget)")] = None,
           calib_rays: Annotated[Optional[int], typer.Option(help="training rays for calibration statistics "
                                                            "(default 1024)")] = None,
           seed: Annotated[Optional[int], typer.Option(help="seed for sampling and fine-tuning (default 0)")] = None,
           device: Annotated[Optional[str], typer.Option(help="where the teacher bank and the distillation run: "
                                                         "auto (CUDA when torch sees a GPU, else the CPU), cpu or "
                                                         "cuda")] = None,
           data: Annotated[Optional[Path], typer.Option("--data", help="training data (default: recorded in the "
                                                        "checkpoint)")] = None,
           downscale: Annotated[Optional[int], typer.Option()] = None,
           test_every: Annotated[Optional[int], typer.Option()] = None,
           white: Annotated[Optional[bool], typer.Option("--white/--black")] = None,
           eval_views: Annotated[int, typer.Option(help="held-out views for PSNR before/after (0: none)")] = 10,
           eval_coarse: Annotated[Optional[int], typer.Option(help="coarse samples per ray for the evaluation")] = None,
           eval_fine: Annotated[Optional[int], typer.Option(help="fine samples per ray for the evaluation")] = None,
           ) -> None:
    """Physically shrink both networks (structured pruning or coresets), optionally distil; write a checkpoint."""
    from nerfexport.data.datasets import DataArgs
    from nerfexport.shrink.run import run_shrink, shrink_spec
    from nerfexport.shrink.spec import EvalSpec
    path = default_file(model, (DEFAULT_MODEL, "the default model"))
    spec, note = shrink_spec({"width": width, "ratio": ratio, "rank": rank, "budget": budget,
                              "view_width": view_width, "method": method, "finetune": finetune, "minutes": minutes,
                              "calib_rays": calib_rays, "seed": seed, "device": device}, recipe)
    if note:
        say(note)
    with Reporter("shrink") as report:
        res = run_shrink(path, out, spec, DataArgs(data, downscale, white, test_every),
                         EvalSpec(eval_views, (eval_coarse, eval_fine)), report)
    rep = res.report
    pb, pa = rep.params_before["total"], rep.params_after["total"]
    if rep.ranks:
        say(f"method {rep.method}; ranks (fine): {rep.ranks.get('fine') or rep.ranks.get('coarse')}")
    else:
        say(f"method {rep.method}; widths (coarse): {list(rep.widths['coarse'].values())}")
    mb, ma = sum(rep.macs_before.values()), sum(rep.macs_after.values())
    say(f"cost {ma / mb:.3f} of the teacher's multiply-adds per point; parameters {pb:,} -> {pa:,}; file "
        f"{rep.source['bytes'] / 1e6:.2f} MB -> {rep.files['bytes'] / 1e6:.2f} MB")
    if rep.psnr_before_finetune is not None:
        line = f"held-out PSNR {rep.psnr_before_finetune:.2f} dB before distillation"
        if rep.psnr_after_finetune is not None:
            ft = rep.finetune or {}
            line += (f", {rep.psnr_after_finetune:.2f} dB after {ft.get('steps_made', spec.finetune)} distillation "
                     f"steps in {rep.seconds.get('finetune', 0) / 60:.1f} min")
        ev = rep.eval
        where = (f"{ev['pixels']:,} pixels of {ev['views']} views" if ev.get("pixels") else f"{ev['views']} views")
        say(line + f" ({where} at {ev['resolution'][1]}x{ev['resolution'][0]}, {ev['n_coarse']}+{ev['n_fine']} "
                   "samples)")
    say(f"wall time {sum(rep.seconds.values()) / 60:.1f} min")
    say(f"wrote {res.checkpoint} and {res.report_path}")


@app.command("shrink-study")
@guard
def shrink_study(teacher: Annotated[Path, typer.Argument(help="the teacher checkpoint")],
                 out: Annotated[Path, typer.Option("-o", "--out", help="folder for study.json and the students "
                                                   "(resumes)")] = Path("cache/shrink-study"),
                 doc: Annotated[Optional[Path], typer.Option(help="Markdown file to write the table to")] = None,
                 figure: Annotated[Optional[Path], typer.Option(help="PNG of PSNR against parameters")] = None,
                 data: Annotated[Optional[Path], typer.Option("--data")] = None,
                 downscale: Annotated[Optional[int], typer.Option()] = None,
                 test_every: Annotated[Optional[int], typer.Option()] = None,
                 widths: Annotated[str, typer.Option(help="comma-separated target widths")] = "128,64",
                 methods: Annotated[str, typer.Option()] = "uniform,magnitude-in,magnitude-out,magnitude,activation,"
                                                           "coreset,data-coreset",
                 finetune: Annotated[str, typer.Option(help="distillation steps per width")] = "128:600,64:600",
                 eval_views: Annotated[int, typer.Option()] = 10, eval_coarse: Annotated[int, typer.Option()] = 32,
                 eval_fine: Annotated[int, typer.Option()] = 64,
                 eval_pixels: Annotated[Optional[int], typer.Option(help="estimate PSNR on this many fixed pixels "
                                                                  "of the views (no SSIM) instead of rendering "
                                                                  "them whole")] = None,
                 scratch: Annotated[bool, typer.Option("--scratch/--no-scratch", help="train each width from scratch "
                                                       "for the same total time")] = True,
                 step_seconds: Annotated[Optional[str], typer.Option(help="seconds per training step of each width "
                                                                  "on an idle machine, like 128:0.129,64:0.061: the "
                                                                  "scratch budget becomes a step count")] = None,
                 ) -> None:
    """Compare every shrink method at several widths with the teacher and with training from scratch."""
    from nerfexport.bench.study import shrink_study as run
    from nerfexport.data.datasets import DataArgs
    with Reporter("study") as report:
        _, table = run(teacher, out, widths, methods, finetune, DataArgs(data, downscale, None, test_every),
                       eval_views, (eval_coarse, eval_fine), scratch, step_seconds, doc, figure, report, eval_pixels)
    say(table)
    for f in (doc, figure):
        if f is not None:
            say(f"wrote {f}")
