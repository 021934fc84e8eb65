"""Activation-aware low-rank factorization: every hidden neuron stays, directions go.

A fully trained NeRF uses all its neurons (removing an eighth of them costs the lego model
12 dB), but each layer's pre-activations on real samples are close to low-dimensional. Each
chosen Linear ``y = W x + b`` (``W (out, in)``) becomes a pair ``up(down(x))`` of rank ``r``
(:class:`nerfexport.model.mlp.LowRankLinear`), ``r (in + out)`` multiply-adds instead of
``in * out``, fitted layer by layer on calibration samples drawn along training rays:

* ``pca``: ``U (out, r)`` = the top-``r`` principal directions of the teacher's pre-activations
  ``Y``; ``y' = mu + U U^T (W x + b - mu)``. Exact when ``Y - mu`` lies in an r-dimensional
  subspace.
* ``rrr`` (reduced-rank regression, the default): each layer is fitted to the teacher's
  pre-activations from the *student's* inputs (the layers before it are already factorized, so
  their error is corrected, not compounded): the least-squares ``W_ls, b_ls`` of ``[X_s, 1] ->
  Y``, then the top-``r`` principal directions of its fitted values. This is the optimal rank-r
  linear map for that regression.

Samples are weighted: ``visible`` of the mass by the teacher's compositing weights (the points a
pixel sees), the rest spread evenly along each ray (empty space must stay empty).

Ranks come from a cost budget (:func:`allocate_ranks`): the fraction of the teacher's
multiply-adds per point that the student may spend, filled greedily with the directions that
hold the most variance per multiply-add, layer by layer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
import torch
from torch.nn import functional as F

from nerfexport.model.mlp import MLPConfig, NeRF, NeRFMLP
from nerfexport.train.render import run_network, scene_rays
from nerfexport.train.volume import composite, sample_pdf, stratified_samples

#: how a factorized layer is fitted: reduced-rank regression on the student's inputs, or PCA
FitMode = Literal["rrr", "pca"]
FIT_MODES: tuple[str, ...] = get_args(FitMode)
#: layers never factorized: the heads are 1-3 outputs wide
HEADS = ("alpha", "rgb", "output")


@dataclass
class WeightedSamples:
    """Network inputs with importance weights: ``pts, dirs (N,3)``, ``w (N,)`` summing to 1."""

    pts: torch.Tensor
    dirs: torch.Tensor
    w: torch.Tensor


@torch.no_grad()
def draw_weighted_samples(teacher: NeRF, scene, n_rays: int = 1024, seed: int = 0, visible: float = 0.5,
                          max_points: int = 65536, chunk: int = 1024) -> dict[str, WeightedSamples]:
    """The points each network of ``teacher`` evaluates on ``n_rays`` random training rays, its own
    sample counts, with weights: ``visible`` by compositing weight, the rest uniform per ray.
    Returns ``{"coarse": ..., "fine": ...}`` (``fine`` only with a fine network), at most
    ``max_points`` each (drawn without replacement, then re-weighted to sum to 1)."""
    if not 0.0 <= visible <= 1.0:
        raise ValueError(f"visible must be in [0, 1], not {visible}")
    rays = scene_rays(scene, "train")
    rng = np.random.default_rng(seed)
    idx = rng.choice(rays["o"].shape[0], size=min(n_rays, rays["o"].shape[0]), replace=False)
    o, d, v = (torch.from_numpy(rays[k][idx]) for k in ("o", "d", "v"))
    gen = torch.Generator().manual_seed(seed)
    cfg = teacher.cfg
    acc = {"coarse": ([], [], []), "fine": ([], [], [])}
    teacher.eval()

    def add(which, pts, vv, weights):
        R, S, _ = pts.shape
        w = visible * weights / weights.sum(-1, keepdim=True).clamp_min(1e-10) + (1 - visible) / S
        acc[which][0].append(pts.reshape(-1, 3))
        acc[which][1].append(vv[:, None].expand(R, S, 3).reshape(-1, 3))
        acc[which][2].append(w.reshape(-1))

    for s in range(0, o.shape[0], chunk):
        oo, dd, vv = o[s:s + chunk], d[s:s + chunk], v[s:s + chunk]
        R = oo.shape[0]
        z = stratified_samples(torch.full((R,), cfg.near), torch.full((R,), cfg.far), cfg.n_coarse, True, gen)
        pts = oo[:, None] + dd[:, None] * z[..., None]
        out_c = composite(run_network(teacher.coarse, pts, vv, None), z, dd, cfg.white_bkgd)
        add("coarse", pts, vv, out_c.weights)
        if teacher.fine is not None and cfg.n_fine > 0:
            z_f = sample_pdf(0.5 * (z[:, 1:] + z[:, :-1]), out_c.weights[:, 1:-1], cfg.n_fine, det=False,
                             generator=gen)
            z_all, _ = torch.sort(torch.cat((z, z_f), -1), -1)
            pts_f = oo[:, None] + dd[:, None] * z_all[..., None]
            out_f = composite(run_network(teacher.fine, pts_f, vv, None), z_all, dd, cfg.white_bkgd)
            add("fine", pts_f, vv, out_f.weights)
    out = {}
    for which, (p, dv, w) in acc.items():
        if not p:
            continue
        p, dv, w = torch.cat(p), torch.cat(dv), torch.cat(w).double()
        if p.shape[0] > max_points:
            keep = torch.from_numpy(np.sort(rng.choice(p.shape[0], max_points, replace=False)))
            p, dv, w = p[keep], dv[keep], w[keep]
        out[which] = WeightedSamples(p, dv, w / w.sum())
    return out


def _module(net: torch.nn.Module, path: str) -> torch.nn.Module:
    mod = net
    for part in path.split("."):
        mod = mod[int(part)] if part.isdigit() else getattr(mod, part)
    return mod


def _wcov(y: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean ``(out,)`` and covariance ``(out, out)`` (float64) of ``y (N, out)``."""
    y = y.double()
    mu = w @ y
    yc = y - mu
    return mu, (yc * w[:, None]).T @ yc


