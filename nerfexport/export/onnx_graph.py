"""ONNX graphs of the NeRF networks, built node by node from the weights.

Each network becomes one graph: inputs ``points (N,3)`` and ``viewdirs (N,3)`` (raw, float32),
outputs ``rgb (N,3)`` (after the sigmoid) and ``density (N,1)`` (after the ReLU), with a
dynamic batch axis ``N``. The positional encoding is inside the graph::

    xf  = Tile(x, [1, L]) * f                    f = [2^0, 2^0, 2^0, 2^1, ...]  (3L,), fp32
    enc = Concat(x, Sin(xf), Cos(xf))            (xf = x @ [2^0 I, 2^1 I, ...], exact in fp32)

The frequency scaling is an elementwise ``Mul`` of the raw fp32 input by powers of two (exact),
not a ``MatMul``: a GPU provider runs an fp32 ``MatMul`` on TF32 tensor cores (10 mantissa
bits), which would round ``2^9 x`` before the sine. In an fp16 graph the scaling, ``Sin`` and
``Cos`` stay fp32 and only their results (and ``x``) are cast to fp16: an fp16 ``2^k x`` is off
by up to a quarter of a radian at ``k = 9``.

which orders the encoding ``[x, all sines, all cosines]`` rather than nerf-pytorch's
interleaved order; the columns of the layers that read the encoding are permuted to match, so
the graph computes the same function as the torch module.

The graph is built with ``onnx.helper`` rather than traced: it needs no exporter package,
every node has a stable name (``pts.3/Gemm``), which the int8 stage uses to keep chosen
layers in float, and it depends only on the weights, not on the torch version.

Each layer is one ``Gemm`` (weight in torch's ``(out, in)`` layout with ``transB=1``, bias
included) followed by its ``Relu`` (a low-rank layer: ``{name}.down/Gemm`` without bias, then
``{name}/Gemm``): the shape onnxruntime's int8 stage turns into one fused
integer ``QGemm`` per layer (uint8 in, uint8 out, the ReLU folded into the output range), with
no float round trip between layers.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def encoding_permutation(num_freqs: int, in_dim: int = 3) -> np.ndarray:
    """``perm`` with ``graph_encoding[:, i] == torch_encoding[:, perm[i]]``."""
    perm = list(range(in_dim))
    for s in (0, 1):  # all sines, then all cosines
        for k in range(num_freqs):
            for d in range(in_dim):
                perm.append(in_dim + k * 2 * in_dim + s * in_dim + d)
    return np.array(perm, dtype=np.int64)


class _Builder:
    def __init__(self, dtype: np.dtype = np.float32) -> None:
        self.nodes, self.inits = [], []
        self.dtype = np.dtype(dtype)

    def const(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr.astype(self.dtype)), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        out = name
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def encoding(self, x: str, num_freqs: int, prefix: str) -> str:
        """``[x, sin(xf), cos(xf)]`` of the raw fp32 graph input ``x`` (N, 3), ``xf`` computed in
        fp32 (``{prefix}/tile``, ``{prefix}/scaled``, ``{prefix}/sin``, ``{prefix}/cos``); cast to
        the graph's dtype only after ``Sin``/``Cos`` (``{prefix}/sin/fp16``, ``{prefix}/cos/fp16``)."""
        reps = numpy_helper.from_array(np.array([1, num_freqs], np.int64), f"{prefix}/repeats")
        freqs = np.repeat(2.0 ** np.arange(num_freqs), 3).astype(np.float32)   # column 3k + d: 2^k x_d
        self.inits += [reps, numpy_helper.from_array(freqs, f"{prefix}/freqs")]
        tiled = self.node("Tile", [x, f"{prefix}/repeats"], f"{prefix}/tile")
        xf = self.node("Mul", [tiled, f"{prefix}/freqs"], f"{prefix}/scaled")
        s = self.node("Sin", [xf], f"{prefix}/sin")
        c = self.node("Cos", [xf], f"{prefix}/cos")
        if self.dtype != np.float32:
            to = helper.np_dtype_to_tensor_dtype(self.dtype)
            x = self.node("Cast", [x], f"{x}/fp16", to=to)
            s = self.node("Cast", [s], f"{prefix}/sin/fp16", to=to)
            c = self.node("Cast", [c], f"{prefix}/cos/fp16", to=to)
        return self.node("Concat", [x, s, c], f"{prefix}/out", axis=1)

    def linear(self, x: str, w: np.ndarray, b: np.ndarray, name: str, relu: bool) -> str:
        """``x @ w.T + b`` (torch layout ``w (out, in)``), optionally followed by ReLU."""
        y = self.node("Gemm", [x, self.const(f"{name}.weight", w), self.const(f"{name}.bias", b)],
                      f"{name}/Gemm", transB=1)
        return self.node("Relu", [y], f"{name}/Relu") if relu else y

    def layer(self, x: str, state: dict[str, np.ndarray], path: str, name: str, relu: bool,
              columns=lambda w: w) -> str:
        """The Linear at ``path`` of ``state``: one ``Gemm`` (``{name}/Gemm``), or for a low-rank
        pair (``{path}.down.weight (r, in)``, ``{path}.up.weight (out, r)``) two: ``{name}.down/Gemm``
        without bias, then ``{name}/Gemm`` with it. ``columns`` reorders the input columns."""
        if f"{path}.down.weight" in state:
            t = self.node("Gemm", [x, self.const(f"{name}.down.weight", columns(state[f"{path}.down.weight"]))],
                          f"{name}.down/Gemm", transB=1)
            return self.linear(t, state[f"{path}.up.weight"], state[f"{path}.up.bias"], name, relu)
        return self.linear(x, columns(state[f"{path}.weight"]), state[f"{path}.bias"], name, relu)


    def split_layer(self, first: tuple[str, int], second: tuple[str, int], state: dict[str, np.ndarray], path: str,
                    name: str, relu: bool, columns=lambda w: w) -> str:
        """The Linear at ``path`` reading the concatenation ``[first, second]`` (each ``(tensor,
        width)``) without concatenating them: ``{base}/Gemm`` (with the bias) on the first part's
        columns of the weight plus ``{base}.in1/Gemm`` on the second's, summed by ``{base}/Add``;
        ``base`` = ``name`` or, for a low-rank pair, ``{name}.down`` (then ``{name}/Gemm`` on the
        sum). Each part then has its own int8 scale: a concat quantized as one tensor takes the
        scale of its widest part (``[feature, view encoding]`` of the lego teacher: a step of 0.70
        for sines and cosines in [-1, 1])."""
        low = f"{path}.down.weight" in state
        w = columns(state[f"{path}.down.weight"] if low else state[f"{path}.weight"])
        (x1, n1), (x2, n2) = first, second
        if n1 + n2 != w.shape[1]:
            raise ValueError(f"{path}: the parts are {n1 + n2} wide, the layer reads {w.shape[1]}")
        base = f"{name}.down" if low else name
        ins = [x1, self.const(f"{base}.weight", w[:, :n1])]
        if not low:
            ins.append(self.const(f"{name}.bias", state[f"{path}.bias"]))
        y1 = self.node("Gemm", ins, f"{base}/Gemm", transB=1)
        y2 = self.node("Gemm", [x2, self.const(f"{base}.in1.weight", w[:, n1:])], f"{base}.in1/Gemm", transB=1)
        y = self.node("Add", [y1, y2], f"{base}/Add")
        if low:
            return self.linear(y, state[f"{path}.up.weight"], state[f"{path}.up.bias"], name, relu)
        return self.node("Relu", [y], f"{name}/Relu") if relu else y


