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
        from .bundle import BundleError
        from .quantize import QuantizationError
        from .recipe import RecipeError
        from .tensorrt import TensorRTUnavailable
        try:
            return fn(*a, **kw)
        except (UserError, CheckpointError, DatasetError, RecipeError, BundleError, QuantizationError,
                TensorRTUnavailable, FileExistsError) as e:
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
                                                           "data-coreset (default: activation)"),
           recipe: Optional[str] = typer.Option(None, help="TOML recipe (path or shipped name) with a [shrink] table"),
           finetune: Optional[int] = typer.Option(None, help="distillation steps after pruning (default 0)"),
           calib_rays: Optional[int] = typer.Option(None, help="training rays for calibration statistics (default 1024)"),
           seed: Optional[int] = typer.Option(None, help="seed for sampling and fine-tuning (default 0)"),
           data: Optional[Path] = typer.Option(None, "--data", help="training data (default: recorded in the checkpoint)"),
           downscale: Optional[int] = typer.Option(None), test_every: Optional[int] = typer.Option(None),
           white: Optional[bool] = typer.Option(None, "--white/--black"),
           eval_views: int = typer.Option(10, help="held-out views for PSNR before/after (0: no evaluation)"),
           eval_coarse: Optional[int] = typer.Option(None, help="coarse samples per ray for the evaluation"),
           eval_fine: Optional[int] = typer.Option(None, help="fine samples per ray for the evaluation")) -> None:
    """Physically shrink both networks (structured pruning or coresets), optionally distil; write a checkpoint."""
    from .checkpoint import check_writable, file_sha256, load_checkpoint, save_checkpoint
    from .fileio import atomic_write
    from .recipe import load_recipe
    from .shrink import ShrinkSpec, shrink_pipeline
    from .surgery import target_widths
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
    fields.setdefault("method", "activation")
    spec = ShrinkSpec(**fields)
    try:
        spec.validate()
    except ValueError as e:
        raise UserError(str(e))
    if out.resolve() == path.resolve():
        raise UserError(f"refusing to overwrite the input {path}; choose another --out")
    check_writable(out)
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
                                              help="train each width from scratch for the same total time")) -> None:
    """Compare every shrink method at several widths with the teacher and with training from scratch."""
    from .checkpoint import load_checkpoint
    from .plots import plot_shrink_study
    from .scoring import METHODS
    from .study import markdown_table, run_study
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

    res = run_study(teacher, scene, out, ws, ms, ft, eval_views, (eval_coarse, eval_fine), scratch=scratch,
                    progress=progress)
    table = markdown_table(res)
    typer.echo(table)
    if doc is not None:
        from .fileio import atomic_write
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
    from .bundle import open_bundle
    from .render import Renderer, SceneSettings, render_and_score
    from .runtimes import OrtNetwork
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
           data: Optional[Path] = typer.Option(None, "--data", help="training data (default: recorded in the checkpoint)"),
           downscale: Optional[int] = typer.Option(None), test_every: Optional[int] = typer.Option(None),
           force: bool = typer.Option(False, "--force", help="replace an output folder that is not a bundle")) -> None:
    """Write a self-describing bundle: ONNX per network (fp32, fp16 or int8) and manifest.json."""
    from .checkpoint import load_checkpoint
    from .export import ExportError, ExportOptions, export_bundle, prepare_output
    from .quantize import Int8Settings
    path = _export_input(model)
    ex = {}
    if recipe is not None:
        from .recipe import load_recipe
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
    opts = ExportOptions(precision=precision, int8=settings, calib_rays=calib_rays or int(ex.get("calib_rays", 512)),
                         max_psnr_drop=max_psnr_drop if max_psnr_drop is not None else ex.get("max_psnr_drop"),
                         eval_views=eval_views, tensorrt=tensorrt)
    try:
        opts.validate()
        prepare_output(out, force)
    except (ExportError, ValueError) as e:
        raise UserError(str(e))
    if tensorrt:
        from .tensorrt import check_tensorrt
        check_tensorrt()
    net, meta, _ = load_checkpoint(path, with_train_state=True)
    calib = scorer = None
    if precision == "int8":
        from .calibration import draw_samples
        scene = _scene_for(path, meta, data, downscale, test_every, None, net.cfg.ndc)
        calib = draw_samples(net, scene, opts.calib_rays, opts.seed)
        typer.echo(f"calibration: {calib.coarse_pts.shape[0]:,} coarse and {calib.fine_pts.shape[0]:,} fine samples "
                   f"on {calib.n_rays} training rays ({settings.method}, {settings.activation_format})")
        if opts.max_psnr_drop is not None:
            scorer = _bundle_scorer(scene, eval_views)

    def progress(e: dict) -> None:
        if e["event"] == "stage":
            typer.echo(f"  {e['stage']}...")
        elif e["event"] == "layer":
            typer.echo(f"    {e['network']} {e['layer']}: -{e['drop']:.3f} dB when int8")
        elif e["event"] == "kept-float":
            typer.echo(f"    keeping {e['network']} {e['layer']} in float: {e['psnr']:.2f} dB")

    try:
        man = export_bundle(net, out, opts, source=path, calib=calib, evaluate=scorer, force=force, progress=progress)
    except ExportError as e:
        raise UserError(str(e))
    total = sum(n["bytes"] for n in man["networks"].values() if n)
    typer.echo(f"exported {path} as {precision}: {', '.join(n['file'] for n in man['networks'].values() if n)} "
               f"({total / 1e6:.2f} MB; checkpoint {path.stat().st_size / 1e6:.2f} MB)")
    q = man.get("quantization_check")
    if q and q.get("psnr_fp32") is not None:
        typer.echo(f"int8 check on {eval_views} held-out views: fp32 {q['psnr_fp32']:.2f} dB, int8 {q['psnr_int8']:.2f} dB; "
                   f"float layers: {man['calibration']['float_layers']}")
    typer.echo(f"wrote {out}/")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
