"""Data: dataset loaders, the embedded procedural scene, image metrics, atomic file writing, the
pinhole camera (rays), results in nerfstudio's ns-eval layout, figures (matplotlib, imported only
when one is drawn). No torch."""
