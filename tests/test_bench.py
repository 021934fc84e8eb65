import pytest

from nerfexport.bench import BenchItem, markdown


def test_items_parse_with_and_without_labels():
    a = BenchItem.parse("teacher 256 fp32=cache/t.pt@torch")
    assert (a.label, a.path, a.runtime) == ("teacher 256 fp32", "cache/t.pt", "torch")
    b = BenchItem.parse("out/bundle@ort-cpu")
    assert (b.label, b.path, b.runtime) == ("bundle@ort-cpu", "out/bundle", "ort-cpu")
    with pytest.raises(ValueError):
        BenchItem.parse("bundle-without-runtime")


def test_markdown_reports_skipped_and_measured_rows():
    doc = {"machine": "test cpu", "views": 2, "H": 4, "W": 4, "repeat": 1, "samples": None, "reference": "t",
           "rows": [{"label": "t", "runtime": "torch", "precision": "fp32", "bytes": 2e6, "median_ms": 100.0, "speedup_vs_teacher": 1.0,
                     "rays_per_s": 160.0, "samples_per_s": 1e4, "psnr": 20.0, "ssim": 0.5, "psnr_vs_teacher": None,
                     "peak_rss_mb": 300.0, "breakdown_ms": {"rays": 1, "sampling": 2, "network": 90, "compositing": 7}},
                    {"label": "gpu", "runtime": "ort-cuda", "error": "runtime ort-cuda needs a CUDA GPU and none is visible"}]}
    md = markdown(doc)
    assert "| t | torch | fp32 | 2.00 | 100 | 1.00x |" in md
    assert "not run: runtime ort-cuda needs a CUDA GPU" in md
