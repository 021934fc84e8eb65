"""The model: positional encoding, the NeRF MLP, checkpoints (and nerf-pytorch import), surgery. Needs torch."""
