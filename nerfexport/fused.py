"""The fused int8 network: a bundle's whole int8 graph as one onnxruntime custom op.

onnxruntime runs an int8 bundle network (QDQ, uint8 activations, int8 weights) as one ``QGemm``
per layer with the encoding's ``Sin``/``Cos``, the skip and view concats, quantization and the
float heads in between. At a width of 128 one such ``QGemm`` alone reaches about 55% of an
AVX-512 VNNI CPU's int8 peak and the whole graph 30-40% (docs/speed.md). ``nerfexport._nerf_mlp``
(built from ``csrc/nerf_mlp.c`` when the package is installed) computes the same
network, with the same scales, zero points and roundings, in one pass per block of 64 rows that
stays in L1 between layers.

:func:`fuse` turns a bundle's int8 graph into a one-node graph of that op (domain
``nerfexport``, op ``NerfMLP`` or, for the density alone, ``NerfDensity``) whose last input is
the network's parameters packed the way the kernel reads them; the bundle itself is unchanged.
:func:`unavailable` says in one sentence why the fused op cannot run here (library not built,
CPU without AVX-512 VNNI), or ``None``. The render path imports neither torch nor this module's
callers' training code: only numpy and onnx.
"""

from __future__ import annotations

import platform
import re
from importlib import util as _importlib_util
from pathlib import Path

import numpy as np

DOMAIN = "nerfexport"
MAGIC = 0x3146584E   # "NXF1"
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni")


class NotFusable(ValueError):
    """The graph is not one the fused kernel computes (not int8 U8S8, other widths or layout)."""


