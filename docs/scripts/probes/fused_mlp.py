"""A probe, not part of nerfexport: the whole 128-wide int8 fine network as one hand-written kernel
(fused_mlp.c: encoding, trunk, skip and heads on 64-row blocks that stay in L1), against the
same bundle's graph on onnxruntime, one thread each. Prints the outputs' difference and the
GOP/s of each against the one-thread int8 GEMM peak measured in the same run.

    gcc -O3 -march=native -ffast-math -shared -fPIC docs/scripts/probes/fused_mlp.c -o /tmp/fused_mlp.so -lmvec -lm
    .venv/bin/python docs/scripts/probes/fused_mlp.py B /tmp/fused_mlp.so [ROWS]    (B: an int8 bundle)
"""
import ctypes as C
import sys
import time

import numpy as np
import onnx
from onnx import numpy_helper

from nerfexport.bundle import open_bundle
from nerfexport.peak import gemm_peak, network_ops
from nerfexport.runtime import OrtNetwork


class Layer(C.Structure):
    _fields_ = [("Kp", C.c_int), ("N", C.c_int), ("W", C.c_void_p), ("corr", C.c_void_p), ("mult", C.c_void_p),
                ("zout", C.c_int), ("r2", C.c_float), ("z2", C.c_int)]


class Net(C.Structure):
    _fields_ = [("F", C.c_void_p), ("nf", C.c_int), ("Fv", C.c_void_p), ("nfv", C.c_int),
                ("s_enc", C.c_float), ("z_enc", C.c_int), ("s_venc", C.c_float), ("z_venc", C.c_int),
                ("r_enc_skip", C.c_float), ("z_skip", C.c_int), ("r_venc_cat", C.c_float), ("z_cat", C.c_int),
                ("n_trunk", C.c_int), ("skip", C.c_int), ("L", C.POINTER(Layer)),
                ("w_alpha", C.c_void_p), ("b_alpha", C.c_float), ("s_h", C.c_float),
                ("w_rgb", C.c_void_p), ("b_rgb", C.c_void_p), ("s_v", C.c_float), ("nv", C.c_int)]


