"""The ``nerfexport`` command line: parses, calls the library, prints. Nothing else lives here."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup


class OneLineErrors(TyperGroup):
    """Usage errors (a bad option value, a missing argument) as one ``error:`` line and exit 2,
    instead of click's usage block or rich's panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        except Exception as e:
            if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
                raise
            if type(e).__name__ == "NoArgsIsHelpError":   # bare `nerfexport`: the help text
                typer.echo(e.format_message())
            else:
                typer.echo(f"error: {e.format_message()}", err=True)
            code = e.exit_code
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            code = 130
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Ship a NeRF to a device: train, shrink, export, render and benchmark.")


class UserError(Exception):
    """Bad input: reported as one line, exit code 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread so that every ``finally`` and clean-up runs
    (temporary folders are removed) as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, frame) -> None:
    raise Terminated(signum)


def fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _warn_bf16(precision: str, device="cpu") -> None:
    """One line on stderr when bf16 is asked for on a CPU without native bf16 kernels."""
    from nerfexport.train.loop import bf16_warning
    note = bf16_warning(precision, device)
    if note:
        typer.echo(note, err=True)


def _guard(fn):
    """Turn the library's input errors into one clear line and a non-zero exit."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        from nerfexport.model.checkpoint import CheckpointError
        from nerfexport.data.datasets import DatasetError
        from nerfexport.deploy.bundle import BundleError
        from nerfexport.export.quantize import QuantizationError
        from nerfexport.shrink.recipe import RecipeError
        from nerfexport.deploy.runtime import RuntimeSpecError, RuntimeUnavailable
        from nerfexport.export.tensorrt import TensorRTUnavailable
        from nerfexport.export.grid import GridError
        try:
            return fn(*a, **kw)
        except (UserError, CheckpointError, DatasetError, RecipeError, BundleError, QuantizationError, GridError,
                TensorRTUnavailable, RuntimeUnavailable, RuntimeSpecError, FileExistsError) as e:
            fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        except OSError as e:
            fail(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
        except Terminated as e:
            fail(f"terminated by {signal.Signals(e.signum).name}; nothing was left half-written", 128 + e.signum)
        except KeyboardInterrupt:
            fail("interrupted; nothing was left half-written", 130)
        except Exception as e:   # onnxruntime's own errors (a graph it cannot load): one line, not a traceback
            if not type(e).__module__.startswith("onnxruntime"):
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            fail(f"onnxruntime: {msg[:300]}")
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
    from nerfexport.data.synthetic import make_scene
    if size < 8 or min(n_train, n_val, n_test) < 1:
        raise UserError("size must be at least 8 and every split needs at least one view")
    path = make_scene(out, size, n_train, n_val, n_test, seed)
    typer.echo(f"wrote {n_train}+{n_val}+{n_test} views of {size}x{size} to {path}/")


def _load_data(data: Path, downscale: int, white: bool, test_every: int, ndc: bool = True):
    from nerfexport.data.datasets import load_scene
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
          minutes: Optional[float] = typer.Option(None, help="stop when training time reaches this (the learning rate then decays over the minutes)"),
          batch_rays: int = typer.Option(1024, help="rays per step"),
          n_coarse: int = typer.Option(64, help="coarse samples per ray while training"),
          n_fine: int = typer.Option(64, help="fine samples per ray while training"),
          render_coarse: int = typer.Option(64, help="coarse samples per ray stored for rendering"),
          render_fine: int = typer.Option(128, help="fine samples per ray stored for rendering"),
          lr: float = typer.Option(5e-4, help="initial learning rate"),
          lr_final: float = typer.Option(5e-5, help="learning rate at the last step"),
          occupancy: bool = typer.Option(True, "--occupancy/--no-occupancy",
                                         help="grid-guided sampling that skips empty space"),
          grid_every: int = typer.Option(32, help="steps between occupancy-grid updates"),
          grow_from: Optional[int] = typer.Option(None, help="train this width first, then widen every layer to "
                                                             "--width keeping what the network computes"),
          grow_at: float = typer.Option(0.5, help="fraction of the budget (steps or minutes) spent before widening"),
          precision: str = typer.Option("auto", help="auto (bf16 where the CPU or GPU runs it natively, else fp32), "
                                                     "bf16 or fp32"),
          eval_every: Optional[float] = typer.Option(None, help="evaluate held-out views every N minutes"),
          eval_views: int = typer.Option(10, help="held-out views per evaluation"),
          seed: int = typer.Option(0),
          device: str = typer.Option("auto", help="auto, cpu or cuda"),
          resume: bool = typer.Option(True, "--resume/--restart", help="continue an interrupted run in OUT")) -> None:
    """Train a NeRF (coarse + fine) and write one checkpoint file."""
    from nerfexport.model.checkpoint import check_writable
    from nerfexport.train.loop import TrainConfig, new_model, pick_device
    from nerfexport.train.loop import train as run_train
    if min(width, depth, steps, batch_rays, n_coarse) < 1 or n_fine < 0 or eval_views < 1:
        raise UserError("width, depth, steps, batch-rays and n-coarse must be positive")
    if precision not in ("auto", "bf16", "fp32"):
        raise UserError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    if grid_every < 1:
        raise UserError("grid-every must be positive")
    if grow_from is not None and not (1 <= grow_from <= width):
        raise UserError(f"grow-from must be between 1 and --width ({width}), not {grow_from}")
    if not (0.0 <= grow_at <= 1.0):
        raise UserError(f"grow-at is a fraction of the budget in [0, 1], not {grow_at}")
    check_writable(out)
    try:
        dev = pick_device(device)
    except (RuntimeError, ValueError) as e:
        raise UserError(str(e))
    _warn_bf16(precision, dev)
    scene = _load_data(data, downscale, white, test_every)
    typer.echo(f"{scene.kind} scene {data}: {len(scene.splits['train'])} train views of {scene.W}x{scene.H}, "
               f"near {scene.near:.3g} far {scene.far:.3g}{' (NDC)' if scene.ndc else ''}")
    model = new_model(scene, width, depth, fine, render_coarse, render_fine)
    tc = TrainConfig(steps=steps, batch_rays=batch_rays, lr=lr, lr_final=lr_final, n_coarse=n_coarse,
                     n_fine=n_fine if fine else 0, precision=precision, seed=seed, max_minutes=minutes,
                     eval_every_minutes=eval_every, eval_views=eval_views, device=device, occupancy=occupancy,
                     grid_every=grid_every, grow_from=grow_from, grow_at=grow_at)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    with Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  transient=False) as bar:
        task = bar.add_task("train", total=steps, info="")

        def progress(e: dict) -> None:
            if e["event"] == "step":
                bar.update(task, completed=e["step"],
                           info=f"loss {e['loss']:.4f} psnr {e['psnr']:5.2f} dB occupied {100 * e['occupied']:.0f}%")
            elif e["event"] == "eval":
                bar.console.print(f"step {e['step']:6d}  {e['minutes']:6.2f} min  held-out PSNR {e['psnr']:.2f} dB "
                                  f"SSIM {e['ssim']:.3f}")
            elif e["event"] == "resume":
                bar.console.print(f"resuming {out} at step {e['step']}")
                bar.update(task, completed=e["step"])
            elif e["event"] == "complete":
                bar.console.print(f"{out} already holds a finished run of {e['step']} steps (--restart to train anew)")
                bar.update(task, completed=e["step"])
            elif e["event"] == "grow":
                bar.console.print(f"step {e['step']}: widened every layer to {e['width']}")
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
             precision: str = typer.Option("fp32", help="fp32, bf16, or auto (bf16 where the CPU runs it natively)"),
             json_out: Optional[Path] = typer.Option(None, "--json", help="write the result as JSON")) -> None:
    """PSNR and SSIM of a checkpoint on held-out views (torch, the training-time renderer)."""
    import torch
    from nerfexport.model.checkpoint import load_checkpoint
    from nerfexport.train.loop import evaluate
    if views is not None and views < 1:
        raise UserError(f"--views is a number of views, at least 1 (not {views})")
    if precision not in ("fp32", "bf16", "auto"):
        raise UserError("precision must be fp32, bf16 or auto")
    for name, n in (("--n-coarse", n_coarse), ("--n-fine", n_fine)):
        if n is not None and n < (1 if name == "--n-coarse" else 0):
            raise UserError(f"{name} must be at least {1 if name == '--n-coarse' else 0}, not {n}")
    if json_out is not None:
        from nerfexport.model.checkpoint import check_writable
        check_writable(json_out)
    path = _model_path(model)
    net = load_checkpoint(path)
    scene = _load_data(data, downscale, white, test_every, net.cfg.ndc)
    if split not in scene.splits:
        raise UserError(f"split {split!r} not in dataset (has {sorted(scene.splits)})")
    from nerfexport.train.loop import autocast_dtype
    _warn_bf16(precision)
    amp = autocast_dtype(precision, torch.device("cpu"))
    precision = "bf16" if amp is not None else "fp32"
    t = time.perf_counter()
    res = evaluate(net, scene, split, views, n_coarse, n_fine, amp=amp)
    dt = time.perf_counter() - t
    nc = net.cfg.n_coarse if n_coarse is None else n_coarse
    nf = net.cfg.n_fine if n_fine is None else n_fine
    typer.echo(f"{path}: {len(res.per_view_psnr)} {split} views, {nc}+{nf} samples, {precision}: "
               f"PSNR {res.psnr:.2f} dB, SSIM {res.ssim:.4f} ({dt:.1f} s)")
    if json_out:
        from nerfexport.data.fileio import atomic_write
        doc = json.dumps({"model": str(path), "split": split, "psnr": res.psnr, "ssim": res.ssim,
                          "per_view_psnr": res.per_view_psnr, "n_coarse": nc, "n_fine": nf,
                          "precision": precision, "seconds": dt}, indent=1)
        atomic_write(json_out, lambda f: f.write(doc.encode()))
        typer.echo(f"wrote {json_out}")


