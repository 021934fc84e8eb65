import os

import numpy as np
import pytest

from nerfexport.deploy.runtime import RuntimeSpecError, load_runtime, shipped_runtimes


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
    ('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nencoding = "gpu"\n', "encoding"),
    ('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nearly_stop = 1.5\n', "early_stop"),
    ('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nearly_stop = "soon"\n', "early_stop"),
    ('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nproposal_segment = 0\n', "proposal_segment"),
    ('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nsampler = "magic"\n', "sampler"),
    ('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nproposal_softness = 0\n', "proposal_softness"),
    ('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nproposal_spacing = 100\n', "proposal_spacing"),
    ('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nproposal_spacing = "wide"\n', "proposal_spacing"),
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
    from nerfexport.deploy.render import SceneSettings, make_renderer
    p = tmp_path / "mine.toml"
    p.write_text('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nchunk = 512\nsegment = 64\n')
    spec = load_runtime(p)
    r = make_renderer(spec, {"coarse": None, "fine": None}, SceneSettings(2.0, 6.0, True, False, 64, 128))
    assert (r.chunk, r.segment) == (512, 64)


def test_a_runtime_file_sets_early_termination_and_the_density_samplers_segment(tmp_path):
    from nerfexport.deploy.render import DEFAULT_EARLY_STOP, SceneSettings, make_renderer
    s = SceneSettings(2.0, 6.0, True, False, 64, 32)
    p = tmp_path / "mine.toml"
    p.write_text('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nearly_stop = 0.01\nproposal_segment = 4\n')
    spec = load_runtime(p)
    r = make_renderer(spec, {"coarse": None, "fine": None}, s)
    assert (r.early_stop, r.proposal_segment) == (0.01, 4)
    # the command line's value wins; without the key, the renderer's default
    assert make_renderer(spec, {"coarse": None, "fine": None}, s, early_stop=0.0).early_stop == 0.0
    r = make_renderer(load_runtime("ort-cpu"), {"coarse": None, "fine": None}, s)
    assert (r.early_stop, r.proposal_segment) == (DEFAULT_EARLY_STOP, 8)


def test_a_runtime_file_picks_and_tunes_the_density_sampler(tmp_path):
    from nerfexport.deploy.density import DensityGrid
    from nerfexport.deploy.occupancy import OccupancyBits
    from nerfexport.deploy.render import SAMPLERS, SceneSettings, make_renderer
    from nerfexport.deploy.runtime import SAMPLER_NAMES
    from nerfexport.deploy.volume import proposal_samples
    assert SAMPLER_NAMES == SAMPLERS
    s = SceneSettings(2.0, 6.0, True, False, 16, 32)
    occ = OccupancyBits(np.ones((8, 8, 8), bool), [-1.5] * 3 + [1.5] * 3)
    dg = DensityGrid(np.ones((65, 65, 65), np.float32), occ.aabb)
    nets = {"coarse": lambda p, v: (p, p[:, :1]), "fine": lambda p, v: (p, p[:, :1])}
    p = tmp_path / "mine.toml"
    p.write_text('kind = "onnxruntime"\nproviders = ["CPUExecutionProvider"]\nsampler = "density"\n'
                 'proposal_softness = 0.3\nproposal_spacing = 1.5\n')
    spec = load_runtime(p)
    r = make_renderer(spec, nets, s, occ, density=dg)
    assert r.proposal is dg and r.proposal_softness == 0.3
    assert r.n_proposal == proposal_samples(dg, s, 1.5) == 58 < proposal_samples(dg, s) == 87
    # the command line's sampler wins over the file's; a file without the keys keeps the defaults
    assert make_renderer(spec, nets, s, occ, density=dg, sampler="network").proposal is None
    r = make_renderer(load_runtime("ort-cpu"), nets, s, occ, density=dg)
    assert r.proposal is None and r.proposal_softness == 0.1
    # the shipped fast runtime uses it
    fast = load_runtime("ort-cpu-fast")
    assert fast.sampler == "density" and make_renderer(fast, nets, s, occ, density=dg).proposal is dg
    assert make_renderer(fast, nets, s, occ, density=dg, sampler="auto").proposal is dg   # the CLI's default


