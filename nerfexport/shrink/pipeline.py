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

from dataclasses import asdict, dataclass, field, replace

import torch

from nerfexport.shrink import lowrank, scoring
from nerfexport.shrink.calibration import CalibrationSet, subsample
from nerfexport.model.mlp import MLPConfig, NeRF, NeRFMLP, count_parameters
from nerfexport.model.surgery import (ActivationStats, Selection, _linear, _pruned_config, activation_stats, layers,
                                      prune_model, target_widths)


AUTO = "auto"
LOWRANK = "lowrank"
#: what ``method = "auto"`` tries: each makes a student and the one that agrees best with the
#: teacher on training pixels is distilled (docs/shrink.md: on a real, fully trained model
#: ``lowrank`` wins by 10 dB; a grown teacher, ``make teacher``, keeps its narrow phase in the
#: neurons that ``magnitude`` keeps)
AUTO_CANDIDATES = (LOWRANK, "coreset", "magnitude", "data-coreset")
#: every value ``ShrinkSpec.method`` accepts
SPEC_METHODS = scoring.METHODS + (LOWRANK, AUTO)
TARGETS = ("width", "ratio", "widths", "rank", "budget")


@dataclass
class ShrinkSpec:
    """What to shrink to and how. Exactly one target is set:

    * ``width``: the cost of the network with every trunk and the feature layer ``width`` wide
      (pruning: exactly that; ``lowrank``: ranks that cost no more);
    * ``ratio``: the cost of keeping that fraction of every layer's neurons;
    * ``widths``: per trunk layer (a recipe's);
    * ``rank``: ``lowrank`` only, that rank in every hidden layer where it saves;
    * ``budget``: a fraction of the teacher's multiply-adds per point (pruning: the widest uniform
      width within it).
    """

    method: str = LOWRANK
    width: int | None = None
    ratio: float | None = None
    widths: list[int] | None = None
    rank: int | None = None
    budget: float | None = None
    feature_width: int | None = None
    view_width: int | None = None
    finetune: int = 0               # distillation steps (a ceiling when ``minutes`` is set)
    minutes: float | None = None    # distillation time budget
    bank_rays: int | None = None    # teacher rays queried for distillation (default: DistillConfig's)
    calib_rays: int = 1024
    calib_points: int = 65536       # at most this many points per network for the statistics
    seed: int = 0
    fold: bool = True               # fold removed neurons' calibration means into the next bias
    fit: str = "rrr"                # lowrank: reduced-rank regression on the student's inputs, or pca
    relu_passes: int = 2            # lowrank: refits that ignore what a ReLU removes (docs/shrink.md)
    visible: float = 0.9            # lowrank: share of the sample weight on what pixels see (docs/shrink.md)

    def validate(self) -> None:
        if self.method not in SPEC_METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(SPEC_METHODS)}")
        if sum(getattr(self, k) is not None for k in TARGETS) != 1:
            raise ValueError("give exactly one target: --width, --ratio, --rank, --budget or per-layer widths "
                             "from a recipe")
        if self.rank is not None and self.method not in (LOWRANK, AUTO):
            raise ValueError(f"--rank is a target of the lowrank method, not of {self.method}")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise ValueError(f"rank must be a positive whole number, not {self.rank!r}")
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, (int, float))
                                        or not 0 < self.budget <= 1):
            raise ValueError(f"budget must be a fraction of the teacher's cost in (0, 1], not {self.budget!r}")
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
        if self.fit not in lowrank.FIT_MODES:
            raise ValueError(f"fit must be one of {', '.join(lowrank.FIT_MODES)}, not {self.fit!r}")
        if not isinstance(self.visible, (int, float)) or not 0 <= self.visible <= 1:
            raise ValueError(f"visible must be in [0, 1], not {self.visible!r}")

    def widths_for(self, cfg: MLPConfig) -> dict[str, int]:
        """Pruning: the width of every prunable layer of a network with config ``cfg``. Raises
        ``ValueError`` for a target the network cannot meet."""
        if self.rank is not None:
            raise ValueError("--rank is a target of the lowrank method only")
        if self.budget is not None:
            return target_widths(cfg, width=_widest_within(cfg, self.budget_macs(cfg)))
        return target_widths(cfg, self.width, self.ratio, self.widths, self.feature_width, self.view_width)

    def budget_macs(self, cfg: MLPConfig) -> int:
        """The multiply-adds per point this target allows a network with config ``cfg``."""
        if self.budget is not None:
            return int(cfg.macs() * self.budget)
        if self.rank is not None:
            return replace(cfg, ranks=lowrank.uniform_ranks(cfg, self.rank)).macs()
        return _pruned_config(cfg, self.widths_for(cfg)).macs()

    def check(self, cfg: MLPConfig) -> None:
        """Raise ``ValueError`` unless the target fits a network with config ``cfg``."""
        if self.rank is None:
            self.budget_macs(cfg)

    def to_dict(self) -> dict:
        return asdict(self)


