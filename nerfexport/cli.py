"""The ``nerfexport`` command line: parses, calls the library, prints. Nothing else lives here."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Ship a NeRF to a device: train, shrink, export, render and benchmark.")


class UserError(Exception):
    """Bad input: reported as one line, exit code 2."""


def fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _guard(fn):
    """Turn the library's input errors into one clear line and a non-zero exit."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        from .checkpoint import CheckpointError
        from .datasets import DatasetError
        try:
            return fn(*a, **kw)
        except (UserError, CheckpointError, DatasetError, FileExistsError) as e:
            fail(str(e))
        except OSError as e:
            fail(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
        except KeyboardInterrupt:
            fail("interrupted", 130)
    return wrapper


DEFAULT_MODEL = Path("model.pt")


def _model_path(model: Optional[Path]) -> Path:
    if model is not None:
        return model
    if DEFAULT_MODEL.is_file():
        typer.echo(f"using {DEFAULT_MODEL} (the default model in this folder)")
        return DEFAULT_MODEL
    raise UserError("no model given and no model.pt in this folder (run `nerfexport train` first)")


@app.command()
@_guard
def synth(out: Path = typer.Argument(..., help="folder to create (Blender format)"),
          size: int = typer.Option(64, help="image width and height in pixels"),
          n_train: int = typer.Option(40, "--train", help="training views"),
          n_val: int = typer.Option(5, "--val", help="validation views"),
          n_test: int = typer.Option(8, "--test", help="test views (an orbit)"),
          seed: int = typer.Option(0, help="camera seed")) -> None:
    """Write the embedded procedural scene as a Blender-format dataset."""
    from .synthetic import make_scene
    if size < 8 or min(n_train, n_val, n_test) < 1:
        raise UserError("size must be at least 8 and every split needs at least one view")
    path = make_scene(out, size, n_train, n_val, n_test, seed)
    typer.echo(f"wrote {n_train}+{n_val}+{n_test} views of {size}x{size} to {path}/")


def _load_data(data: Path, downscale: int, white: bool, test_every: int, ndc: bool = True):
    from .datasets import load_scene
    return load_scene(data, downscale, white, test_every, ndc)


@app.command()
@_guard
def train(data: Path = typer.Argument(..., help="dataset folder (Blender or LLFF)"),
          out: Path = typer.Option(DEFAULT_MODEL, "-o", "--out", help="checkpoint to write"),
          downscale: int = typer.Option(1, help="integer downscale factor (LLFF: images_N)"),
          white: bool = typer.Option(True, "--white/--black", help="background for RGBA images"),
          test_every: int = typer.Option(1, help="keep every n-th test view (the lego protocol uses 20)"),
          width: int = typer.Option(256, help="hidden width of every layer"),
          depth: int = typer.Option(8, help="trunk layers"),
          fine: bool = typer.Option(True, "--fine/--no-fine", help="train a fine network too"),
          steps: int = typer.Option(5000, help="optimizer steps"),
          minutes: Optional[float] = typer.Option(None, help="stop when training time reaches this"),
          batch_rays: int = typer.Option(1024, help="rays per step"),
          n_coarse: int = typer.Option(64, help="coarse samples per ray while training"),
          n_fine: int = typer.Option(64, help="fine samples per ray while training"),
          render_coarse: int = typer.Option(64, help="coarse samples per ray stored for rendering"),
          render_fine: int = typer.Option(128, help="fine samples per ray stored for rendering"),
          lr: float = typer.Option(5e-4, help="initial learning rate"),
          lr_final: float = typer.Option(5e-5, help="learning rate at the last step"),
          occupancy: bool = typer.Option(True, "--occupancy/--no-occupancy",
                                         help="grid-guided sampling that skips empty space"),
          precision: str = typer.Option("auto", help="auto (bf16 on CPU), bf16 or fp32"),
          eval_every: Optional[float] = typer.Option(None, help="evaluate held-out views every N minutes"),
          eval_views: int = typer.Option(10, help="held-out views per evaluation"),
          seed: int = typer.Option(0),
          device: str = typer.Option("auto", help="auto, cpu or cuda"),
          resume: bool = typer.Option(True, "--resume/--restart", help="continue an interrupted run in OUT")) -> None:
    """Train a NeRF (coarse + fine) and write one checkpoint file."""
    from .checkpoint import check_writable
    from .train import TrainConfig, new_model, pick_device
    from .train import train as run_train
    if min(width, depth, steps, batch_rays, n_coarse) < 1 or n_fine < 0 or eval_views < 1:
        raise UserError("width, depth, steps, batch-rays and n-coarse must be positive")
    if precision not in ("auto", "bf16", "fp32"):
        raise UserError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    check_writable(out)
    try:
        pick_device(device)
    except (RuntimeError, ValueError) as e:
        raise UserError(str(e))
    scene = _load_data(data, downscale, white, test_every)
    typer.echo(f"{scene.kind} scene {data}: {len(scene.splits['train'])} train views of {scene.W}x{scene.H}, "
               f"near {scene.near:.3g} far {scene.far:.3g}{' (NDC)' if scene.ndc else ''}")
    model = new_model(scene, width, depth, fine, render_coarse, render_fine)
    tc = TrainConfig(steps=steps, batch_rays=batch_rays, lr=lr, lr_final=lr_final, n_coarse=n_coarse,
                     n_fine=n_fine if fine else 0, precision=precision, seed=seed, max_minutes=minutes,
                     eval_every_minutes=eval_every, eval_views=eval_views, device=device, occupancy=occupancy)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    with Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  transient=False) as bar:
        task = bar.add_task("train", total=steps, info="")

        def progress(e: dict) -> None:
            if e["event"] == "step":
                bar.update(task, completed=e["step"],
                           info=f"loss {e['loss']:.4f} psnr {e['psnr']:5.2f} dB")
            elif e["event"] == "eval":
                bar.console.print(f"step {e['step']:6d}  {e['minutes']:6.2f} min  held-out PSNR {e['psnr']:.2f} dB "
                                  f"SSIM {e['ssim']:.3f}")
            elif e["event"] == "resume":
                bar.console.print(f"resuming {out} at step {e['step']}")
                bar.update(task, completed=e["step"])
            elif e["event"] == "complete":
                bar.console.print(f"{out} already holds a finished run of {e['step']} steps (--restart to train anew)")
                bar.update(task, completed=e["step"])
            elif e["event"] == "reinit":
                bar.console.print(f"step {e['step']}: the {e['network']} network collapsed; re-initialised it")

        res = run_train(model, scene, tc, out, resume=resume, progress=progress)
    typer.echo(f"trained {res.steps} steps in {res.train_seconds / 60:.2f} min of training "
               f"({res.wall_seconds / 60:.2f} min wall); wrote {out}")
    if res.history:
        h = res.history[-1]
        typer.echo(f"last held-out PSNR {h['psnr']:.2f} dB, SSIM {h['ssim']:.3f} "
                   f"(at training sample counts {tc.n_coarse}+{tc.n_fine})")


