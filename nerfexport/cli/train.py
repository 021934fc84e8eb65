"""Train-side commands: ``synth``, ``train``, ``eval``, ``info``, ``curve``, ``import``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nerfexport.cli.app import DEFAULT_MODEL, app, default_file, guard, say
from nerfexport.cli.progress import Reporter

Data = Annotated[Path, typer.Argument(help="dataset folder (Blender or LLFF)")]
Model = Annotated[Optional[Path], typer.Argument(help="checkpoint (default: ./model.pt)")]


@app.command()
@guard
def synth(out: Annotated[Path, typer.Argument(help="folder to create (Blender format)")],
          size: Annotated[int, typer.Option(help="image width and height in pixels")] = 64,
          n_train: Annotated[int, typer.Option("--train", help="training views")] = 40,
          n_val: Annotated[int, typer.Option("--val", help="validation views")] = 5,
          n_test: Annotated[int, typer.Option("--test", help="test views (an orbit)")] = 8,
          seed: Annotated[int, typer.Option(help="camera seed")] = 0) -> None:
    """Write the embedded procedural scene as a Blender-format dataset."""
    from nerfexport.data.synthetic import make_scene
    path = make_scene(out, size, n_train, n_val, n_test, seed)
    say(f"wrote {n_train}+{n_val}+{n_test} views of {size}x{size} to {path}/")


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
          steps: Annotated[int, typer.Option(help="optimizer steps")] = 5000,
          minutes: Annotated[Optional[float], typer.Option(help="stop when training time reaches this (the "
                                                           "learning rate then decays over the minutes)")] = None,
          batch_rays: Annotated[int, typer.Option(help="rays per step")] = 1024,
          n_coarse: Annotated[int, typer.Option(help="coarse samples per ray while training")] = 64,
          n_fine: Annotated[int, typer.Option(help="fine samples per ray while training")] = 64,
          render_coarse: Annotated[int, typer.Option(help="coarse samples per ray stored for rendering")] = 64,
          render_fine: Annotated[int, typer.Option(help="fine samples per ray stored for rendering")] = 128,
          lr: Annotated[float, typer.Option(help="initial learning rate")] = 5e-4,
          lr_final: Annotated[float, typer.Option(help="learning rate at the last step")] = 5e-5,
          occupancy: Annotated[bool, typer.Option("--occupancy/--no-occupancy",
                                                  help="grid-guided sampling that skips empty space")] = True,
          grid_every: Annotated[int, typer.Option(help="steps between occupancy-grid updates")] = 32,
          grow_from: Annotated[Optional[int], typer.Option(help="train this width first, then widen every layer "
                                                           "to --width keeping what the network computes")] = None,
          grow_at: Annotated[float, typer.Option(help="fraction of the budget spent before widening")] = 0.5,
          precision: Annotated[str, typer.Option(help="auto (bf16 where the CPU or GPU runs it natively, else "
                                                 "fp32), bf16 or fp32")] = "auto",
          eval_every: Annotated[Optional[float], typer.Option(help="evaluate held-out views every N minutes")] = None,
          eval_views: Annotated[int, typer.Option(help="held-out views per evaluation")] = 10,
          seed: Annotated[int, typer.Option()] = 0,
          device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
          resume: Annotated[bool, typer.Option("--resume/--restart", help="continue an interrupted run in OUT")] = True,
          ) -> None:
    """Train a NeRF (coarse + fine) and write one checkpoint file."""
    from nerfexport.train.loop import TrainConfig
    from nerfexport.train.run import DataArgs, ModelShape, run_train
    tc = TrainConfig(steps=steps, batch_rays=batch_rays, lr=lr, lr_final=lr_final, n_coarse=n_coarse, n_fine=n_fine,
                     precision=precision, seed=seed, max_minutes=minutes, eval_every_minutes=eval_every,
                     eval_views=eval_views, device=device, occupancy=occupancy, grid_every=grid_every,
                     grow_from=grow_from, grow_at=grow_at)
    with Reporter("train", steps) as report:
        res, _ = run_train(DataArgs(data, downscale, white, test_every), out,
                           ModelShape(width, depth, fine, render_coarse, render_fine), tc, resume, report)
    say(f"trained {res.steps} steps in {res.train_seconds / 60:.2f} min of training "
        f"({res.wall_seconds / 60:.2f} min wall); wrote {out}")
    if res.history:
        h = res.history[-1]
        say(f"last held-out PSNR {h['psnr']:.2f} dB, SSIM {h['ssim']:.3f} "
            f"(at training sample counts {tc.n_coarse}+{tc.n_fine})")


@app.command("eval")
@guard
def eval_cmd(data: Annotated[Path, typer.Option("--data", help="dataset folder")],
             model: Model = None,
             downscale: Annotated[int, typer.Option()] = 1,
             white: Annotated[bool, typer.Option("--white/--black")] = True,
             test_every: Annotated[int, typer.Option()] = 1,
             split: Annotated[str, typer.Option()] = "test",
             views: Annotated[Optional[int], typer.Option(help="first N views of the split")] = None,
             n_coarse: Annotated[Optional[int], typer.Option()] = None,
             n_fine: Annotated[Optional[int], typer.Option()] = None,
             precision: Annotated[str, typer.Option(help="fp32, bf16, or auto (bf16 where the CPU runs it "
                                                    "natively)")] = "fp32",
             json_out: Annotated[Optional[Path], typer.Option("--json", help="write the result as JSON")] = None) -> None:
    """PSNR and SSIM of a checkpoint on held-out views (torch, the training-time renderer)."""
    from nerfexport.train.run import DataArgs, run_eval
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
    say("| step | training minutes | PSNR [dB] | SSIM |\n|---:|---:|---:|---:|")
    for h in hist:
        say(f"| {h['step']} | {h['minutes']:.2f} | {h['psnr']:.2f} | {h['ssim']:.3f} |")
    say(f"wrote {out}")


@app.command("import")
@guard
def import_cmd(src: Annotated[Path, typer.Argument(help="nerf-pytorch checkpoint (*.tar)")],
               out: Annotated[Path, typer.Option("-o", "--out")] = DEFAULT_MODEL,
               near: Annotated[float, typer.Option()] = 2.0, far: Annotated[float, typer.Option()] = 6.0,
               white: Annotated[bool, typer.Option("--white/--black")] = True,
               ndc: Annotated[bool, typer.Option("--ndc/--no-ndc")] = False,
               n_coarse: Annotated[int, typer.Option()] = 64, n_fine: Annotated[int, typer.Option()] = 128) -> None:
    """Convert a nerf-pytorch checkpoint into a nerfexport model.pt."""
    from nerfexport.model.checkpoint import convert_nerf_pytorch
    net, meta = convert_nerf_pytorch(src, out, near=near, far=far, white_bkgd=white, ndc=ndc, n_coarse=n_coarse,
                                     n_fine=n_fine)
    say(f"imported {src} (step {meta.get('global_step')}, fine network: {net.fine is not None}) -> {out}")
