"""The shrink stage: score neurons, cut them out of both networks, report what changed.

``shrink_model`` ties calibration, scoring and surgery together; fine-tuning (distillation)
is in :mod:`nerfexport.shrink.distill`. Nothing here prints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from nerfexport.shrink import scoring
from nerfexport.shrink.calibration import CalibrationSet, subsample
from nerfexport.model.mlp import NeRF, NeRFMLP, count_parameters
from nerfexport.model.surgery import ActivationStats, Selection, _linear, activation_stats, layers, prune_model, target_widths


AUTO = "auto"
#: what ``method = "auto"`` tries: each is pruned and the one whose pruned student agrees best with
#: the teacher on training pixels is distilled (docs/shrink.md: which of them wins depends on the
#: teacher; a grown teacher, ``make teacher``, keeps its narrow phase in the neurons that
#: ``magnitude`` keeps)
AUTO_CANDIDATES = ("coreset", "magnitude", "data-coreset")
#: every value ``ShrinkSpec.method`` accepts
SPEC_METHODS = scoring.METHODS + (AUTO,)


@dataclass
class ShrinkSpec:
    """What to shrink to and how. One of ``width``, ``ratio``, ``widths`` is set."""

    method: str = "coreset"
    width: int | None = None
    ratio: float | None = None
    widths: list[int] | None = None
    feature_width: int | None = None
    view_width: int | None = None
    finetune: int = 0               # distillation steps (a ceiling when ``minutes`` is set)
    minutes: float | None = None    # distillation time budget
    bank_rays: int | None = None    # teacher rays queried for distillation (default: DistillConfig's)
    calib_rays: int = 1024
    calib_points: int = 65536       # at most this many points per network for the statistics
    seed: int = 0
    fold: bool = True               # fold removed neurons' calibration means into the next bias

    def validate(self) -> None:
        if self.method not in SPEC_METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(SPEC_METHODS)}")
        if sum(x is not None for x in (self.width, self.ratio, self.widths)) != 1:
            raise ValueError("give exactly one target: --width, --ratio or per-layer widths from a recipe")
        if isinstance(self.finetune, bool) or not isinstance(self.finetune, int) or self.finetune < 0:
            raise ValueError("fine-tune steps must be a whole number, zero or more")
        if self.minutes is not None and (isinstance(self.minutes, bool) or not isinstance(self.minutes, (int, float))
                                         or not 0 < self.minutes <= 24 * 60):
            raise ValueError(f"minutes must be a positive number of minutes (at most a day), not {self.minutes!r}")
        if self.bank_rays is not None and (isinstance(self.bank_rays, bool) or not isinstance(self.bank_rays, int)
                                           or not 1 <= self.bank_rays <= 4_000_000):
            raise ValueError(f"bank_rays must be a whole number from 1 to 4,000,000, not {self.bank_rays!r}")
        if self.calib_rays < 1:
            raise ValueError("calibration needs at least one ray")

    def to_dict(self) -> dict:
        return asdict(self)


def _w_out(net: NeRFMLP, lay) -> torch.Tensor:
    """Outgoing weights of a layer's neurons: ``(sum of consumer rows, width)``."""
    blocks = [_linear(net, c).weight.detach()[:, off:off + lay.width] for c, off in lay.consumers]
    return torch.cat(blocks, 0)


def select_neurons(net: NeRFMLP, method: str, targets: dict[str, int], stats: ActivationStats | None,
                   generator: torch.Generator) -> dict[str, Selection]:
    """Choose the neurons each layer keeps with ``method`` (see :mod:`nerfexport.shrink.scoring`)."""
    out = {}
    for lay in layers(net.cfg):
        k = targets.get(lay.name, lay.width)
        if k == lay.width and method not in ("coreset", "data-coreset"):
            continue
        prod = _linear(net, lay.producer)
        w_in, b_in, w_out = prod.weight.detach(), prod.bias.detach(), _w_out(net, lay)
        if method == "uniform":
            sel = scoring.top_k(scoring.uniform_scores(lay.width, generator), k)
        elif method.startswith("magnitude"):
            mode = {"magnitude": "product", "magnitude-in": "in", "magnitude-out": "out"}[method]
            sel = scoring.top_k(scoring.magnitude_scores(w_in, w_out, mode), k)
        elif method == "activation":
            sel = scoring.top_k(scoring.activation_scores(_need(stats, method).mean_abs[lay.name]), k)
        elif method == "coreset":
            if k == lay.width:
                continue
            sel = scoring.coreset_sample(scoring.coreset_sensitivity(w_in, b_in, w_out), k, generator)
        elif method == "data-coreset":
            if k == lay.width:
                continue
            st = _need(stats, method)
            sel = scoring.coreset_sample(scoring.data_coreset_sensitivity(st.max_dev(lay.name), w_out), k, generator)
        else:
            raise ValueError(f"unknown method {method!r}")
        out[lay.name] = sel
    return out


