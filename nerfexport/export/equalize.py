"""Rank-space equalization of low-rank layers before int8 quantization.

A low-rank layer ``y = up(down(x))`` (:class:`nerfexport.model.mlp.LowRankLinear`) hands a
``rank``-wide activation ``a = down(x)`` from one integer GEMM to the next, and a QDQ graph
quantizes it with one scale per tensor. Its directions are far from equal: they come from the
principal directions of the layer's pre-activations, so the first holds 2 to 22 times the range of
the median one on the lego student (``docs/int8.md``), and a per-tensor uint8 scale leaves the
median direction a few levels. Nothing sits between ``down`` and ``up``, so for any positive
``s (rank,)`` the layer ``up'(down'(x))`` with ``down' = diag(1/s) down`` and
``up' = up diag(s)`` computes the same function. :func:`equalize_rank_space` chooses
``s_k = r_k ** alpha / w_k ** (1 - alpha)`` per direction ``k``, with ``r_k`` the ``percentile`` of
``|a_k|`` on calibration samples and ``w_k`` the largest ``|up[:, k]|``: ``alpha = 0.5`` gives
each direction the same range in the activation and in ``up``'s weights (the activation and the
weight share the loss of precision, as cross-layer equalization and SmoothQuant balance it);
``alpha = 1`` gives every direction the same activation range. ``down``'s weights are quantized
per output channel (per direction), so rescaling its rows costs them nothing.

Uses torch (the export side takes a torch model); the float network is unchanged up to rounding.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from nerfexport.model.mlp import LowRankLinear, NeRF, NeRFMLP


@torch.no_grad()
def rank_ranges(net: NeRFMLP, pts: np.ndarray, dirs: np.ndarray, percentile: float = 99.99,
                batch: int = 16384) -> dict[str, np.ndarray]:
    """The ``percentile`` of ``|down(x)|`` per direction of every low-rank layer of ``net``.

    Args:
        net: One network.
        pts: Calibration points. Array with shape ``(N, 3)``.
        dirs: Their unit view directions. Array with shape ``(N, 3)``.
        percentile: In ``(0, 100]``.
        batch: Points per forward pass.

    Returns:
        ``{module name: (rank,) float64}``, one entry per :class:`LowRankLinear`.
    """
    mods = {n: m for n, m in net.named_modules() if isinstance(m, LowRankLinear)}
    if not mods:
        return {}
    acts: dict[str, list[torch.Tensor]] = {n: [] for n in mods}
    hooks = [m.down.register_forward_hook(lambda _m, _i, o, n=n: acts[n].append(o.detach().abs().float()))
             for n, m in mods.items()]
    was = net.training
    net.eval()
    try:
        p = torch.as_tensor(np.asarray(pts, np.float32))
        d = torch.as_tensor(np.asarray(dirs, np.float32))
        for a in range(0, p.shape[0], batch):
            net(p[a:a + batch], d[a:a + batch])
    finally:
        for h in hooks:
            h.remove()
        net.train(was)
    return {n: np.percentile(torch.cat(v).numpy(), percentile, axis=0).astype(np.float64) for n, v in acts.items()}


@torch.no_grad()
def equalize_rank_space(model: NeRF, calib: dict[str, tuple[np.ndarray, np.ndarray]], alpha: float = 0.5,
                        percentile: float = 99.99) -> tuple[NeRF, dict]:
    """A copy of ``model`` whose low-rank layers have equalized rank spaces (module docstring).

    Args:
        model: The model; not modified.
        calib: ``{"coarse" | "fine": (points (N,3), directions (N,3))}``, the samples the
            quantizer calibrates on.
        alpha: In ``[0, 1]``; 0: no equalization (an unchanged copy).
        percentile: Of ``|activation|`` per direction, as the quantizer's ranges.

    Returns:
        ``(copy, report)``; ``report[network][layer]`` is the spread of the rank-space ranges
        (largest over median) before and after.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], not {alpha}")
    out = copy.deepcopy(model)
    report: dict[str, dict[str, list[float]]] = {}
    if alpha == 0.0:
        return out, report
    for which in ("coarse", "fine"):
        net = getattr(out, which, None)
        if net is None or which not in calib:
            continue
        ranges = rank_ranges(net, *calib[which], percentile=percentile)
        mods = dict(net.named_modules())
        for name, r in ranges.items():
            m = mods[name]
            w = m.up.weight.abs().amax(0).double().numpy()
            ok = (r > 0) & (w > 0)
            s = np.ones_like(r)
            s[ok] = r[ok] ** alpha / w[ok] ** (1.0 - alpha)
            s = s / np.exp(np.mean(np.log(s)))   # keep the overall scale: only the ratios matter
            st = torch.as_tensor(s, dtype=m.up.weight.dtype)
            m.down.weight.div_(st[:, None])
            m.up.weight.mul_(st[None, :])
            after = r / s
            report.setdefault(which, {})[name] = [float(r.max() / np.median(r)), float(after.max() / np.median(after))]
    return out, report
