"""Training: torch volume rendering, the occupancy grid used while training, the training loop. Needs torch."""