class Fused:
    def __init__(self, onnx_path, arch, lib):
        m = onnx.load(onnx_path)
        t = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        self.keep = []

        def arr(a, dt):
            a = np.ascontiguousarray(a, dt)
            self.keep.append(a)
            return a.ctypes.data

        def scale(name):
            return float(t[name + "_scale"]), int(t[name + "_zero_point"])

        n_trunk, skip = len(arch["widths"]), arch["skips"][0]
        s_enc, z_enc = scale("encoding/out")
        s_venc, z_venc = scale("view_encoding/out")
        s_skip, z_skip = scale(f"skip.{skip}")
        s_cat, z_cat = scale("views.concat")
        s_feat, z_feat = scale("feature/Gemm")
        assert (s_feat, z_feat) == (s_cat, z_cat), "the views concat must share the feature layer's scale"
        layers = []
        s_in, z_in = s_enc, z_enc
        names = [f"pts.{i}" for i in range(n_trunk)] + ["feature", "views.0"]
        for i, name in enumerate(names):
            W = t[name + ".weight_quantized"].astype(np.int32)       # (N, K)
            sw = t[name + ".weight_scale"]
            assert not t[name + ".weight_zero_point"].any()
            b = t[name + ".bias_quantized"].astype(np.int64)
            if name == f"pts.{skip + 1}":
                s_in, z_in = s_skip, z_skip
            if name == "views.0":
                s_in, z_in = s_cat, z_cat
            assert np.allclose(t[name + ".bias_quantized_scale"], s_in * sw, rtol=1e-5)
            if name == "feature":
                s_out, z_out = s_feat, z_feat
            else:
                s_out, z_out = scale(f"{name}/Relu")
            N, K = W.shape
            Kp = (K + 3) // 4 * 4
            Wp = np.zeros((N, Kp), np.int8)
            Wp[:, :K] = W
            packed = Wp.T.reshape(Kp // 4, 4, N).transpose(0, 2, 1)
            corr = (b - z_in * W.sum(1)).astype(np.int32)
            mult = (np.float32(s_in) * sw.astype(np.float32) / np.float32(s_out)).astype(np.float32)
            r2, z2 = (s_out / s_skip, z_skip) if i == skip else (0.0, 0)
            layers.append(Layer(Kp, N, arr(packed, np.int8), arr(corr, np.int32), arr(mult, np.float32),
                                z_out, r2, z2))
            s_in, z_in = s_out, z_out
        s_h = scale(f"pts.{n_trunk - 1}/Relu")[0]
        s_v = scale("views.0/Relu")[0]
        self.L = (Layer * len(layers))(*layers)
        F, Fv = t["encoding/freqs"], t["view_encoding/freqs"]
        self.net = Net(arr(F, np.float32), F.shape[1], arr(Fv, np.float32), Fv.shape[1], s_enc, z_enc, s_venc, z_venc,
                       s_enc / s_skip, z_skip, s_venc / s_cat, z_cat, n_trunk, skip, self.L,
                       arr(t["alpha.weight"].ravel(), np.float32), float(t["alpha.bias"][0]), s_h,
                       arr(t["rgb.weight"], np.float32), arr(t["rgb.bias"], np.float32), s_v, t["rgb.weight"].shape[1])
        self.fn = lib.fused_mlp
        self.fn.argtypes = [C.POINTER(Net), C.c_void_p, C.c_void_p, C.c_int, C.c_void_p, C.c_void_p]

    def __call__(self, pts, dirs):
        n = pts.shape[0]
        d = np.empty(n, np.float32)
        rgb = np.empty((n, 3), np.float32)
        self.fn(C.byref(self.net), pts.ctypes.data, dirs.ctypes.data, n, d.ctypes.data, rgb.ctypes.data)
        return d, rgb


def main():
    b = open_bundle(sys.argv[1])
    lib = C.CDLL(sys.argv[2])
    rows = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "512,2048,8192").split(",")]
    arch = b.manifest["networks"]["fine"]["architecture"]
    fused = Fused(str(b.network_path("fine")), arch, lib)
    ort = OrtNetwork(b.network_path("fine"), threads=1)
    ops = network_ops(arch)
    rng = np.random.default_rng(0)
    # points where the scene is: inside the box, then the difference on them
    pts = rng.uniform(-1.2, 1.2, (20000, 3)).astype(np.float32)
    dirs = rng.standard_normal((20000, 3)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    rgb_o, d_o = ort(pts, dirs)
    d_f, rgb_f = fused(pts, dirs)
    print(f"{b.root}/fine.onnx, 20,000 random points in the box:")
    print(f"  density: max |diff| {np.abs(d_o.ravel() - d_f).max():.4g} (ort range 0..{d_o.max():.4g}), "
          f"mean |diff| {np.abs(d_o.ravel() - d_f).mean():.4g}")
    print(f"  rgb: max |diff| {np.abs(rgb_o - rgb_f).max():.4g}, mean |diff| {np.abs(rgb_o - rgb_f).mean():.4g}")
    pk = gemm_peak("int8", sizes=(512, 1024), threads=1)
    print(f"one-thread int8 peak (MatMulInteger, best of 512^3, 1024^3): {pk['gops']:.0f} GOP/s")
    print("| rows per call | ort us | fused us | ort GOP/s | fused GOP/s | ort of peak | fused of peak | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in rows:
        p, d = pts[:n].copy(), dirs[:n].copy()
        res = {"ort": [], "fused": []}
        for _ in range(7):
            for k, f in (("ort", ort), ("fused", fused)):
                f(p, d)
                ts = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    f(p, d)
                    ts.append(time.perf_counter() - t0)
                res[k].append(min(ts))
        to, tf = np.median(res["ort"]), np.median(res["fused"])
        go, gf = ops * n / to / 1e9, ops * n / tf / 1e9
        print(f"| {n} | {to * 1e6:.0f} | {tf * 1e6:.0f} | {go:.0f} | {gf:.0f} | {go / pk['gops']:.0%} | "
              f"{gf / pk['gops']:.0%} | {to / tf:.2f}x |")


if __name__ == "__main__":
    main()