def _bundle(tmp_path, precision="fp32", viewdirs=True, fine=True):
    import torch
    from conftest import tiny_config
    from nerfexport.deploy.bundle import open_bundle
    from nerfexport.export.bundle_writer import ExportOptions, export_bundle
    from nerfexport.model.mlp import NeRF
    torch.manual_seed(0)
    tmp_path.mkdir(parents=True, exist_ok=True)
    export_bundle(NeRF(tiny_config(width=32, viewdirs=viewdirs, fine=fine)), tmp_path / "b",
                  ExportOptions(precision=precision))
    return open_bundle(tmp_path / "b")


def _points(n=3000):
    rng = np.random.default_rng(0)
    pts = rng.uniform(-4, 4, (n, 3)).astype(np.float32)      # scene coordinates: up to 2^9 x 4 inside Sin
    d = rng.standard_normal((n, 3)).astype(np.float32)
    return pts, d / np.linalg.norm(d, axis=1, keepdims=True)


@pytest.mark.parametrize("precision,viewdirs,tol", [("fp32", True, 1e-5), ("fp32", False, 1e-5), ("fp16", True, 2e-3)])
def test_host_encoding_and_density_only_sessions_compute_what_the_graph_does(tmp_path, precision, viewdirs, tol):
    from nerfexport.deploy.ort_network import OrtNetwork
    b = _bundle(tmp_path, precision, viewdirs)
    p = b.network_path("fine")
    pts, d = _points()
    rgb, dens = OrtNetwork(p)(pts, d)
    host = OrtNetwork(p, encoding="host")
    # Sin and Cos left the graph: both encodings (one without view directions) are fed by the host
    assert {e[0] for e in host.host_encodings} == ({"points", "viewdirs"} if viewdirs else {"points"})
    h_rgb, h_dens = host(pts, d)
    assert np.abs(h_rgb - rgb).max() < tol and np.abs(h_dens - dens).max() < tol * max(1.0, float(np.abs(dens).max()))
    only = OrtNetwork(p, encoding="host", outputs=("density",))
    o_rgb, o_dens = only(pts, d)
    assert o_rgb is None and np.abs(o_dens - dens).max() < tol * max(1.0, float(np.abs(dens).max()))
    # the density needs no view directions: their encoding is not computed at all
    assert [e[0] for e in only.host_encodings] == ["points"]


def test_density_only_graph_drops_the_colour_branch(tmp_path):
    import onnx
    from nerfexport.deploy.graph_edits import cut_encodings, prune_outputs
    b = _bundle(tmp_path)
    m = onnx.load(str(b.network_path("coarse")))
    before = {n.name for n in m.graph.node}
    prune_outputs(m, ("density",))
    after = {n.name for n in m.graph.node}
    assert after < before
    assert not any(n.startswith(("views.", "rgb", "view_encoding", "feature")) for n in after)
    assert any(n.startswith("alpha") for n in after)
    cuts = cut_encodings(m)
    assert [c[0] for c in cuts] == ["points"] and not any(n.op_type in ("Sin", "Cos") for n in m.graph.node)
    onnx.checker.check_model(m)
    with pytest.raises(RuntimeSpecError, match="no output"):
        prune_outputs(onnx.load(str(b.network_path("coarse"))), ("colour",))


def test_a_graph_not_in_the_exported_form_is_refused_for_host_encoding(tmp_path):
    import onnx
    from nerfexport.deploy.ort_network import OrtNetwork
    b = _bundle(tmp_path)
    m = onnx.load(str(b.network_path("fine")))
    for n in m.graph.node:
        if n.name == "encoding/sin":
            n.op_type = "Cos"
            n.input[0] = "points"    # Sin no longer reads the scaled points
    p = tmp_path / "odd.onnx"
    onnx.save(m, str(p))
    with pytest.raises(RuntimeSpecError, match="encoding"):
        OrtNetwork(p, encoding="host")