def _need(stats, method):
    if stats is None:
        raise ValueError(f"method {method} needs calibration samples")
    return stats


def layer_widths(model: NeRF) -> dict[str, dict[str, int]]:
    nets = {"coarse": model.coarse, "fine": model.fine}
    return {k: {l.name: l.width for l in layers(n.cfg)} for k, n in nets.items() if n is not None}


def parameter_counts(model: NeRF) -> dict[str, int]:
    out = {"coarse": count_parameters(model.coarse)}
    if model.fine is not None:
        out["fine"] = count_parameters(model.fine)
    out["total"] = sum(out.values())
    return out


@dataclass
class ShrinkInfo:
    targets: dict[str, int]
    params_before: dict[str, int]
    params_after: dict[str, int]
    widths: dict[str, dict[str, int]]
    stats_points: dict[str, int] = field(default_factory=dict)


def shrink_model(model: NeRF, spec: ShrinkSpec, calib: CalibrationSet | None) -> tuple[NeRF, ShrinkInfo]:
    """A new, physically smaller copy of ``model`` following ``spec`` (no fine-tuning).

    ``calib``: samples from :func:`nerfexport.shrink.calibration.draw_samples`; needed by the
    ``activation`` and ``data-coreset`` methods and for mean folding (without it, removed
    neurons are simply dropped).
    """
    spec.validate()
    if spec.method == AUTO:
        raise ValueError("method auto chooses among pruned students on a scene: use shrink_pipeline or choose_method")
    targets = target_widths(model.coarse.cfg, spec.width, spec.ratio, spec.widths, spec.feature_width,
                            spec.view_width)
    if model.fine is not None:
        target_widths(model.fine.cfg, spec.width, spec.ratio, spec.widths, spec.feature_width, spec.view_width)
    gen = torch.Generator().manual_seed(spec.seed)
    sels, means, npts = {}, {}, {}
    for which, net in (("coarse", model.coarse), ("fine", model.fine)):
        if net is None:
            continue
        stats = None
        if calib is not None:
            pts, dirs = calib.for_network(which)
            if pts.shape[0] == 0:  # no fine samples drawn: the fine network sees coarse-like points
                pts, dirs = calib.for_network("coarse")
            pts, dirs = subsample(pts, dirs, spec.calib_points, spec.seed)
            stats = activation_stats(net, pts, dirs)
            npts[which] = int(pts.shape[0])
        net_targets = target_widths(net.cfg, spec.width, spec.ratio, spec.widths, spec.feature_width, spec.view_width)
        sels[which] = select_neurons(net, spec.method, net_targets, stats, gen)
        if stats is not None and spec.fold:
            means[which] = stats.mean
    small = prune_model(model, sels, means if means else None)
    return small, ShrinkInfo(targets, parameter_counts(model), parameter_counts(small), layer_widths(small), npts)


@dataclass
class ShrinkReport:
    """What ``nerfexport shrink`` writes beside its checkpoint (as JSON)."""

    method: str
    seed: int
    spec: dict
    widths: dict
    params_before: dict
    params_after: dict
    seconds: dict
    psnr_before_finetune: float | None = None
    ssim_before_finetune: float | None = None
    psnr_after_finetune: float | None = None
    ssim_after_finetune: float | None = None
    finetune: dict | None = None
    eval: dict | None = None
    source: dict | None = None
    files: dict | None = None
    auto: dict | None = None        # method "auto": each candidate's pruned PSNR against the teacher

    def to_dict(self) -> dict:
        return asdict(self)


def choose_method(teacher: NeRF, scene, spec: ShrinkSpec, calib: CalibrationSet,
                  candidates: tuple[str, ...] = AUTO_CANDIDATES, n_pixels: int = 2048,
                  ) -> tuple[str, NeRF, ShrinkInfo, dict[str, float]]:
    """Prune ``teacher`` with each of ``candidates`` and keep the student whose colours agree best
    with the teacher's on ``n_pixels`` random pixels of the training views (the held-out views are
    not looked at). Returns the method, its pruned student, its :class:`ShrinkInfo` and every
    candidate's PSNR against the teacher [dB]."""
    from dataclasses import replace

    from nerfexport.train.loop import eval_pixels, pixel_psnr, render_rays

    px = {k: torch.from_numpy(a) for k, a in eval_pixels(scene, n_pixels, 10**9, spec.seed, split="train").items()}
    nc, nf = teacher.cfg.n_coarse, teacher.cfg.n_fine
    with torch.no_grad():
        out_c, out_f = render_rays(teacher.eval(), px["o"], px["d"], px["v"], nc, nf, False, None)
    px["rgb"] = (out_f if out_f is not None else out_c).rgb.clamp(0, 1)
    best, scores = None, {}
    for m in candidates:
        student, info = shrink_model(teacher, replace(spec, method=m), calib)
        scores[m] = pixel_psnr(student, px, nc, nf, None)
        if best is None or scores[m] > scores[best[0]]:
            best = (m, student, info)
    return best[0], best[1], best[2], scores


