"""Export: ONNX graphs, int8 quantization, occupancy-grid baking, TensorRT engines, the bundle writer."""