@app.command("eval")
@_guard
def eval_cmd(model: Optional[Path] = typer.Argument(None, help="checkpoint (default: ./model.pt)"),
             data: Path = typer.Option(..., "--data", help="dataset folder"),
             downscale: int = typer.Option(1), white: bool = typer.Option(True, "--white/--black"),
             test_every: int = typer.Option(1), split: str = typer.Option("test"),
             views: Optional[int] = typer.Option(None, help="first N views of the split"),
             n_coarse: Optional[int] = typer.Option(None), n_fine: Optional[int] = typer.Option(None),
             precision: str = typer.Option("fp32", help="fp32 or bf16"),
             json_out: Optional[Path] = typer.Option(None, "--json", help="write the result as JSON")) -> None:
    """PSNR and SSIM of a checkpoint on held-out views (torch, the training-time renderer)."""
    import torch
    from .checkpoint import load_checkpoint
    from .train import evaluate
    path = _model_path(model)
    net = load_checkpoint(path)
    scene = _load_data(data, downscale, white, test_every, net.cfg.ndc)
    if split not in scene.splits:
        raise UserError(f"split {split!r} not in dataset (has {sorted(scene.splits)})")
    if precision not in ("fp32", "bf16"):
        raise UserError("precision must be fp32 or bf16")
    t = time.perf_counter()
    res = evaluate(net, scene, split, views, n_coarse, n_fine, amp=torch.bfloat16 if precision == "bf16" else None)
    dt = time.perf_counter() - t
    nc = net.cfg.n_coarse if n_coarse is None else n_coarse
    nf = net.cfg.n_fine if n_fine is None else n_fine
    typer.echo(f"{path}: {len(res.per_view_psnr)} {split} views, {nc}+{nf} samples, {precision}: "
               f"PSNR {res.psnr:.2f} dB, SSIM {res.ssim:.4f} ({dt:.1f} s)")
    if json_out:
        from .fileio import atomic_write
        doc = json.dumps({"model": str(path), "split": split, "psnr": res.psnr, "ssim": res.ssim,
                          "per_view_psnr": res.per_view_psnr, "n_coarse": nc, "n_fine": nf,
                          "precision": precision, "seconds": dt}, indent=1)
        atomic_write(json_out, lambda f: f.write(doc.encode()))
        typer.echo(f"wrote {json_out}")