def shrink_pipeline(teacher: NeRF, scene, spec: ShrinkSpec, eval_views: int | None = 10,
                    eval_samples: tuple[int, int] | None = None, distill_cfg=None,
                    progress=None) -> tuple[NeRF, ShrinkReport]:
    """Calibrate on ``scene``'s training rays, shrink, evaluate, fine-tune by distillation
    (``spec.finetune`` steps), evaluate again. ``eval_views=None`` evaluates nothing;
    ``eval_samples``: (coarse, fine) samples per ray for the evaluation (default: the model's).
    ``progress`` receives ``{"event": "stage", "stage": ...}`` and the distillation's step events."""
    import time

    from nerfexport.shrink.calibration import draw_samples
    from nerfexport.shrink.distill import DistillConfig, build_bank, distill
    from nerfexport.train.loop import autocast_dtype, evaluate

    emit = progress or (lambda e: None)
    spec.validate()
    secs = {}
    t = time.perf_counter()
    emit({"event": "stage", "stage": "calibrate"})
    calib = draw_samples(teacher, scene, spec.calib_rays, spec.seed)
    secs["calibrate"] = time.perf_counter() - t
    t = time.perf_counter()
    emit({"event": "stage", "stage": "prune"})
    auto = None
    if spec.method == AUTO:
        method, student, info, auto = choose_method(teacher, scene, spec, calib)
        emit({"event": "chose", "method": method, "scores": auto})
    else:
        method = spec.method
        student, info = shrink_model(teacher, spec, calib)
    secs["prune"] = time.perf_counter() - t
    amp = autocast_dtype("auto", torch.device("cpu"))
    nc, nf = eval_samples if eval_samples else (None, None)
    rep = ShrinkReport(method, spec.seed, spec.to_dict(), info.widths, info.params_before, info.params_after, secs,
                       eval=None if eval_views is None else {"views": eval_views, "split": "test",
                                                            "n_coarse": nc or teacher.cfg.n_coarse,
                                                            "n_fine": teacher.cfg.n_fine if nf is None else nf,
                                                            "precision": "bf16" if amp is not None else "fp32"})
    rep.auto = auto
    if eval_views is not None:
        t = time.perf_counter()
        emit({"event": "stage", "stage": "evaluate"})
        r = evaluate(student, scene, "test", eval_views, nc, nf, amp=amp)
        rep.psnr_before_finetune, rep.ssim_before_finetune = r.psnr, r.ssim
        secs["evaluate"] = time.perf_counter() - t
    if spec.finetune > 0:
        dc = distill_cfg or DistillConfig()
        dc.steps, dc.seed, dc.minutes = spec.finetune, spec.seed, spec.minutes
        if spec.bank_rays is not None:
            dc.bank_rays = spec.bank_rays
        evaluator = None
        if eval_views is not None and spec.minutes:
            from nerfexport.train.loop import eval_pixels, pixel_psnr
            held = {k: torch.from_numpy(a) for k, a in eval_pixels(scene, 4096, eval_views, spec.seed).items()}
            n_c, n_f = nc or teacher.cfg.n_coarse, teacher.cfg.n_fine if nf is None else nf

            def evaluator(m):
                return pixel_psnr(m, held, n_c, n_f, amp)
            evaluator.pixels = int(held["o"].shape[0])
            dc.eval_every_minutes = dc.eval_every_minutes or spec.minutes / 8.0
        emit({"event": "stage", "stage": "bank"})
        bank = build_bank(teacher, scene, max(dc.bank_rays, 0), dc.n_coarse, dc.n_fine, spec.seed, amp)
        emit({"event": "stage", "stage": "finetune"})
        res = distill(student, bank, dc, teacher.cfg.white_bkgd, progress, evaluator)
        secs["bank"], secs["finetune"] = res.bank_seconds, res.seconds
        rep.finetune = {**dc.to_dict(), "steps_made": res.steps, "history": res.history}
        if eval_views is not None:
            t = time.perf_counter()
            emit({"event": "stage", "stage": "evaluate"})
            r = evaluate(student, scene, "test", eval_views, nc, nf, amp=amp)
            rep.psnr_after_finetune, rep.ssim_after_finetune = r.psnr, r.ssim
            secs["evaluate"] += time.perf_counter() - t
    return student, rep
