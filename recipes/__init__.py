"""Compression recipes (TOML), shipped with the package; see recipes/README.md."""