@app.command()
@_guard
def info(model: Optional[Path] = typer.Argument(None, help="checkpoint (default: ./model.pt)")) -> None:
    """Architecture, widths, parameter counts and training metadata of a checkpoint."""
    from .checkpoint import load_checkpoint
    from .model import count_parameters
    path = _model_path(model)
    net, meta, _ = load_checkpoint(path, with_train_state=True)
    c = net.cfg
    typer.echo(f"{path}: {path.stat().st_size / 1e6:.2f} MB, near {c.near} far {c.far}, "
               f"{'white' if c.white_bkgd else 'black'} background, ndc {c.ndc}, samples {c.n_coarse}+{c.n_fine}")
    for name, mlp in (("coarse", net.coarse), ("fine", net.fine)):
        if mlp is None:
            continue
        m = mlp.cfg
        typer.echo(f"  {name}: widths {m.widths} skips {m.skips} feature {m.feature_width} views {m.view_widths} "
                   f"-> {count_parameters(mlp):,} parameters")
    if meta:
        typer.echo("  meta: " + json.dumps({k: v for k, v in meta.items() if k != "history"}))


@app.command()
@_guard
def curve(model: Optional[Path] = typer.Argument(None, help="checkpoint trained with --eval-every"),
          out: Path = typer.Option(..., "-o", "--out", help="PNG to write"),
          final_json: Optional[Path] = typer.Option(None, "--final", help="JSON written by `nerfexport eval --json`"),
          title: str = typer.Option("")) -> None:
    """Plot held-out PSNR against training minutes and print it as a Markdown table."""
    from .checkpoint import load_checkpoint
    from .plots import plot_training_curve
    path = _model_path(model)
    _, meta, _ = load_checkpoint(path, with_train_state=True)
    hist = meta.get("history") or []
    if not hist:
        raise UserError(f"{path} holds no evaluation history (train with --eval-every)")
    final = None
    if final_json is not None:
        try:
            f = json.loads(final_json.read_text())
            final = (hist[-1]["minutes"], float(f["psnr"]))
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{final_json} is not an eval JSON ({e})")
    if not out.parent.is_dir():
        raise UserError(f"folder {out.parent} does not exist")
    plot_training_curve(hist, out, title, final)
    typer.echo("| step | training minutes | PSNR [dB] | SSIM |\n|---:|---:|---:|---:|")
    for h in hist:
        typer.echo(f"| {h['step']} | {h['minutes']:.2f} | {h['psnr']:.2f} | {h['ssim']:.3f} |")
    typer.echo(f"wrote {out}")


@app.command("import")
@_guard
def import_cmd(src: Path = typer.Argument(..., help="nerf-pytorch checkpoint (*.tar)"),
               out: Path = typer.Option(DEFAULT_MODEL, "-o", "--out"),
               near: float = typer.Option(2.0), far: float = typer.Option(6.0),
               white: bool = typer.Option(True, "--white/--black"), ndc: bool = typer.Option(False, "--ndc/--no-ndc"),
               n_coarse: int = typer.Option(64), n_fine: int = typer.Option(128)) -> None:
    """Convert a nerf-pytorch checkpoint into a nerfexport model.pt."""
    from .checkpoint import check_writable, import_nerf_pytorch, save_checkpoint
    check_writable(out)
    net, meta = import_nerf_pytorch(src, near=near, far=far, white_bkgd=white, ndc=ndc,
                                    n_coarse=n_coarse, n_fine=n_fine)
    save_checkpoint(net, out, meta=meta)
    typer.echo(f"imported {src} (step {meta.get('global_step')}, fine network: {net.fine is not None}) -> {out}")


@app.command()
@_guard
def demo(out: Path = typer.Option(Path("demo-out"), "-o", "--out", help="folder for everything the demo writes"),
         steps: int = typer.Option(600, help="training steps on the embedded scene"),
         size: int = typer.Option(64, help="image size of the embedded scene")) -> None:
    """The main job on the embedded scene: make the dataset, train, evaluate. Says where it wrote what."""
    from .synthetic import make_scene
    out.mkdir(parents=True, exist_ok=True)
    data = out / "scene"
    if not (data / "transforms_train.json").is_file():
        make_scene(data, size=size)
        typer.echo(f"[1/3] wrote the embedded scene to {data}/")
    else:
        typer.echo(f"[1/3] reusing the embedded scene in {data}/")
    model = out / "model.pt"
    typer.echo(f"[2/3] training {model} ({steps} steps)")
    train(data=data, out=model, downscale=1, white=True, test_every=1, width=256, depth=8, fine=True, steps=steps,
          minutes=None, batch_rays=256, n_coarse=16, n_fine=24, render_coarse=64, render_fine=128, lr=5e-4,
          lr_final=5e-5, occupancy=True, precision="auto", eval_every=None, eval_views=8, seed=0, device="auto",
          resume=True)
    typer.echo("[3/3] evaluating on the held-out orbit")
    report = out / "eval.json"
    eval_cmd(model=model, data=data, downscale=1, white=True, test_every=1, split="test", views=None,
             n_coarse=32, n_fine=64, precision="bf16", json_out=report)
    typer.echo(f"done. dataset: {data}/  model: {model}  evaluation: {report}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
