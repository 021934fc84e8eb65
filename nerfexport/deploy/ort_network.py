"""The onnxruntime family: a bundle's ONNX networks in onnxruntime sessions (:class:`OrtNetwork`),
on the CPU, CUDA or TensorRT execution providers.

On GPUs (written against onnxruntime-gpu, and checked on the CPU with stand-ins in
``tests/test_gpu_construction.py``): a session that onnxruntime silently put on another
provider than the first asked for is refused (:func:`check_session_provider`);
:func:`provider_options` turns TF32 off for the CUDA provider, sets the TensorRT provider's
fp16/int8 switches from the bundle's precision and keys its engine cache on each network's
sha256; TensorRT sessions take calls within their optimization profile (:func:`trt_profile`),
which names only the inputs the graph has.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nerfexport.deploy.graph_edits import cut_encodings, graph_inputs, prune_outputs
from nerfexport.deploy.runtime import (ENCODINGS, Encoding, GraphOptimization, RuntimeSpec, RuntimeSpecError,
                                       RuntimeUnavailable)

TRT_CACHE = "~/.cache/nerfexport/ort-trt"


def check_session_provider(session, asked: str) -> None:
    """onnxruntime lists a provider as available even where it cannot start (its CUDA, cuDNN or
    TensorRT libraries missing) and then runs the session on the next one: refuse that in one
    line instead of rendering on the CPU under a GPU runtime's name."""
    got = list(session.get_providers() or [])
    if not got or got[0] != asked:
        raise RuntimeUnavailable(f"onnxruntime was asked for {asked} but the session runs on "
                                 f"{got[0] if got else 'no provider'}: {asked} is installed but did not start "
                                 "(its CUDA, cuDNN or TensorRT libraries did not load; onnxruntime's warnings say which)")


TRT_PROFILE_KEYS = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
TRT_PROFILE_ROWS = (1, 65536, 262144)   # min, opt, max rows per call when a runtime file names none


def _profile_rows(key: str, text, default: int) -> int:
    """The rows a ``name:ROWSxWIDTH,...`` profile string gives (the fewest over its entries)."""
    if text is None or str(text).strip() == "":
        return default
    rows = []
    for entry in str(text).split(","):
        dims = entry.strip().rpartition(":")[2]
        try:
            rows.append(int(dims.split("x")[0]))
        except ValueError:
            raise RuntimeSpecError(f"{key} must look like points:65536x3,viewdirs:65536x3, not {text!r}") from None
    return min(rows)


def trt_profile(options: dict, inputs: dict[str, int]) -> tuple[dict, int]:
    """The TensorRT provider's ``options`` with its profile shapes written for the session graph's
    own ``inputs`` (name -> width), every one of them and no other (the provider needs a shape
    for each dynamic input, and rebuilds its engine at every session when the profile names an
    input the graph lacks); the rows come from the runtime file's shapes (or 1/65536/262144).
    Returns ``(options, max rows per call)``."""
    lo, opt, hi = (_profile_rows(k, options.get(k), d) for k, d in zip(TRT_PROFILE_KEYS, TRT_PROFILE_ROWS))
    if not options.get(TRT_PROFILE_KEYS[1]):
        opt = max(lo, min(opt, hi))   # a file giving only a smaller maximum: optimise for it
    rows = (lo, opt, hi)
    if not 1 <= rows[0] <= rows[1] <= rows[2]:
        raise RuntimeSpecError(f"the TensorRT profile needs 1 <= min <= opt <= max rows, not {rows}")
    out = dict(options)
    for key, n in zip(TRT_PROFILE_KEYS, rows):
        out[key] = ",".join(f"{name}:{n}x{width}" for name, width in inputs.items())
    return out, rows[2]


def _concat_calls(parts: list) -> tuple[np.ndarray | None, np.ndarray]:
    rgb = None if parts[0][0] is None else np.concatenate([p[0] for p in parts])
    return rgb, np.concatenate([p[1] for p in parts])


