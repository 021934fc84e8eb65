"""``nerfexport doctor``: what this machine can run, in one table to paste into a bug report.

:func:`diagnose` returns rows ``(section, item, status, detail)``:

* ``runtime``: every shipped runtime (``runtimes/*.toml``), available or not and why (package,
  provider, GPU, driver), and for each available one which provider (or device) a session
  really got on a tiny network built here with ``onnx.helper`` (onnxruntime lists providers
  that then fail to start and fall back to the CPU);
* ``version``: Python, nerfexport, numpy, onnx, onnxruntime and its providers, TensorRT,
  cuda-python, torch and its CUDA, the CUDA driver;
* ``gpu``: the CUDA devices the driver sees;
* ``cpu``: the model and the features the CPU paths use (AVX2, AVX-512 F / VNNI / BF16, AMX);
* ``int8``: whether this CPU's int8 kernels (onnxruntime, all graph optimizations) compute
  what the QDQ graph says, against the float simulation of the same graph (no optimizations),
  for each int8 weight format the export writes (:func:`int8_rows`,
  :mod:`nerfexport.deploy.int8check`), on a small NeRF-shaped network built here; with a
  bundle (``nerfexport doctor --bundle B``), on B's own int8 networks and points of real rays.

Nothing here raises: what cannot be found is a row saying so. :func:`table` formats the rows.

``doctor`` is a runtime question, but it stays on the bench floor: besides the deploy side's
availability checks (:func:`nerfexport.deploy.runtime.check_available`) and machine description
(:mod:`nerfexport.deploy.machine`) it builds a TensorRT engine and int8 graphs with the export
stage (:func:`nerfexport.export.tensorrt.build_engine`, :func:`nerfexport.export.quantize.quantize_int8`)
and asks torch about CUDA, which deploy/ may not import.
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from nerfexport.deploy.machine import cpu

CPU_FEATURES = (("avx2", ("avx2",)), ("avx512f", ("avx512f",)), ("avx512_vnni", ("avx512_vnni",)),
                ("avx512_bf16", ("avx512_bf16",)), ("amx", ("amx_tile", "amx_bf16", "amx_int8")))


@dataclass
class Row:
    section: str
    item: str
    status: str
    detail: str = ""


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def _dist_version(*names: str) -> str | None:
    for n in names:
        try:
            return f"{n} {metadata.version(n)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def cuda_driver() -> tuple[str | None, list[str]]:
    """(driver's CUDA version like "12.4", device names) through libcuda; (None, []) without one."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None, []
    if lib.cuInit(0) != 0:
        return None, []
    v = ctypes.c_int(0)
    ver = f"{v.value // 1000}.{v.value % 1000 // 10}" if lib.cuDriverGetVersion(ctypes.byref(v)) == 0 else None
    n = ctypes.c_int(0)
    names = []
    if lib.cuDeviceGetCount(ctypes.byref(n)) == 0:
        for i in range(n.value):
            dev, buf = ctypes.c_int(0), ctypes.create_string_buffer(256)
            if lib.cuDeviceGet(ctypes.byref(dev), i) == 0 and lib.cuDeviceGetName(buf, 256, dev) == 0:
                names.append(buf.value.decode(errors="replace"))
            else:
                names.append(f"device {i}")
    return ver, names


def _versions() -> list[Row]:
    from nerfexport import __version__
    rows = [Row("version", "python", sys.version.split()[0], sys.executable),
            Row("version", "nerfexport", __version__, str(Path(__file__).resolve().parents[1])),
            Row("version", "numpy", np.__version__)]
    try:
        import onnx
        rows.append(Row("version", "onnx", onnx.__version__))
    except Exception as e:
        rows.append(Row("version", "onnx", "missing", _one_line(e)))
    try:
        import onnxruntime as ort
        dist = _dist_version("onnxruntime-gpu", "onnxruntime") or "?"
        rows.append(Row("version", "onnxruntime", ort.__version__, f"{dist}; device {ort.get_device()}"))
        rows.append(Row("version", "onnxruntime providers", str(len(ort.get_available_providers())),
                        ", ".join(ort.get_available_providers())))
    except Exception as e:
        rows.append(Row("version", "onnxruntime", "missing", _one_line(e)))
    try:
        import tensorrt
        rows.append(Row("version", "tensorrt", tensorrt.__version__, _dist_version("tensorrt-cu12", "tensorrt-cu13",
                                                                                   "tensorrt") or ""))
    except Exception as e:
        rows.append(Row("version", "tensorrt", "missing", _one_line(e)))
    cp = _dist_version("cuda-python", "cuda-bindings")
    rows.append(Row("version", "cuda-python", cp.split()[-1] if cp else "missing", cp or "pip install 'nerfexport[tensorrt]'"))
    try:
        import torch
        cuda = torch.version.cuda or "none (CPU build)"
        seen = torch.cuda.is_available()
        rows.append(Row("version", "torch", torch.__version__,
                        f"built for CUDA {cuda}; " + (f"sees {torch.cuda.device_count()} CUDA device(s)" if seen
                                                       else "sees no CUDA device")))
    except Exception as e:
        rows.append(Row("version", "torch", "missing", _one_line(e)))
    ver, names = cuda_driver()
    rows.append(Row("version", "CUDA driver", ver or "none", "libcuda.so.1" if ver else "no libcuda.so.1 or no GPU"))
    return rows


def _gpus() -> list[Row]:
    _, names = cuda_driver()
    if not names:
        return [Row("gpu", "CUDA devices", "0", "the driver sees no CUDA device")]
    return [Row("gpu", f"cuda:{i}", "present", n) for i, n in enumerate(names)]


def _cpu() -> list[Row]:
    c = cpu()
    model, flags = c.model, c.flags or frozenset()
    rows = [Row("cpu", "model", f"{os.cpu_count()} cores", model)]
    for name, need in CPU_FEATURES:
        have = [f for f in need if f in flags]
        rows.append(Row("cpu", name, "yes" if have else "no", " ".join(have)))
    return rows


def tiny_model():
    """A two-input network with the bundles' interface (points, viewdirs -> rgb, density), in memory."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((3, 8)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 1)).astype(np.float32), "w2")
    w3 = numpy_helper.from_array(rng.standard_normal((3, 3)).astype(np.float32), "w3")
    nodes = [helper.make_node("MatMul", ["points", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["hr"]),
             helper.make_node("MatMul", ["hr", "w2"], ["d"]), helper.make_node("Relu", ["d"], ["density"]),
             helper.make_node("MatMul", ["viewdirs", "w3"], ["c"]), helper.make_node("Sigmoid", ["c"], ["rgb"])]
    io = lambda n, w: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", w])
    g = helper.make_graph(nodes, "nerfexport-doctor", [io("points", 3), io("viewdirs", 3)],
                          [io("rgb", 3), io("density", 1)], [w1, w2, w3])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="nerfexport doctor")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _probe(spec, tmp: Path) -> tuple[str, str]:
    """(status, detail) of one available runtime running the tiny network."""
    pts = np.random.default_rng(1).uniform(-1, 1, (16, 3)).astype(np.float32)
    dirs = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    if spec.kind == "onnxruntime":
        import onnx
        from nerfexport.deploy.ort_network import OrtNetwork, check_session_provider
        path = tmp / "tiny.onnx"
        onnx.save(tiny_model(), str(path))
        opts = {p: dict(o) for p, o in spec.provider_options.items()}
        for o in opts.values():
            if "trt_engine_cache_path" in o:
                o["trt_engine_cache_path"] = str(tmp / "trt-cache")
        if "CUDAExecutionProvider" in spec.providers:
            opts.setdefault("CUDAExecutionProvider", {}).setdefault("use_tf32", 0)
        net = OrtNetwork(path, spec.providers, spec.threads, spec.graph_optimization, opts)   # checks the provider
        rgb, dens = net(pts, dirs)
        check_session_provider(net.session, spec.providers[0])
        ok = rgb.shape == (16, 3) and dens.shape == (16, 1) and np.isfinite(rgb).all()
        return ("ran" if ok else "wrong output"), f"session provider {net.providers[0]}"
    if spec.kind == "tensorrt":
        import onnx
        from nerfexport.deploy.trt_network import TensorRTNetwork
        from nerfexport.export.tensorrt import build_engine
        path = tmp / "tiny.onnx"
        onnx.save(tiny_model(), str(path))
        eng = tmp / "tiny.engine"
        eng.write_bytes(build_engine(path, "fp32"))
        net = TensorRTNetwork(eng, int(spec.device) if str(spec.device).isdigit() else 0)
        try:
            rgb, dens = net(pts, dirs)
        finally:
            net.close()
        return ("ran" if np.isfinite(dens).all() else "wrong output"), f"TensorRT engine on cuda:{net.device}"
    if spec.kind == "torch":
        import torch
        lin = torch.nn.Linear(3, 4)
        dev = "cuda" if str(spec.device) in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        x = torch.from_numpy(pts).to(dev)
        with torch.inference_mode(), torch.autocast(dev, dtype=torch.bfloat16, enabled=spec.precision == "bf16"):
            y = lin.to(dev)(x).float()
        name = torch.cuda.get_device_name(0) if dev == "cuda" else "CPU"
        return ("ran" if torch.isfinite(y).all() else "wrong output"), f"torch device {dev} ({name}), {spec.precision}"
    return "unknown kind", spec.kind


def _runtimes(probe: bool) -> list[Row]:
    from nerfexport.deploy.runtime import RuntimeSpecError, RuntimeUnavailable, check_available, load_runtime, shipped_runtimes
    rows = []
    with tempfile.TemporaryDirectory(prefix="nerfexport-doctor-") as tmp:
        for name in sorted(shipped_runtimes()):
            try:
                spec = load_runtime(name)
                check_available(spec)
            except (RuntimeUnavailable, RuntimeSpecError) as e:
                rows.append(Row("runtime", name, "unavailable", _one_line(e)))
                continue
            except Exception as e:
                rows.append(Row("runtime", name, "unavailable", f"{type(e).__name__}: {_one_line(e)}"))
                continue
            if not probe:
                rows.append(Row("runtime", name, "available", spec.description))
                continue
            try:
                status, detail = _probe(spec, Path(tmp))
                rows.append(Row("runtime", name, f"available, {status}", detail))
            except RuntimeUnavailable as e:
                rows.append(Row("runtime", name, "unavailable", _one_line(e)))
            except Exception as e:
                rows.append(Row("runtime", name, "failed", f"{type(e).__name__}: {_one_line(e)}"))
    return rows


# (label, target, weight bits): what ``export --int8`` writes for each target, and the 8-bit U8S8 of
# earlier versions (the format that saturates on x86 CPUs without VNNI)
INT8_FORMATS = (("U8S8 7-bit weights (--target cpu)", "cpu", None), ("S8S8 (--target tensorrt)", "tensorrt", None),
                ("U8S8 8-bit weights", "cpu", 8))


def probe_network(width: int = 64, depth: int = 4, seed: int = 0):
    """A small fp32 NeRF-shaped graph (the bundles' layout: encodings, skip, view branch) whose
    weights make 8-bit U8S8 saturate where the CPU sums pairs in 16 bits: a quarter of each
    layer's rows are positive and nearly constant, so their int8 weights sit near 127 and the
    uint8 activations they produce are large."""
    from types import SimpleNamespace
    from nerfexport.export.onnx_graph import mlp_to_onnx
    rng = np.random.default_rng(seed)
    cfg = SimpleNamespace(widths=[width] * depth, skips=[depth // 2 - 1], feature_width=width,
                          view_widths=[width // 2], multires=6, multires_views=2, use_viewdirs=True, ranks={})
    n_enc, n_view = 3 + 6 * cfg.multires, 3 + 6 * cfg.multires_views

    def layer(name, n_out, n_in, out_gain=1.0):
        w = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
        k = n_out // 4
        w[:k] = (1.0 + 0.05 * rng.standard_normal((k, n_in))) / n_in * 4
        st[f"{name}.weight"] = (w * out_gain).astype(np.float32)
        st[f"{name}.bias"] = (0.1 * rng.standard_normal(n_out)).astype(np.float32)

    st: dict = {}
    n_in = n_enc
    for i in range(depth):
        layer(f"pts_linears.{i}", width, n_in)
        n_in = width + (n_enc if i in cfg.skips else 0)
    layer("alpha_linear", 1, width, 10.0)
    layer("feature_linear", width, width)
    layer("views_linears.0", width // 2, width + n_view)
    layer("rgb_linear", 3, width // 2)
    return mlp_to_onnx(st, cfg, name="nerfexport_doctor_int8")


def probe_points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-1.0, 1.0, (n, 3)).astype(np.float32)
    dirs = rng.standard_normal((n, 3))
    return pts, (dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).astype(np.float32)


def int8_rows(bundle: str | Path | None = None, points: int = 4096) -> list[Row]:
    """``int8`` rows: this CPU's int8 kernels against the float simulation, for each format of
    :data:`INT8_FORMATS` on :func:`probe_network`, and for ``bundle``'s networks when given."""
    rows = []
    try:
        import onnx
        from nerfexport.deploy.int8check import network_gap
        from nerfexport.export.quantize import Int8Settings, quantize_int8
        fp32 = probe_network()
        cal, test = probe_points(2048, 1), probe_points(points, 2)
        with tempfile.TemporaryDirectory(prefix="nerfexport-doctor-int8-") as tmp:
            src = Path(tmp) / "fp32.onnx"
            onnx.save(fp32, str(src))
            for label, target, bits in INT8_FORMATS:
                q = Path(tmp) / f"{target}-{bits}.onnx"
                quantize_int8(src, q, *cal, Int8Settings(target=target, weight_bits=bits))
                gap = network_gap(q, *test, network="probe network")
                rows.append(Row("int8", f"kernels {label}", "agree" if gap.ok else "DIFFER", gap.describe()))
    except Exception as e:
        rows.append(Row("int8", "kernels", "not checked", f"{type(e).__name__}: {_one_line(e)}"))
    if bundle is not None:
        try:
            from nerfexport.deploy.int8check import check_bundle
            for gap in check_bundle(bundle):
                rows.append(Row("int8", f"bundle {gap.network}", "agree" if gap.ok else "DIFFER",
                                f"{bundle}: {gap.describe()}"))
        except Exception as e:
            rows.append(Row("int8", "bundle", "not checked", f"{type(e).__name__}: {_one_line(e)}"))
    return rows


def diagnose(probe: bool = True, bundle: str | Path | None = None, int8: bool = True) -> list[Row]:
    """Every row of the report (``probe``: run the tiny network on each available runtime;
    ``int8``: check this CPU's int8 kernels, and ``bundle``'s when given)."""
    return _runtimes(probe) + _versions() + _gpus() + _cpu() + (int8_rows(bundle) if int8 or bundle else [])


def table(rows: list[Row]) -> str:
    """The rows as one plain-text table (Markdown pipe syntax, readable as text too)."""
    head = ("section", "item", "status", "detail")
    cells = [head] + [(r.section, r.item, r.status, r.detail) for r in rows]
    w = [max(len(c[i]) for c in cells) for i in range(3)]
    line = lambda c: f"| {c[0]:<{w[0]}} | {c[1]:<{w[1]}} | {c[2]:<{w[2]}} | {c[3]} |"
    sep = f"|{'-' * (w[0] + 2)}|{'-' * (w[1] + 2)}|{'-' * (w[2] + 2)}|---|"
    return "\n".join([line(head), sep] + [line(c) for c in cells[1:]])
