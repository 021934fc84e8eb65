"""Training-time volume rendering in torch: stratified and hierarchical sampling, compositing.

Shapes: ``R`` rays, ``S`` samples per ray. Matches nerf-pytorch's ``render_rays`` and
``raw2outputs`` (the last interval is 1e10 long, distances are scaled by ``|d|``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class RenderOutput:
    rgb: torch.Tensor       # (R, 3)
    depth: torch.Tensor     # (R,)
    acc: torch.Tensor       # (R,) opacity
    weights: torch.Tensor   # (R, S)


def stratified_samples(near: torch.Tensor, far: torch.Tensor, n: int, perturb: bool,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Stratified depths along ``R`` rays.

    Args:
        near, far: Each ray's bounds. Tensors with shape ``(R,)``.
        n: Samples per ray.
        perturb: Jitter each sample uniformly in its bin; otherwise the evenly spaced depths.
        generator: The random generator of the jitter.

    Returns:
        Sorted depths. Tensor with shape ``(R, n)``.
    """
    t = torch.linspace(0.0, 1.0, n, device=near.device)
    z = near[:, None] * (1.0 - t) + far[:, None] * t
    if perturb:
        mids = 0.5 * (z[:, 1:] + z[:, :-1])
        upper = torch.cat((mids, z[:, -1:]), -1)
        lower = torch.cat((z[:, :1], mids), -1)
        u = torch.rand(z.shape, device=z.device, generator=generator)
        z = lower + (upper - lower) * u
    return z


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int, det: bool,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverse-CDF samples from a piecewise-constant pdf (nerf-pytorch's ``sample_pdf``).

    Args:
        bins: Bin edges along each ray. Tensor with shape ``(R, B)``.
        weights: Unnormalised weight of each bin. Tensor with shape ``(R, B-1)``.
        n: Samples per ray.
        det: Evenly spaced quantiles instead of uniform random ones.
        generator: The random generator of the quantiles.

    Returns:
        Depths, not sorted. Tensor with shape ``(R, n)``.
    """
    weights = weights + 1e-5
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    # the last entry is 1 by definition; pinning it removes a rounding difference between
    # implementations (numpy and torch sum in different orders) at u = 1
    cdf = torch.cat((torch.zeros_like(cdf[:, :1]), cdf[:, :-1], torch.ones_like(cdf[:, :1])), -1)
    if det:
        u = torch.linspace(0.0, 1.0, n, device=bins.device).expand(cdf.shape[0], n)
    else:
        u = torch.rand((cdf.shape[0], n), device=bins.device, generator=generator)
    u = u.contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    below = (inds - 1).clamp(min=0)
    above = inds.clamp(max=cdf.shape[-1] - 1)
    cdf_b, cdf_a = torch.gather(cdf, 1, below), torch.gather(cdf, 1, above)
    bin_b, bin_a = torch.gather(bins, 1, below), torch.gather(bins, 1, above)
    denom = cdf_a - cdf_b
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    return bin_b + (u - cdf_b) / denom * (bin_a - bin_b)


def composite(raw: torch.Tensor, z: torch.Tensor, rays_d: torch.Tensor, white_bkgd: bool,
              noise_std: float = 0.0, generator: torch.Generator | None = None) -> RenderOutput:
    """Alpha-composite the network's raw outputs along each ray (nerf-pytorch's ``raw2outputs``).

    Args:
        raw: Colour logits and raw density. Tensor with shape ``(R, S, 4)``.
        z: Sorted sample depths. Tensor with shape ``(R, S)``.
        rays_d: Ray directions (distances are scaled by their norm). Tensor with shape ``(R, 3)``.
        white_bkgd: Composite over white instead of black.
        noise_std: Noise added to the raw density before its ReLU.
        generator: The random generator of the noise.

    Returns:
        A :class:`RenderOutput`: ``rgb (R, 3)``, ``depth (R,)``, ``acc (R,)`` and ``weights (R, S)``.
    """
    dists = z[:, 1:] - z[:, :-1]
    dists = torch.cat((dists, torch.full_like(dists[:, :1], 1e10)), -1) * rays_d.norm(dim=-1, keepdim=True)
    rgb = torch.sigmoid(raw[..., :3])
    sigma_raw = raw[..., 3]
    if noise_std > 0.0:
        sigma_raw = sigma_raw + torch.randn(sigma_raw.shape, device=raw.device, generator=generator) * noise_std
    alpha = 1.0 - torch.exp(-F.relu(sigma_raw) * dists)
    trans = torch.cumprod(torch.cat((torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10), -1), -1)[:, :-1]
    weights = alpha * trans
    rgb_map = (weights[..., None] * rgb).sum(-2)
    depth = (weights * z).sum(-1)
    acc = weights.sum(-1)
    if white_bkgd:
        rgb_map = rgb_map + (1.0 - acc[..., None])
    return RenderOutput(rgb_map, depth, acc, weights)
