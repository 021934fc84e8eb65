import numpy as np
from skimage.metrics import structural_similarity

from nerfexport.data.metrics import psnr, ssim


def test_psnr_known_value():
    a = np.zeros((4, 4, 3))
    assert psnr(a, a + 0.1) == np.float64(20.0) or abs(psnr(a, a + 0.1) - 20.0) < 1e-9
    assert psnr(a, a) == float("inf")


def test_ssim_matches_scikit_image():
    rng = np.random.default_rng(0)
    a = rng.random((37, 41, 3))
    for noise in (0.02, 0.2):
        b = np.clip(a + noise * rng.standard_normal(a.shape), 0, 1)
        ref = structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0)
        assert abs(ssim(a, b) - ref) < 1e-9
    g = rng.random((30, 30))
    ref = structural_similarity(g, g * 0.8, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=1.0)
    assert abs(ssim(g, g * 0.8) - ref) < 1e-9
    assert ssim(a, a) == 1.0