def _widest_within(cfg: MLPConfig, macs: int) -> int:
    """The widest uniform pruning width whose network costs at most ``macs`` a point."""
    best = 0
    for w in range(1, max(cfg.widths) + 1):
        if _pruned_config(cfg, target_widths(cfg, width=w)).macs() <= macs:
            best = w
    if best == 0:
        raise ValueError(f"no pruned width fits a budget of {macs:,} multiply-adds a point")
    return best


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


def factorize(model: NeRF, spec: ShrinkSpec, samples: dict[str, lowrank.WeightedSamples]) -> tuple[NeRF, ShrinkInfo]:
    """The ``lowrank`` student: ranks from ``spec``'s target (greedy over the layers' spectra on
    ``samples``, or ``spec.rank`` everywhere), each layer fitted by ``spec.fit``."""
    ranks = {}
    for which, net in (("coarse", model.coarse), ("fine", model.fine)):
        if net is None:
            continue
        s = samples.get(which) or samples["coarse"]
        if spec.rank is not None:
            ranks[which] = lowrank.uniform_ranks(net.cfg, spec.rank)
        else:
            ranks[which] = lowrank.allocate_ranks(net.cfg, spec.budget_macs(net.cfg), lowrank.layer_spectra(net, s))
    small = lowrank.factorize_model(model, ranks, samples, spec.fit, spec.relu_passes)
    npts = {w: int(s.pts.shape[0]) for w, s in samples.items()}
    return small, ShrinkInfo(ranks["coarse"], parameter_counts(model), parameter_counts(small), layer_widths(small),
                             npts, ranks, network_macs(model), network_macs(small))


