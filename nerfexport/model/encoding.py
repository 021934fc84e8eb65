"""Positional encoding of NeRF (Mildenhall et al. 2020), nerf-pytorch compatible.

The output of ``PositionalEncoding(num_freqs=L)`` on ``x`` of shape ``(..., d)`` is
``[x, sin(2^0 x), cos(2^0 x), ..., sin(2^(L-1) x), cos(2^(L-1) x)]`` of shape
``(..., d * (1 + 2 L))``, the same order as nerf-pytorch's ``get_embedder``.
"""

from __future__ import annotations

import torch
from torch import nn


def encoded_dim(in_dim: int, num_freqs: int, include_input: bool = True) -> int:
    """Width of the encoding of an ``in_dim``-vector with ``num_freqs`` frequencies."""
    return in_dim * (int(include_input) + 2 * num_freqs)


class PositionalEncoding(nn.Module):
    """``(..., d)`` -> ``(..., d * (include_input + 2 * num_freqs))``, frequencies 2^0..2^(L-1)."""

    def __init__(self, num_freqs: int, in_dim: int = 3, include_input: bool = True) -> None:
        super().__init__()
        self.num_freqs = int(num_freqs)
        self.in_dim = int(in_dim)
        self.include_input = bool(include_input)
        freqs = 2.0 ** torch.arange(self.num_freqs, dtype=torch.float32)
        self.register_buffer("freqs", freqs, persistent=False)

    @property
    def out_dim(self) -> int:
        return encoded_dim(self.in_dim, self.num_freqs, self.include_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., 1, d) * (L, 1) -> (..., L, d); interleave sin/cos per frequency like nerf-pytorch.
        xb = x.unsqueeze(-2) * self.freqs.to(x.dtype).unsqueeze(-1)
        sc = torch.stack((torch.sin(xb), torch.cos(xb)), dim=-2)  # (..., L, 2, d)
        parts = sc.flatten(-3)
        if self.include_input:
            parts = torch.cat((x, parts), dim=-1)
        return parts
