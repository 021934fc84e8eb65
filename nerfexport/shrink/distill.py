"""Recovery after shrinking: distil a student NeRF from its teacher.

The teacher is queried once, up front, on a bank of training rays: for each ray the coarse
depths (stratified, jittered), the fine depths (coarse + inverse-CDF samples from the
teacher's coarse weights) and the teacher's raw outputs at all of them. Each fine-tuning step
then draws a batch of rays from the bank and needs no teacher evaluation:

* point losses: the student's colours (after sigmoid, weighted by the teacher's compositing
  weights, so that colour matters where it is seen) and opacities ``1 - exp(-sigma * delta)``
  against the teacher's at the same points;
* the photometric loss of the student's rendered colour against the training pixels.

Library code: progress goes to a callback, nothing is printed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
from torch.nn import functional as F

from nerfexport.data.datasets import Scene
from nerfexport.model.mlp import NeRF
from nerfexport.data.rays import intrinsics
from nerfexport.deploy.rays import ndc_rays
from nerfexport.train.device import autocast_dtype
from nerfexport.train.render import run_network
from nerfexport.train.volume import composite, sample_pdf, stratified_samples


@dataclass
class DistillConfig:
    steps: int = 500
    batch_rays: int = 256
    lr: float = 1e-3            # a pruned network starts far from a minimum; 1e-3 recovered faster than 5e-4
    lr_final: float = 5e-5
    n_coarse: int = 24          # samples per bank ray for the coarse network
    n_fine: int = 40            # extra inverse-CDF samples for the fine network
    bank_rays: int = 32768      # rays queried on the teacher at a time
    reuse: float = 2.0          # a bank ray is drawn about this many times before it is replaced by a
                                # fresh one (0: never; a student overfits a fixed bank: docs/shrink.md)
    w_photo: float = 0.0        # the training pixels: 0 on a real teacher (+0.25 dB after 4 min: docs/shrink.md)
    w_color: float = 1.0
    w_alpha: float = 1.0
    w_hidden: float = 0.0       # hidden-layer targets from the teacher (same neurons: a factorized student)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    seed: int = 0
    minutes: float | None = None   # stop when this much distillation time is spent (steps: a ceiling);
                                   # the learning rate then decays over the minutes
    eval_every_minutes: float | None = None  # held-out pixels evaluated on the clock's marks

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Bank:
    """Teacher outputs on ``R`` rays: ``o, d, v (R,3)``, ``target (R,3)``; coarse depths
    ``z_c (R,Sc)`` with teacher raw ``raw_c (R,Sc,4)``; fine depths ``z_f (R,Sf)`` with ``raw_f``."""

    o: torch.Tensor
    d: torch.Tensor
    v: torch.Tensor
    target: torch.Tensor
    z_c: torch.Tensor
    raw_c: torch.Tensor
    z_f: torch.Tensor | None
    raw_f: torch.Tensor | None
    seconds: float = 0.0


def random_rays(scene: Scene, n: int, rng: np.random.Generator, split: str = "train") -> dict[str, np.ndarray]:
    """``n`` random pixels of ``split`` (with replacement) as rays ``o, d, v (n,3)`` and their
    colours ``rgb (n,3)``, computed for those pixels alone (the rows of ``scene_rays`` at the same
    pixels, without building every ray of the split)."""
    images, poses = scene.subset(split)
    H, W = scene.H, scene.W
    flat = rng.integers(0, len(poses) * H * W, size=n)
    view, pix = flat // (H * W), flat % (H * W)
    j, i = (pix // W).astype(np.float64), (pix % W).astype(np.float64)
    K = intrinsics(H, W, scene.cam)
    cam = np.stack([(i - K[0, 2]) / K[0, 0], -(j - K[1, 2]) / K[1, 1], -np.ones_like(i)], -1)
    c2w = np.asarray(poses, np.float64)[view]
    d = np.einsum("nij,nj->ni", c2w[:, :3, :3], cam)
    o = c2w[:, :3, 3]
    v = d / np.linalg.norm(d, axis=-1, keepdims=True)
    if scene.ndc:
        o, d = ndc_rays(H, W, scene.cam, 1.0, o, d)
    rgb = images.reshape(len(poses), H * W, 3)[view, pix]
    return {k: np.ascontiguousarray(a, np.float32) for k, a in (("o", o), ("d", d), ("v", v), ("rgb", rgb))}


@torch.no_grad()
def build_bank(teacher: NeRF, scene: Scene, n_rays: int, n_coarse: int, n_fine: int, seed: int = 0,
               amp: torch.dtype | None = None, chunk: int = 1024) -> Bank:
    """Query ``teacher`` on ``n_rays`` random training rays (see module docstring), on the device
    the teacher is on (the bank lives there too; the rays are drawn on the CPU, so a CPU bank is
    the same on every machine).

    Args:
        teacher: The teacher, on the CPU or a CUDA device.
        scene: Its scene; rays are drawn from the training views.
        n_rays: ``R``, the number of rays.
        n_coarse: Stratified depths per ray for the coarse network.
        n_fine: Inverse-CDF depths per ray added for the fine network (0: no fine samples).
        seed: Seeds the rays and the depths.
        amp: The autocast dtype of the teacher's forward passes (``None``: fp32).
        chunk: Rays per teacher query.

    Returns:
        A :class:`Bank`: rays ``(R, 3)``, depths ``(R, S)``, raw outputs ``(R, S, 4)`` in fp16.
    """
    t0 = time.perf_counter()
    dev = next(teacher.parameters()).device
    rays = random_rays(scene, n_rays, np.random.default_rng(seed + 1))
    o, d, v, tgt = (torch.from_numpy(rays[k]).to(dev) for k in ("o", "d", "v", "rgb"))
    gen = torch.Generator(device=dev).manual_seed(seed + 2)
    teacher.eval()
    zc, rc, zf, rf = [], [], [], []
    fine_net = teacher.render_fine if n_fine > 0 else None
    for s in range(0, o.shape[0], chunk):
        oo, dd, vv = o[s:s + chunk], d[s:s + chunk], v[s:s + chunk]
        R = oo.shape[0]
        z = stratified_samples(torch.full((R,), teacher.cfg.near, device=dev),
                               torch.full((R,), teacher.cfg.far, device=dev), n_coarse, True, gen)
        raw = run_network(teacher.coarse, oo[:, None] + dd[:, None] * z[..., None], vv, amp)
        zc.append(z), rc.append(raw.half())
        if fine_net is not None:
            w = composite(raw, z, dd, teacher.cfg.white_bkgd).weights
            z_new = sample_pdf(0.5 * (z[:, 1:] + z[:, :-1]), w[:, 1:-1], n_fine, det=False, generator=gen)
            z_all, _ = torch.sort(torch.cat((z, z_new), -1), -1)
            raw_f = run_network(fine_net, oo[:, None] + dd[:, None] * z_all[..., None], vv, amp)
            zf.append(z_all), rf.append(raw_f.half())
    cat = lambda xs: torch.cat(xs) if xs else None
    return Bank(o, d, v, tgt, cat(zc), cat(rc), cat(zf), cat(rf), time.perf_counter() - t0)


def _alpha(raw: torch.Tensor, z: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    dists = z[:, 1:] - z[:, :-1]
    dists = torch.cat((dists, dists[:, -1:]), -1) * d.norm(dim=-1, keepdim=True)
    return 1.0 - torch.exp(-F.relu(raw[..., 3]) * dists)


def _hidden_loss(student, teacher, pts: torch.Tensor, v: torch.Tensor, amp) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's raw ``(R,S,4)`` and the mean over hidden layers of its outputs' squared error
    against the teacher's, each layer's error relative to the teacher's mean square there."""
    from nerfexport.shrink.lowrank import hidden_forward

    R, S, _ = pts.shape
    p, dirs = pts.reshape(-1, 3), v[:, None, :].expand(R, S, 3).reshape(-1, 3)
    with torch.autocast(pts.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        with torch.no_grad():
            _, h_t = hidden_forward(teacher, p, dirs)
        raw, h_s = hidden_forward(student, p, dirs)
    terms = [((h_s[k].float() - h_t[k].float()) ** 2).mean() / (h_t[k].float() ** 2).mean().clamp_min(1e-6)
             for k in h_t if k in h_s and h_s[k].shape == h_t[k].shape]
    loss = torch.stack(terms).mean() if terms else raw.new_zeros(())
    return raw.float().reshape(R, S, 4), loss


def _losses(net, raw_t: torch.Tensor, z: torch.Tensor, o, d, v, target, white: bool, amp, cfg: DistillConfig,
            teacher_net=None):
    raw_t = raw_t.float()
    pts = o[:, None] + d[:, None] * z[..., None]
    if teacher_net is not None and cfg.w_hidden > 0:
        raw_s, hidden = _hidden_loss(net, teacher_net, pts, v, amp)
    else:
        raw_s, hidden = run_network(net, pts, v, amp), None
    out_s = composite(raw_s, z, d, white)
    with torch.no_grad():
        w_t = composite(raw_t, z, d, white).weights
    photo = F.mse_loss(out_s.rgb, target)
    col = ((torch.sigmoid(raw_s[..., :3]) - torch.sigmoid(raw_t[..., :3])) ** 2).mean(-1)
    color = (w_t * col).sum(-1).mean()
    alpha = F.mse_loss(_alpha(raw_s, z, d), _alpha(raw_t, z, d))
    loss = cfg.w_photo * photo + cfg.w_color * color + cfg.w_alpha * alpha
    if hidden is not None:
        loss = loss + cfg.w_hidden * hidden
    return loss, photo


@dataclass
class DistillResult:
    steps: int
    seconds: float
    bank_seconds: float
    final_photo_psnr: float
    history: list[dict] = field(default_factory=list)   # {"step", "minutes", "psnr"} of the periodic evaluation
    refills: int = 0            # quarters of the bank replaced by fresh teacher rays


def _replace_rows(bank: Bank, fresh: Bank, rows: torch.Tensor) -> None:
    for k in ("o", "d", "v", "target", "z_c", "raw_c", "z_f", "raw_f"):
        a = getattr(bank, k)
        if a is not None:
            a[rows] = getattr(fresh, k)


def _set_lr(opt, cfg: DistillConfig, decay: float, frac: float) -> float:
    """Set the learning rate ``frac`` of the way through the budget (exponential decay)."""
    lr = cfg.lr * math.exp(decay * min(1.0, frac))
    for g in opt.param_groups:
        g["lr"] = lr
    return lr


def _batch_loss(student: NeRF, bank: Bank, idx: torch.Tensor, white_bkgd: bool, amp, cfg: DistillConfig,
                teacher: NeRF | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of the bank rays ``idx`` (both networks) and the photometric term of the last."""
    o, d, v, tgt = bank.o[idx], bank.d[idx], bank.v[idx], bank.target[idx]
    loss, photo = _losses(student.coarse, bank.raw_c[idx], bank.z_c[idx], o, d, v, tgt, white_bkgd, amp, cfg,
                          teacher.coarse if teacher is not None else None)
    if bank.z_f is not None:
        loss_f, photo = _losses(student.render_fine, bank.raw_f[idx], bank.z_f[idx], o, d, v, tgt, white_bkgd,
                                amp, cfg, teacher.render_fine if teacher is not None else None)
        loss = loss + loss_f
    return loss, photo


def distill(student: NeRF, bank: Bank, cfg: DistillConfig, white_bkgd: bool,
            progress: Callable[[dict], None] | None = None,
            evaluator: Callable[[NeRF], float] | None = None, teacher: NeRF | None = None,
            refill: Callable[[int, int], Bank] | None = None) -> DistillResult:
    """Fine-tune ``student`` in place on ``bank`` for ``cfg.steps`` steps or ``cfg.minutes`` of
    distillation, whichever ends first (Adam, exponential decay over that budget). It trains on
    the device the student is on, where the bank must be too (:func:`build_bank` with the
    teacher there); the batches' rays are drawn on the CPU, the same on every device.

    ``evaluator(student) -> PSNR`` is called every ``cfg.eval_every_minutes`` and at the end
    (its time is not counted in the budget); each result is an ``{"event": "eval"}``.

    ``refill(n, seed) -> Bank``: fresh teacher rays. With it, a quarter of the bank is replaced
    each time the steps have drawn ``cfg.reuse / 4`` bank sizes of rays (its time is counted in
    the budget: it is the price of not overfitting the bank).

    Args:
        student: The network trained in place.
        bank: The teacher's outputs on ``R`` rays (:func:`build_bank`), on the student's device.
        cfg: Steps, minutes, batch, learning rates and loss weights.
        white_bkgd: Composite on white (the teacher's background).
        progress: Gets ``{"event": "step"}`` each step and ``{"event": "eval"}``.
        evaluator: ``student -> PSNR`` on held-out pixels.
        teacher: For hidden-layer targets (``cfg.w_hidden``), on the student's device.
        refill: ``(n, seed) -> Bank`` of ``n`` fresh rays.

    Returns:
        A :class:`DistillResult`: steps made, seconds, the last photometric PSNR, the evaluations.
    """
    emit = progress or (lambda e: None)
    device = next(student.parameters()).device
    amp = autocast_dtype(cfg.precision, device)
    student.train()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 3)   # on the CPU: the same batches on every device
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    decay = math.log(cfg.lr_final / cfg.lr) if cfg.lr_final > 0 else 0.0
    R = bank.o.shape[0]
    t0 = time.perf_counter()
    ema = None
    spent, history = 0.0, []
    budget = cfg.minutes * 60.0 if cfg.minutes else None
    every = cfg.eval_every_minutes * 60.0 if cfg.eval_every_minutes and evaluator is not None else None
    next_eval = every

    def run_eval(step: int) -> None:
        rec = {"step": step, "minutes": spent / 60.0, "psnr": float(evaluator(student))}
        student.train()
        history.append(rec)
        emit({"event": "eval", "pixels": getattr(evaluator, "pixels", "held-out"), **rec})

    step, drawn, refills = 0, 0, 0
    quarter = max(1, R // 4)
    while step < cfg.steps and (budget is None or spent < budget):
        ts = time.perf_counter()
        if refill is not None and cfg.reuse > 0 and drawn >= cfg.reuse * quarter:
            rows = torch.arange(refills % 4 * quarter, min(R, (refills % 4 + 1) * quarter), device=device)
            _replace_rows(bank, refill(rows.numel(), cfg.seed + 1000 + refills), rows)
            drawn, refills = 0, refills + 1
        lr = _set_lr(opt, cfg, decay, max(step / max(1, cfg.steps), spent / budget if budget else 0.0))
        idx = torch.randint(0, R, (min(cfg.batch_rays, R),), generator=gen).to(device)
        drawn += idx.numel()
        loss, photo = _batch_loss(student, bank, idx, white_bkgd, amp, cfg, teacher)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        p = float(photo.detach())
        ema = p if ema is None else 0.95 * ema + 0.05 * p
        step += 1
        spent += time.perf_counter() - ts
        emit({"event": "step", "step": step, "loss": float(loss.detach()),
              "psnr": -10.0 * math.log10(max(ema, 1e-10)), "lr": lr, "minutes": spent / 60.0})
        if next_eval is not None and spent >= next_eval:
            run_eval(step)
            next_eval += every
    if every is not None and (not history or history[-1]["step"] != step):
        run_eval(step)
    student.eval()
    return DistillResult(step, spent, bank.seconds,
                         -10.0 * math.log10(max(ema, 1e-10)) if ema is not None else float("nan"), history, refills)