def shrink_model(model: NeRF, spec: ShrinkSpec, calib: CalibrationSet | None,
                 samples: dict[str, lowrank.WeightedSamples] | None = None) -> tuple[NeRF, ShrinkInfo]:
    """A new, physically smaller copy of ``model`` following ``spec`` (no fine-tuning).

    ``calib``: samples from :func:`nerfexport.shrink.calibration.draw_samples`; needed by the
    ``activation``, ``data-coreset`` and ``lowrank`` methods and for mean folding (without it,
    removed neurons are simply dropped). ``samples``: weighted samples for ``lowrank``
    (:func:`nerfexport.shrink.lowrank.draw_weighted_samples`; default: ``calib``'s, evenly weighted).
    """
    spec.validate()
    if spec.method == AUTO:
        raise ValueError("method auto chooses among students on a scene: use shrink_pipeline or choose_method")
    for net in (model.coarse, model.fine):
        if net is not None:
            spec.check(net.cfg)
    if spec.method == LOWRANK:
        if samples is None:
            if calib is None:
                raise ValueError("method lowrank needs calibration samples")
            samples = {w: _uniform_samples(calib, w, spec.calib_points, spec.seed) for w in ("coarse", "fine")
                       if getattr(model, w) is not None}
        return factorize(model, spec, samples)
    if any(n is not None and n.cfg.ranks for n in (model.coarse, model.fine)):
        raise ValueError("a factorized (low-rank) network cannot be pruned; prune the teacher instead")
    targets = spec.widths_for(model.coarse.cfg)
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
        sels[which] = select_neurons(net, spec.method, spec.widths_for(net.cfg), stats, gen)
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
                  samples: dict[str, lowrank.WeightedSamples] | None = None,
                  ) -> tuple[str, NeRF, ShrinkInfo, dict[str, float]]:
    """Shrink ``teacher`` with each of ``candidates`` (those that can meet ``spec``'s target) and
    keep the student whose colours agree best with the teacher's on ``n_pixels`` random pixels of
    the training views (the held-out views are not looked at). Returns the method, its student,
    its :class:`ShrinkInfo` and every candidate's PSNR against the teacher [dB]."""
    from nerfexport.train.loop import eval_pixels, pixel_psnr, render_rays

    if spec.rank is not None:
        candidates = tuple(m for m in candidates if m == LOWRANK)
    px = {k: torch.from_numpy(a) for k, a in eval_pixels(scene, n_pixels, 10**9, spec.seed, split="train").items()}
    nc, nf = teacher.cfg.n_coarse, teacher.cfg.n_fine
    with torch.no_grad():
        out_c, out_f = render_rays(teacher.eval(), px["o"], px["d"], px["v"], nc, nf, False, None)
    px["rgb"] = (out_f if out_f is not None else out_c).rgb.clamp(0, 1)
    best, scores = None, {}
    for m in candidates:
        try:
            student, info = shrink_model(teacher, replace(spec, method=m), calib, samples)
        except ValueError:      # this method cannot meet the target (a budget below rank 1)
            continue
        scores[m] = pixel_psnr(student, px, nc, nf, None)
        if best is None or scores[m] > scores[best[0]]:
            best = (m, student, info)
    return best[0], best[1], best[2], scores


def calibrate(teacher: NeRF, scene, spec: ShrinkSpec) -> tuple[CalibrationSet | None, dict | None]:
    """What ``spec``'s method needs: plain calibration samples (pruning) and weighted samples
    (``lowrank``), drawn along ``scene``'s training rays; ``None`` for what it does not need."""
    from nerfexport.shrink.calibration import draw_samples

    calib = samples = None
    if spec.method != LOWRANK:
        calib = draw_samples(teacher, scene, spec.calib_rays, spec.seed)
    if spec.method in (LOWRANK, AUTO):
        samples = lowrank.draw_weighted_samples(teacher, scene, spec.calib_rays, spec.seed, spec.visible,
                                                spec.calib_points)
    return calib, samples