def library_path() -> Path | None:
    """The built custom-op library (``nerfexport/_nerf_mlp*.so``), or ``None``."""
    spec = _importlib_util.find_spec("nerfexport._nerf_mlp")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def unavailable() -> str | None:
    """Why the fused op cannot run on this machine (one sentence), or ``None`` when it can."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"the fused int8 kernel is built for Linux x86_64, not {platform.system()} {platform.machine()}"
    missing = [f for f in CPU_FLAGS if f not in _cpu_flags()]
    if missing:
        return f"this CPU lacks {', '.join(missing)}, which the fused int8 kernel needs"
    if library_path() is None:
        return ("the fused int8 kernel was not built (nerfexport/_nerf_mlp: reinstall with a C compiler, "
                "`pip install -e .`)")
    return None


def _qparams(t: dict, name: str) -> tuple[float, int]:
    s, z = t.get(name + "_scale"), t.get(name + "_zero_point")
    if s is None or z is None or s.size != 1 or z.size != 1:
        raise NotFusable(f"no per-tensor quantization for {name}")
    if z.dtype != np.uint8:
        raise NotFusable(f"{name} is not quantized to uint8 (the fused kernel runs U8S8 graphs)")
    return float(s.reshape(())), int(z.reshape(()))


def _check_node(nodes: dict, out: str, op: str, inputs: list[str]) -> None:
    n = nodes.get(out)
    if n is None or n.op_type != op or list(n.input) != inputs:
        raise NotFusable(f"the graph's {out} is not the {op}({', '.join(inputs)}) nerfexport exports")


def _freqs(nodes: dict, t: dict, prefix: str, raw: str) -> np.ndarray:
    """The encoding's frequency matrix ``F (3, 3L)`` (``scaled = x @ F``, what the kernel reads) from
    the graph's ``Tile(x, [1, L]) * f`` (``f (3L,)``): column ``j`` is ``f[j] x[j % 3]``."""
    _check_node(nodes, f"{prefix}/tile", "Tile", [raw, f"{prefix}/repeats"])
    _check_node(nodes, f"{prefix}/scaled", "Mul", [f"{prefix}/tile", f"{prefix}/freqs"])
    f = t[f"{prefix}/freqs"].astype(np.float32).reshape(-1)
    if f.size % 3 or t[f"{prefix}/repeats"].reshape(-1).tolist() != [1, f.size // 3]:
        raise NotFusable(f"the graph's {prefix} frequencies are not (3L,) with L repeats")
    F = np.zeros((3, f.size), np.float32)
    F[np.arange(f.size) % 3, np.arange(f.size)] = f
    return F


def pack(model, density_only: bool = False) -> bytes:
    """The parameters of an int8 bundle graph (an ``onnx.ModelProto`` as
    :func:`nerfexport.quantize.quantize_int8` writes it for the CPU) in the layout
    ``nerf_mlp.c`` reads. Raises :class:`NotFusable` for any other graph."""
    try:
        return _pack(model, density_only)
    except KeyError as e:   # a tensor the form above has and this graph lacks
        raise NotFusable(f"the graph has no {e.args[0]} (not the int8 form nerfexport exports)") from None


def _pack(model, density_only: bool) -> bytes:
    from onnx import numpy_helper
    g = model.graph
    t = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    nodes = {o: n for n in g.node for o in n.output}
    gemms = {n.name.rsplit("/", 1)[0] for n in g.node if n.op_type == "Gemm"}
    if not any(k.endswith(".weight_quantized") for k in t):
        raise NotFusable("the graph has no int8 layers (an fp32 or fp16 bundle)")
    n_trunk = sum(1 for k in gemms if re.fullmatch(r"pts\.\d+", k))
    names = [f"pts.{i}" for i in range(n_trunk)]
    if "alpha" not in gemms or "feature" not in gemms:
        raise NotFusable("a view-independent network (no density head and feature layer); the fused kernel "
                         "runs networks with view directions")
    if not density_only:
        if "views.1" in gemms:
            raise NotFusable("more than one view-direction layer; the fused kernel takes one")
        names += ["feature", "views.0"]
    for name in names:
        if name + ".weight_quantized" not in t:
            raise NotFusable(f"layer {name} is float (kept float at export); the fused kernel runs all-int8 networks")
    # the encodings, as onnx_export writes them, quantized as one uint8 tensor each
    _check_node(nodes, "encoding/out", "Concat", ["points", "encoding/sin", "encoding/cos"])
    F = _freqs(nodes, t, "encoding", "points")
    s_enc, z_enc = _qparams(t, "encoding/out")
    skips = [k for k in range(n_trunk) if f"skip.{k}" in nodes]
    if len(skips) > 1:
        raise NotFusable("the fused kernel takes one skip connection")
    skip = skips[0] if skips else -1
    if skip >= 0:
        _check_node(nodes, f"skip.{skip}", "Concat",
                    ["encoding/out_DequantizeLinear_Output", f"pts.{skip}/Relu_DequantizeLinear_Output"])
        s_skip, z_skip = _qparams(t, f"skip.{skip}")
    else:
        s_skip, z_skip = 1.0, 0
    if density_only:
        Fv, s_venc, z_venc, s_cat, z_cat = np.zeros((3, 0), np.float32), 1.0, 0, 1.0, 0
    else:
        _check_node(nodes, "view_encoding/out", "Concat", ["viewdirs", "view_encoding/sin", "view_encoding/cos"])
        Fv = _freqs(nodes, t, "view_encoding", "viewdirs")
        _check_node(nodes, "views.concat", "Concat",
                    ["feature/Gemm_DequantizeLinear_Output", "view_encoding/out_DequantizeLinear_Output"])
        s_venc, z_venc = _qparams(t, "view_encoding/out")
        s_cat, z_cat = _qparams(t, "views.concat")
    if F.shape[0] != 3 or Fv.shape[0] != 3:
        raise NotFusable("the encodings' frequencies are not (3, L)")
    if F.shape[1] > 32 or Fv.shape[1] > 32:
        raise NotFusable("more than 10 encoding frequencies (multires); the fused kernel takes up to 10")
    if n_trunk > 30 or n_trunk < 1:
        raise NotFusable(f"{n_trunk} trunk layers; the fused kernel takes 1 to 30")
    if skip >= n_trunk - 1:
        raise NotFusable("a skip connection after the last trunk layer")
    ne, nve = 3 + 2 * F.shape[1], 3 + 2 * Fv.shape[1]   # the encodings: [x, sin(x F), cos(x F)]

    layers = []
    s_in, z_in = s_enc, z_enc
    for i, name in enumerate(names):
        W = t[name + ".weight_quantized"]
        if W.dtype != np.int8 or W.ndim != 2:
            raise NotFusable(f"{name}'s weights are not int8")
        zw = t.get(name + ".weight_zero_point")
        if zw is None or zw.any():
            raise NotFusable(f"{name}'s weights are not symmetric")
        N, K = W.shape
        # the input width each layer must have: the encoding, the skip concat, the trunk, the views concat
        k_in = (ne if i == 0 else ne + layers[skip][1] if i == skip + 1 and skip >= 0
                else layers[-1][1] + nve if name == "views.0" else layers[-1][1])
        if K != k_in:
            raise NotFusable(f"{name} reads {K} inputs where the fused kernel computes {k_in}")
        ws = t[name + ".weight_scale"].astype(np.float32).reshape(-1)
        if ws.size not in (1, N):
            raise NotFusable(f"{name}'s weight scales are neither per-tensor nor per-channel")
        sw = np.broadcast_to(ws, (N,))
        b = t.get(name + ".bias_quantized")
        if b is None or b.dtype != np.int32 or b.shape != (N,) or t[name + ".bias_quantized_zero_point"].any():
            raise NotFusable(f"{name}'s bias is not int32")
        if skip >= 0 and name == f"pts.{skip + 1}":
            s_in, z_in = s_skip, z_skip
        elif name == "views.0":
            s_in, z_in = s_cat, z_cat
        if not np.allclose(t[name + ".bias_quantized_scale"], np.float32(s_in) * sw, rtol=1e-5):
            raise NotFusable(f"{name}'s bias scale is not its input's times its weights'")
        if name == "feature":
            s_out, z_out = _qparams(t, "feature/Gemm")
        else:
            s_out, z_out = _qparams(t, f"{name}/Relu")
            if z_out != 0:
                raise NotFusable(f"{name}'s ReLU output has zero point {z_out}, not 0")
        if N % 16 or N > 1024:
            raise NotFusable(f"{name} is {N} wide; the fused kernel takes multiples of 16 up to 1024")
        Kp = (K + 3) // 4 * 4
        Wp = np.zeros((N, Kp), np.int8)
        Wp[:, :K] = W
        packed = np.ascontiguousarray(Wp.T.reshape(Kp // 4, 4, N).transpose(0, 2, 1))
        corr = (b.astype(np.int64) - z_in * W.astype(np.int64).sum(1)).astype(np.int32)
        mult = (np.float32(s_in) * sw / np.float32(s_out)).astype(np.float32)
        # the layer whose output a concat reads in its own quantization is requantized into it
        r2, z2 = 0.0, 0
        if i == skip and (s_out, z_out) != (s_skip, z_skip):
            r2, z2 = s_out / s_skip, z_skip
        elif name == "feature" and (s_out, z_out) != (s_cat, z_cat):
            r2, z2 = s_out / s_cat, z_cat
        layers.append((Kp, N, packed, corr, mult, z_out, z2, r2))
        s_in, z_in = s_out, z_out
    s_h = _qparams(t, f"pts.{n_trunk - 1}/Relu")[0]
    w_alpha = t["alpha.weight"].astype(np.float32).reshape(-1)
    b_alpha = float(t["alpha.bias"].reshape(-1)[0])
    if density_only:   # the trunk alone: no feature and view layers, no colour head
        w_rgb, b_rgb, s_v, nv = np.zeros((3, 0), np.float32), np.zeros(3, np.float32), 1.0, 0
    else:
        s_v = _qparams(t, "views.0/Relu")[0]
        w_rgb, b_rgb = t["rgb.weight"].astype(np.float32), t["rgb.bias"].astype(np.float32).reshape(-1)
        nv = w_rgb.shape[1]
        if w_rgb.shape[0] != 3 or b_rgb.shape != (3,) or nv != layers[-1][1]:
            raise NotFusable("the rgb head is not 3 wide on the view layer")
    if w_alpha.shape != (layers[n_trunk - 1][1],):
        raise NotFusable("the density head does not read the last trunk layer")

    # header, then the arrays at 64-byte offsets
    nl = len(layers)
    head = 4 * (16 + 8 + 8 * nl)
    blobs: list[tuple[int, bytes]] = []
    cursor = (head + 63) // 64 * 64

    def place(a: np.ndarray) -> int:
        nonlocal cursor
        off = cursor
        data = np.ascontiguousarray(a).tobytes()
        blobs.append((off, data))
        cursor = (off + len(data) + 63) // 64 * 64
        return off

    ints = np.zeros(16, np.int32)
    ints[:11] = [MAGIC, nl, n_trunk, skip, F.shape[1], Fv.shape[1], nv, z_enc, z_venc, z_skip, z_cat]
    ints[11] = place(F)
    ints[12] = place(Fv) if Fv.size else place(np.zeros(1, np.float32))
    ints[13] = place(w_alpha)
    ints[14] = place(w_rgb)
    ints[15] = place(b_rgb)
    floats = np.array([s_enc, s_venc, s_enc / s_skip, s_venc / s_cat, b_alpha, s_h, s_v, 0.0], np.float32)
    recs = np.zeros((nl, 8), np.int32)
    for li, (kp, n, packed, corr, mult, z_out, z2, r2) in enumerate(layers):
        recs[li, :7] = [kp, n, place(packed), place(corr), place(mult), z_out, z2]
        recs[li, 7] = np.array([r2], np.float32).view(np.int32)[0]
    out = bytearray(cursor)
    out[:head] = ints.tobytes() + floats.tobytes() + recs.tobytes()
    for off, data in blobs:
        out[off:off + len(data)] = data
    return bytes(out)


def _kernel_accepts(params: np.ndarray, colour: bool) -> bool:
    """The built kernel's own check of a params tensor (its parser, on no rows)."""
    import ctypes
    fn = ctypes.CDLL(str(library_path())).nerfexport_nerf_mlp
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_void_p, ctypes.c_void_p]
    one = np.zeros(3, np.float32)
    p = np.ascontiguousarray(params)
    rgb = one.ctypes.data if colour else None
    return fn(p.ctypes.data, p.size, one.ctypes.data, one.ctypes.data, 0, one.ctypes.data, rgb) == 0


def fuse(model, density_only: bool = False):
    """A one-node copy of an int8 bundle graph: ``NerfMLP(points, viewdirs, params) -> rgb,
    density`` or, with ``density_only``, ``NerfDensity(points, params) -> density``."""
    import onnx
    from onnx import TensorProto, helper
    params = np.frombuffer(pack(model, density_only), np.uint8)
    if unavailable() is None and not _kernel_accepts(params, colour=not density_only):
        raise NotFusable("the packed parameters are not ones the built kernel reads (a nerfexport bug)")
    init = onnx.numpy_helper.from_array(params, "nerfexport/params")
    f = TensorProto.FLOAT
    if density_only:
        node = helper.make_node("NerfDensity", ["points", "nerfexport/params"], ["density"], domain=DOMAIN)
        inputs = [helper.make_tensor_value_info("points", f, ["N", 3])]
        outputs = [helper.make_tensor_value_info("density", f, ["N", 1])]
    else:
        node = helper.make_node("NerfMLP", ["points", "viewdirs", "nerfexport/params"], ["rgb", "density"],
                                domain=DOMAIN)
        inputs = [helper.make_tensor_value_info(k, f, ["N", 3]) for k in ("points", "viewdirs")]
        outputs = [helper.make_tensor_value_info("rgb", f, ["N", 3]),
                   helper.make_tensor_value_info("density", f, ["N", 1])]
    graph = helper.make_graph([node], "nerfexport-fused", inputs, outputs, [init])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    m.ir_version = 8
    return m
