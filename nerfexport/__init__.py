"""nerfexport: train a NeRF, shrink it, export it (ONNX / TensorRT), render and benchmark it."""

__version__ = "0.1.0"