def test_make_networks_gives_ort_cpu_a_density_only_coarse_network(tmp_path):
    from nerfexport.deploy.networks import make_networks
    spec = load_runtime("ort-cpu")
    assert spec.encoding == "graph"
    nets = make_networks(spec, bundle=_bundle(tmp_path / "a"))
    assert nets["coarse"].outputs == ("density",) and nets["fine"].outputs == ("rgb", "density")
    # without a fine network the coarse one colours the fine samples too: it keeps its colour
    nets = make_networks(spec, bundle=_bundle(tmp_path / "b", fine=False))
    assert nets["fine"] is None and nets["coarse"].outputs == ("rgb", "density")
    # ... and so without fine samples (bench --samples 64,0): the coarse colour is the image
    b = _bundle(tmp_path / "c")
    assert make_networks(spec, bundle=b, n_fine=0)["coarse"].outputs == ("rgb", "density")


def test_a_density_only_coarse_network_is_refused_where_its_colour_would_be_the_image(tmp_path):
    from nerfexport.deploy.render import Renderer, SceneSettings
    from nerfexport.deploy.ort_network import OrtNetwork
    b = _bundle(tmp_path)
    only = OrtNetwork(b.network_path("coarse"), outputs=("density",))
    fine = OrtNetwork(b.network_path("fine"))
    s = SceneSettings(2.0, 6.0, True, False, 8, 8)
    Renderer(only, fine, s)
    for f, n_fine in ((None, 8), (fine, 0)):
        with pytest.raises(ValueError, match="density alone"):
            Renderer(only, f, SceneSettings(2.0, 6.0, True, False, 8, n_fine))
    with pytest.raises(RuntimeSpecError, match="outputs"):
        OrtNetwork(b.network_path("coarse"), outputs=("density", "rgb"))


def test_one_render_entry_dispatches_on_the_kind_checking_once(tmp_path, monkeypatch):
    """deploy's run_render takes the families it renders with: availability is checked once, the
    family's own check once, and a path of the wrong kind is refused once, in one line."""
    from nerfexport.deploy import networks
    from nerfexport.deploy.render import SceneSettings
    from nerfexport.deploy.run import run_render
    from nerfexport.deploy.runtime import RuntimeUnavailable
    calls, events = [], []
    monkeypatch.setattr(networks, "check_available", lambda spec: calls.append(spec.name))
    toy = lambda p, d: (np.full((len(p), 3), 0.5, np.float32), np.ones((len(p), 1), np.float32))

    class Toy:
        renders = "checkpoint"

        def check(self, spec):
            calls.append("check")

        def open(self, spec, path):
            return networks.Source(path, SceneSettings(2.0, 6.0, True, False, 8, 8),
                                   {"H": 6, "W": 8, "focal": 8.0}, None, lambda n_fine=None: {"coarse": toy, "fine": toy},
                                   plain=True, warnings=["careful"])

    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not read by the toy family")
    s = run_render(ckpt, "torch", "spiral", tmp_path / "r", progress=events.append, sampler="density",
                   families={"torch": Toy()})
    assert calls == ["torch", "check"] and s.views == 40 and s.runtime == "torch"
    assert {"event": "warning", "text": "careful"} in events
    assert {"event": "note", "text": "plain rendering: every sample evaluated"} in events
    with pytest.raises(RuntimeSpecError, match="renders a checkpoint"):
        run_render(tmp_path, "torch", families={"torch": Toy()})
    with pytest.raises(RuntimeSpecError, match="renders a bundle folder"):
        run_render(ckpt, "ort-cpu", families={**networks.FAMILIES, "torch": Toy()})
    with pytest.raises(RuntimeUnavailable, match="train side"):
        run_render(ckpt, "torch")   # the deploy side alone has no torch family
