"""The GPU paths, checked on the CPU by construction (issue 19): what the graphs, provider options,
engine builds and TensorRT calls would be on a GPU, with stand-ins for onnxruntime's GPU sessions,
TensorRT and cuda-python where the real ones are missing."""

import ctypes
import threading
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from conftest import tiny_config, write_blender
from nerfexport.deploy import networks, runtime
from nerfexport.deploy.bundle import open_bundle
from nerfexport.export.bundle_writer import ExportOptions, export_bundle
from nerfexport.model.mlp import NeRF
from nerfexport.export.onnx_graph import mlp_to_onnx
from nerfexport.export.quantize import Int8Settings, QuantizationError
from nerfexport.deploy.graph_edits import prune_outputs
from nerfexport.deploy.networks import make_networks
from nerfexport.deploy.ort_network import OrtNetwork, provider_options, trt_profile
from nerfexport.deploy.runtime import IncompatibleBundle, RuntimeUnavailable, load_runtime
from nerfexport.deploy.trt_network import TensorRTNetwork


def _export(d, name, precision="fp32", seed=0, target="cpu", calib=None, viewdirs=True):
    torch.manual_seed(seed)
    model = NeRF(tiny_config(width=32, viewdirs=viewdirs))
    export_bundle(model, d / name, ExportOptions(precision=precision, int8=Int8Settings(target=target)), calib=calib)
    return open_bundle(d / name)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """fp32 bundles of two scenes with the same architecture, an fp16 one, and int8 ones for each target."""
    from nerfexport.shrink.calibration import draw_samples
    from nerfexport.data.datasets import load_scene
    d = tmp_path_factory.mktemp("gpu-construction")
    torch.manual_seed(0)
    model = NeRF(tiny_config(width=32))
    cal = draw_samples(model, load_scene(write_blender(d / "scene")), n_rays=64)
    out = {"dir": d, "fp32": _export(d, "fp32"), "fp32-other": _export(d, "fp32-other", seed=1),
           "fp16": _export(d, "fp16", "fp16")}
    for target in ("cpu", "tensorrt"):
        export_bundle(model, d / f"int8-{target}", ExportOptions(precision="int8", int8=Int8Settings(target=target)),
                      calib=cal)
        out[f"int8-{target}"] = open_bundle(d / f"int8-{target}")
    return out


def _points(n, seed=0, scale=4.0):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-scale, scale, (n, 3)).astype(np.float32)
    d = rng.standard_normal((n, 3)).astype(np.float32)
    return pts, d / np.linalg.norm(d, axis=1, keepdims=True)


# 1. int8 for TensorRT keeps biases float: no INT32 DequantizeLinear

def _int32_dequantize(path):
    m = onnx.load(str(path))
    int32 = {t.name for t in m.graph.initializer if t.data_type == TensorProto.INT32}
    return [n.name for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int32]


def test_tensorrt_int8_graph_has_no_int32_dequantize_and_cpu_int8_keeps_int32_biases(bundles):
    from nerfexport.export.quantize import quantized_layers
    for which in ("coarse", "fine"):
        p = bundles["int8-tensorrt"].network_path(which)
        assert _int32_dequantize(p) == [] and "pts.1" in quantized_layers(p)
        m = onnx.load(str(p))
        assert not any(t.data_type == TensorProto.UINT8 for t in m.graph.initializer)   # S8S8
    # the CPU target is unchanged: int32 biases feed its integer QGemm kernels (and the fused kernel)
    assert _int32_dequantize(bundles["int8-cpu"].network_path("fine"))


# 2. U8S8 bundles are refused for TensorRT