def mlp_to_onnx(state: dict[str, np.ndarray], cfg, name: str = "nerf", metadata: dict[str, str] | None = None,
                dtype: str = "fp32") -> onnx.ModelProto:
    """The ONNX model of one network.

    ``state``: the network's ``state_dict`` as numpy arrays; ``cfg``: its :class:`MLPConfig`;
    ``dtype``: ``fp32`` or ``fp16`` (fp16 weights and compute; inputs and outputs stay fp32).
    """
    if dtype not in ("fp32", "fp16"):
        raise ValueError(f"dtype must be fp32 or fp16, not {dtype!r}")
    ft = np.float16 if dtype == "fp16" else np.float32
    b = _Builder(ft)
    x_in, v_in = "points", "viewdirs"   # raw fp32: the encodings cast after Sin/Cos in an fp16 graph
    perm = encoding_permutation(cfg.multires)
    enc = b.encoding(x_in, cfg.multires, "encoding")
    n_enc = len(perm)
    h = enc
    for i in range(len(cfg.widths)):
        if i == 0:
            h = b.layer(h, state, f"pts_linears.{i}", f"pts.{i}", True, lambda w: w[:, perm])
        elif (i - 1) in cfg.skips:   # reads [encoding, hidden]: one Gemm a part, summed
            cols = lambda w: np.concatenate((w[:, :n_enc][:, perm], w[:, n_enc:]), 1)
            h = b.split_layer((enc, n_enc), (h, int(cfg.widths[i - 1])), state, f"pts_linears.{i}", f"pts.{i}",
                              True, cols)
        else:
            h = b.layer(h, state, f"pts_linears.{i}", f"pts.{i}", True)
    if cfg.use_viewdirs:
        sigma = b.linear(h, state["alpha_linear.weight"], state["alpha_linear.bias"], "alpha", relu=False)
        feat = b.layer(h, state, "feature_linear", "feature", False)
        vperm = encoding_permutation(cfg.multires_views)
        venc = b.encoding(v_in, cfg.multires_views, "view_encoding")
        fw = cfg.feature_width
        g = None if cfg.view_widths else b.node("Concat", [feat, venc], "views.concat", axis=1)
        for i in range(len(cfg.view_widths)):
            if i == 0:   # reads [feature, view encoding]: one Gemm a part, summed
                cols = lambda w: np.concatenate((w[:, :fw], w[:, fw:][:, vperm]), 1)
                g = b.split_layer((feat, fw), (venc, len(vperm)), state, f"views_linears.{i}", f"views.{i}", True,
                                  cols)
            else:
                g = b.layer(g, state, f"views_linears.{i}", f"views.{i}", True)
        rgb_raw = b.linear(g, state["rgb_linear.weight"], state["rgb_linear.bias"], "rgb", relu=False)
    else:
        out = b.linear(h, state["output_linear.weight"], state["output_linear.bias"], "output", relu=False)
        ints = lambda n, v: b.inits.append(numpy_helper.from_array(np.array(v, np.int64), n)) or n
        ints("slice.axes", [1]), ints("slice.0", [0]), ints("slice.3", [3]), ints("slice.4", [4])
        rgb_raw = b.node("Slice", [out, "slice.0", "slice.3", "slice.axes"], "rgb/slice")
        sigma = b.node("Slice", [out, "slice.3", "slice.4", "slice.axes"], "alpha/slice")
    rgb = b.node("Sigmoid", [rgb_raw], "rgb/Sigmoid")
    dens = b.node("Relu", [sigma], "density/Relu")
    if dtype == "fp16":
        rgb = b.node("Cast", [rgb], "rgb/fp32", to=TensorProto.FLOAT)
        dens = b.node("Cast", [dens], "density/fp32", to=TensorProto.FLOAT)
    b.nodes.append(helper.make_node("Identity", [rgb], ["rgb"], name="rgb/out"))
    b.nodes.append(helper.make_node("Identity", [dens], ["density"], name="density/out"))
    inputs = [helper.make_tensor_value_info("points", TensorProto.FLOAT, ["N", 3]),
              helper.make_tensor_value_info("viewdirs", TensorProto.FLOAT, ["N", 3])]
    outputs = [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["N", 3]),
               helper.make_tensor_value_info("density", TensorProto.FLOAT, ["N", 1])]
    graph = helper.make_graph(b.nodes, name, inputs, outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nerfexport")
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=str(v)))
    onnx.checker.check_model(model, full_check=True)
    return model