@app.command()
@_guard
def info(model: Optional[Path] = typer.Argument(None, help="checkpoint (default: ./model.pt)")) -> None:
    """Architecture, widths, parameter counts and training metadata of a checkpoint."""
    from nerfexport.model.checkpoint import load_checkpoint
    from nerfexport.model.mlp import count_parameters
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
    from nerfexport.model.checkpoint import load_checkpoint
    from nerfexport.bench.plots import plot_training_curve
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
    from nerfexport.model.checkpoint import check_writable, import_nerf_pytorch, save_checkpoint
    check_writable(out)
    net, meta = import_nerf_pytorch(src, near=near, far=far, white_bkgd=white, ndc=ndc,
                                    n_coarse=n_coarse, n_fine=n_fine)
    save_checkpoint(net, out, meta=meta)
    typer.echo(f"imported {src} (step {meta.get('global_step')}, fine network: {net.fine is not None}) -> {out}")


SHRUNK_MODEL = Path("shrunk.pt")


def _scene_for(model_path: Path, meta: dict, data: Optional[Path], downscale: Optional[int],
               test_every: Optional[int], white: Optional[bool], ndc: bool):
    """The dataset a command needs: ``--data`` or the one recorded in the checkpoint."""
    rec = (meta or {}).get("data") or {}
    if data is None:
        if not rec.get("path"):
            raise UserError(f"{model_path} does not record its dataset; pass --data")
        data = Path(rec["path"])
        typer.echo(f"using the training data recorded in {model_path}: {data}")
    ds = downscale if downscale is not None else int(rec.get("downscale", 1))
    te = test_every if test_every is not None else int(rec.get("test_every", 1))
    wh = white if white is not None else bool(rec.get("white", True))
    return _load_data(data, ds, wh, te, ndc)