def _top_directions(cov: torch.Tensor, r: int) -> torch.Tensor:
    """``(out, r)``: the eigenvectors of the ``r`` largest eigenvalues."""
    evals, evecs = torch.linalg.eigh(cov)
    return evecs[:, torch.argsort(evals, descending=True)[:r]]


def fit_low_rank(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, W: torch.Tensor, b: torch.Tensor, rank: int,
                 mode: FitMode = "rrr", ridge: float = 1e-6, relu_passes: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A rank-``rank`` fit of the target pre-activations ``y (N, out)`` from inputs ``x (N, in)``
    with sample weights ``w (N,)`` (sum 1). ``W (out, in)``, ``b (out,)``: the teacher's layer
    (``pca`` keeps it and only projects its output). Returns ``down (r, in)``, ``up (out, r)``,
    ``bias (out,)`` (float64) with ``y ~ up @ down @ x + bias``.

    ``relu_passes`` (``rrr``, a layer followed by a ReLU): refit that many times with the target
    of each entry the teacher's pre-activation where it is positive, and where it is not, the
    fit's own value capped at zero: a negative pre-activation the ReLU removes anyway is not
    an error, so the rank goes to what survives the ReLU."""
    if mode not in FIT_MODES:
        raise ValueError(f"fit mode must be one of {', '.join(FIT_MODES)}, not {mode!r}")
    W, b = W.double(), b.double()
    if mode == "pca":
        mu, cov = _wcov(y, w)
        U = _top_directions(cov, rank)
        return U.T @ W, U, mu + U @ (U.T @ (b - mu))
    xd = x.double()
    mx = w @ xd
    xc = xd - mx
    gram = (xc * w[:, None]).T @ xc
    gram += ridge * (torch.trace(gram) / gram.shape[0] + 1e-12) * torch.eye(gram.shape[0], dtype=gram.dtype)
    chol = torch.linalg.cholesky(gram)
    y = y.double()
    target = y
    for _ in range(relu_passes + 1):
        my = w @ target
        W_ls = torch.cholesky_solve((xc * w[:, None]).T @ (target - my), chol).T    # (out, in)
        fitted = xc @ W_ls.T + my
        mu, cov = _wcov(fitted, w)
        U = _top_directions(cov, rank)
        down, up, bias = U.T @ W_ls, U, mu - U @ (U.T @ (W_ls @ mx))
        pred = xd @ down.T @ up.T + bias
        target = torch.where(y > 0, y, pred.clamp_max(0.0))
    return down, up, bias


def _forward_layers(net: NeRFMLP, pts: torch.Tensor, dirs: torch.Tensor, replace_fn=None) -> torch.Tensor:
    """Run ``net`` layer by layer; ``replace_fn(name, path, x) -> pre-activation`` may stand in for
    any Linear (used to fit each layer on the inputs the layers before it produce)."""
    cfg = net.cfg

    def lin(name, path, x):
        if replace_fn is not None:
            return replace_fn(name, path, x)
        return _module(net, path)(x)

    x = net.embed(pts)
    h = x
    for i in range(len(cfg.widths)):
        h = F.relu(lin(f"pts.{i}", f"pts_linears.{i}", h))
        if i in cfg.skips:
            h = torch.cat((x, h), -1)
    if not cfg.use_viewdirs:
        return lin("output", "output_linear", h)
    alpha = lin("alpha", "alpha_linear", h)
    g = torch.cat((lin("feature", "feature_linear", h), net.embed_views(dirs)), -1)
    for i in range(len(cfg.view_widths)):
        g = F.relu(lin(f"views.{i}", f"views_linears.{i}", g))
    return torch.cat((lin("rgb", "rgb_linear", g), alpha), -1)


def hidden_forward(net: NeRFMLP, pts: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``net(pts, dirs)`` ``(N, 4)`` and every hidden layer's output ``{name: (N, width)}`` (after its
    ReLU; ``feature`` has none): the targets of hidden-layer distillation, whose neurons a
    factorized student shares with its teacher."""
    hidden = {}

    def keep(name, path, x):
        y = _module(net, path)(x)
        if name not in HEADS:
            hidden[name] = y if name == "feature" else F.relu(y)
        return y

    return _forward_layers(net, pts, dirs, keep), hidden


@torch.no_grad()
def factorize_network(net: NeRFMLP, ranks: dict[str, int], samples: WeightedSamples, mode: FitMode = "rrr",
                      relu_passes: int = 0) -> NeRFMLP:
    """A copy of ``net`` whose layers named in ``ranks`` are low-rank pairs fitted on ``samples``
    (see the module docstring). Layers not named are copied unchanged."""
    if net.cfg.ranks:
        raise ValueError("this network is already factorized")
    shapes = {name: path for name, path, _, _ in net.cfg.linear_shapes()}
    small_cfg = replace(net.cfg, ranks=dict(ranks), skips=list(net.cfg.skips), widths=list(net.cfg.widths),
                        view_widths=list(net.cfg.view_widths))
    small = NeRFMLP(small_cfg)
    for name, path in shapes.items():     # copy every full layer
        if name not in ranks:
            _module(small, path).load_state_dict(_module(net, path).state_dict())
    pts, dirs, w = samples.pts.float(), samples.dirs.float(), samples.w.double()
    # the teacher's input to every layer, recorded on the way
    teacher_in = {}

    def record(name, path, x):
        teacher_in[name] = x
        return _module(net, path)(x)

    _forward_layers(net, pts, dirs, record)

    def fit(name, path, x):
        if name in ranks:
            lay = _module(net, path)
            y = teacher_in[name].double() @ lay.weight.double().T + lay.bias.double()
            down, up, bias = fit_low_rank(x, y, w, lay.weight, lay.bias, ranks[name], mode,
                                          relu_passes=0 if name == "feature" else relu_passes)
            mod = _module(small, path)
            mod.down.weight.copy_(down.float()), mod.up.weight.copy_(up.float()), mod.up.bias.copy_(bias.float())
        return _module(small, path)(x)

    _forward_layers(small, pts, dirs, fit)
    return small.eval()


def layer_spectra(net: NeRFMLP, samples: WeightedSamples) -> dict[str, torch.Tensor]:
    """Weighted eigenvalues (descending, float64) of each hidden layer's pre-activation covariance."""
    out = {}

    def record(name, path, x):
        y = _module(net, path)(x)
        if name not in HEADS:
            _, cov = _wcov(y, samples.w.double())
            out[name] = torch.linalg.eigvalsh(cov).flip(0).clamp_min(0)
        return y

    with torch.no_grad():
        _forward_layers(net, samples.pts.float(), samples.dirs.float(), record)
    return out


def allocate_ranks(cfg: MLPConfig, budget_macs: int, spectra: dict[str, torch.Tensor] | None = None,
                   layers: tuple[str, ...] | None = None, step: int = 4) -> dict[str, int]:
    """Ranks for the hidden layers of ``cfg`` that bring its multiply-adds per point to at most
    ``budget_macs``. With ``spectra`` (:func:`layer_spectra`), greedy: repeatedly give ``step``
    more directions to the layer whose next directions hold the largest share of its variance per
    multiply-add; a layer whose rank makes the pair as costly as the full layer stays full.
    Without, one rank for every factorized layer. ``layers``: which may be factorized (default
    every hidden layer). Raises ``ValueError`` when even rank 1 everywhere is over budget."""
    shapes = {name: (i, o) for name, _, i, o in cfg.linear_shapes() if name not in HEADS}
    cand = [n for n in shapes if layers is None or n in layers]
    fixed = sum(m for n, m in MLPConfig.layer_macs(replace(cfg, ranks={})).items() if n not in cand)

    def cost(n, r):
        i, o = shapes[n]
        return min(r * (i + o), i * o)

    def total(rk):
        return fixed + sum(cost(n, rk[n]) for n in cand)

    rk = {n: 1 for n in cand}
    if total(rk) > budget_macs:
        raise ValueError(f"a budget of {budget_macs:,} multiply-adds a point is below the cheapest factorization "
                         f"({total(rk):,})")
    if spectra is None:
        r = 1
        while total({n: r + 1 for n in cand}) <= budget_macs and r < max(min(s) for s in shapes.values()):
            r += 1
        rk = {n: min(r, min(shapes[n])) for n in cand}
    else:
        share = {n: spectra[n] / spectra[n].sum().clamp_min(1e-30) for n in cand}
        while True:
            best, gain = None, 0.0
            for n in cand:
                r = rk[n]
                if r >= min(shapes[n]):
                    continue
                extra = cost(n, r + step) - cost(n, r)
                if total({**rk, n: r + step}) > budget_macs:
                    continue
                g = float(share[n][r:r + step].sum()) / max(extra, 1)
                if extra <= 0:
                    g = float("inf")
                if g > gain:
                    best, gain = n, g
            if best is None:
                break
            rk[best] = min(rk[best] + step, min(shapes[best]))
    # a pair no cheaper than the full layer is the full layer
    return {n: r for n, r in rk.items() if r * sum(shapes[n]) < shapes[n][0] * shapes[n][1]}


def uniform_ranks(cfg: MLPConfig, rank: int) -> dict[str, int]:
    """Rank ``rank`` for every hidden layer where the pair is cheaper than the full layer."""
    return {name: rank for name, _, i, o in cfg.linear_shapes()
            if name not in HEADS and rank * (i + o) < i * o}


def budget_macs(cfg: MLPConfig, width: int | None = None, ratio: float | None = None) -> int:
    """The multiply-adds per point that a target means: those of the same network pruned to
    ``width`` (every trunk and the feature layer, the view branch in proportion) or ``ratio`` of
    the teacher's."""
    if (width is None) == (ratio is None):
        raise ValueError("give a width or a ratio")
    if ratio is not None:
        if not 0 < ratio <= 1:
            raise ValueError(f"the cost ratio must be in (0, 1], not {ratio}")
        return int(cfg.macs() * ratio)
    frac = width / cfg.widths[-1]
    pruned = replace(cfg, widths=[width] * len(cfg.widths), feature_width=width,
                     view_widths=[max(1, round(w * frac)) for w in cfg.view_widths], ranks={})
    return pruned.macs()


def factorize_model(teacher: NeRF, ranks: dict[str, dict[str, int]], samples: dict[str, WeightedSamples],
                    mode: FitMode = "rrr", relu_passes: int = 0) -> NeRF:
    """Both networks of ``teacher`` factorized: ``ranks["coarse"]``, ``ranks["fine"]``."""
    nets = {}
    for which in ("coarse", "fine"):
        net = getattr(teacher, which)
        if net is None:
            continue
        s = samples.get(which) or samples["coarse"]
        nets[which] = factorize_network(net, ranks.get(which, {}), s, mode, relu_passes)
    cfg = replace(teacher.cfg, coarse=nets["coarse"].cfg, fine=nets["fine"].cfg if "fine" in nets else None)
    model = NeRF(cfg)
    model.coarse.load_state_dict(nets["coarse"].state_dict())
    if "fine" in nets:
        model.fine.load_state_dict(nets["fine"].state_dict())
    return model.eval()
