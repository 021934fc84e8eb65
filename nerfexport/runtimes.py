"""Runtimes that evaluate a bundle's networks: onnxruntime sessions (CPU, CUDA, TensorRT
providers). Torch-free: the lean renderer's path imports only numpy and the runtime's package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class RuntimeError_(RuntimeError):
    """The runtime cannot run here (missing package, provider or device)."""


class OrtNetwork:
    """An ONNX network in an onnxruntime session: ``(points (N,3), viewdirs (N,3)) -> (rgb, density)``."""

    def __init__(self, path: str | Path, providers: list | None = None, threads: int | None = None,
                 opt_level: str = "all") -> None:
        import onnxruntime as ort
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        so.graph_optimization_level = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                       "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                       "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                       "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[opt_level]
        self.session = ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])
        self.path = Path(path)

    def __call__(self, points: np.ndarray, viewdirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb, dens = self.session.run(["rgb", "density"], {"points": points, "viewdirs": viewdirs})
        return rgb, dens
