"""`nerfexport doctor`: one table of every shipped runtime, versions, GPU and CPU features."""

from typer.testing import CliRunner

from nerfexport.cli import app
from nerfexport.bench.doctor import CPU_FEATURES, Row, diagnose, table, tiny_model
from nerfexport.deploy.runtime import RuntimeUnavailable, check_available, load_runtime, shipped_runtimes


def _available(name):
    try:
        check_available(load_runtime(name))
        return True
    except RuntimeUnavailable:
        return False


def test_doctor_prints_one_table_of_every_shipped_runtime():
    res = CliRunner().invoke(app, ["doctor"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("| section") and all(l.startswith("|") for l in lines)   # one table, nothing else
    rows = {tuple(c.strip() for c in l.strip("|").split("|"))[:3]: l for l in lines[2:]}
    runtimes = {item: status for section, item, status in rows if section == "runtime"}
    assert set(runtimes) == set(shipped_runtimes())
    for name, status in runtimes.items():
        if _available(name):
            assert status.startswith("available"), (name, status)
        else:   # the GPU runtimes on a machine without them: unavailable, with the reason
            assert status == "unavailable"
            line = next(l for (s, i, _), l in rows.items() if s == "runtime" and i == name)
            assert line.rstrip(" |").split("|")[-1].strip(), f"{name} has no reason"
    for item in ("onnxruntime", "onnxruntime providers", "tensorrt", "cuda-python", "torch", "CUDA driver"):
        assert ("version", item) in {(s, i) for s, i, _ in rows}, item
    assert {name for name, _ in CPU_FEATURES} <= {i for s, i, _ in rows if s == "cpu"}


def test_doctor_reports_the_provider_a_session_really_got():
    rows = {r.item: r for r in diagnose() if r.section == "runtime"}
    cpu = rows["ort-cpu"]
    assert cpu.status == "available, ran" and cpu.detail == "session provider CPUExecutionProvider"
    if not _available("ort-cuda"):
        assert rows["ort-cuda"].status == "unavailable" and "CUDAExecutionProvider" in rows["ort-cuda"].detail
    if not _available("tensorrt"):
        assert rows["tensorrt"].status == "unavailable" and "TensorRT" in rows["tensorrt"].detail


def test_table_and_tiny_network():
    import onnx
    text = table([Row("cpu", "avx2", "yes", "avx2"), Row("runtime", "ort-cuda", "unavailable", "no GPU")])
    assert text.count("\n") == 3 and "| runtime | ort-cuda | unavailable | no GPU |" in text
    m = tiny_model()
    onnx.checker.check_model(m)
    assert [i.name for i in m.graph.input] == ["points", "viewdirs"] and [o.name for o in m.graph.output] == ["rgb", "density"]
