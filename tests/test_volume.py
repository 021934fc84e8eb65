import torch

from nerfexport.train.volume import composite, sample_pdf, stratified_samples


def test_composite_single_opaque_sample():
    z = torch.tensor([[2.0, 3.0, 4.0]])
    raw = torch.zeros(1, 3, 4)
    raw[0, 1, :3] = torch.tensor([10.0, -10.0, 10.0])  # magenta
    raw[0, 1, 3] = 1e4                                 # opaque at depth 3
    out = composite(raw, z, torch.tensor([[0.0, 0.0, 1.0]]), white_bkgd=True)
    torch.testing.assert_close(out.rgb, torch.tensor([[1.0, 0.0, 1.0]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.depth, torch.tensor([3.0]))
    torch.testing.assert_close(out.acc, torch.tensor([1.0]))


def test_composite_empty_shows_background():
    z = torch.linspace(2, 6, 8)[None]
    raw = torch.full((1, 8, 4), -5.0)
    d = torch.tensor([[0.0, 0.0, -1.0]])
    assert torch.allclose(composite(raw, z, d, True).rgb, torch.ones(1, 3))
    assert torch.allclose(composite(raw, z, d, False).rgb, torch.zeros(1, 3))


def test_composite_uniform_density_matches_beer_lambert():
    sigma, n = 0.3, 50
    z = torch.linspace(0, 1, n)[None]
    raw = torch.zeros(1, n, 4)
    raw[..., 3] = sigma
    out = composite(raw, z, torch.tensor([[0.0, 0.0, 2.0]]), white_bkgd=False)
    # weights of all but the (infinite) last interval: 1 - exp(-sigma * |d| * 1)
    assert abs(float(out.weights[0, :-1].sum()) - (1 - torch.exp(torch.tensor(-sigma * 2.0)).item())) < 1e-5


def test_stratified_within_bins_and_sorted():
    g = torch.Generator().manual_seed(0)
    z = stratified_samples(torch.full((100,), 2.0), torch.full((100,), 6.0), 16, True, g)
    assert z.shape == (100, 16) and (z >= 2).all() and (z <= 6).all()
    assert (z[:, 1:] >= z[:, :-1]).all()
    det = stratified_samples(torch.full((1,), 2.0), torch.full((1,), 6.0), 5, False)
    torch.testing.assert_close(det, torch.tensor([[2.0, 3.0, 4.0, 5.0, 6.0]]))


def test_sample_pdf_follows_weights():
    g = torch.Generator().manual_seed(0)
    bins = torch.linspace(0, 4, 5).expand(2000, 5).contiguous()
    w = torch.tensor([0.0, 1.0, 0.0, 3.0]).expand(2000, 4)
    s = sample_pdf(bins, w, 16, det=False, generator=g)
    frac_bin3 = ((s >= 3) & (s <= 4)).float().mean()
    frac_bin1 = ((s >= 1) & (s < 2)).float().mean()
    assert abs(float(frac_bin3) - 0.75) < 0.02 and abs(float(frac_bin1) - 0.25) < 0.02
    assert ((s >= 0) & (s <= 4)).all()
