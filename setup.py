"""Builds the fused int8 network kernel (csrc/nerf_mlp.c), an onnxruntime custom-op
library, on Linux x86_64. Everything else is in pyproject.toml. The build is optional: without a
C compiler the package installs without it, and the ort-cpu runtime runs onnxruntime's own
kernels (nerfexport.fused.unavailable says why)."""
import platform

from setuptools import Extension, setup

ext = []
if platform.system() == "Linux" and platform.machine() == "x86_64":
    ext.append(Extension(
        "nerfexport._nerf_mlp", ["csrc/nerf_mlp.c"],
        # AVX-512 VNNI code throughout: Python loads the library only on a CPU that has it
        extra_compile_args=["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mfma",
                            "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros", "-fassociative-math",
                            "-fvisibility=hidden", "-std=c11"],
        libraries=["mvec", "m"], optional=True))

setup(ext_modules=ext)
