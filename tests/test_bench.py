import pytest

from nerfexport.bench.bench import BenchItem, markdown


def test_items_parse_with_and_without_labels():
    a = BenchItem.parse("teacher 256 fp32=cache/t.pt@torch")
    assert (a.label, a.path, a.runtime) == ("teacher 256 fp32", "cache/t.pt", "torch")
    b = BenchItem.parse("out/bundle@ort-cpu")
    assert (b.label, b.path, b.runtime) == ("bundle@ort-cpu", "out/bundle", "ort-cpu")
    with pytest.raises(ValueError):
        BenchItem.parse("bundle-without-runtime")


def test_item_suffixes_choose_plain_or_the_density_sampler():
    p = BenchItem.parse("out/bundle@ort-cpu:plain")
    assert (p.runtime, p.plain, p.sampler, p.label) == ("ort-cpu", True, None, "bundle@ort-cpu plain")
    d = BenchItem.parse("s=out/bundle@ort-cpu:density")
    assert (d.runtime, d.plain, d.sampler, d.label) == ("ort-cpu", False, "density", "s")
    with pytest.raises(ValueError, match="suffixes are :plain, :density"):
        BenchItem.parse("out/bundle@ort-cpu:fast")


def test_markdown_reports_skipped_and_measured_rows():
    peak = {"int8": {"gops": 500.0, "threads": 2, "per_size": {"1024": 450.0, "2048": 500.0}, "runtime": "ort"},
            "fp32": {"gops": 100.0, "threads": 2, "per_size": {"1024": 90.0, "2048": 100.0}, "runtime": "ort"}}
    doc = {"machine": "test cpu", "views": 2, "H": 4, "W": 4, "repeat": 1, "samples": None, "reference": "t",
           "gemm_peak": peak,
           "rows": [{"label": "t", "runtime": "torch", "precision": "fp32", "bytes": 2e6, "median_ms": 100.0, "speedup_vs_teacher": 1.0,
                     "rays_per_s": 160.0, "samples_per_frame": 1000, "samples_per_s": 1e4, "network_gops": 3.0,
                     "psnr": 20.0, "ssim": 0.5, "psnr_vs_teacher": None, "skip": False, "early_stop": 0.0,
                     "peak_rss_mb": 300.0, "breakdown_ms": {"rays": 1, "sampling": 2, "network": 90, "compositing": 7}},
                    {"label": "b", "runtime": "ort-cpu", "precision": "int8", "bytes": 1e6, "median_ms": 10.0,
                     "speedup_vs_teacher": 10.0, "rays_per_s": 1600.0, "samples_per_frame": 400, "samples_per_s": 4e4,
                     "network_gops": 250.0, "fraction_of_peak": 0.5, "psnr": 19.9, "ssim": 0.5, "psnr_vs_teacher": 40.0,
                     "skip": True, "early_stop": 1e-3, "peak_rss_mb": 100.0,
                     "breakdown_ms": {"rays": 1, "sampling": 2, "network": 5, "compositing": 2}},
                    {"label": "gpu", "runtime": "ort-cuda", "error": "runtime ort-cuda needs a CUDA GPU and none is visible"}]}
    md = markdown(doc)
    assert "| t | torch | fp32 | no |  | 2.00 | 100 | 1.00x |" in md
    assert "| b | ort-cpu | int8 | grid + early stop |  | 1.00 | 10 | 10.00x |  |  | 1,600 | 400 | 40,000 | 250 | 50% |" in md
    assert "int8 500 GOP/s, fp32 100 GOP/s" in md
    assert "not run: runtime ort-cuda needs a CUDA GPU" in md


def test_worker_peak_rss_is_its_own():
    """A bench worker started from a process that holds a lot of memory reports its own peak,
    not its parent's (``ru_maxrss`` survives ``exec``; the measure must not)."""
    import subprocess
    import sys
    code = ("import numpy as np, subprocess, sys\n"
            "big = np.ones(400 * 2**20 // 8)\n"
            "out = subprocess.run([sys.executable, '-c', 'from nerfexport.bench.bench import _peak_rss_mb; "
            "print(_peak_rss_mb())'], capture_output=True, text=True, check=True).stdout\n"
            "print(float(out))\n")
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0 < child < 300


def test_markdown_reports_samples_torch_speedups_and_the_layer_gemm():
    peak = {"int8": {"gops": 500.0, "threads": 2, "per_size": {"1024": 500.0}, "runtime": "ort"},
            "fp32": {"gops": 100.0, "threads": 2, "per_size": {"1024": 100.0}, "runtime": "ort"},
            "layers": {"rows": 4096, "int8": {"128": 200.0}, "fp32": {"128": 50.0}}}
    row = {"label": "b", "runtime": "my.toml", "precision": "int8", "bytes": 1e6, "median_ms": 10.0, "rays_per_s": 1.0,
           "samples_per_frame": 400, "samples_per_s": 4e4, "network_gops": 100.0, "fraction_of_peak": 0.2,
           "fraction_of_layer_gemm": 0.5, "fraction_of_shape_gemm": 0.75, "speedup_vs_torch": 31.0, "speedup_vs_torch_bf16": 12.5, "samples": [64, 64],
           "psnr": 19.9, "ssim": 0.5, "skip": True, "early_stop": 1e-3, "peak_rss_mb": 100.0,
           "breakdown_ms": {"rays": 1, "sampling": 2, "network": 5, "compositing": 2}}
    md = markdown({"machine": "cpu", "views": 1, "H": 4, "W": 4, "repeat": 1, "reference": "t", "gemm_peak": peak,
                   "rows": [row]})
    assert "| 64+64 |" in md and "| 31.0x | 12.5x |" in md and "| 20% | 50% | 75% |" in md
    assert "int8 W=128 200 GOP/s" in md and "Own-shape GEMM" in md


def test_the_machine_line_names_the_cpu_with_its_family_and_model():
    """Tables name the CPU: its model name and, on x86 Linux, family and model (a VM's model name is
    often generic), then the core count."""
    import os
    import pathlib

    from nerfexport.deploy.machine import machine
    line = machine()
    assert line.endswith(f", {os.cpu_count()} cores")
    info = pathlib.Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    names = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")]
    if names:
        assert line.startswith(names[0])
    if "cpu family" in text:
        assert " (family " in line and " model " in line
