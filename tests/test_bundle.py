import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch

from conftest import tiny_config
from nerfexport.deploy.bundle import BundleError, open_bundle
from nerfexport.export.bundle_writer import ExportError, ExportOptions, export_bundle
from nerfexport.model.mlp import NeRF


@pytest.fixture
def bundle(tmp_path):
    torch.manual_seed(0)
    model = NeRF(tiny_config(width=16))
    ck = tmp_path / "m.pt"
    from nerfexport.model.checkpoint import save_checkpoint
    save_checkpoint(model, ck)
    export_bundle(model, tmp_path / "b", ExportOptions(), source=ck)
    return model, tmp_path / "b", ck


def test_manifest_and_metadata_agree_with_checkpoint(bundle):
    model, path, ck = bundle
    b = open_bundle(path)
    m = b.manifest
    from nerfexport.model.checkpoint import file_sha256
    assert m.source["sha256"] == file_sha256(ck)
    assert m.scene.near == model.cfg.near and m.scene.n_fine == model.cfg.n_fine
    assert m.networks["fine"].architecture["widths"] == model.fine.cfg.widths
    for which in ("coarse", "fine"):
        meta = {p.key: p.value for p in onnx.load(b.network_path(which)).metadata_props}
        assert meta["network"] == which and meta["precision"] == "fp32"
        assert float(meta["far"]) == model.cfg.far and meta["source_sha256"] == m.source["sha256"]
        assert json.loads(meta["widths"]) == getattr(model, which).cfg.to_dict()


def test_tampered_missing_and_newer_bundles_are_refused(bundle):
    _, path, _ = bundle
    (path / "fine.onnx").write_bytes((path / "fine.onnx").read_bytes() + b"x")
    with pytest.raises(BundleError, match="hash"):
        open_bundle(path)
    (path / "fine.onnx").unlink()
    with pytest.raises(BundleError, match="missing"):
        open_bundle(path)
    m = json.loads((path / "manifest.json").read_text())
    m["version"] = 99
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="version 99"):
        open_bundle(path)
    with pytest.raises(BundleError):
        open_bundle(path / "nope")


def test_existing_folder_is_not_overwritten(bundle, tmp_path):
    model, path, _ = bundle
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="--force"):
        export_bundle(model, other, ExportOptions())
    assert (other / "notes.txt").read_text() == "keep me"
    export_bundle(model, path, ExportOptions())  # an earlier bundle is replaced
    assert open_bundle(path).precision == "fp32"


def test_interrupted_export_leaves_nothing(bundle, tmp_path, monkeypatch):
    model, path, _ = bundle
    before = sorted(p.name for p in tmp_path.iterdir())
    import nerfexport.export.bundle_writer as ex

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(ex, "_manifest", boom)
    with pytest.raises(KeyboardInterrupt):
        export_bundle(model, tmp_path / "new", ExportOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "new").exists()


SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import onnxruntime as ort
    root = sys.argv[1]
    man = json.load(open(f"{root}/manifest.json"))
    pts = np.random.default_rng(0).uniform(-1, 1, (100, 3)).astype(np.float32)
    dirs = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    for name, net in man["networks"].items():
        if net is None:
            continue
        sess = ort.InferenceSession(f"{root}/{net['file']}", providers=["CPUExecutionProvider"])
        rgb, density = sess.run(["rgb", "density"], {"points": pts, "viewdirs": dirs})
        assert rgb.shape == (100, 3) and density.shape == (100, 1)
        assert 0 <= rgb.min() and rgb.max() <= 1 and density.min() >= 0
        print(name, float(rgb.mean()), float(density.mean()))
    if "torch" in sys.modules or "nerfexport" in sys.modules:
        raise SystemExit("imported torch or nerfexport")
''')


def test_bundle_loads_with_only_numpy_and_onnxruntime(bundle, tmp_path):
    _, path, _ = bundle
    script = tmp_path / "load.py"
    script.write_text(SCRIPT)
    res = subprocess.run([sys.executable, "-I", str(script), str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("coarse") and "fine" in res.stdout