def shrink_pipeline(teacher: NeRF, scene, spec: ShrinkSpec, eval_views: int | None = 10,
                    eval_samples: tuple[int, int] | None = None, distill_cfg=None,
                    progress=None, eval_pixels: int | None = 4096) -> tuple[NeRF, ShrinkReport]:
    """Calibrate on ``scene``'s training rays, shrink, evaluate, fine-tune by distillation
    (``spec.finetune`` steps or ``spec.minutes``), evaluate again: the one orchestration behind
    ``nerfexport shrink``, ``shrink-study`` and ``sweep``.

    The evaluation is on the first ``eval_views`` held-out views at ``scene``'s resolution (load
    the scene at the resolution the teacher was trained at): ``eval_pixels`` fixed random pixels
    of them (a cheap, unbiased estimate of the views' PSNR; no SSIM), or every pixel in torch with
    ``eval_pixels=None`` (slow at 400x400; render a bundle instead). ``eval_views=None``
    evaluates nothing; ``eval_samples``: (coarse, fine) samples per ray (default: the model's).
    ``progress`` receives ``{"event": "stage", "stage": ...}`` and the distillation's step events."""
    import time

    from nerfexport.shrink.distill import DistillConfig, build_bank, distill
    from nerfexport.train.loop import autocast_dtype, evaluate
    from nerfexport.train.loop import eval_pixels as draw_pixels
    from nerfexport.train.loop import pixel_psnr

    emit = progress or (lambda e: None)
    spec.validate()
    secs = {}
    t = time.perf_counter()
    emit({"event": "stage", "stage": "calibrate"})
    calib, samples = calibrate(teacher, scene, spec)
    secs["calibrate"] = time.perf_counter() - t
    t = time.perf_counter()
    emit({"event": "stage", "stage": "shrink"})
    auto = None
    if spec.method == AUTO:
        method, student, info, auto = choose_method(teacher, scene, spec, calib, samples=samples)
        emit({"event": "chose", "method": method, "scores": auto})
    else:
        method = spec.method
        student, info = shrink_model(teacher, spec, calib, samples)
    secs["prune"] = time.perf_counter() - t
    amp = autocast_dtype("auto", torch.device("cpu"))
    nc, nf = eval_samples if eval_samples else (None, None)
    n_c, n_f = nc or teacher.cfg.n_coarse, teacher.cfg.n_fine if nf is None else nf
    rep = ShrinkReport(method, spec.seed, spec.to_dict(), info.widths, info.params_before, info.params_after, secs,
                       eval=None if eval_views is None else {"views": eval_views, "split": "test",
                                                            "n_coarse": n_c, "n_fine": n_f,
                                                            "pixels": eval_pixels,
                                                            "resolution": [scene.H, scene.W],
                                                            "precision": "bf16" if amp is not None else "fp32"})
    rep.auto, rep.ranks, rep.macs_before, rep.macs_after = auto, info.ranks, info.macs_before, info.macs_after
    held = None
    if eval_views is not None and eval_pixels:
        held = {k: torch.from_numpy(a) for k, a in draw_pixels(scene, eval_pixels, eval_views, spec.seed).items()}

    def score(m) -> tuple[float, float | None]:
        if held is not None:
            return pixel_psnr(m, held, n_c, n_f, amp), None
        r = evaluate(m, scene, "test", eval_views, nc, nf, amp=amp)
        return r.psnr, r.ssim

    if eval_views is not None:
        t = time.perf_counter()
        emit({"event": "stage", "stage": "evaluate"})
        rep.psnr_before_finetune, rep.ssim_before_finetune = score(student)
        secs["evaluate"] = time.perf_counter() - t
    if spec.finetune > 0:
        dc = replace(distill_cfg) if distill_cfg is not None else DistillConfig()
        dc.steps, dc.seed, dc.minutes = spec.finetune, spec.seed, spec.minutes
        if spec.bank_rays is not None:
            dc.bank_rays = spec.bank_rays
        evaluator = None
        if eval_views is not None and spec.minutes:
            if held is None:
                held = {k: torch.from_numpy(a) for k, a in draw_pixels(scene, 4096, eval_views, spec.seed).items()}

            def evaluator(m):
                return pixel_psnr(m, held, n_c, n_f, amp)
            evaluator.pixels = int(held["o"].shape[0])
            dc.eval_every_minutes = dc.eval_every_minutes or spec.minutes / 8.0
        emit({"event": "stage", "stage": "bank"})
        bank = build_bank(teacher, scene, max(dc.bank_rays, 0), dc.n_coarse, dc.n_fine, spec.seed, amp)
        emit({"event": "stage", "stage": "finetune"})
        res = distill(student, bank, dc, teacher.cfg.white_bkgd, progress, evaluator,
                      refill=lambda n, seed: build_bank(teacher, scene, n, dc.n_coarse, dc.n_fine, seed, amp))
        secs["bank"], secs["finetune"] = res.bank_seconds, res.seconds
        rep.finetune = {**dc.to_dict(), "steps_made": res.steps, "history": res.history, "refills": res.refills}
        if eval_views is not None:
            t = time.perf_counter()
            emit({"event": "stage", "stage": "evaluate"})
            rep.psnr_after_finetune, rep.ssim_after_finetune = score(student)
            secs["evaluate"] += time.perf_counter() - t
    return student, rep
