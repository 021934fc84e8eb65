"""Neuron scoring: which neurons of a hidden layer to keep.

Each method is a small function over one layer: its incoming weights ``w_in (n, d_in)`` and
bias ``b_in (n,)``, its outgoing weights ``w_out (d_out, n)`` (the columns of every consumer,
stacked), and/or calibration statistics of its outputs. Score-based methods keep the top
``k``; the coresets sample.

Coresets follow Mussay et al., "Data-independent neural pruning via coresets" (ICLR 2020):
the sensitivity of neuron ``j`` is ``max_i |w_out[i, j]| * phi(beta * ||p_j||)`` with
``p_j = [w_in[j], b_in[j]]`` and ``beta`` a bound on the norm of the (bias-augmented) layer
input; for ReLU, ``phi(z) = z``, so ``beta`` scales every sensitivity alike and does not change
the probabilities. Neurons are drawn with replacement with probability proportional to
sensitivity until ``k`` distinct ones are drawn; a kept neuron drawn ``c_j`` times in ``m`` draws
gets its outgoing weights scaled by ``c_j / (m * pr_j)``, so that the next layer's input is an
unbiased estimate of the full sum. The data-aware variant replaces the bound by what the
calibration set shows: ``max_x |a_j(x) - mean_j|`` (the mean itself is folded exactly by the
surgery, so only the deviation needs estimating).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from nerfexport.model.surgery import Selection

#: the neuron-pruning methods (how the neurons each layer keeps are chosen)
PruneMethod = Literal["uniform", "magnitude", "magnitude-in", "magnitude-out", "activation", "coreset", "data-coreset"]
METHODS: tuple[str, ...] = get_args(PruneMethod)


def top_k(scores: torch.Tensor, k: int) -> Selection:
    """Keep the ``k`` highest-scoring neurons (ties broken by index)."""
    n = scores.numel()
    if not (1 <= k <= n):
        raise ValueError(f"cannot keep {k} of {n} neurons")
    order = torch.argsort(-scores.double(), stable=True)
    return Selection(order[:k])


def uniform_scores(n: int, generator: torch.Generator) -> torch.Tensor:
    """Random scores: top-k of them is a uniformly random subset (the baseline)."""
    return torch.rand(n, generator=generator, dtype=torch.float64)


def magnitude_scores(w_in: torch.Tensor, w_out: torch.Tensor, mode: str = "product") -> torch.Tensor:
    """``mean |incoming weight|`` (``in``), ``mean |outgoing weight|`` (``out``) or their product."""
    s_in = w_in.double().abs().mean(1)
    s_out = w_out.double().abs().mean(0)
    if mode == "in":
        return s_in
    if mode == "out":
        return s_out
    if mode == "product":
        return s_in * s_out
    raise ValueError(f"magnitude mode must be in, out or product, not {mode!r}")


def activation_scores(mean_abs: torch.Tensor, w_out: torch.Tensor | None = None) -> torch.Tensor:
    """Activation-aware: mean ``|a_j|`` over calibration samples (times mean |outgoing weight| when
    given, which makes the score the neuron's typical contribution to the next layer)."""
    s = mean_abs.double()
    return s if w_out is None else s * w_out.double().abs().mean(0)


def coreset_sensitivity(w_in: torch.Tensor, b_in: torch.Tensor, w_out: torch.Tensor,
                        beta: float = 1.0) -> torch.Tensor:
    """Data-independent sensitivity ``max_i |w_out[i,j]| * beta * ||[w_in[j], b_in[j]]||`` (ReLU bound)."""
    p = torch.cat((w_in.double(), b_in.double()[:, None]), 1)
    return w_out.double().abs().max(0).values * beta * p.norm(dim=1)


def data_coreset_sensitivity(max_dev: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
    """Data-aware sensitivity ``max_i |w_out[i,j]| * max_x |a_j(x) - mean_j|`` on calibration samples."""
    return w_out.double().abs().max(0).values * max_dev.double()


def coreset_weights(counts: torch.Tensor, prob: torch.Tensor, m: int) -> torch.Tensor:
    """Importance weights ``c_j / (m pr_j)`` of ``m`` draws with replacement from ``prob``."""
    return counts.double() / (m * prob.double())


def coreset_sample(sensitivity: torch.Tensor, k: int, generator: torch.Generator,
                   max_draws: int = 10_000_000) -> Selection:
    """Draw neurons with probability proportional to ``sensitivity`` until ``k`` are distinct.

    Returns the distinct drawn neurons and their outgoing-weight scales ``c_j / (m pr_j)``.
    Neurons with zero sensitivity are never drawn; if fewer than ``k`` have positive
    sensitivity, the rest are filled with zero-sensitivity neurons at scale 1 (the surgery's
    mean folding makes those exact when they are constant).
    """
    n = sensitivity.numel()
    if not (1 <= k <= n):
        raise ValueError(f"cannot keep {k} of {n} neurons")
    s = sensitivity.double().clamp(min=0)
    positive = int((s > 0).sum())
    if positive == 0:
        return Selection(torch.arange(k))
    prob = s / s.sum()
    target = min(k, positive)
    counts = torch.zeros(n, dtype=torch.float64)
    m = distinct = 0
    batch = max(16, k)
    while distinct < target:
        draws = torch.multinomial(prob, batch, replacement=True, generator=generator)
        # stop at the draw that brings the count of distinct neurons to the target
        for d in draws.tolist():
            m += 1
            counts[d] += 1
            if counts[d] == 1:
                distinct += 1
                if distinct >= target:
                    break
        if m > max_draws:
            raise ValueError("coreset sampling did not reach the target number of neurons")
    keep = torch.nonzero(counts > 0).flatten()
    scale = coreset_weights(counts[keep], prob[keep], m)
    if keep.numel() < k:  # fill with neurons the sensitivity says contribute nothing
        rest = torch.nonzero(counts == 0).flatten()
        rest = rest[torch.argsort(-s[rest], stable=True)][:k - keep.numel()]
        keep = torch.cat((keep, rest))
        scale = torch.cat((scale, torch.ones(rest.numel(), dtype=torch.float64)))
    return Selection(keep, scale)
