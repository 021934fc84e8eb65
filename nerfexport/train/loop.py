"""The training loop: nerf-pytorch's recipe (random ray batches, stratified coarse + hierarchical
fine samples, photometric loss on both, Adam with exponential decay) scaled for a CPU, with
grid-guided sampling, a collapse guard, growth from a narrow network, periodic held-out checks and
resumable checkpoints.

The network runs under the autocast dtype of :func:`nerfexport.train.device.autocast_dtype` (bf16
only where it pays). Library functions report progress through a callback and never print.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from nerfexport.data.datasets import Scene
from nerfexport.deploy.rays import NDC_BOX
from nerfexport.model import checkpoint as ckpt
from nerfexport.model.mlp import NeRF
from nerfexport.model.surgery import widen_model
from nerfexport.train.device import autocast_dtype, pick_device
from nerfexport.train.evaluate import EvalResult, eval_pixels, evaluate, pixel_psnr
from nerfexport.train.factory import narrow_config, widened_optimizer
from nerfexport.train.occupancy import OccupancyGrid, default_aabb, grid_samples
from nerfexport.train.render import render_rays, scene_rays

ProgressFn = Callable[[dict], None]


@dataclass
class TrainConfig:
    steps: int = 5000
    batch_rays: int = 1024
    lr: float = 5e-4
    lr_final: float = 5e-5           # exponential decay from lr to lr_final over `steps` (or over
                                     # `max_minutes`, when that budget ends first: see train())
    warmup_steps: int = 0            # linear warm-up from lr/50 over these steps
    clip_grad: float | None = None   # clip the global gradient norm
    collapse_guard_steps: int = 1000 # re-initialise a network stuck far worse than "all background"
    n_coarse: int = 64               # samples per ray during training
    n_fine: int = 64
    raw_noise_std: float = 0.0
    precrop_iters: int = 500         # Blender: sample the central crop first (nerf-pytorch)
    precrop_frac: float = 0.5
    precision: str = "auto"          # auto | bf16 | fp32
    seed: int = 0
    max_minutes: float | None = None # stop early when training time (evaluation excluded) passes this
    eval_every_minutes: float | None = None  # held-out evaluation on the clock's marks, on a fixed
                                     # random subset of held-out pixels (cheap; PSNR only)
    eval_views: int = 10             # held-out views the pixels come from, and of the final evaluation
    eval_pixels: int = 4096          # pixels of each periodic evaluation
    final_eval: bool = True          # evaluate the full held-out views once at the end
    ckpt_every_steps: int = 500
    device: str = "auto"
    threads: int | None = None
    occupancy: bool = True           # grid-guided sampling (in NDC space for NDC scenes); see occupancy.py
    grid_res: int = 64
    grid_every: int = 32
    grid_warmup: int = 256
    grid_floor: float = 0.02
    grid_decay: float = 0.8
    grow_from: int | None = None     # train at this width first, then widen to the model's widths
    grow_at: float = 0.5             # ... when this fraction of the budget (steps or minutes) is spent

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    steps: int
    train_seconds: float
    wall_seconds: float
    history: list[dict] = field(default_factory=list)   # {"step", "minutes", "psnr", "pixels"}
    final: EvalResult | None = None  # the full held-out views at the end (tc.final_eval)
    eval_seconds: float = 0.0        # wall time of the evaluations (in wall_seconds, not train_seconds)


def _reinit(net: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    for m in net.modules():
        if isinstance(m, torch.nn.Linear):
            m.reset_parameters()
    for p in net.parameters():
        opt.state.pop(p, None)


def train(model: NeRF, scene: Scene, tc: TrainConfig, out: str | Path | None = None,
          resume: bool = True, progress: ProgressFn | None = None) -> TrainResult:
    """Train ``model`` on the ``train`` split of ``scene``.

    ``tc.grow_from``: train a network of that uniform width first (128 wide: 2x the steps per second
    of a 256-wide one on the 2-core CPU, measured on lego) and widen it to ``model``'s architecture, keeping what it computes
    (:func:`surgery.widen_model`), when ``tc.grow_at`` of the budget is spent; ``model`` holds the
    full-width result at the end either way.

    Args:
        model: The NeRF to train, in place (moved to ``tc.device``; in eval mode at the end).
        scene: The dataset; its ``train`` split is trained on, its ``test`` split evaluated.
        tc: The recipe, budget, evaluation and checkpoint settings.
        out: Checkpoint path written every ``tc.ckpt_every_steps`` and at the end (atomic).
        resume: With an existing ``out`` holding a train state, continue from it.
        progress: Receives dicts: ``{"event": "step", "step", "loss", "psnr", "lr"}``,
            ``{"event": "eval", "step", "minutes", "psnr", "pixels"}`` (the periodic evaluation on
            ``tc.eval_pixels`` held-out pixels), ``{"event": "final", "psnr", "ssim", "views", "seconds"}``
            (the full held-out views at the end, ``tc.final_eval``), ``{"event": "checkpoint", ...}``,
            ``{"event": "grow", "step", "width"}``.

    Returns:
        A :class:`TrainResult`: steps made, training and wall seconds, the periodic evaluations
        and the final one.
    """
    run = _Run(model, scene, tc, out, progress)
    done = run.restore(resume)
    if done is not None:
        return done
    run.prepare()
    step = run.loop()
    return run.finish(step)


class _Run:
    """One call of :func:`train`: the network being trained (narrow until it grows), its optimizer,
    sampler and occupancy grid, the training rays, the clock and the history."""

    def __init__(self, model: NeRF, scene: Scene, tc: TrainConfig, out: str | Path | None,
                 progress: ProgressFn | None) -> None:
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.model, self.scene, self.tc, self.out = model, scene, tc, out
        self.device = pick_device(tc.device)
        self.amp = autocast_dtype(tc.precision, self.device)
        model.to(self.device).train()
        self.emit = progress or (lambda e: None)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(tc.seed)
        torch.manual_seed(tc.seed)
        self.cur, self.grown = model, True          # the network being trained: narrow until it grows
        if tc.grow_from:
            narrow = narrow_config(model.cfg, tc.grow_from)
            if narrow != model.cfg:
                if any(tc.grow_from > w for m in (model.cfg.coarse, model.cfg.fine) if m is not None
                       for w in m.widths + [m.feature_width]):
                    raise ValueError(f"grow_from {tc.grow_from} is wider than the model")
                self.cur, self.grown = NeRF(narrow).to(self.device).train(), False
        self.start_step, self.train_seconds, self.history, self.state_grid = 0, 0.0, [], None
        self.final_rec = None  # the final evaluation, once made
        self.held_out = None
        self.eval_seconds = 0.0
        self.grid = None
        # Collapse guard: a white-background NeRF sometimes falls, in its first few hundred steps,
        # into an opaque state far worse than predicting the background everywhere, and stays there.
        # Track each network's loss relative to that trivial prediction and re-initialise a
        # network that sits at more than twice it.
        self.ratio = {"coarse": 1.0, "fine": 1.0}

    def restore(self, resume: bool) -> TrainResult | None:
        """Make the optimizer, continuing from ``out``'s train state when there is one; a
        :class:`TrainResult` when that state has already made its steps."""
        tc, out, model = self.tc, self.out, self.model
        state = None
        if out is not None and resume and Path(out).is_file():
            loaded, _meta, state = ckpt.load_checkpoint(out, with_train_state=True)
            if state is not None and loaded.cfg == model.cfg:
                self.cur, self.grown = model, True
            if state is not None and loaded.cfg != self.cur.cfg:
                raise ckpt.CheckpointError(f"{out} holds a different model (widths, bounds or sample counts); "
                                           "restart it or write elsewhere")
            if state is not None:
                self.cur.load_state_dict(loaded.state_dict())
        self.opt = torch.optim.Adam(self.cur.parameters(), lr=tc.lr, betas=(0.9, 0.999))
        if state is None:
            return None
        if int(state.get("step", 0)) >= tc.steps:
            model.eval()
            self.emit({"event": "complete", "step": int(state["step"])})
            return TrainResult(int(state["step"]), float(state.get("train_seconds", 0.0)), 0.0,
                               list(state.get("history", [])))
        # an interrupted run continues exactly; a finished one given more steps continues
        # from its weights with a fresh optimizer
        if "optimizer" in state:
            self.opt.load_state_dict(state["optimizer"])
            self.gen.set_state(state["generator"])
            self.state_grid = state.get("grid")
        self.start_step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.history = list(state.get("history", []))
        self.emit({"event": "resume", "step": self.start_step})
        return None

    def prepare(self) -> None:
        """The training rays, the central crop of the first iterations and the occupancy grid."""
        scene, tc, device = self.scene, self.tc, self.device
        self.rays = {k: torch.from_numpy(v).to(device) for k, v in scene_rays(scene, "train").items()}
        self.n_img = len(scene.splits["train"])
        self.HW = scene.H * scene.W
        # Central-crop pixel indices for the first iterations (avoids the all-background minimum).
        dh, dw = int(scene.H // 2 * tc.precrop_frac), int(scene.W // 2 * tc.precrop_frac)
        ys, xs = np.meshgrid(np.arange(scene.H // 2 - dh, scene.H // 2 + dh), np.arange(scene.W // 2 - dw, scene.W // 2 + dw),
                             indexing="ij")
        self.crop = torch.from_numpy((ys * scene.W + xs).reshape(-1)).to(device)
        self.use_crop = tc.precrop_iters > 0 and not scene.ndc and self.crop.numel() > 0
        if tc.occupancy:
            if scene.ndc:
                box = list(NDC_BOX)
            else:
                box = default_aabb(torch.from_numpy(scene.poses[scene.splits["train"], :3, 3]), scene.near)
            self.grid = OccupancyGrid(box, tc.grid_res, device, decay=tc.grid_decay)
            if self.state_grid is not None:
                self.grid.load_state_dict(self.state_grid)
            cfg = self.model.cfg
            dt = (cfg.far - cfg.near) / max(1, cfg.n_coarse + cfg.n_fine)
            self.grid_threshold = -math.log(1.0 - 0.01) / dt  # density whose alpha over dt is 1 %
        # the grid changes only at its updates: its occupied fraction is read there, not every step
        self.grid_frac = self.grid.fraction if self.grid is not None else 1.0

    def grid_density(self, pts: torch.Tensor) -> torch.Tensor:
        amp = self.amp
        with torch.autocast(self.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            d = self.cur.coarse.density(pts).float()
            if self.cur.fine is not None:
                d = torch.maximum(d, self.cur.fine.density(pts).float())
        return d

    def save(self, step: int, final: bool = False) -> None:
        if self.out is None:
            return
        # The optimizer and sampler state make a run resumable; a finished model drops them
        # (they would triple the file) and keeps only where it ended.
        state = {"step": step, "train_seconds": self.train_seconds, "history": self.history,
                 "train_config": self.tc.to_dict()}
        if not final:
            state.update(optimizer=self.opt.state_dict(), generator=self.gen.get_state().cpu(),
                         grid=self.grid.state_dict() if self.grid is not None else None)
        ckpt.save_checkpoint(self.cur, self.out, meta={"steps": step, "train_seconds": self.train_seconds,
                                                       "dataset": self.scene.source, "data": self.scene.load_args,
                                                       "history": self.history, "final_eval": self.final_rec},
                             train_state=state)
        self.emit({"event": "checkpoint", "step": step, "path": str(self.out)})

    def run_eval(self, step: int) -> None:
        """The periodic evaluation: PSNR on ``tc.eval_pixels`` fixed held-out pixels."""
        tc = self.tc
        t = time.perf_counter()
        if self.held_out is None:
            self.held_out = {k: torch.from_numpy(a).to(self.device)
                             for k, a in eval_pixels(self.scene, tc.eval_pixels, tc.eval_views, tc.seed).items()}
        p = pixel_psnr(self.cur, self.held_out, tc.n_coarse, tc.n_fine, self.amp)
        rec = {"step": step, "minutes": self.train_seconds / 60.0, "psnr": p,
               "pixels": int(self.held_out["o"].shape[0])}
        self.history.append(rec)
        self.eval_seconds += time.perf_counter() - t
        self.emit({"event": "eval", **rec})

    def grow(self, step: int) -> None:
        """Widen the narrow network to the model's widths, keeping what it computes."""
        model = self.model
        wide, maps = widen_model(self.cur, model.cfg, generator=self.gen)
        model.load_state_dict(wide.state_dict())
        model.train()
        self.opt = widened_optimizer(model, self.cur, self.opt, maps)
        self.cur, self.grown = model, True
        self.emit({"event": "grow", "step": step, "width": max(model.cfg.coarse.widths)})

    def loop(self) -> int:
        """Train until ``tc.steps`` or the time budget; returns the step reached."""
        tc = self.tc
        self.wall0 = time.perf_counter()
        next_eval = None
        if tc.eval_every_minutes:
            done = len(self.history)
            next_eval = tc.eval_every_minutes * 60.0 * (done + 1) if done else tc.eval_every_minutes * 60.0
        step = self.start_step
        decay = math.log(tc.lr_final / tc.lr) if tc.lr_final > 0 else 0.0
        while step < tc.steps:
            if tc.max_minutes is not None and self.train_seconds >= tc.max_minutes * 60.0:
                break
            t0 = time.perf_counter()
            # The schedule runs over whichever budget ends first, so a run stopped by its time
            # budget still ends at lr_final instead of being cut off mid-decay.
            frac = step / max(1, tc.steps)
            if tc.max_minutes:
                frac = max(frac, self.train_seconds / (tc.max_minutes * 60.0))
            lr = tc.lr * math.exp(decay * min(1.0, frac))
            if not self.grown and frac >= tc.grow_at:
                self.grow(step)
            if step < tc.warmup_steps:
                lr *= 0.02 + 0.98 * step / tc.warmup_steps
            for g in self.opt.param_groups:
                g["lr"] = lr
            loss, batch_mse, coarse_mse, n_skipped, n_rays = self.train_step(step)
            step += 1
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.train_seconds += time.perf_counter() - t0
            self.emit({"event": "step", "step": step, "loss": float(loss.detach()),
                       "psnr": -10.0 * math.log10(max(batch_mse, 1e-10)), "coarse_mse": coarse_mse, "lr": lr,
                       "minutes": self.train_seconds / 60.0, "occupied": self.grid_frac, "skipped": n_skipped,
                       "rays": n_rays})
            if next_eval is not None and self.train_seconds >= next_eval:
                self.run_eval(step)
                next_eval += tc.eval_every_minutes * 60.0
            if self.out is not None and tc.ckpt_every_steps and step % tc.ckpt_every_steps == 0 and step < tc.steps:
                self.save(step)
        if not self.grown:  # the budget ended before the growth point: the result still has the model's widths
            self.grow(step)
        if next_eval is not None and (not self.history or self.history[-1]["step"] != step):
            self.run_eval(step)
        return step

    def draw_batch(self, step: int) -> tuple[torch.Tensor, ...]:
        """A random batch of training rays ``o, d, v`` and their target colours ``(B, 3)``."""
        tc, device, gen = self.tc, self.device, self.gen
        img_i = torch.randint(0, self.n_img, (tc.batch_rays,), device=device, generator=gen)
        if self.use_crop and step < tc.precrop_iters:
            pix = self.crop[torch.randint(0, self.crop.numel(), (tc.batch_rays,), device=device, generator=gen)]
        else:
            pix = torch.randint(0, self.HW, (tc.batch_rays,), device=device, generator=gen)
        idx = img_i * self.HW + pix
        rays = self.rays
        return rays["o"][idx], rays["d"][idx], rays["v"][idx], rays["rgb"][idx]

    def train_step(self, step: int) -> tuple[torch.Tensor, float, float, int, int]:
        """One optimisation step; returns the loss, the batch's MSE (skipped rays included), the
        coarse network's MSE, the rays skipped as empty and the rays rendered."""
        tc, cur, grid = self.tc, self.cur, self.grid
        o, d, v, target = self.draw_batch(step)
        z_coarse, n_skipped, skipped_err = None, 0, 0.0
        gridded = grid is not None and step >= tc.grid_warmup
        if gridded and (step - tc.grid_warmup) % tc.grid_every == 0:
            cur.eval()
            grid.update(self.grid_density, self.grid_threshold, all_cells=step == tc.grid_warmup, generator=self.gen)
            self.grid_frac = grid.fraction
            cur.train()
        # a model with no density anywhere (dead density units) would get an empty grid that skips
        # every ray, and training would stop there: sample plainly until an update finds matter
        if gridded and self.grid_frac > 0.0:
            z_coarse, active = grid_samples(grid, o, d, cur.cfg.near, cur.cfg.far, tc.n_coarse,
                                            floor=tc.grid_floor, generator=self.gen)
            if not bool(active.all()) and not self.scene.ndc:
                # rays that cross only empty cells render as background and need no network (a
                # forward-facing scene has no background: every ray is trained, its samples spread
                # evenly where the grid sees nothing)
                bg = 1.0 if cur.cfg.white_bkgd else 0.0
                n_skipped = int((~active).sum())
                skipped_err = float(((target[~active] - bg) ** 2).sum())
                o, d, v, target, z_coarse = o[active], d[active], v[active], target[active], z_coarse[active]
        if o.shape[0] == 0:
            return torch.zeros(()), skipped_err / (3 * n_skipped), float("nan"), n_skipped, 0
        out_c, out_f = render_rays(cur, o, d, v, tc.n_coarse, tc.n_fine, True, self.amp, tc.raw_noise_std,
                                   self.gen, z_coarse=z_coarse)
        loss_c = F.mse_loss(out_c.rgb, target)
        loss = loss_c
        if out_f is not None:
            loss_f = F.mse_loss(out_f.rgb, target)
            loss = loss + loss_f
        else:
            loss_f = loss_c
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.clip_grad:
            torch.nn.utils.clip_grad_norm_(cur.parameters(), tc.clip_grad)
        self.opt.step()
        n_act = o.shape[0]
        coarse_mse = float(loss_c.detach())
        if step < tc.collapse_guard_steps:
            fine_mse = float(loss_f.detach()) if out_f is not None and cur.fine is not None else None
            self.collapse_guard(step, target, coarse_mse, fine_mse)
        batch_mse = (float(loss_f.detach()) * n_act * 3 + skipped_err) / (3 * (n_act + n_skipped))
        return loss, batch_mse, coarse_mse, n_skipped, n_act

    def collapse_guard(self, step: int, target: torch.Tensor, coarse_mse: float, fine_mse: float | None) -> None:
        """Re-initialise a network whose loss sits at more than twice the all-background one."""
        cur = self.cur
        bg = 1.0 if cur.cfg.white_bkgd else 0.0
        trivial = float(((target - bg) ** 2).mean()) + 1e-4
        nets = [("coarse", cur.coarse, coarse_mse)]
        if fine_mse is not None:
            nets.append(("fine", cur.fine, fine_mse))
        for name, net, m in nets:
            self.ratio[name] = 0.9 * self.ratio[name] + 0.1 * (m / trivial)
            if step >= 30 and self.ratio[name] > 2.0:
                _reinit(net, self.opt)
                self.ratio[name] = 1.0
                self.emit({"event": "reinit", "step": step, "network": name})

    def finish(self, step: int) -> TrainResult:
        """The final evaluation on the full held-out views, the last checkpoint, the result."""
        tc, scene = self.tc, self.scene
        # a run ends when it has made its steps or spent its time budget; an ended run keeps no
        # optimizer state (given more steps or minutes later, it continues with a fresh optimizer)
        budget_spent = tc.max_minutes is not None and self.train_seconds >= tc.max_minutes * 60.0
        final = None
        if tc.final_eval and len(scene.splits.get("test", [])) > 0:
            self.emit({"event": "stage",
                       "text": f"evaluating {min(tc.eval_views, len(scene.splits['test']))} held-out views"})
            final = evaluate(self.cur, scene, "test", tc.eval_views, tc.n_coarse, tc.n_fine, amp=self.amp)
            self.eval_seconds += final.seconds
            self.final_rec = {"step": step, "minutes": self.train_seconds / 60.0, "psnr": final.psnr,
                              "ssim": final.ssim, "views": len(final.per_view_psnr), "n_coarse": tc.n_coarse,
                              "n_fine": tc.n_fine, "seconds": final.seconds}
            self.emit({"event": "final", **self.final_rec})
        self.save(step, final=step >= tc.steps or budget_spent)
        self.model.eval()
        return TrainResult(step, self.train_seconds, time.perf_counter() - self.wall0, self.history, final,
                           self.eval_seconds)
