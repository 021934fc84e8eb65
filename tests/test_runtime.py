import os

import pytest

from nerfexport.runtime import RuntimeSpecError, load_runtime, shipped_runtimes


def test_shipped_runtimes_load_and_cpu_runs_one_worker_per_core():
    names = set(shipped_runtimes())
    assert {"ort-cpu", "ort-cuda", "ort-trt", "tensorrt", "torch"} <= names
    for n in names:
        spec = load_runtime(n)
        assert spec.chunk >= 1 and spec.workers >= 1 and spec.segment >= 1
    cpu = load_runtime("ort-cpu")
    assert cpu.threads == 1 and cpu.workers == (os.cpu_count() or 1)


@pytest.mark.parametrize("body,message", [
    ('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nworkers = -1\n', "workers"),
    ('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nchunk = 0\n', "chunk"),
    ('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nsegment = 0\n', "segment"),
    ('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nspeed = "max"\n', "unknown key"),
    ('kind = "magic"\n', "kind"),
    ('kind = "onnxruntime"\n', "providers"),
])
def test_bad_runtime_files_are_refused_in_one_line(tmp_path, body, message):
    p = tmp_path / "mine.toml"
    p.write_text(body)
    with pytest.raises(RuntimeSpecError, match=message):
        load_runtime(p)


def test_unknown_runtime_name():
    with pytest.raises(RuntimeSpecError, match="unknown runtime"):
        load_runtime("ort-quantum")


def test_a_runtime_file_sets_the_renderers_marching_segment(tmp_path):
    from nerfexport.render import SceneSettings, make_renderer
    p = tmp_path / "mine.toml"
    p.write_text('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nchunk = 512\nsegment = 64\n')
    spec = load_runtime(p)
    r = make_renderer(spec, {"coarse": None, "fine": None}, SceneSettings(2.0, 6.0, True, False, 64, 128))
    assert (r.chunk, r.segment) == (512, 64)