def test_export_refuses_cpu_int8_for_tensorrt_in_one_line(tmp_path):
    from typer.testing import CliRunner
    from nerfexport.model.checkpoint import save_checkpoint
    from nerfexport.cli import app
    torch.manual_seed(0)
    ck = tmp_path / "model.pt"
    save_checkpoint(NeRF(tiny_config(width=16)), ck)
    res = CliRunner().invoke(app, ["export", str(ck), "--int8", "--target", "cpu", "--tensorrt", "-o", str(tmp_path / "b")])
    lines = [l for l in res.output.strip().splitlines() if l.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert "--target tensorrt" in lines[0] and "Traceback" not in res.output
    assert not (tmp_path / "b").exists()


def test_library_refuses_u8s8_for_tensorrt_before_looking_for_tensorrt(bundles):
    from nerfexport.export.tensorrt import build_engines, check_tensorrt
    with pytest.raises(QuantizationError, match="--target tensorrt"):
        check_tensorrt(Int8Settings(target="cpu"))
    with pytest.raises(QuantizationError, match="--target tensorrt"):
        build_engines(bundles["int8-cpu"].root)


@pytest.mark.parametrize("name", ["ort-trt", "tensorrt"])
def test_tensorrt_runtimes_refuse_a_u8s8_bundle_in_one_line(bundles, name):
    with pytest.raises(IncompatibleBundle, match="--target tensorrt") as e:
        make_networks(load_runtime(name), bundle=bundles["int8-cpu"])
    assert "\n" not in str(e.value)
    # an S8S8 bundle gets past this check (and here stops at the missing GPU packages)
    with pytest.raises(RuntimeUnavailable):
        make_networks(load_runtime(name), bundle=bundles["int8-tensorrt"])


# 3, 9. Native TensorRT with stand-ins for TensorRT and cuda-python

class FakeCudart:
    """Device and pinned memory as numpy buffers; every copy must go between the two."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self):
        self.device, self.pinned, self.streams, self.set_device = {}, {}, set(), []

    def _alloc(self, store, n):
        a = np.zeros(max(int(n), 1), np.uint8)
        store[a.ctypes.data] = a
        return 0, a.ctypes.data

    @staticmethod
    def _inside(store, ptr, n):
        return any(base <= ptr and ptr + n <= base + a.nbytes for base, a in store.items())

    def cudaSetDevice(self, d):
        self.set_device.append((threading.get_ident(), d))
        return (0,)

    def cudaStreamCreate(self):
        s = 100 + len(self.streams)
        self.streams.add(s)
        return 0, s

    def cudaStreamDestroy(self, s):
        self.streams.remove(s)
        return (0,)

    def cudaMalloc(self, n):
        return self._alloc(self.device, n)

    def cudaMallocHost(self, n):
        return self._alloc(self.pinned, n)

    def cudaFree(self, p):
        del self.device[p]
        return (0,)

    def cudaFreeHost(self, p):
        del self.pinned[p]
        return (0,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        host, dev = (src, dst) if kind == 1 else (dst, src)
        assert self._inside(self.pinned, host, n), "a copy from pageable host memory"
        assert self._inside(self.device, dev, n) and stream in self.streams
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaStreamSynchronize(self, s):
        return (0,)


def _view(ptr, rows, width):
    return np.ctypeslib.as_array((ctypes.c_float * (rows * width)).from_address(ptr)).reshape(rows, width)


class FakeContext:
    """Computes rgb = 2 points + viewdirs, density = sum(points), for the shapes set within the profile."""

    def __init__(self, engine):
        self.engine, self.shapes, self.addr, self.calls, self.busy = engine, {}, {}, [], False

    def set_input_shape(self, name, shape):
        ok = not self.engine.refuse and self.engine.min_rows <= shape[0] <= self.engine.max_rows
        if ok:
            self.shapes[name] = tuple(shape)
        return ok

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr
        return True

    def execute_async_v3(self, stream):
        assert not self.busy, "two threads inside one execution context"
        self.busy = True
        try:
            n = self.shapes["points"][0]
            assert set(self.shapes) == set(self.engine.inputs) and {s[0] for s in self.shapes.values()} == {n}
            self.calls.append(n)
            threading.Event().wait(0.001)   # gives a racing thread the chance to interleave
            pts = _view(self.addr["points"], n, 3)
            rgb = 2 * pts + (_view(self.addr["viewdirs"], n, 3) if "viewdirs" in self.engine.inputs else 0)
            _view(self.addr["rgb"], n, 3)[:] = rgb
            _view(self.addr["density"], n, 1)[:] = pts.sum(1, keepdims=True)
        finally:
            self.busy = False
        return True


class FakeEngine:
    def __init__(self, inputs, max_rows, min_rows=1, refuse=False):
        self.inputs, self.max_rows, self.min_rows, self.refuse = list(inputs), max_rows, min_rows, refuse
        self.widths = {**{n: 3 for n in inputs}, "rgb": 3, "density": 1}
        self.names = list(self.widths)
        self.num_io_tensors = len(self.names)
        self.contexts = []

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, n):
        return "in" if n in self.inputs else "out"

    def get_tensor_dtype(self, n):
        return "float"

    def get_tensor_shape(self, n):
        return (-1, self.widths[n])

    def get_tensor_profile_shape(self, n, profile):
        assert profile == 0 and n in self.inputs
        w = self.widths[n]
        return [(self.min_rows, w), (self.max_rows // 2, w), (self.max_rows, w)]

    def create_execution_context(self):
        self.contexts.append(FakeContext(self))
        return self.contexts[-1]


def fake_trt(engine):
    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            return engine
    return SimpleNamespace(Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
                           Runtime=Runtime, TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"),
                           DataType=SimpleNamespace(FLOAT="float"))


def _trt_net(tmp_path, inputs=("points", "viewdirs"), max_rows=1000, **kw):
    (tmp_path / "x.engine").write_bytes(b"engine")
    eng, cud = FakeEngine(inputs, max_rows, **kw), FakeCudart()
    return TensorRTNetwork(tmp_path / "x.engine", 0, trt=fake_trt(eng), cudart=cud), eng, cud


def test_tensorrt_network_slices_calls_within_the_engines_profile(tmp_path):
    net, eng, cud = _trt_net(tmp_path, max_rows=1000)
    assert (net.min_batch, net.max_batch) == (1, 1000)
    pts, d = _points(2500)
    rgb, dens = net(pts, d)
    assert eng.contexts[0].calls == [1000, 1000, 500]
    np.testing.assert_allclose(rgb, 2 * pts + d, rtol=1e-6)
    np.testing.assert_allclose(dens[:, 0], pts.sum(1), rtol=1e-5, atol=1e-5)
    empty = net(pts[:0], d[:0])
    assert empty[0].shape == (0, 3) and empty[1].shape == (0, 1) and eng.contexts[0].calls == [1000, 1000, 500]


def test_tensorrt_network_raises_when_the_context_refuses_a_shape(tmp_path):
    net, _, _ = _trt_net(tmp_path, refuse=True)
    with pytest.raises(RuntimeError, match="refused input shape"):
        net(*_points(10))
    net, _, _ = _trt_net(tmp_path, min_rows=8)   # a profile whose minimum the last slice misses
    with pytest.raises(RuntimeError, match="refused input shape"):
        net(*_points(1003))


def test_a_density_only_engine_is_fed_points_alone(tmp_path):
    net, eng, _ = _trt_net(tmp_path, inputs=("points",))
    pts, d = _points(50)
    rgb, dens = net(pts, d)
    assert net.inputs == ["points"] and set(eng.contexts[0].shapes) == {"points"}
    np.testing.assert_allclose(rgb, 2 * pts, rtol=1e-6)


def test_tensorrt_network_locks_sets_the_device_per_thread_and_frees_everything(tmp_path):
    net, eng, cud = _trt_net(tmp_path, max_rows=64)
    results, errors = {}, []

    def work(k):
        try:
            pts, d = _points(300, seed=k)
            for _ in range(3):
                rgb, dens = net(pts, d)
                assert np.allclose(rgb, 2 * pts + d, rtol=1e-6)
            results[k] = threading.get_ident()
        except Exception as e:   # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    assert set(results.values()) <= {tid for tid, dev in cud.set_device if dev == 0}
    assert cud.device and cud.pinned and cud.streams
    net.close()
    assert not cud.device and not cud.pinned and not cud.streams
    net.close()   # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        net(*_points(4))


# 3, 4, 6, 8. onnxruntime's TensorRT provider, with a stand-in session recording what it was given

class RecordingSession:
    made: list = []
    providers_override = None

    def __init__(self, source, so=None, providers=None, provider_options=None):
        m = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(source)
        self.input_names = [i.name for i in m.graph.input]
        self.providers, self.options, self.calls = list(providers), provider_options, []
        RecordingSession.made.append(self)

    def get_providers(self):
        return list(self.providers_override or self.providers)

    def get_inputs(self):
        return [SimpleNamespace(name=n) for n in self.input_names]

    def run(self, names, feeds):
        rows = {v.shape[0] for v in feeds.values()}
        assert set(feeds) == set(self.input_names) and len(rows) == 1
        self.calls.append(rows.pop())
        return [np.zeros((self.calls[-1], 3 if k == "rgb" else 1), np.float32) for k in names]


@pytest.fixture
def stub_ort(monkeypatch, tmp_path):
    import onnxruntime as ort
    monkeypatch.setenv("HOME", str(tmp_path))            # the engine cache folders go under this test's folder
    monkeypatch.setattr(ort, "InferenceSession", RecordingSession)
    monkeypatch.setattr(networks, "check_available", lambda spec: None)
    RecordingSession.made, RecordingSession.providers_override = [], None
    return RecordingSession


def _trt_options(session):
    return session.options[session.providers.index("TensorrtExecutionProvider")]


def test_ort_trt_sessions_profile_the_graphs_own_inputs_and_calls_stay_within_it(bundles, stub_ort):
    nets = make_networks(load_runtime("ort-trt"), bundle=bundles["fp32"])
    coarse, fine = nets["coarse"].session, nets["fine"].session
    # 8: the density-only coarse graph has no viewdirs input, and its profile names none
    assert coarse.input_names == ["points"] and nets["coarse"].inputs == {"points"}
    assert _trt_options(coarse)["trt_profile_min_shapes"] == "points:1x3"
    assert _trt_options(coarse)["trt_profile_max_shapes"] == "points:262144x3"
    assert _trt_options(fine)["trt_profile_opt_shapes"] == "points:65536x3,viewdirs:65536x3"
    # 3: a call of two plain-render chunks (524,288 + 1 rows) runs as calls within the profile
    pts, d = _points(2 * 262144 + 1)
    rgb, dens = nets["fine"](pts, d)
    assert fine.calls == [262144, 262144, 1] and rgb.shape == (pts.shape[0], 3) and dens.shape == (pts.shape[0], 1)
    assert nets["coarse"](pts[:0], d[:0])[1].shape == (0, 1) and coarse.calls == []


def test_ort_trt_engine_cache_folder_is_keyed_on_the_networks_sha256(bundles, stub_ort, tmp_path):
    paths = {}
    for name in ("fp32", "fp32-other"):
        nets = make_networks(load_runtime("ort-trt"), bundle=bundles[name])
        paths[name] = {w: _trt_options(n.session)["trt_engine_cache_path"] for w, n in nets.items()}
        for w in ("coarse", "fine"):
            sha = bundles[name].manifest.networks[w].sha256
            assert sha[:16] in paths[name][w] and str(tmp_path) in paths[name][w]
    # two scenes of the same architecture (same file and tensor names) never share an engine
    assert paths["fp32"]["fine"] != paths["fp32-other"]["fine"]
    assert paths["fp32"]["coarse"] != paths["fp32-other"]["coarse"] != paths["fp32"]["fine"]


@pytest.mark.parametrize("precision,fp16,int8", [("fp32", "False", "False"), ("fp16", "True", "False"),
                                                   ("int8-tensorrt", "False", "True")])
def test_ort_trt_precision_flags_follow_the_bundle(bundles, stub_ort, precision, fp16, int8):
    nets = make_networks(load_runtime("ort-trt"), bundle=bundles[precision])
    for n in nets.values():
        o = _trt_options(n.session)
        assert (o["trt_fp16_enable"], o["trt_int8_enable"]) == (fp16, int8)
    # a runtime file that sets a flag keeps it
    spec = load_runtime("ort-trt")
    spec.provider_options["TensorrtExecutionProvider"]["trt_fp16_enable"] = True
    assert provider_options(spec, bundles[precision], "fine")["TensorrtExecutionProvider"]["trt_fp16_enable"] is True


def test_trt_profile_rows_come_from_the_runtime_file_and_bad_strings_are_refused():
    opts, hi = trt_profile({"trt_profile_max_shapes": "points:4096x3,viewdirs:8192x3", "x": 1},
                           {"points": 3, "encoding/sin": 30})
    assert hi == 4096 and opts["x"] == 1
    assert opts["trt_profile_max_shapes"] == "points:4096x3,encoding/sin:4096x30"
    assert opts["trt_profile_min_shapes"] == "points:1x3,encoding/sin:1x30"
    with pytest.raises(runtime.RuntimeSpecError, match="trt_profile_opt_shapes"):
        trt_profile({"trt_profile_opt_shapes": "points:lots"}, {"points": 3})


# 7. a session on another provider than asked for is refused

def test_a_session_that_fell_back_to_another_provider_is_refused(bundles, stub_ort):
    p = bundles["fp32"].network_path("fine")
    stub_ort.providers_override = ["CPUExecutionProvider"]
    with pytest.raises(RuntimeUnavailable, match="CUDAExecutionProvider") as e:
        OrtNetwork(p, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert "\n" not in str(e.value) and "CPUExecutionProvider" in str(e.value)
    stub_ort.providers_override = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert OrtNetwork(p, ["CUDAExecutionProvider", "CPUExecutionProvider"]).providers[0] == "CUDAExecutionProvider"


def test_render_with_a_provider_that_does_not_start_fails_in_one_line(bundles, monkeypatch):
    """The CLI path: a runtime whose provider is listed but whose session runs on the CPU."""
    import onnxruntime as ort
    from typer.testing import CliRunner
    from nerfexport.cli import app
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(runtime, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(ort, "InferenceSession",
                        lambda src, so=None, providers=None, provider_options=None: real(src, so, ["CPUExecutionProvider"]))
    res = CliRunner().invoke(app, ["render", str(bundles["fp32"].root), "--runtime", "ort-cuda", "--views", "0",
                                   "--data", str(bundles["dir"] / "scene"), "-o", str(bundles["dir"] / "r")])
    lines = [l for l in res.output.strip().splitlines() if l.strip() and not l.startswith("warning")]
    assert res.exit_code == 2 and lines[-1].startswith("error:") and "CUDAExecutionProvider" in lines[-1], res.output
    assert "Traceback" not in res.output


# 5. positional encoding precision

def _encoding_of(model, prefix="encoding"):
    """The encoding's output (as float32) of ``model`` evaluated by ONNX's reference evaluator."""
    from onnx.reference import ReferenceEvaluator
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(helper.make_tensor_value_info(f"{prefix}/out", TensorProto.UNDEFINED, None))
    prune_outputs(m, (f"{prefix}/out",))
    return lambda feeds: ReferenceEvaluator(m).run(None, feeds)[0].astype(np.float32)


def test_fp16_graph_computes_the_encoding_in_fp32_and_matches_fp32(tmp_path):
    torch.manual_seed(0)
    net = NeRF(tiny_config(width=32)).fine
    st = {k: v.numpy() for k, v in net.state_dict().items()}
    m32, m16 = (mlp_to_onnx(st, net.cfg, dtype=t) for t in ("fp32", "fp16"))
    inferred = onnx.shape_inference.infer_shapes(m16)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    nodes = {n.name: n for n in m16.graph.node}
    inits = {t.name: t for t in m16.graph.initializer}
    for prefix, raw in (("encoding", "points"), ("view_encoding", "viewdirs")):
        # the frequency scaling is an elementwise Mul of the raw fp32 input (no MatMul, no cast before it)
        assert nodes[f"{prefix}/tile"].op_type == "Tile" and list(nodes[f"{prefix}/tile"].input)[0] == raw
        assert nodes[f"{prefix}/scaled"].op_type == "Mul"
        assert inits[f"{prefix}/freqs"].data_type == TensorProto.FLOAT
        for k in ("tile", "scaled", "sin", "cos"):
            assert types[f"{prefix}/{k}"] == TensorProto.FLOAT, k
        # ... and the cast to fp16 comes after Sin and Cos
        assert list(nodes[f"{prefix}/sin/fp16"].input) == [f"{prefix}/sin"]
        assert types[f"{prefix}/out"] == TensorProto.FLOAT16
    assert not any(n.op_type == "MatMul" for n in m16.graph.node)
    pts, d = _points(2000)                       # scene coordinates up to 4: 2^9 x 4 inside the sines
    for prefix, feed in (("encoding", {"points": pts}), ("view_encoding", {"viewdirs": d})):
        e32, e16 = _encoding_of(m32, prefix)(feed), _encoding_of(m16, prefix)(feed)
        assert np.abs(e16[:, 3:] - e32[:, 3:]).max() < 1e-3          # the sines and cosines
        assert np.allclose(e16[:, :3], e32[:, :3], rtol=1e-3, atol=0)  # the raw input, rounded to fp16


def test_ort_cuda_turns_tf32_off(bundles):
    for name in ("ort-cuda", "ort-trt"):
        o = provider_options(load_runtime(name), bundles["fp32"], "fine")
        assert str(o["CUDAExecutionProvider"]["use_tf32"]) == "0"


# 5, 8, 10. engine builds against stand-ins for TensorRT 8.6, 10 and 11

class BuildTRT:
    Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")

    def __init__(self, version, creation=("EXPLICIT_BATCH", "STRONGLY_TYPED"), builder=("TF32", "FP16", "INT8"),
                 inputs=("points", "viewdirs")):
        self.__version__ = version
        values = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
        self.NetworkDefinitionCreationFlag = SimpleNamespace(**{k: values[k] for k in creation})
        self.BuilderFlag = SimpleNamespace(**{k: k for k in builder})
        self.inputs, self.log = inputs, {"set": [], "cleared": [], "profile": [], "flags": None}
        trt = self

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                trt.log["flags"] = flags
                return SimpleNamespace(num_inputs=len(trt.inputs),
                                       get_input=lambda i: SimpleNamespace(name=trt.inputs[i], shape=(-1, 3)))

            def create_builder_config(self):
                return SimpleNamespace(set_memory_pool_limit=lambda pool, n: None,
                                       set_flag=lambda f: trt.log["set"].append(f),
                                       clear_flag=lambda f: trt.log["cleared"].append(f),
                                       add_optimization_profile=lambda p: 0)

            def create_optimization_profile(self):
                return SimpleNamespace(set_shape=lambda name, lo, opt, hi: trt.log["profile"].append((name, lo, opt, hi)))

            def build_serialized_network(self, network, config):
                return b"engine"

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse(self, blob):
                return True

        self.Builder, self.OnnxParser = Builder, OnnxParser


@pytest.mark.parametrize("version,creation,builder,precision,flags,set_flags", [
    ("10.9.0", ("EXPLICIT_BATCH", "STRONGLY_TYPED"), ("TF32", "FP16", "INT8"), "int8", 1 << 1, []),
    ("10.9.0", ("EXPLICIT_BATCH", "STRONGLY_TYPED"), ("TF32", "FP16", "INT8"), "fp32", 1 << 1, []),
    ("11.1.0", ("STRONGLY_TYPED",), ("TF32",), "int8", 0, []),      # no FP16/INT8 flags to set (or reach for)
    ("11.1.0", (), ("TF32",), "fp16", 0, []),
    ("8.6.1", ("EXPLICIT_BATCH",), ("TF32", "FP16", "INT8"), "int8", 1 << 0, ["INT8", "FP16"]),
])
def test_engine_builds_are_typed_by_tensorrt_version_with_tf32_off(tmp_path, version, creation, builder, precision,
                                                                    flags, set_flags):
    from nerfexport.export.tensorrt import build_engine
    (tmp_path / "n.onnx").write_bytes(b"onnx")
    trt = BuildTRT(version, creation, builder)
    assert build_engine(tmp_path / "n.onnx", precision, trt) == b"engine"
    assert trt.log["flags"] == flags and sorted(trt.log["set"]) == sorted(set_flags)
    assert trt.log["cleared"] == ["TF32"]


def test_engine_profile_names_only_the_networks_inputs(tmp_path):
    from nerfexport.export.tensorrt import BATCH_MAX, build_engine
    (tmp_path / "n.onnx").write_bytes(b"onnx")
    trt = BuildTRT("10.9.0", inputs=("points",))
    build_engine(tmp_path / "n.onnx", "fp32", trt)
    assert trt.log["profile"] == [("points", (1, 3), (65536, 3), (BATCH_MAX, 3))]


# 8. the density-only coarse graph's inputs

def test_density_only_coarse_graph_drops_viewdirs(bundles):
    nets = make_networks(load_runtime("ort-cpu"), bundle=bundles["fp32"])
    assert nets["coarse"].inputs == {"points"} and nets["fine"].inputs == {"points", "viewdirs"}
    m = onnx.load(str(bundles["fp32"].network_path("coarse")))
    prune_outputs(m, ("density",))
    assert [i.name for i in m.graph.input] == ["points"]
    onnx.checker.check_model(m)
    ref = OrtNetwork(bundles["fp32"].network_path("coarse"))(*_points(500))[1]
    assert np.allclose(nets["coarse"](*_points(500))[1], ref, atol=1e-5)