class OrtNetwork:
    """An ONNX network in an onnxruntime session: ``(points (N,3), viewdirs (N,3)) -> (rgb, density)``.

    ``encoding="host"`` cuts the positional encodings' ``Sin``/``Cos`` out of the graph and
    computes them here in numpy (``sin(x @ F)``, ``cos(x @ F)``, ``F`` read from the graph):
    onnxruntime's CPU ``Sin``/``Cos`` are scalar (about 2 ns an element), numpy's are vectorised
    (about 0.4 ns on AVX-512). The bundle is unchanged; only the session's copy of the graph is.

    ``outputs=("density",)`` keeps only the density and the nodes it needs (the colour branch
    and the view-direction encoding go): a coarse network whose colour the renderer never reads
    (a bundle with a fine network). The call then returns ``(None, density)``.

    The session must run on the first of ``providers`` (:func:`check_session_provider`). With the
    TensorRT provider the profile shapes name the session graph's own inputs
    (:func:`trt_profile`) and a call larger than the profile's maximum is split into calls within
    it (``max_batch``).
    """

    def __init__(self, path: str | Path, providers: list | None = None, threads: int | None = None,
                 opt_level: GraphOptimization = "all", provider_options: dict | None = None,
                 encoding: Encoding = "graph",
                 outputs: tuple[str, ...] = ("rgb", "density")) -> None:
        import onnxruntime as ort
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        if opt_level not in levels:
            raise RuntimeSpecError(f"graph_optimization must be one of {', '.join(levels)}")
        if encoding not in ENCODINGS:
            raise RuntimeSpecError(f"encoding must be one of {', '.join(ENCODINGS)}")
        if tuple(outputs) not in (("rgb", "density"), ("density",)):
            raise RuntimeSpecError(f"outputs must be ('rgb', 'density') or ('density',), not {tuple(outputs)}")
        so.graph_optimization_level = levels[opt_level]
        providers = list(providers or ["CPUExecutionProvider"])
        raw_opts = []
        for p in providers:
            o = dict((provider_options or {}).get(p, {}))
            if "trt_engine_cache_path" in o:
                o["trt_engine_cache_path"] = os.path.expanduser(str(o["trt_engine_cache_path"]))
                os.makedirs(o["trt_engine_cache_path"], exist_ok=True)
            raw_opts.append(o)
        strings = lambda: [{k: ("True" if v else "False") if isinstance(v, bool) else str(v) for k, v in o.items()}
                           for o in raw_opts]
        self.outputs = tuple(outputs)
        self.host_encodings: list = []
        self.max_batch: int | None = None
        source: str | bytes = str(path)
        trt = "TensorrtExecutionProvider" in providers
        if encoding == "host" or self.outputs == ("density",) or trt:
            import onnx
            model = onnx.load(str(path))
            if self.outputs == ("density",):
                prune_outputs(model, self.outputs)
            if encoding == "host":
                self.host_encodings = cut_encodings(model)
            if encoding == "host" or self.outputs == ("density",):
                source = model.SerializeToString()
            if trt:
                i = providers.index("TensorrtExecutionProvider")
                raw_opts[i], self.max_batch = trt_profile(raw_opts[i], graph_inputs(model))
        self.session = ort.InferenceSession(source, so, providers=providers, provider_options=strings())
        check_session_provider(self.session, providers[0])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.path = Path(path)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, points: np.ndarray, viewdirs: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        n, m = points.shape[0], self.max_batch
        if m is None or 1 <= n <= m:
            return self._run(points, viewdirs)
        if n == 0:   # below the profile's minimum: nothing to evaluate
            return (None if "rgb" not in self.outputs else np.zeros((0, 3), np.float32)), np.zeros((0, 1), np.float32)
        return _concat_calls([self._run(points[a:a + m], viewdirs[a:a + m]) for a in range(0, n, m)])

    def _run(self, points: np.ndarray, viewdirs: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        raw = {"points": points, "viewdirs": viewdirs}
        feeds = {k: v for k, v in raw.items() if k in self.inputs}
        for name, scales, sin_name, cos_name, dtype in self.host_encodings:
            x = raw[name]
            xf = (x[:, None, :] * scales[None, :, None]).reshape(x.shape[0], -1)   # (N, 3L), exact
            feeds[sin_name] = np.sin(xf).astype(dtype, copy=False)
            feeds[cos_name] = np.cos(xf).astype(dtype, copy=False)
        out = self.session.run(list(self.outputs), feeds)
        if "rgb" not in self.outputs:
            return None, out[0]
        return out[0], out[1]


def provider_options(spec: RuntimeSpec, bundle, which: str, density_only: bool = False) -> dict[str, dict]:
    """The provider options of one network's session: the runtime file's, with

    * ``use_tf32 = 0`` for the CUDA provider unless the file says otherwise (TF32 rounds fp32
      GEMM inputs to 10 mantissa bits);
    * the TensorRT provider's ``trt_fp16_enable`` / ``trt_int8_enable`` from the bundle's
      precision (an fp32 bundle runs in fp32, an fp16 one may use fp16 kernels, an int8 one its
      QDQ nodes) unless the file sets them;
    * its engine cache in a folder per network file, named by the file's sha256 from the
      manifest (onnxruntime keys cached engines on graph and tensor names, which every bundle's
      ``coarse.onnx`` shares, not on weights)."""
    opts = {p: dict(o) for p, o in (spec.provider_options or {}).items()}
    if "CUDAExecutionProvider" in spec.providers:
        opts.setdefault("CUDAExecutionProvider", {}).setdefault("use_tf32", 0)
    if "TensorrtExecutionProvider" in spec.providers:
        t = opts.setdefault("TensorrtExecutionProvider", {})
        t.setdefault("trt_fp16_enable", bundle.precision == "fp16")
        t.setdefault("trt_int8_enable", bundle.precision == "int8")
        if str(t.get("trt_engine_cache_enable", False)).lower() in ("true", "1"):
            sha = bundle.manifest.networks[which].sha256
            base = Path(os.path.expanduser(str(t.get("trt_engine_cache_path", TRT_CACHE))))
            t["trt_engine_cache_path"] = str(base / (sha[:16] + ("-density" if density_only else "")))
    return opts


def ort_networks(spec: RuntimeSpec, bundle, n_fine: int | None = None) -> dict:
    """``{"coarse": OrtNetwork, "fine": OrtNetwork | None}`` for ``bundle`` on the onnxruntime
    runtime ``spec``. ``n_fine``: the fine samples per ray the renderer will take (the runtime
    file's, else the bundle's, when ``None``); with a fine network and ``n_fine > 0`` the coarse
    session computes its density alone (its colour is never composited)."""
    if n_fine is None:
        n_fine = spec.samples[1] if spec.samples else bundle.manifest.scene.n_fine
    density_only = bundle.network_path("fine") is not None and n_fine > 0
    out = {}
    for w in ("coarse", "fine"):
        if not bundle.network_path(w):
            out[w] = None
            continue
        only = w == "coarse" and density_only
        out[w] = OrtNetwork(bundle.network_path(w), spec.providers, spec.threads, spec.graph_optimization,
                            provider_options(spec, bundle, w, only), encoding=spec.encoding,
                            outputs=("density",) if only else ("rgb", "density"))
    return out
