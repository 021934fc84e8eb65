import torch

from nerfexport.model.encoding import PositionalEncoding, encoded_dim


def nerf_pytorch_embed(x, multires):
    """nerf-pytorch's get_embedder(multires) written out."""
    outs = [x]
    for f in 2.0 ** torch.linspace(0.0, multires - 1, multires):
        outs += [torch.sin(x * f), torch.cos(x * f)]
    return torch.cat(outs, -1)


def test_matches_nerf_pytorch_order_and_width():
    x = torch.randn(7, 3)
    for L in (4, 10):
        enc = PositionalEncoding(L)
        y = enc(x)
        assert y.shape == (7, encoded_dim(3, L)) == (7, 3 * (1 + 2 * L))
        torch.testing.assert_close(y, nerf_pytorch_embed(x, L))


def test_batch_dims_and_no_input():
    x = torch.randn(2, 5, 3)
    enc = PositionalEncoding(2, include_input=False)
    assert enc(x).shape == (2, 5, 12) and enc.out_dim == 12
