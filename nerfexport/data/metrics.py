"""Image quality metrics in numpy: PSNR and SSIM (Wang et al. 2004, 11x11 Gaussian, sigma 1.5).

SSIM follows scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)``: per-channel SSIM maps averaged after cropping
the window's half-width at the borders, then over channels.
"""

from __future__ import annotations

import numpy as np


def mse(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.mean((a - b) ** 2))


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB between images of the same shape (inf when equal)."""
    m = mse(a, b)
    return float("inf") if m == 0.0 else float(10.0 * np.log10(data_range**2 / m))


def _gaussian_kernel(sigma: float, truncate: float = 3.5) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _filter2d(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 2-D filter over axes 0, 1 of ``(H, W, C)`` with reflected borders."""
    r = len(k) // 2
    p = np.pad(img, ((r, r), (0, 0), (0, 0)), mode="symmetric")
    out = sum(k[i] * p[i: i + img.shape[0]] for i in range(len(k)))
    p = np.pad(out, ((0, 0), (r, r), (0, 0)), mode="symmetric")
    return sum(k[i] * p[:, i: i + img.shape[1]] for i in range(len(k)))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """Mean SSIM of two ``(H, W)`` or ``(H, W, C)`` images."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    k = _gaussian_kernel(sigma)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter2d(a, k), _filter2d(b, k)
    va = _filter2d(a * a, k) - mu_a**2
    vb = _filter2d(b * b, k) - mu_b**2
    cov = _filter2d(a * b, k) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    pad = (2 * int(3.5 * sigma + 0.5) + 1 - 1) // 2
    if s.shape[0] <= 2 * pad or s.shape[1] <= 2 * pad:  # smaller than the window: no border to crop
        return float(s.mean())
    return float(s[pad:-pad, pad:-pad].mean())
