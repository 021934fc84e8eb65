"""The shrink stage: make both networks cheaper, distil them, report what changed.

Two kinds of method reach the same cost target (multiply-adds per evaluated point):

* neuron pruning (``uniform``, ``magnitude*``, ``activation``, ``coreset``, ``data-coreset``):
  score neurons and cut them out (:mod:`nerfexport.model.surgery`);
* ``lowrank``: keep every neuron and factorize the layers through the principal directions of
  their calibration pre-activations (:mod:`nerfexport.shrink.lowrank`).

``shrink_model`` makes the student; ``shrink_pipeline`` (the one orchestration behind
``nerfexport shrink``, ``shrink-study`` and ``sweep``) calibrates, shrinks, distils
(:mod:`nerfexport.shrink.distill`) and evaluates. Nothing here prints.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import torch

from nerfexport.shrink import lowrank, scoring
from nerfexport.shrink.calibration import CalibrationSet, subsample
from nerfexport.shrink.spec import (AUTO, AUTO_CANDIDATES, LOWRANK, SPEC_METHODS, TARGETS, EvalSpec,  # noqa: F401
                                    ShrinkSpec, Targets)
from nerfexport.model.mlp import NeRF, NeRFMLP, count_parameters
from nerfexport.model.surgery import ActivationStats, Selection, _linear, activation_stats, layers, prune_model


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
    targets: dict[str, int]                 # pruning: width per layer; lowrank: rank per factorized layer
    params_before: dict[str, int]
    params_after: dict[str, int]
    widths: dict[str, dict[str, int]]
    stats_points: dict[str, int] = field(default_factory=dict)
    ranks: dict[str, dict[str, int]] = field(default_factory=dict)
    macs_before: dict[str, int] = field(default_factory=dict)   # multiply-adds per point, per network
    macs_after: dict[str, int] = field(default_factory=dict)


def network_macs(model: NeRF) -> dict[str, int]:
    """Multiply-adds per evaluated point of each network."""
    return {w: n.cfg.macs() for w, n in (("coarse", model.coarse), ("fine", model.fine)) if n is not None}


def _uniform_samples(calib: CalibrationSet, which: str, n: int, seed: int) -> lowrank.WeightedSamples:
    pts, dirs = calib.for_network(which)
    if pts.shape[0] == 0:
        pts, dirs = calib.for_network("coarse")
    pts, dirs = subsample(pts, dirs, n, seed)
    w = torch.full((pts.shape[0],), 1.0 / pts.shape[0], dtype=torch.float64)
    return lowrank.WeightedSamples(torch.from_numpy(pts), torch.from_numpy(dirs), w)


def factorize(model: NeRF, spec: ShrinkSpec, samples: dict[str, lowrank.WeightedSamples],
              targets: Targets | None = None) -> tuple[NeRF, ShrinkInfo]:
    """The ``lowrank`` student: ranks from ``spec``'s target (greedy over the layers' spectra on
    ``samples``, or ``spec.rank`` everywhere), each layer fitted by ``spec.fit``.

    Args:
        model: The teacher.
        spec: The target, ``fit`` and ``relu_passes``.
        samples: Weighted calibration samples per network (``"coarse"``, ``"fine"``; a missing
            ``"fine"`` uses ``"coarse"``): points ``(N, 3)``, directions ``(N, 3)``, weights ``(N,)``.
        targets: ``spec.targets(model)``, when already computed.

    Returns:
        The factorized student and its :class:`ShrinkInfo`.
    """
    tg = targets if targets is not None else spec.targets(model)
    ranks = {}
    for which, net in (("coarse", model.coarse), ("fine", model.fine)):
        if net is None:
            continue
        s = samples.get(which) or samples["coarse"]
        if tg.ranks is not None:
            ranks[which] = dict(tg.ranks[which])
        else:
            ranks[which] = lowrank.allocate_ranks(net.cfg, tg.macs[which], lowrank.layer_spectra(net, s))
    small = lowrank.factorize_model(model, ranks, samples, spec.fit, spec.relu_passes)
    npts = {w: int(s.pts.shape[0]) for w, s in samples.items()}
    return small, ShrinkInfo(ranks["coarse"], parameter_counts(model), parameter_counts(small), layer_widths(small),
                             npts, ranks, network_macs(model), network_macs(small))


def shrink_model(model: NeRF, spec: ShrinkSpec, calib: CalibrationSet | None,
                 samples: dict[str, lowrank.WeightedSamples] | None = None,
                 targets: Targets | None = None) -> tuple[NeRF, ShrinkInfo]:
    """A new, physically smaller copy of ``model`` following ``spec`` (no fine-tuning).

    Args:
        model: The teacher (on the CPU).
        spec: The method and target (not ``auto``: see :func:`choose_method`).
        calib: Samples from :func:`nerfexport.shrink.calibration.draw_samples`; needed by the
            ``activation``, ``data-coreset`` and ``lowrank`` methods and for mean folding (without
            it, removed neurons are simply dropped).
        samples: Weighted samples for ``lowrank`` (:func:`nerfexport.shrink.lowrank.draw_weighted_samples`;
            default: ``calib``'s, evenly weighted).
        targets: ``spec.targets(model)``, when already computed (it does not depend on the method).

    Returns:
        The student (a new :class:`NeRF`) and its :class:`ShrinkInfo`.
    """
    spec.validate()
    if spec.method == AUTO:
        raise ValueError("method auto chooses among students on a scene: use shrink_pipeline or choose_method")
    tg = targets if targets is not None else spec.targets(model)
    if spec.method == LOWRANK:
        if samples is None:
            if calib is None:
                raise ValueError("method lowrank needs calibration samples")
            samples = {w: _uniform_samples(calib, w, spec.calib_points, spec.seed) for w in ("coarse", "fine")
                       if getattr(model, w) is not None}
        return factorize(model, spec, samples, tg)
    if any(n is not None and n.cfg.ranks for n in (model.coarse, model.fine)):
        raise ValueError("a factorized (low-rank) network cannot be pruned; prune the teacher instead")
    targets = tg.pruning("coarse")
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
        sels[which] = select_neurons(net, spec.method, tg.pruning(which), stats, gen)
        if stats is not None and spec.fold:
            means[which] = stats.mean
    small = prune_model(model, sels, means if means else None)
    return small, ShrinkInfo(targets, parameter_counts(model), parameter_counts(small), layer_widths(small), npts,
                             {}, network_macs(model), network_macs(small))


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
    auto: dict | None = None        # method "auto": each candidate's PSNR against the teacher before distillation
    ranks: dict | None = None       # lowrank: rank of each factorized layer, per network
    macs_before: dict | None = None  # multiply-adds per evaluated point, per network
    macs_after: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def choose_method(teacher: NeRF, scene, spec: ShrinkSpec, calib: CalibrationSet,
                  candidates: tuple[str, ...] = AUTO_CANDIDATES, n_pixels: int = 2048,
                  samples: dict[str, lowrank.WeightedSamples] | None = None, targets: Targets | None = None,
                  ) -> tuple[str, NeRF, ShrinkInfo, dict[str, float]]:
    """Shrink ``teacher`` with each of ``candidates`` (those that can meet ``spec``'s target) and
    keep the student whose colours agree best with the teacher's on ``n_pixels`` random pixels of
    the training views (the held-out views are not looked at).

    Args:
        teacher: The teacher (on the CPU).
        scene: Its scene; the pixels are drawn from the training views.
        spec: The target (its method is replaced by each candidate's).
        calib: Calibration samples (:func:`calibrate`); ``samples``: weighted ones for ``lowrank``.
        targets: ``spec.targets(teacher)``, when already computed.

    Returns:
        The method, its student, its :class:`ShrinkInfo` and every candidate's PSNR against the
        teacher [dB].
    """
    from nerfexport.train.evaluate import eval_pixels, pixel_psnr
    from nerfexport.train.render import render_rays

    if spec.rank is not None:
        candidates = tuple(m for m in candidates if m == LOWRANK)
    tg = targets if targets is not None else spec.targets(teacher)
    px = {k: torch.from_numpy(a) for k, a in eval_pixels(scene, n_pixels, 10**9, spec.seed, split="train").items()}
    nc, nf = teacher.cfg.n_coarse, teacher.cfg.n_fine
    with torch.no_grad():
        out_c, out_f = render_rays(teacher.eval(), px["o"], px["d"], px["v"], nc, nf, False, None)
    px["rgb"] = (out_f if out_f is not None else out_c).rgb.clamp(0, 1)
    best, scores = None, {}
    for m in candidates:
        try:
            student, info = shrink_model(teacher, replace(spec, method=m), calib, samples, tg)
        except ValueError:      # this method cannot meet the target (a budget below rank 1)
            continue
        scores[m] = pixel_psnr(student, px, nc, nf, None)
        if best is None or scores[m] > scores[best[0]]:
            best = (m, student, info)
    return best[0], best[1], best[2], scores


def calibrate(teacher: NeRF, scene, spec: ShrinkSpec) -> tuple[CalibrationSet | None, dict | None]:
    """What ``spec``'s method needs: plain calibration samples (pruning) and weighted samples
    (``lowrank``), drawn along ``scene``'s training rays; ``None`` for what it does not need.

    Args:
        teacher: The teacher (on the CPU).
        scene: Its scene; ``spec.calib_rays`` training rays are drawn.
        spec: The method (``auto`` needs both kinds), seed and sample counts.

    Returns:
        A :class:`~nerfexport.shrink.calibration.CalibrationSet` (points and directions ``(N, 3)``
        per network) or ``None``; weighted samples per network (points ``(N, 3)``, directions
        ``(N, 3)``, weights ``(N,)``; at most ``spec.calib_points``) or ``None``.
    """
    from nerfexport.shrink.calibration import draw_samples

    calib = samples = None
    if spec.method != LOWRANK:
        calib = draw_samples(teacher, scene, spec.calib_rays, spec.seed)
    if spec.method in (LOWRANK, AUTO):
        samples = lowrank.draw_weighted_samples(teacher, scene, spec.calib_rays, spec.seed, spec.visible,
                                                spec.calib_points)
    return calib, samples


def shrink_pipeline(teacher: NeRF, scene, spec: ShrinkSpec, evaluation: EvalSpec | None = None,
                    distill_cfg=None, progress=None, targets: Targets | None = None) -> tuple[NeRF, ShrinkReport]:
    """Calibrate on ``scene``'s training rays, shrink, evaluate, fine-tune by distillation
    (``spec.finetune`` steps or ``spec.minutes``), evaluate again: the one orchestration behind
    ``nerfexport shrink``, ``shrink-study`` and ``sweep``.

    Calibration, the low-rank fits and the evaluations run on the CPU; the teacher bank and the
    distillation on ``spec.device`` (``auto``: CUDA when torch sees a GPU). The student comes
    back on the CPU, ready to save or export.

    Args:
        teacher: The teacher, on the CPU (left there, unchanged).
        scene: Load it at the resolution the teacher was trained at: the evaluation is at
            ``scene``'s resolution.
        spec: What to shrink to, how, and the distillation budget.
        evaluation: Held-out views, samples per ray and pixels (:class:`EvalSpec`; default: the
            first 10 views, the model's samples, 4,096 fixed pixels).
        distill_cfg: A :class:`~nerfexport.shrink.distill.DistillConfig` whose steps, seed and
            minutes ``spec`` replaces (default: DistillConfig's).
        progress: Receives ``{"event": "stage", "stage": ...}``, ``{"event": "chose"}`` (``auto``)
            and the distillation's step and eval events.
        targets: ``spec.targets(teacher)``, when already computed.

    Returns:
        The student (on the CPU) and its :class:`ShrinkReport`.
    """
    from nerfexport.shrink.spec import resolve_device
    from nerfexport.train.device import autocast_dtype
    from nerfexport.train.evaluate import evaluate, pixel_psnr

    emit = progress or (lambda e: None)
    spec.validate()
    ev = evaluation if evaluation is not None else EvalSpec()
    dev = resolve_device(spec.device)
    tg = targets if targets is not None else spec.targets(teacher)
    secs = {}
    method, student, info, auto = _make_student(teacher, scene, spec, tg, secs, emit)
    amp = autocast_dtype("auto", torch.device("cpu"))
    nc, nf = ev.samples if ev.samples else (None, None)
    n_c, n_f = nc or teacher.cfg.n_coarse, teacher.cfg.n_fine if nf is None else nf
    rep = _report(method, spec, info, secs, auto, ev, (n_c, n_f), (scene.H, scene.W), amp)
    held = None
    if ev.views is not None and ev.pixels:
        held = _held_pixels(scene, ev.pixels, ev.views, spec.seed)

    def score(m, held) -> tuple[float, float | None]:
        if held is not None:
            return pixel_psnr(m, held, n_c, n_f, amp), None
        r = evaluate(m, scene, "test", ev.views, nc, nf, amp=amp)
        return r.psnr, r.ssim

    if ev.views is not None:
        t = time.perf_counter()
        emit({"event": "stage", "stage": "evaluate"})
        rep.psnr_before_finetune, rep.ssim_before_finetune = score(student, held)
        secs["evaluate"] = time.perf_counter() - t
    if spec.finetune > 0:
        res, dc, held = _finetune(teacher, student, scene, spec, distill_cfg, dev, ev, held, (n_c, n_f), progress)
        secs["bank"], secs["finetune"] = res.bank_seconds, res.seconds
        rep.finetune = {**dc.to_dict(), "steps_made": res.steps, "history": res.history, "refills": res.refills}
        if ev.views is not None:
            t = time.perf_counter()
            emit({"event": "stage", "stage": "evaluate"})
            rep.psnr_after_finetune, rep.ssim_after_finetune = score(student, held)
            secs["evaluate"] += time.perf_counter() - t
    return student, rep


def _make_student(teacher: NeRF, scene, spec: ShrinkSpec, targets: Targets, secs: dict,
                  emit) -> tuple[str, NeRF, ShrinkInfo, dict | None]:
    """Calibrate and shrink (``auto``: the best candidate), timing both into ``secs``; returns the
    method, the student, its :class:`ShrinkInfo` and ``auto``'s scores."""
    t = time.perf_counter()
    emit({"event": "stage", "stage": "calibrate"})
    calib, samples = calibrate(teacher, scene, spec)
    secs["calibrate"] = time.perf_counter() - t
    t = time.perf_counter()
    emit({"event": "stage", "stage": "shrink"})
    auto = None
    if spec.method == AUTO:
        method, student, info, auto = choose_method(teacher, scene, spec, calib, samples=samples, targets=targets)
        emit({"event": "chose", "method": method, "scores": auto})
    else:
        method = spec.method
        student, info = shrink_model(teacher, spec, calib, samples, targets)
    secs["prune"] = time.perf_counter() - t
    return method, student, info, auto


def _report(method: str, spec: ShrinkSpec, info: ShrinkInfo, secs: dict, auto: dict | None, ev: EvalSpec,
            samples: tuple[int, int], size: tuple[int, int], amp) -> ShrinkReport:
    """The report before any evaluation: what was made, and how it will be evaluated."""
    rep = ShrinkReport(method, spec.seed, spec.to_dict(), info.widths, info.params_before, info.params_after, secs,
                       eval=None if ev.views is None else {"views": ev.views, "split": "test",
                                                          "n_coarse": samples[0], "n_fine": samples[1],
                                                          "pixels": ev.pixels, "resolution": list(size),
                                                          "precision": "bf16" if amp is not None else "fp32"})
    rep.auto, rep.ranks, rep.macs_before, rep.macs_after = auto, info.ranks, info.macs_before, info.macs_after
    return rep


def _held_pixels(scene, n: int, views: int, seed: int) -> dict[str, torch.Tensor]:
    """``n`` fixed random pixels of the first ``views`` test views: ``o, d, v, rgb (n, 3)``."""
    from nerfexport.train.evaluate import eval_pixels
    return {k: torch.from_numpy(a) for k, a in eval_pixels(scene, n, views, seed).items()}


def _finetune(teacher: NeRF, student: NeRF, scene, spec: ShrinkSpec, distill_cfg, device: torch.device,
              ev: EvalSpec, held: dict | None, samples: tuple[int, int], progress):
    """Distil ``student`` in place from ``teacher`` on ``device`` (the bank is built there, the
    student trained there and moved back to the CPU). With a time budget and held-out views, the
    held-out pixels (4,096 unless ``held`` is given) are scored on the clock's marks. Returns the
    :class:`~nerfexport.shrink.distill.DistillResult`, the config used and the held-out pixels."""
    import copy

    from nerfexport.shrink.distill import DistillConfig, build_bank, distill
    from nerfexport.train.device import autocast_dtype
    from nerfexport.train.evaluate import pixel_psnr

    emit = progress or (lambda e: None)
    dc = replace(distill_cfg) if distill_cfg is not None else DistillConfig()
    dc.steps, dc.seed, dc.minutes = spec.finetune, spec.seed, spec.minutes
    if spec.bank_rays is not None:
        dc.bank_rays = spec.bank_rays
    amp = autocast_dtype("auto", device)
    evaluator = None
    if ev.views is not None and spec.minutes:
        if held is None:
            held = _held_pixels(scene, 4096, ev.views, spec.seed)
        on_device = {k: a.to(device) for k, a in held.items()}

        def evaluator(m):
            return pixel_psnr(m, on_device, samples[0], samples[1], amp)
        evaluator.pixels = int(held["o"].shape[0])
        dc.eval_every_minutes = dc.eval_every_minutes or spec.minutes / 8.0
    bank_teacher = teacher if device.type == "cpu" else copy.deepcopy(teacher).to(device)
    student.to(device)
    try:
        emit({"event": "stage", "stage": "bank"})
        bank = build_bank(bank_teacher, scene, max(dc.bank_rays, 0), dc.n_coarse, dc.n_fine, spec.seed, amp)
        emit({"event": "stage", "stage": "finetune"})
        res = distill(student, bank, dc, teacher.cfg.white_bkgd, progress, evaluator,
                      refill=lambda n, seed: build_bank(bank_teacher, scene, n, dc.n_coarse, dc.n_fine, seed, amp))
    finally:
        student.to("cpu")
    return res, dc, held
