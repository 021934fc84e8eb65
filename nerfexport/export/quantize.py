"""Static int8 quantization through onnxruntime's quantization tools (not a home-made quantizer).

``quant_pre_process`` (shape inference) then ``quantize_static`` in QDQ format with a
``CalibrationDataReader`` that feeds real sample points drawn along training rays the way the
renderer draws them (see :mod:`nerfexport.shrink.calibration`). The layers' ``Gemm`` nodes and
their ``Relu`` are quantized (a layer reading two parts, after the skip or in the view branch, is a
``Gemm`` a part: each part gets its own scale): weights per-channel, symmetric int8, biases
int32 (float for TensorRT, below). With uint8 activations the quantizer drops each ``Relu``
into the range of the layer's output, so onnxruntime runs the trunk as a chain of integer
``QGemm`` kernels (uint8 in and out) with no float round trip between layers; this ran 1.5x
faster on this machine's CPU than quantizing ``MatMul`` with a float ``Add`` and ``Relu`` between layers. The positional
encoding, the heads' activations and the compositing inputs stay in float.

The activation format depends on the target runtime:

* ``cpu`` (onnxruntime on x86): uint8 activations, int8 weights (U8S8), the format
  onnxruntime's integer kernels on x86 run fastest;
* ``tensorrt``: int8 activations, symmetric, zero point 0 (S8S8), which TensorRT's explicit
  quantization requires, and biases kept float (``QuantizeBias=False``): TensorRT's
  ``DequantizeLinear`` takes int8 (fp8, int4) only, not the int32 of a quantized bias. onnx-tensorrt
  rejects uint8 Q/DQ, so a U8S8 graph never goes to TensorRT (:func:`check_tensorrt_target`,
  :func:`is_u8s8`).

Weights for ``cpu`` are 7-bit (``reduce_range``: int8 in [-64, 64], per-channel scales twice
as coarse). A bundle travels to CPUs unknown at export time, and on x86 CPUs without VNNI (AVX2,
AVX-512 F without VNNI) onnxruntime's uint8 x int8 kernels use ``VPMADDUBSW``, which sums each
pair of products in a signed 16-bit value and saturates above 32,767: with 8-bit weights a pair
reaches 2 x 255 x 127 = 64,770 and the kernels then compute another network than the graph
(on the lego teacher by as much as quantization itself); with |w| <= 64 a pair is at most
2 x 255 x 64 = 32,640 and cannot saturate, on every x86 CPU. VNNI CPUs sum in 32 bits either
way. ``tensorrt`` keeps 8-bit weights (TensorRT sums in 32 bits). ``weight_bits`` overrides
either; :mod:`nerfexport.deploy.int8check` compares a bundle's kernels with the float
simulation of its graph on this CPU (``nerfexport doctor``).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
TARGETS = ("cpu", "tensorrt")
# Never int8: the encodings' frequency scaling (up to 2^9) and the output heads. A quantized head
# would hand the renderer 256 levels of density (over 0..hundreds) and of the colour logits;
# the heads are 1-3 outputs wide, so keeping them float costs nothing measurable.
# The encodings' Concat stays float too: quantizing it would put a QDQ pair on the raw points and
# directions, and the frequency scaling would read 256 levels of position.
ALWAYS_FLOAT = ("encoding/scaled", "view_encoding/scaled", "encoding/out", "view_encoding/out",
                "alpha/Gemm", "rgb/Gemm", "output/Gemm", "density/Relu")


class QuantizationError(ValueError):
    """The quantizer cannot run with these inputs."""


def _reader(pts: np.ndarray, dirs: np.ndarray, batch: int):
    from onnxruntime.quantization import CalibrationDataReader

    class PointsReader(CalibrationDataReader):
        """Feeds ``{"points", "viewdirs"}`` batches of calibration samples."""

        def __init__(self) -> None:
            self.i = 0

        def get_next(self):
            if self.i >= pts.shape[0]:
                return None
            sl = slice(self.i, self.i + batch)
            self.i += batch
            return {"points": np.ascontiguousarray(pts[sl], np.float32),
                    "viewdirs": np.ascontiguousarray(dirs[sl], np.float32)}

        def rewind(self) -> None:
            self.i = 0

    return PointsReader()


@dataclass
class Int8Settings:
    method: str = "percentile"       # activation ranges: the 99.99th percentile of the calibration samples
    target: str = "cpu"
    per_channel: bool = True
    percentile: float = 99.99
    exclude: tuple[str, ...] = ()     # layer names kept in float (e.g. "pts.0", "rgb")
    float_concat_readers: bool = True  # a layer reading a Concat of differently scaled parts stays float
    #                                    (the graphs export writes now read such parts one Gemm each: none)
    weight_bits: int | None = None    # 7 (|w| <= 64: no 16-bit saturation on x86 without VNNI) or 8;
    #                                   None: 7 for cpu, 8 for tensorrt
    equalize: float = 0.5             # low-rank layers: rank-space equalization's alpha (0: off;
    #                                   nerfexport.export.equalize); on the lego student -0.50 -> -0.15 dB

    @property
    def bits(self) -> int:
        """The weights' bits: 7 or 8 (:attr:`weight_bits`, else the target's default)."""
        if self.weight_bits is not None:
            return int(self.weight_bits)
        return 7 if self.target == "cpu" else 8

    def validate(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise QuantizationError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, "
                                    f"not {self.method!r}")
        if self.target not in TARGETS:
            raise QuantizationError(f"int8 target must be one of {', '.join(TARGETS)}, not {self.target!r}")
        if self.weight_bits is not None and self.weight_bits not in (7, 8):
            raise QuantizationError(f"int8 weight bits must be 7 or 8, not {self.weight_bits!r}")
        if not 0.0 <= self.equalize <= 1.0:
            raise QuantizationError(f"rank-space equalization alpha must lie in [0, 1], not {self.equalize!r}")

    @property
    def activation_format(self) -> str:
        return "U8S8" if self.target == "cpu" else "S8S8"

    def check_for_tensorrt(self) -> None:
        """Raise :class:`QuantizationError` unless these settings make int8 TensorRT can run (S8S8)."""
        self.validate()
        if self.target != "tensorrt":
            raise QuantizationError(f"TensorRT cannot run int8 for --target {self.target} (uint8 activations, U8S8, "
                                    "which onnx-tensorrt rejects); give --target tensorrt (S8S8) with --tensorrt")

    def to_dict(self) -> dict:
        return {"method": self.method, "target": self.target, "per_channel": self.per_channel,
                "percentile": self.percentile if self.method == "percentile" else None,
                "activations": "uint8 asymmetric" if self.target == "cpu" else "int8 symmetric",
                "weights": "int8 symmetric" + (" per-channel" if self.per_channel else "")
                + (", 7-bit [-64, 64]" if self.bits == 7 else ""), "weight_bits": self.bits,
                "float_concat_readers": self.float_concat_readers, "rank_equalization": self.equalize,
                "format": f"QDQ {self.activation_format}", "float_layers": list(self.exclude)}


def check_tensorrt_target(settings: "Int8Settings | None") -> None:
    """For engines built from an export's int8 settings (``None``: not int8, nothing to check)."""
    if settings is not None:
        settings.check_for_tensorrt()


