"""Data: dataset loaders, the embedded procedural scene, image metrics, atomic file writing. No torch."""
