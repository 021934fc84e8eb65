"""Benchmarks and diagnostics: the bench, the GEMM peak, plots, studies, ``doctor``."""
