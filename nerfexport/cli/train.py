"""Train-side commands: ``synth``, ``train``, ``eval``, ``info``, ``curve``, ``import``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nerfexport.cli.app import DEFAULT_MODEL, app, default_file, guard, say
from nerfexport.cli.progress import Reporter

Data = Annotated[Path, typer.Argument(help="dataset folder (Blender, LLFF, or nerfstudio / instant-ngp transforms.json)")]
Model = Annotated[Optional[Path], typer.Argument(help="checkpoint (default: ./model.pt)")]


class _Opt:
    """``Opt[int, "help"]``: an optional option whose default (None) means "the measured preset's"."""

    def __class_getitem__(cls, item):
        kind, text = item
        return Annotated[Optional[kind], typer.Option(help=text, show_default=False)]


Opt = _Opt


@app.command()
@guard
def synth(out: Annotated[Path, typer.Argument(help="folder to create (Blender format; LLFF with --forward)")],
          size: Annotated[int, typer.Option(help="image width and height in pixels")] = 64,
          n_train: Annotated[int, typer.Option("--train", help="training views")] = 40,
          n_val: Annotated[int, typer.Option("--val", help="validation views")] = 5,
          n_test: Annotated[int, typer.Option("--test", help="test views (an orbit)")] = 8,
          forward: Annotated[bool, typer.Option("--forward", help="a forward-facing LLFF scene instead "
                                                "(every 8th view held out)")] = False,
          resolution: Annotated[str, typer.Option(help="with --forward: WIDTHxHEIGHT")] = "504x378",
          views: Annotated[int, typer.Option(help="with --forward: number of photos")] = 20,
          seed: Annotated[int, typer.Option(help="camera seed")] = 0,
          fmt: Annotated[str, typer.Option("--format", help="blender (transforms_{train,val,test}.json) or nerfstudio "
                                           "(one transforms.json, the same views)")] = "blender") -> None:
    """Write the embedded procedural scene as a Blender-format (or nerfstudio, or --forward LLFF) dataset."""
    from nerfexport.data.synthetic import SceneError, make_forward_scene, make_scene
    from nerfexport.deploy.views import parse_resolution
    if forward and fmt != "blender":
        raise SceneError("--forward writes LLFF; --format applies to the 360-degree scene")
    if forward:
        w, h = parse_resolution(resolution)
        path = make_forward_scene(out, w, h, views, seed)
        say(f"wrote {views} forward-facing views of {w}x{h} (LLFF) to {path}/")
        return
    path = make_scene(out, size, n_train, n_val, n_test, seed, fmt)
    say(f"wrote {n_train}+{n_val}+{n_test} views of {size}x{size} ({fmt}) to {path}/")


@app.command()
@guard
def train(data: Data,
          out: Annotated[Path, typer.Option("-o", "--out", help="checkpoint to write")] = DEFAULT_MODEL,
          downscale: Annotated[int, typer.Option(help="integer downscale factor (LLFF: images_N)")] = 1,
          white: Annotated[bool, typer.Option("--white/--black", help="background for RGBA images")] = True,
          test_every: Annotated[int, typer.Option(help="keep every n-th test view (the lego protocol uses 20)")] = 1,
          width: Annotated[int, typer.Option(help="hidden width of every layer")] = 256,
          depth: Annotated[int, typer.Option(help="trunk layers")] = 8,
          fine: Annotated[bool, typer.Option("--fine/--no-fine", help="train a fine network too")] = True,
          minutes: Opt[float, "training-time budget (default: 30 on a CPU; evaluations not counted)"] = None,
          steps: Opt[int, "optimizer steps (alone: exactly this many, no time budget)"] = None,
          batch_rays: Opt[int, "rays per step (default: 128 on a CPU, 1024 on a GPU)"] = None,
          n_coarse: Opt[int, "coarse samples per ray while training (default: 16 on a CPU)"] = None,
          n_fine: Opt[int, "fine samples per ray while training (default: 24 on a CPU)"] = None,
          render_coarse: Annotated[int, typer.Option(help="coarse samples per ray stored for rendering")] = 64,
          render_fine: Annotated[int, typer.Option(help="fine samples per ray stored for rendering")] = 128,
          lr: Opt[float, "initial learning rate (5e-4)"] = None,
          lr_final: Opt[float, "learning rate at the end of the budget (5e-5)"] = None,
          occupancy: Annotated[Optional[bool], typer.Option("--occupancy/--no-occupancy", show_default=False,
                                                            help="grid-guided sampling that skips empty space "
                                                                 "(default on; NDC space for LLFF)")] = None,
          grid_every: Opt[int, "steps between occupancy-grid updates"] = None,
          grow_from: Opt[int, "train this width first, then widen every layer to --width (default: 128 on a "
                              "CPU; 0: off)"] = None,
          grow_at: Opt[float, "fraction of the budget spent before widening (0.75)"] = None,
          precision: Annotated[str, typer.Option(help="auto (bf16 where the CPU or GPU runs it natively, else "
                                                 "fp32), bf16 or fp32")] = "auto",
          eval_every: Opt[float, "evaluate held-out pixels every N minutes (default: a fifth of the budget)"] = None,
          eval_views: Annotated[int, typer.Option(help="held-out views for the evaluations")] = 10,
          final_eval: Annotated[bool, typer.Option("--final-eval/--no-final-eval", help="evaluate the full "
                                                   "held-out views at the end")] = True,
          seed: Annotated[int, typer.Option()] = 0,
          device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
          resume: Annotated[bool, typer.Option("--resume/--restart", help="continue an interrupted run in OUT")] = True,
          ) -> None:
    """Train a NeRF (coarse + fine) and write one checkpoint file. With no flags: the measured recipe
    for this device (docs/train-defaults.md)."""
    from nerfexport.data.datasets import DataArgs
    from nerfexport.train.run import ModelShape, run_train_cli
    given = dict(max_minutes=minutes, steps=steps, batch_rays=batch_rays, n_coarse=n_coarse, n_fine=n_fine, lr=lr,
                 lr_final=lr_final, occupancy=occupancy, grid_every=grid_every, grow_from=grow_from, grow_at=grow_at,
                 eval_every_minutes=eval_every)
    given = {k: v for k, v in given.items() if v is not None}
    given.update(precision=precision, eval_views=eval_views, final_eval=final_eval, seed=seed, device=device)
    with Reporter("train") as report:
        res = run_train_cli(DataArgs(data, downscale, white, test_every), out,
                            ModelShape(width, depth, fine, render_coarse, render_fine), given, resume, report)
    say(f"trained {res.steps} steps in {res.train_seconds / 60:.2f} min of training, "
        f"{res.wall_seconds / 60:.2f} min wall ({res.eval_seconds / 60:.2f} of them evaluating); wrote {out}")
    if res.final is not None:
        say(f"held-out PSNR {res.final.psnr:.2f} dB, SSIM {res.final.ssim:.3f} at the training sample counts "
            f"(`nerfexport eval {out} --data {data}` for the stored {render_coarse}+{render_fine})")


@app.command("eval")
@guard
def eval_cmd(data: Annotated[Optional[Path], typer.Option("--data", help="dataset folder (default: the one the "
                                                           "checkpoint records)")] = None,
             model: Model = None,
             downscale: Annotated[Optional[int], typer.Option(help="default: the recorded one, i.e. the resolution "
                                                              "the model was trained at")] = None,
             white: Annotated[Optional[bool], typer.Option("--white/--black")] = None,
             test_every: Annotated[Optional[int], typer.Option()] = None,
             split: Annotated[str, typer.Option()] = "test",
             views: Annotated[Optional[int], typer.Option(help="first N views of the split")] = None,
             n_coarse: Annotated[Optional[int], typer.Option()] = None,
             n_fine: Annotated[Optional[int], typer.Option()] = None,
             precision: Annotated[str, typer.Option(help="fp32, bf16, or auto (bf16 where the CPU runs it "
                                                    "natively)")] = "fp32",
             json_out: Annotated[Optional[Path], typer.Option("--json", help="write the result as JSON")] = None) -> None:
    """PSNR and SSIM of a checkpoint on held-out views (torch, the training-time renderer)."""
    from nerfexport.data.datasets import DataArgs
    from nerfexport.train.run import run_eval
    path = default_file(model, (DEFAULT_MODEL, "the default model"))
    with Reporter("eval") as report:
        r = run_eval(path, DataArgs(data, downscale, white, test_every), split, views, n_coarse, n_fine, precision,
                     json_out, report)
    say(f"{path}: {len(r.per_view_psnr)} {split} views, {r.n_coarse}+{r.n_fine} samples, {r.precision}: "
        f"PSNR {r.psnr:.2f} dB, SSIM {r.ssim:.4f} ({r.seconds:.1f} s)")
    if json_out:
        say(f"wrote {json_out}")


@app.command()
@guard
def info(model: Model = None) -> None:
    """Architecture, widths, parameter counts and training metadata of a checkpoint."""
    from nerfexport.train.run import describe_checkpoint
    for line in describe_checkpoint(default_file(model, (DEFAULT_MODEL, "the default model"))):
        say(line)


@app.command()
@guard
def curve(out: Annotated[Path, typer.Option("-o", "--out", help="PNG to write")],
          model: Annotated[Optional[Path], typer.Argument(help="checkpoint trained with --eval-every")] = None,
          final_json: Annotated[Optional[Path], typer.Option("--final", help="JSON of `nerfexport eval --json`")] = None,
          title: Annotated[str, typer.Option()] = "") -> None:
    """Plot held-out PSNR against training minutes and print it as a Markdown table."""
    from nerfexport.train.run import training_curve
    hist = training_curve(default_file(model, (DEFAULT_MODEL, "the default model")), out, title, final_json)
    say("| step | training minutes | held-out PSNR [dB] | SSIM | measured on |\n|---:|---:|---:|---:|---|")
    for h in hist:
        ssim = f"{h['ssim']:.3f}" if h.get("ssim") is not None else ""
        on = f"{h['pixels']} pixels" if "pixels" in h else f"{h.get('views', '')} views"
        say(f"| {h['step']} | {h['minutes']:.2f} | {h['psnr']:.2f} | {ssim} | {on} |")
    say(f"wrote {out}")


@app.command("import")
@guard
def import_cmd(src: Annotated[Path, typer.Argument(help="nerf-pytorch checkpoint (*.tar)")],
               out: Annotated[Path, typer.Option("-o", "--out")] = DEFAULT_MODEL,
               near: Annotated[float, typer.Option()] = 2.0, far: Annotated[float, typer.Option()] = 6.0,
               white: Annotated[bool, typer.Option("--white/--black")] = True,
               ndc: Annotated[bool, typer.Option("--ndc/--no-ndc")] = False,
               n_coarse: Annotated[int, typer.Option()] = 64, n_fine: Annotated[int, typer.Option()] = 128,
               data: Annotated[Optional[Path], typer.Option("--data", help="the images it was trained on: recorded "
                                                            "with their resolution, which eval, shrink and export "
                                                            "then use")] = None,
               downscale: Annotated[int, typer.Option(help="with --data: the factor that gives the resolution it "
                                                      "was trained at")] = 1,
               test_every: Annotated[int, typer.Option(help="with --data: every Nth test view is evaluated")] = 1
               ) -> None:
    """Convert a nerf-pytorch checkpoint into a nerfexport model.pt."""
    from nerfexport.data.datasets import DataArgs
    from nerfexport.train.run import run_import
    args = None if data is None else DataArgs(data, downscale, white, test_every)
    net, meta = run_import(src, out, args, near=near, far=far, white_bkgd=white, ndc=ndc, n_coarse=n_coarse,
                           n_fine=n_fine)
    say(f"imported {src} (step {meta.get('global_step')}, fine network: {net.fine is not None}) -> {out}")
    if net.cfg.camera:
        say(f"recorded {data} at {net.cfg.camera['W']}x{net.cfg.camera['H']} (the resolution it is evaluated at)")