@app.command()
@_guard
def shrink(model: Optional[Path] = typer.Argument(None, help="checkpoint to shrink (default: ./model.pt)"),
           out: Path = typer.Option(SHRUNK_MODEL, "-o", "--out", help="checkpoint to write; a JSON report goes beside it"),
           width: Optional[int] = typer.Option(None, help="width of every trunk layer and the feature layer"),
           ratio: Optional[float] = typer.Option(None, help="keep this fraction of every layer's neurons"),
           view_width: Optional[int] = typer.Option(None, help="width of the view branch (default: in proportion)"),
           method: Optional[str] = typer.Option(None, help="uniform, magnitude[-in|-out], activation, coreset, "
                                                           "data-coreset (default: coreset, the best at width 128 on lego)"),
           recipe: Optional[str] = typer.Option(None, help="TOML recipe (path or shipped name) with a [shrink] table"),
           finetune: Optional[int] = typer.Option(None, help="distillation steps after pruning (default 1500; "
                                                             "pruning alone loses most of the quality)"),
           calib_rays: Optional[int] = typer.Option(None, help="training rays for calibration statistics (default 1024)"),
           seed: Optional[int] = typer.Option(None, help="seed for sampling and fine-tuning (default 0)"),
           data: Optional[Path] = typer.Option(None, "--data", help="training data (default: recorded in the checkpoint)"),
           downscale: Optional[int] = typer.Option(None), test_every: Optional[int] = typer.Option(None),
           white: Optional[bool] = typer.Option(None, "--white/--black"),
           eval_views: int = typer.Option(10, help="held-out views for PSNR before/after (0: no evaluation)"),
           eval_coarse: Optional[int] = typer.Option(None, help="coarse samples per ray for the evaluation"),
           eval_fine: Optional[int] = typer.Option(None, help="fine samples per ray for the evaluation")) -> None:
    """Physically shrink both networks (structured pruning or coresets), optionally distil; write a checkpoint."""
    from nerfexport.model.checkpoint import check_writable, file_sha256, load_checkpoint, save_checkpoint
    from nerfexport.data.fileio import atomic_write
    from nerfexport.shrink.recipe import load_recipe
    from nerfexport.shrink.pipeline import ShrinkSpec, shrink_pipeline
    from nerfexport.model.surgery import target_widths
    path = _model_path(model)
    fields = {}
    if recipe is not None:
        r = load_recipe(recipe)
        fields.update(r.shrink)
        typer.echo(f"recipe {r.path}: {r.description}")
    cli = {"width": width, "ratio": ratio, "view_width": view_width, "method": method, "finetune": finetune,
           "calib_rays": calib_rays, "seed": seed}
    if any(cli[k] is not None for k in ("width", "ratio")):
        for k in ("width", "ratio", "widths"):
            fields.pop(k, None)
    fields.update({k: v for k, v in cli.items() if v is not None})
    fields.setdefault("method", "coreset")
    fields.setdefault("finetune", 1500)
    spec = ShrinkSpec(**fields)
    try:
        spec.validate()
    except ValueError as e:
        raise UserError(str(e))
    if out.resolve() == path.resolve():
        raise UserError(f"refusing to overwrite the input {path}; choose another --out")
    check_writable(out)
    check_writable(out.with_suffix(".json"))   # the report: refuse now, not after the work
    if out.with_suffix(".json").resolve() == path.resolve():
        raise UserError(f"the report {out.with_suffix('.json')} would overwrite the input; choose another --out")
    teacher, meta, _ = load_checkpoint(path, with_train_state=True)
    try:
        for net in (teacher.coarse, teacher.fine):
            if net is not None:
                target_widths(net.cfg, spec.width, spec.ratio, spec.widths, spec.feature_width, spec.view_width)
    except ValueError as e:
        raise UserError(str(e))
    typer.echo(f"shrinking {path} with {spec.method} (seed {spec.seed})")
    scene = _scene_for(path, meta, data, downscale, test_every, white, teacher.cfg.ndc)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    with Progress(TextColumn("[bold]{task.fields[stage]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn()) as bar:
        task = bar.add_task("shrink", total=max(spec.finetune, 1), stage="calibrate", info="")

        def progress(e: dict) -> None:
            if e["event"] == "stage":
                bar.update(task, stage=e["stage"])
            elif e["event"] == "step":
                bar.update(task, completed=e["step"], info=f"loss {e['loss']:.4f} psnr {e['psnr']:5.2f} dB")

        student, rep = shrink_pipeline(teacher, scene, spec, eval_views or None,
                                       (eval_coarse, eval_fine) if eval_coarse or eval_fine is not None else None,
                                       progress=progress)
    rep.source = {"path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size}
    new_meta = {"shrunk_from": str(path), "shrink": spec.to_dict(), "data": (meta or {}).get("data") or scene.load_args,
                "dataset": scene.source}
    save_checkpoint(student, out, meta=new_meta)
    report = out.with_suffix(".json")
    rep.files = {"checkpoint": str(out), "bytes": out.stat().st_size, "report": str(report)}
    atomic_write(report, lambda f: f.write(json.dumps(rep.to_dict(), indent=1).encode()))
    pb, pa = rep.params_before["total"], rep.params_after["total"]
    typer.echo(f"widths (coarse): {list(rep.widths['coarse'].values())}")
    typer.echo(f"parameters {pb:,} -> {pa:,} ({pb / pa:.2f}x fewer); file {rep.source['bytes'] / 1e6:.2f} MB -> "
               f"{rep.files['bytes'] / 1e6:.2f} MB")
    if rep.psnr_before_finetune is not None:
        line = f"held-out PSNR {rep.psnr_before_finetune:.2f} dB after pruning"
        if rep.psnr_after_finetune is not None:
            line += f", {rep.psnr_after_finetune:.2f} dB after {spec.finetune} fine-tune steps"
        typer.echo(line + f" ({rep.eval['views']} views, {rep.eval['n_coarse']}+{rep.eval['n_fine']} samples)")
    typer.echo(f"wrote {out} and {report}")


@app.command("shrink-study")
@_guard
def shrink_study(teacher: Path = typer.Argument(..., help="the teacher checkpoint"),
                 out: Path = typer.Option(Path("cache/shrink-study"), "-o", "--out",
                                          help="folder for study.json and the students (resumes)"),
                 doc: Optional[Path] = typer.Option(None, help="Markdown file to write the table to"),
                 figure: Optional[Path] = typer.Option(None, help="PNG of PSNR against parameters"),
                 data: Optional[Path] = typer.Option(None, "--data"), downscale: Optional[int] = typer.Option(None),
                 test_every: Optional[int] = typer.Option(None),
                 widths: str = typer.Option("128,64", help="comma-separated target widths"),
                 methods: str = typer.Option(",".join(["uniform", "magnitude-in", "magnitude-out", "magnitude",
                                                        "activation", "coreset", "data-coreset"])),
                 finetune: str = typer.Option("128:600,64:600", help="distillation steps per width"),
                 eval_views: int = typer.Option(10), eval_coarse: int = typer.Option(32),
                 eval_fine: int = typer.Option(64),
                 scratch: bool = typer.Option(True, "--scratch/--no-scratch",
                                              help="train each width from scratch for the same total time"),
                 step_seconds: Optional[str] = typer.Option(None, help="seconds per training step of each width on an "
                                                                      "idle machine, like 128:0.129,64:0.061: the "
                                                                      "scratch budget becomes a step count")) -> None:
    """Compare every shrink method at several widths with the teacher and with training from scratch."""
    from nerfexport.model.checkpoint import load_checkpoint
    from nerfexport.bench.plots import plot_shrink_study
    from nerfexport.shrink.scoring import METHODS
    from nerfexport.bench.study import markdown_table, run_study
    try:
        ws = [int(w) for w in widths.split(",")]
        ft = {int(k): int(v) for k, v in (x.split(":") for x in finetune.split(","))}
    except ValueError:
        raise UserError("--widths is like 128,64 and --finetune like 128:600,64:600")
    ms = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in ms if m not in METHODS]
    if bad:
        raise UserError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    if set(ws) - set(ft):
        raise UserError(f"--finetune gives no steps for width(s) {sorted(set(ws) - set(ft))}")
    net, meta, _ = load_checkpoint(teacher, with_train_state=True)
    scene = _scene_for(teacher, meta, data, downscale, test_every, None, net.cfg.ndc)

    def progress(e: dict) -> None:
        if e["event"] == "stage":
            typer.echo(f"[{time.strftime('%H:%M:%S')}] {e['stage']}")
        elif e["event"] == "teacher":
            typer.echo(f"  teacher: PSNR {e['psnr']:.2f} dB")
        elif e["event"] == "row":
            pr = "" if e["psnr_pruned"] is None else f"pruned {e['psnr_pruned']:.2f} dB, "
            typer.echo(f"  {e['method']} w{e['width']}: {pr}final {e['psnr']:.2f} dB, {e['params']:,} parameters")

    try:
        sps = {int(k): float(v) for k, v in (x.split(":") for x in step_seconds.split(","))} if step_seconds else None
    except ValueError:
        raise UserError("--step-seconds is like 128:0.129,64:0.061")
    res = run_study(teacher, scene, out, ws, ms, ft, eval_views, (eval_coarse, eval_fine), scratch=scratch,
                    progress=progress, step_seconds=sps)
    table = markdown_table(res)
    typer.echo(table)
    if doc is not None:
        from nerfexport.data.fileio import atomic_write
        atomic_write(doc, lambda f: f.write(table.encode()))
        typer.echo(f"wrote {doc}")
    if figure is not None:
        plot_shrink_study(res, figure)
        typer.echo(f"wrote {figure}")


DEFAULT_BUNDLE = Path("bundle")


def _export_input(model: Optional[Path]) -> Path:
    """The checkpoint to export: as given, else ./shrunk.pt (what shrink wrote), else ./model.pt."""
    if model is not None:
        return model
    for p in (SHRUNK_MODEL, DEFAULT_MODEL):
        if p.is_file():
            typer.echo(f"using {p} (the {'shrunk' if p == SHRUNK_MODEL else 'default'} model in this folder)")
            return p
    raise UserError("no model given and no shrunk.pt or model.pt in this folder")


def _bundle_scorer(scene, views: int, threads: Optional[int] = None):
    """``bundle_dir -> PSNR`` on the first ``views`` test views, rendered by onnxruntime on the CPU."""
    from nerfexport.deploy.bundle import open_bundle
    from nerfexport.deploy.render import Renderer, SceneSettings, render_and_score
    from nerfexport.deploy.runtime import OrtNetwork
    images, poses = scene.subset("test")
    images, poses = images[:views], poses[:views]

    def score(path) -> float:
        b = open_bundle(path)
        nets = {w: OrtNetwork(b.network_path(w), threads=threads) if b.network_path(w) else None
                for w in ("coarse", "fine")}
        r = Renderer(nets["coarse"], nets["fine"], SceneSettings.from_manifest(b.manifest))
        return render_and_score(r, images, poses, scene.H, scene.W, scene.focal).psnr
    return score


@app.command()
@_guard
def export(model: Optional[Path] = typer.Argument(None, help="checkpoint (default: ./shrunk.pt, else ./model.pt)"),
           out: Path = typer.Option(DEFAULT_BUNDLE, "-o", "--out", help="bundle folder to write"),
           int8: bool = typer.Option(False, "--int8", help="static int8 (QDQ), calibrated on training rays"),
           fp16: bool = typer.Option(False, "--fp16", help="fp16 weights and compute (for GPU runtimes)"),
           tensorrt: bool = typer.Option(False, "--tensorrt", help="also build TensorRT engines (needs a GPU)"),
           recipe: Optional[str] = typer.Option(None, help="recipe whose [export] table sets these options"),
           calibration: Optional[str] = typer.Option(None, help="int8 calibration: minmax, entropy or percentile"),
           calib_rays: Optional[int] = typer.Option(None, help="training rays for int8 calibration (default 512)"),
           target: Optional[str] = typer.Option(None, help="int8 activation format for: cpu (U8S8) or tensorrt (S8S8); "
                                                          "default cpu, tensorrt with --tensorrt"),
           max_psnr_drop: Optional[float] = typer.Option(None, help="keep the most sensitive layers in float until "
                                                                   "int8 is within this many dB of fp32"),
           eval_views: int = typer.Option(3, help="held-out views for the --max-psnr-drop check"),
           grid: bool = typer.Option(True, "--grid/--no-grid", help="bake an occupancy grid for empty-space skipping"),
           grid_res: int = typer.Option(128, help="occupancy grid cells per side"),
           grid_alpha: float = typer.Option(0.2, help="a cell is occupied where the density's opacity over one "
                                                         "coarse sample spacing exceeds this"),
           data: Optional[Path] = typer.Option(None, "--data", help="training data (default: recorded in the checkpoint)"),
           downscale: Optional[int] = typer.Option(None), test_every: Optional[int] = typer.Option(None),
           force: bool = typer.Option(False, "--force", help="replace an output folder that is not a bundle")) -> None:
    """Write a self-describing bundle: ONNX per network (fp32, fp16 or int8) and manifest.json."""
    from nerfexport.model.checkpoint import load_checkpoint
    from nerfexport.export.bundle_writer import ExportError, ExportOptions, export_bundle, prepare_output
    from nerfexport.export.quantize import Int8Settings
    path = _export_input(model)
    ex = {}
    if recipe is not None:
        from nerfexport.shrink.recipe import load_recipe
        r = load_recipe(recipe)
        ex = dict(r.export)
        typer.echo(f"recipe {r.path}: {r.description}")
    int8 = int8 or bool(ex.get("int8", False))
    fp16 = fp16 or bool(ex.get("fp16", False))
    tensorrt = tensorrt or bool(ex.get("tensorrt", False))
    if int8 and fp16:
        raise UserError("a bundle has one precision: give --int8 or --fp16, not both")
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    settings = Int8Settings(method=calibration or ex.get("calibration", "minmax"),
                            target=target or ("tensorrt" if tensorrt else "cpu"),
                            per_channel=bool(ex.get("per_channel", True)))
    opts = ExportOptions(precision=precision, int8=settings, calib_rays=calib_rays if calib_rays is not None else int(ex.get("calib_rays", 512)),
                         max_psnr_drop=max_psnr_drop if max_psnr_drop is not None else ex.get("max_psnr_drop"),
                         eval_views=eval_views, tensorrt=tensorrt, grid=grid, grid_res=grid_res, grid_alpha=grid_alpha)
    try:
        opts.validate()
        prepare_output(out, force)
    except (ExportError, ValueError) as e:
        raise UserError(str(e))
    if tensorrt:
        from nerfexport.export.tensorrt import check_tensorrt
        check_tensorrt(settings if precision == "int8" else None)   # --target cpu int8 is refused first
    net, meta, _ = load_checkpoint(path, with_train_state=True)
    calib = scorer = scene = None
    if precision == "int8":
        from nerfexport.shrink.calibration import draw_samples
        scene = _scene_for(path, meta, data, downscale, test_every, None, net.cfg.ndc)
        calib = draw_samples(net, scene, opts.calib_rays, opts.seed)
        typer.echo(f"calibration: {calib.coarse_pts.shape[0]:,} coarse and {calib.fine_pts.shape[0]:,} fine samples "
                   f"on {calib.n_rays} training rays ({settings.method}, {settings.activation_format})")
        if opts.max_psnr_drop is not None:
            scorer = _bundle_scorer(scene, eval_views)
    if grid and not net.cfg.ndc:
        from nerfexport.export.grid import scene_box
        if scene is None and (data is not None or ((meta or {}).get("data") or {}).get("path")):
            scene = _scene_for(path, meta, data, downscale, test_every, None, net.cfg.ndc)
        if scene is None:
            opts.grid = False
            typer.echo(f"no occupancy grid: {path} does not record its dataset, whose cameras place the grid "
                       "(pass --data to bake one)")
        else:
            from nerfexport.export.grid import ray_points
            opts.grid_box = scene_box(scene.poses[:, :3, 3], net.cfg.near, False)
            train_poses = scene.subset("train")[1]
            opts.grid_probe = ray_points(train_poses, scene.H, scene.W, scene.focal, net.cfg.near, net.cfg.far, False)

    def progress(e: dict) -> None:
        if e["event"] == "stage":
            typer.echo(f"  {e['stage']}...")
        elif e["event"] == "layer":
            typer.echo(f"    {e['network']} {e['layer']}: -{e['drop']:.3f} dB when int8")
        elif e["event"] == "kept-float":
            typer.echo(f"    keeping {e['network']} {e['layer']} in float: {e['psnr']:.2f} dB")

    try:
        man = export_bundle(net, out, opts, source=path, calib=calib, evaluate=scorer, force=force, progress=progress,
                            data=(meta or {}).get("data") or (scene.load_args if scene is not None else None))
    except ExportError as e:
        raise UserError(str(e))
    total = sum(n["bytes"] for n in man["networks"].values() if n)
    typer.echo(f"exported {path} as {precision}: {', '.join(n['file'] for n in man['networks'].values() if n)} "
               f"({total / 1e6:.2f} MB; checkpoint {path.stat().st_size / 1e6:.2f} MB)")
    occ = man.get("occupancy")
    if occ:
        typer.echo(f"occupancy grid: {occ['res']}^3 cells, {100 * occ['fraction']:.1f}% occupied, "
                   f"{occ['bytes'] / 1e3:.0f} kB")
    q = man.get("quantization_check")
    if q and q.get("psnr_fp32") is not None:
        typer.echo(f"int8 check on {eval_views} held-out views: fp32 {q['psnr_fp32']:.2f} dB, int8 {q['psnr_int8']:.2f} dB; "
                   f"float layers: {man['calibration']['float_layers']}")
    typer.echo(f"wrote {out}/")


def _render_source(target: Optional[Path]) -> Path:
    if target is not None:
        return target
    if DEFAULT_BUNDLE.is_dir():
        typer.echo(f"using {DEFAULT_BUNDLE}/ (the bundle in this folder)")
        return DEFAULT_BUNDLE
    raise UserError("no bundle given and no bundle/ in this folder (run `nerfexport export` first)")


def _open_target(path: Path, runtime: str):
    """(spec, networks, scene settings, data record, scene info, occupancy grid or None) for a bundle
    folder or a checkpoint."""
    from nerfexport.deploy.bundle import open_bundle
    from nerfexport.deploy.render import SceneSettings
    from nerfexport.deploy.runtime import RuntimeSpecError, check_available, load_runtime, make_networks
    try:
        spec = load_runtime(runtime)
    except RuntimeSpecError as e:
        raise UserError(str(e))
    if path.is_dir():
        b = open_bundle(path)
        if spec.kind == "torch":
            raise UserError("the torch runtime renders a checkpoint (model.pt); give the checkpoint, not a bundle")
        check_available(spec)
        if b.precision == "int8" and spec.providers[:1] == ["CUDAExecutionProvider"]:
            typer.echo("warning: onnxruntime's CUDA provider has no int8 kernels; this int8 bundle runs its "
                       "quantized layers on the CPU or in float (use ort-trt or tensorrt for int8 on a GPU)", err=True)
        nets = make_networks(spec, bundle=b)
        return (spec, nets, SceneSettings.from_manifest(b.manifest), b.manifest.get("data"), b.manifest["scene"],
                b.occupancy())
    if spec.kind != "torch":
        raise UserError(f"runtime {spec.name} renders a bundle folder (nerfexport export); {path} is not one")
    from nerfexport.model.checkpoint import load_checkpoint
    from nerfexport.train.loop import pick_device
    check_available(spec)
    _warn_bf16(spec.precision, pick_device(str(spec.device)))
    model, meta, _ = load_checkpoint(path, with_train_state=True)
    c = model.cfg
    nets = make_networks(spec, model=model)
    return (spec, nets, SceneSettings(c.near, c.far, c.white_bkgd, c.ndc, c.n_coarse, c.n_fine), meta.get("data"),
            {"camera": c.camera, "near": c.near, "far": c.far, "ndc": c.ndc}, None)


def _skip_note(r, grid, skip: bool, path: Path) -> str:
    if r.grid is not None:
        return (f"empty-space skipping: {grid.res}^3 grid, {100 * grid.fraction:.1f}% occupied; early termination "
                f"below transmittance {r.early_stop:g}")
    if skip and r.early_stop > 0:
        return f"no occupancy grid in {path}; early termination below transmittance {r.early_stop:g}"
    return "plain rendering: every sample evaluated"


def _views(views: str, data_rec: Optional[dict], data: Optional[Path], scene_info: dict,
           downscale: Optional[int] = None, test_every: Optional[int] = None):
    """(poses, ground truth or None, H, W, focal, is_spiral) for --views test|spiral|N[,M...]."""
    import numpy as np
    if views == "spiral":
        from nerfexport.deploy.rays import pose_spherical
        cam = scene_info.get("camera") or {}
        if scene_info.get("ndc") or not cam:
            raise UserError("spiral views need a 360-degree scene with a recorded camera; use --views test")
        from nerfexport.deploy.bundle import check_camera
        H, W, focal = check_camera(cam.get("H"), cam.get("W"), cam.get("focal"), "the recorded camera")
        radius = 0.5 * (float(scene_info["near"]) + float(scene_info["far"]))
        poses = np.stack([pose_spherical(a, -30.0, radius) for a in np.linspace(-180, 180, 40, endpoint=False)])
        return poses.astype(np.float32), None, H, W, focal, True
    from nerfexport.data.datasets import load_scene
    rec = data_rec or {}
    root = data or (Path(rec["path"]) if rec.get("path") else None)
    if root is None:
        raise UserError("test views need the dataset: pass --data (the bundle does not record it)")
    scene = load_scene(root, downscale or int(rec.get("downscale", 1)), bool(rec.get("white", True)),
                       test_every or int(rec.get("test_every", 1)), bool(rec.get("ndc", True)))
    images, poses = scene.subset("test")
    if views != "test":
        try:
            idx = [int(v) for v in views.split(",")]
        except ValueError:
            raise UserError(f"--views is test, spiral or test-view numbers like 0,3 (got {views!r})")
        bad = [i for i in idx if not 0 <= i < len(poses)]
        if bad:
            raise UserError(f"view {bad[0]} is out of range: the dataset has {len(poses)} test views (0-{len(poses) - 1})")
        images, poses = images[idx], poses[idx]
    return poses, images, scene.H, scene.W, scene.focal, False


@app.command()
@_guard
def render(target: Optional[Path] = typer.Argument(None, help="bundle folder (default: ./bundle), or a checkpoint "
                                                              "for --runtime torch"),
           runtime: str = typer.Option("ort-cpu", help="ort-cpu, ort-cuda, ort-trt, tensorrt, torch, or a TOML file"),
           views: str = typer.Option("test", help="test, spiral, or test-view numbers like 0,3"),
           out: Path = typer.Option(Path("renders"), "--out", "-o", help="folder for the PNGs (and spiral.gif)"),
           data: Optional[Path] = typer.Option(None, "--data", help="dataset (default: recorded in the bundle)"),
           downscale: Optional[int] = typer.Option(None), test_every: Optional[int] = typer.Option(None),
           skip: bool = typer.Option(True, "--skip/--no-skip", help="empty-space skipping with the bundle's "
                                                                    "occupancy grid, and early ray termination"),
           early_stop: Optional[float] = typer.Option(None, help="stop a ray once its transmittance is below this "
                                                                 "(default 1e-3 with --skip; 0 never)")) -> None:
    """Render views of a bundle with the lean renderer (numpy + the runtime; no torch) and write PNGs."""
    import shutil

    import numpy as np
    from PIL import Image

    from nerfexport.data.metrics import psnr
    from nerfexport.deploy.render import make_renderer
    path = _render_source(target)
    spec, nets, settings, data_rec, info, grid = _open_target(path, runtime)
    poses, gt, H, W, focal, spiral = _views(views, data_rec, data, info, downscale, test_every)
    if out.exists() and (not out.is_dir() or any(p.suffix not in (".png", ".gif") for p in out.iterdir())):
        raise UserError(f"{out} exists and holds other files; choose another --out")
    if early_stop is not None and not 0.0 <= early_stop < 1.0:
        raise UserError(f"--early-stop is a transmittance in [0, 1), not {early_stop}")
    r = make_renderer(spec, nets, settings, grid, skip and path.is_dir(), early_stop)  # checkpoints: plain
    typer.echo(_skip_note(r, grid, skip, path))
    from nerfexport.deploy.runtime import kernel_summary
    kernels = kernel_summary(nets) if spec.kernel != "graph" else None
    if kernels:
        typer.echo(kernels)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"cannot write {out}: {parent} does not exist")
    from nerfexport.data.fileio import temp_dir_for
    tmp = temp_dir_for(out)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    frames, scores = [], []
    try:
        with Progress(TextColumn(f"[bold]render ({spec.name})"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn()) as bar:
            task = bar.add_task("render", total=len(poses))
            walls = []
            for i, pose in enumerate(poses):
                t0 = time.perf_counter()
                rgb = r.render_view(H, W, focal, pose)["rgb"]
                walls.append(time.perf_counter() - t0)
                img = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
                Image.fromarray(img).save(tmp / f"{i:03d}.png")
                frames.append(Image.fromarray(img))
                if gt is not None:
                    scores.append(psnr(rgb, gt[i]))
                bar.update(task, completed=i + 1)
        if spiral:
            frames[0].save(tmp / "spiral.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    t = r.timings
    n = len(poses)
    busy = t.rays + t.sampling + t.network + t.compositing
    typer.echo(f"rendered {n} view(s) of {W}x{H} with {spec.name} ({settings.n_coarse}+{settings.n_fine} samples): "
               f"median {float(np.median(walls)) * 1e3:.0f} ms/frame, {t.samples / n:,.0f} network evaluations/frame "
               f"(network {100 * t.network / busy if busy else 0:.0f}% of the time)")
    if scores:
        typer.echo(f"PSNR against the dataset's test views: {float(np.mean(scores)):.2f} dB")
    typer.echo(f"wrote {out}/" + (" (spiral.gif)" if spiral else ""))


@app.command()
@_guard
def bench(items: Optional[list[str]] = typer.Argument(None, help="PATH@RUNTIME or LABEL=PATH@RUNTIME, with :plain "
                                                                 "appended to render without skipping; the first is "
                                                                 "the reference (default: model.pt@torch bundle@ort-cpu)"),
          out: Path = typer.Option(Path("bench-out"), "-o", "--out", help="folder for bench.json, bench.md, figures"),
          data: Optional[Path] = typer.Option(None, "--data", help="dataset (default: recorded in the first item)"),
          downscale: Optional[int] = typer.Option(None), test_every: Optional[int] = typer.Option(None),
          views: int = typer.Option(10, help="first N test views"),
          repeat: int = typer.Option(3, help="renders of each view (after one warm-up frame)"),
          samples: Optional[str] = typer.Option(None, help="coarse,fine samples per ray for every item "
                                                            "(default: each item's own)"),
          peak: bool = typer.Option(True, "--peak/--no-peak", help="measure the int8 and fp32 GEMM peak first "
                                                                  "(for the network's fraction of peak)")) -> None:
    """Benchmark bundles and runtimes on the same views: frame time, throughput, quality, size, memory."""
    import numpy as np

    from nerfexport.bench.bench import BenchError, BenchItem, check_items, run_bench
    if not items:
        items = [f"{DEFAULT_MODEL}@torch", f"{DEFAULT_BUNDLE}@ort-cpu"]
        typer.echo(f"benchmarking {' and '.join(items)} (the files in this folder)")
    smp = None
    if samples:
        try:
            smp = tuple(int(x) for x in samples.split(","))
            assert len(smp) == 2 and 2 <= smp[0] <= 4096 and 0 <= smp[1] <= 4096
        except (ValueError, AssertionError):
            raise UserError("--samples is like 64,128 (coarse at least 2, each at most 4096)")
    if views < 1 or repeat < 1:
        raise UserError("--views and --repeat must be at least 1")
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    try:
        parsed = [BenchItem.parse(x) for x in items]
        data_rec = check_items(parsed)
    except BenchError as e:
        raise UserError(str(e))
    poses, gt, H, W, focal, _ = _views("test", data_rec, data, {}, downscale, test_every)
    poses, gt = poses[:views], gt[:views]

    def progress(e: dict) -> None:
        if e["event"] == "item":
            typer.echo(f"[{e['index'] + 1}/{len(parsed)}] {e['label']}")
        elif e["event"] == "done":
            typer.echo(f"    median {e['median_ms']:.0f} ms/frame")
        elif e["event"] == "skipped":
            typer.echo(f"    not run: {e['reason']}")
        elif e["event"] == "peak":
            typer.echo("measuring the int8 and fp32 GEMM peak (onnxruntime CPU, all cores)")

    try:
        doc = run_bench(parsed, gt, poses, H, W, focal, out, repeat=repeat, samples=smp, progress=progress,
                        peak_sizes=(1024, 2048, 4096) if peak else None)
    except BenchError as e:
        raise UserError(str(e))
    typer.echo((out / "bench.md").read_text())
    typer.echo("wrote " + ", ".join(doc["files"]))


@app.command()
@_guard
def demo(out: Path = typer.Option(Path("demo-out"), "-o", "--out", help="folder for everything the demo writes"),
         steps: int = typer.Option(600, help="training steps on the embedded scene"),
         size: int = typer.Option(64, help="image size of the embedded scene"),
         width: int = typer.Option(128, help="width to shrink to"),
         finetune: int = typer.Option(300, help="distillation steps after shrinking")) -> None:
    """The whole pipeline on the embedded scene: dataset, train, shrink, export fp32 and int8, render, bench."""
    import os
    from nerfexport.data.synthetic import make_scene
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    data = out / "scene"
    n = 7
    if not (data / "transforms_train.json").is_file():
        make_scene(data, size=size)
        typer.echo(f"[1/{n}] wrote the embedded scene to {data}/")
    else:
        typer.echo(f"[1/{n}] reusing the embedded scene in {data}/")
    model, shrunk = out / "model.pt", out / "shrunk.pt"
    typer.echo(f"[2/{n}] training {model} ({steps} steps)")
    train(data=data, out=model, downscale=1, white=True, test_every=1, width=256, depth=8, fine=True, steps=steps,
          minutes=None, batch_rays=256, n_coarse=16, n_fine=24, render_coarse=64, render_fine=128, lr=5e-4,
          lr_final=5e-5, occupancy=True, grid_every=32, grow_from=None, grow_at=0.5, precision="auto", eval_every=None, eval_views=8, seed=0, device="auto",
          resume=True)
    typer.echo(f"[3/{n}] shrinking to width {width} with {finetune} distillation steps -> {shrunk}")
    shrink(model=model, out=shrunk, width=width, ratio=None, view_width=None, method="coreset", recipe=None,
           finetune=finetune, calib_rays=512, seed=0, data=None, downscale=None, test_every=None, white=None,
           eval_views=0, eval_coarse=None, eval_fine=None)
    bundles = {"fp32": out / "bundle-fp32", "int8": out / "bundle-int8"}
    typer.echo(f"[4/{n}] exporting {shrunk} as fp32 -> {bundles['fp32']}/")
    kw = dict(tensorrt=False, recipe=None, calibration=None, calib_rays=None, target=None, max_psnr_drop=None,
              eval_views=3, grid=True, grid_res=128, grid_alpha=0.2, data=None, downscale=None, test_every=None,
              force=True)
    export(model=shrunk, out=bundles["fp32"], int8=False, fp16=False, **kw)
    typer.echo(f"[5/{n}] exporting {shrunk} as static int8 -> {bundles['int8']}/")
    export(model=shrunk, out=bundles["int8"], int8=True, fp16=False, **kw)
    renders = out / "renders"
    typer.echo(f"[6/{n}] rendering the int8 bundle's test views with onnxruntime (no torch) -> {renders}/")
    if renders.is_dir():
        import shutil
        shutil.rmtree(renders)
    render(target=bundles["int8"], runtime="ort-cpu", views="test", out=renders, data=None, downscale=None,
           test_every=None, skip=True, early_stop=None)
    typer.echo(f"[7/{n}] benchmarking the teacher (torch) against the bundles (onnxruntime CPU)")
    bench_dir = out / "bench"
    bench(items=[f"teacher 256 fp32={model}@torch", f"w{width} fp32={bundles['fp32']}@ort-cpu",
                 f"w{width} int8 plain={bundles['int8']}@ort-cpu:plain", f"w{width} int8={bundles['int8']}@ort-cpu"],
          out=bench_dir, data=None, downscale=None,
          test_every=None, views=2, repeat=2, samples=None, peak=True)
    typer.echo(f"done. dataset {data}/, models {model} and {shrunk} (report {shrunk.with_suffix('.json')}), "
               f"bundles {bundles['fp32']}/ and {bundles['int8']}/, renders {renders}/, "
               f"benchmark {bench_dir}/bench.md with figures {bench_dir}/pareto.png and {bench_dir}/grid.png")


@app.command("export-study")
@_guard
def export_study(models: list[str] = typer.Argument(..., help="LABEL=CHECKPOINT; the first is the reference"),
                 out: Path = typer.Option(Path("cache/export-study"), "-o", "--out", help="bundles and export.json"),
                 doc: Optional[Path] = typer.Option(None, help="Markdown file for the table"),
                 data: Optional[Path] = typer.Option(None, "--data"), downscale: Optional[int] = typer.Option(None),
                 test_every: Optional[int] = typer.Option(None), views: int = typer.Option(10),
                 calib_rays: int = typer.Option(512), threads: Optional[int] = typer.Option(None),
                 methods: str = typer.Option("minmax,entropy,percentile")) -> None:
    """fp32 vs static int8 (each calibration method): held-out PSNR through onnxruntime and bundle sizes."""
    from nerfexport.model.checkpoint import load_checkpoint
    from nerfexport.export.quantize import CALIBRATION_METHODS
    from nerfexport.bench.study import export_markdown, run_export_study
    pairs = {}
    for m in models:
        if "=" not in m:
            raise UserError(f"{m!r} must be LABEL=CHECKPOINT")
        k, v = m.split("=", 1)
        pairs[k] = v
    ms = [x for x in methods.split(",") if x]
    if set(ms) - set(CALIBRATION_METHODS):
        raise UserError(f"methods must be among {', '.join(CALIBRATION_METHODS)}")
    first = Path(next(iter(pairs.values())))
    net, meta, _ = load_checkpoint(first, with_train_state=True)
    scene = _scene_for(first, meta, data, downscale, test_every, None, net.cfg.ndc)

    def progress(e: dict) -> None:
        if e["event"] == "stage":
            typer.echo(f"[{time.strftime('%H:%M:%S')}] {e['stage']}")
        elif e["event"] == "row":
            typer.echo(f"  {e['model']} {e['precision']} {e['method'] or ''}: {e['psnr']:.2f} dB, {e['bytes'] / 1e6:.3f} MB")

    res = run_export_study(pairs, scene, out, ms, views, calib_rays, threads, progress=progress)
    table = export_markdown(res, next(iter(pairs)))
    typer.echo(table)
    if doc is not None:
        from nerfexport.data.fileio import atomic_write
        atomic_write(doc, lambda f: f.write(table.encode()))
        typer.echo(f"wrote {doc}")


@app.command()
@_guard
def doctor(probe: bool = typer.Option(True, "--probe/--no-probe",
                                      help="run a tiny network on each available runtime")) -> None:
    """One table for bug reports: every shipped runtime (available or not, and why), versions, GPU, CPU features."""
    from nerfexport.bench.doctor import diagnose, table
    typer.echo(table(diagnose(probe)))


def main() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    app()


if __name__ == "__main__":
    main()