def check_calibration_data(pts, dirs) -> None:
    """Calibration samples must be finite float ``(N,3)`` points and unit directions."""
    for name, a in (("points", pts), ("view directions", dirs)):
        if not isinstance(a, np.ndarray) or a.ndim != 2 or a.shape[1] != 3 or a.shape[0] == 0:
            raise QuantizationError(f"calibration {name} must be a non-empty (N, 3) array, got "
                                    f"{getattr(a, 'shape', type(a).__name__)}")
        if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
            raise QuantizationError(f"calibration {name} must be finite floats")
    if pts.shape[0] != dirs.shape[0]:
        raise QuantizationError("calibration points and directions differ in number")
    n = np.linalg.norm(dirs, axis=1)
    if np.abs(n - 1.0).max() > 1e-3:
        raise QuantizationError("calibration view directions must be unit vectors (are these points?)")


def quantize_int8(fp32_model: str | Path, out_path: str | Path, pts: np.ndarray, dirs: np.ndarray,
                  settings: Int8Settings, batch: int = 8192) -> None:
    """Write a QDQ int8 copy of ``fp32_model`` to ``out_path``, calibrated on ``pts, dirs (N,3)``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    settings.validate()
    check_calibration_data(pts, dirs)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.method]
    extra = {"ActivationSymmetric": settings.target == "tensorrt", "WeightSymmetric": True,
             # TensorRT dequantizes int8 only: its biases stay float (the CPU's int32 biases feed QGemm)
             "QuantizeBias": settings.target != "tensorrt"}
    if settings.method == "percentile":
        extra["CalibPercentile"] = settings.percentile
    names = tuple(settings.exclude) + (concat_readers(fp32_model) if settings.float_concat_readers else ())
    exclude = list(ALWAYS_FLOAT) + [f"{name}{op}" for name in names
                                    for op in ("/Gemm", "/Relu", ".down/Gemm", ".in1/Gemm", ".down.in1/Gemm", "/Add",
                                               ".down/Add")]
    exclude += _float_concats(fp32_model, set(exclude))
    with tempfile.TemporaryDirectory(prefix="nerfexport-q-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_model), str(pre), skip_optimization=True)
        # the histogram calibrators print their progress: a library function prints nothing
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(str(pre), str(out_path), _reader(pts, dirs, batch), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=["Gemm", "Relu", "Concat"], per_channel=settings.per_channel,
                            activation_type=QuantType.QUInt8 if settings.target == "cpu" else QuantType.QInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=exclude, calibrate_method=method,
                            reduce_range=settings.bits == 7,
                            extra_options=extra, calibration_providers=["CPUExecutionProvider"])


def concat_readers(model_path: str | Path) -> tuple[str, ...]:
    """The layers whose input is a ``Concat`` of differently scaled parts: the layer after the skip
    (``[encoding, hidden]``) and the view branch's first (``[feature, view encoding]``).

    A QDQ graph quantizes a layer's input with one scale. For these inputs that scale is set by the
    larger part and crushes the other: on the lego teacher ``views.concat`` spans [-88, 89]
    (the feature), a step of 0.70, and the view encoding in [-1, 1] becomes three levels; the skip
    spans [-3.2, 23.4] (the hidden part), a step of 0.10 for the sines and cosines. Kept float
    by default (:attr:`Int8Settings.float_concat_readers`); the first layer reads ``[x, sin, cos]``,
    parts of one scale, and stays int8."""
    import onnx
    g = onnx.load(str(model_path)).graph
    concats = {n.output[0] for n in g.node if n.op_type == "Concat" and n.name not in ALWAYS_FLOAT}
    out = []
    for n in g.node:
        if n.op_type == "Gemm" and n.input[0] in concats and n.name.endswith("/Gemm"):
            name = n.name[:-len("/Gemm")]
            name = name[:-len(".down")] if name.endswith(".down") else name
            if name not in out:
                out.append(name)
    return tuple(out)


def _float_concats(model_path: str | Path, excluded: set[str]) -> list[str]:
    """The ``Concat`` nodes (the skip, the view branch's input) whose every reader is a float node:
    quantizing them would only round their inputs (a concat is quantized with one scale for all its
    parts) for a layer that reads float anyway."""
    import onnx
    g = onnx.load(str(model_path)).graph
    readers: dict[str, list[str]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.name)
    return [n.name for n in g.node if n.op_type == "Concat" and n.name not in excluded
            and readers.get(n.output[0]) and all(r in excluded for r in readers[n.output[0]])]


def quantized_layers(model_path: str | Path) -> list[str]:
    """Names of the layers whose Gemm reads int8 (a DequantizeLinear feeds its weight); a low-rank
    pair counts once, by its layer name."""
    import onnx
    m = onnx.load(str(model_path))
    dq_outputs = {o for n in m.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sorted({n.name.rsplit("/", 1)[0].removesuffix(".in1").removesuffix(".down") for n in m.graph.node
                   if n.op_type == "Gemm" and any(i in dq_outputs for i in n.input[1:])})
