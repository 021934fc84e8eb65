import pytest
import torch

from nerfexport.shrink import scoring


def test_top_k_and_magnitude():
    w_in = torch.tensor([[1.0, 1.0], [3.0, 3.0], [0.1, 0.1], [2.0, 2.0]])
    w_out = torch.tensor([[1.0, 0.1, 5.0, 1.0]])
    assert scoring.top_k(scoring.magnitude_scores(w_in, w_out, "in"), 2).keep.tolist() == [1, 3]
    assert scoring.top_k(scoring.magnitude_scores(w_in, w_out, "out"), 2).keep.tolist() == [0, 2]
    # product: 1, 0.3, 0.5, 2
    assert scoring.top_k(scoring.magnitude_scores(w_in, w_out, "product"), 2).keep.tolist() == [0, 3]
    with pytest.raises(ValueError):
        scoring.magnitude_scores(w_in, w_out, "sideways")
    with pytest.raises(ValueError):
        scoring.top_k(torch.ones(3), 4)


def test_activation_keeps_busiest_neurons():
    s = scoring.activation_scores(torch.tensor([0.0, 5.0, 0.2, 3.0]))
    assert scoring.top_k(s, 2).keep.tolist() == [1, 3]


def test_uniform_is_seeded_and_spread():
    a = scoring.top_k(scoring.uniform_scores(100, torch.Generator().manual_seed(3)), 10).keep
    b = scoring.top_k(scoring.uniform_scores(100, torch.Generator().manual_seed(3)), 10).keep
    c = scoring.top_k(scoring.uniform_scores(100, torch.Generator().manual_seed(4)), 10).keep
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_coreset_sensitivity_formula():
    w_in = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([4.0, 0.0])
    w_out = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    s = scoring.coreset_sensitivity(w_in, b, w_out, beta=2.0)
    assert torch.allclose(s, torch.tensor([1.0 * 2 * 5, 3.0 * 2 * 1], dtype=torch.float64))
    d = scoring.data_coreset_sensitivity(torch.tensor([0.5, 0.0]), w_out)
    assert torch.allclose(d, torch.tensor([0.5, 0.0], dtype=torch.float64))


def test_coreset_sample_reaches_target_and_skips_zero_sensitivity():
    g = torch.Generator().manual_seed(0)
    sens = torch.tensor([5.0, 0.0, 1.0, 2.0, 0.0, 0.5, 3.0, 1.0])
    sel = scoring.coreset_sample(sens, 4, g)
    assert sel.keep.numel() == 4 and torch.all(sens[sel.keep] > 0)
    assert torch.all(sel.scale > 0)
    # more neurons asked for than have positive sensitivity: filled with the rest at scale 1
    sel = scoring.coreset_sample(sens, 7, torch.Generator().manual_seed(0))
    assert sel.keep.numel() == 7 and (sel.scale == 1).sum() >= 1
    again = scoring.coreset_sample(sens, 4, torch.Generator().manual_seed(0))
    assert torch.equal(scoring.coreset_sample(sens, 4, torch.Generator().manual_seed(0)).keep, again.keep)


def test_coreset_reweighting_is_unbiased():
    """E[sum_j c_j/(m pr_j) w_j a_j] = sum_j w_j a_j for m draws with replacement (fixed seed)."""
    g = torch.Generator().manual_seed(1234)
    n, m, trials = 40, 25, 20000
    sens = torch.rand(n, generator=g, dtype=torch.float64) + 0.05
    prob = sens / sens.sum()
    contrib = torch.randn(n, generator=g, dtype=torch.float64)  # w_j a_j for one input
    draws = torch.multinomial(prob.expand(trials, n), m, replacement=True, generator=g)
    counts = torch.zeros(trials, n, dtype=torch.float64).scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    est = (scoring.coreset_weights(counts, prob, m) * contrib).sum(1)
    se = est.std() / trials ** 0.5
    assert abs(float(est.mean() - contrib.sum())) < 4 * float(se)
    # and the estimator is not trivially exact: it has spread
    assert float(est.std()) > 0.01


def test_coreset_sample_estimate_is_close_to_unbiased():
    """The draw-until-k-distinct rule used by the shrink stage: mean estimate within 3 % of the truth."""
    n, k, trials = 30, 12, 3000
    g = torch.Generator().manual_seed(7)
    sens = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    contrib = torch.rand(n, generator=g, dtype=torch.float64)
    ests = []
    for _ in range(trials):
        sel = scoring.coreset_sample(sens, k, g)
        ests.append(float((sel.scale * contrib[sel.keep]).sum()))
    mean = sum(ests) / trials
    assert abs(mean - float(contrib.sum())) / float(contrib.sum()) < 0.03
