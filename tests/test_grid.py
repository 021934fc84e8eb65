import numpy as np
import pytest
import torch

from conftest import tiny_config
from nerfexport.deploy.bundle import BundleError, open_bundle
from nerfexport.data.datasets import load_blender
from nerfexport.export.bundle_writer import ExportError, ExportOptions, export_bundle
from nerfexport.deploy.occupancy import GRID_FILE, GridError, OccupancyBits
from nerfexport.export.grid import (bake, density_threshold, dilate, ray_points,
                             scene_box)
from nerfexport.model.mlp import NeRF
from nerfexport.deploy.render import DEFAULT_EARLY_STOP, Renderer, SceneSettings, render_and_score
from nerfexport.deploy.ort_network import OrtNetwork
from nerfexport.data.synthetic import make_scene
from nerfexport.train.factory import new_model
from nerfexport.train.loop import TrainConfig, train


def test_query_maps_points_to_cells_and_outside_is_empty():
    occ = np.zeros((4, 4, 4), bool)
    occ[1, 2, 3] = True
    g = OccupancyBits(occ, [0, 0, 0, 4, 4, 4])
    pts = np.array([[1.5, 2.5, 3.5], [1.01, 2.99, 3.0], [1.5, 2.5, 2.5], [5.0, 2.5, 3.5], [-0.1, 0, 0]], np.float32)
    assert g.query(pts).tolist() == [True, True, False, False, False]
    assert g.query(pts.reshape(5, 1, 3)).shape == (5, 1)
    assert g.fraction == pytest.approx(1 / 64)
    # a model with matter outside the box: outside counts as occupied
    assert OccupancyBits(occ, [0, 0, 0, 4, 4, 4], outside=True).query(pts).tolist() == [True, True, False, True, True]


def test_save_load_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    g = OccupancyBits(rng.random((8, 8, 8)) < 0.3, [-1, -2, -3, 1, 2, 3])
    g.save(tmp_path / GRID_FILE)
    h = OccupancyBits.load(tmp_path / GRID_FILE, 8, g.aabb)
    assert np.array_equal(h.occupied, g.occupied) and np.allclose(h.aabb, g.aabb)
    with pytest.raises(GridError, match="packed bits"):
        OccupancyBits.load(tmp_path / GRID_FILE, 16, g.aabb)
    (tmp_path / "bad.npz").write_bytes(b"not a grid")
    with pytest.raises(GridError, match="not an occupancy grid"):
        OccupancyBits.load(tmp_path / "bad.npz", 8, g.aabb)
    with pytest.raises(GridError, match="empty"):
        OccupancyBits(np.ones((2, 2, 2)), [0, 0, 0, 0, 1, 1])


def test_dilate_grows_by_whole_cells():
    occ = np.zeros((7, 7, 7), bool)
    occ[3, 3, 3] = True
    assert dilate(occ, 1).sum() == 27 and dilate(occ, 2).sum() == 125
    assert dilate(occ, 0).sum() == 1


def _constant_density_model(density: float) -> NeRF:
    torch.manual_seed(0)
    model = NeRF(tiny_config(width=8))
    with torch.no_grad():
        for net in (model.coarse, model.fine):
            net.alpha_linear.weight.zero_()
            net.alpha_linear.bias.fill_(density)
    return model


def test_bake_thresholds_the_density():
    box = [-1, -1, -1, 1, 1, 1]
    cfg = tiny_config(width=8)
    thr = density_threshold(0.2, cfg.near, cfg.far, cfg.n_coarse)
    full, info = bake(_constant_density_model(100 * thr), box, res=8)
    assert full.fraction == 1.0 and info["density_threshold"] == pytest.approx(thr, rel=1e-5)
    # a soft field: the threshold is at most 5% of its largest density
    soft, info = bake(_constant_density_model(0.5 * thr), box, res=8)
    assert soft.fraction == 1.0 and info["density_threshold"] == pytest.approx(0.025 * thr, rel=1e-4)
    empty, _ = bake(_constant_density_model(0.0), box, res=8)
    assert empty.fraction == 0.0
    with pytest.raises(GridError):
        bake(_constant_density_model(1.0), box, res=1)


def test_scene_box():
    cams = np.array([[0, 0, 4.0], [3.0, 0, 0]])
    assert scene_box(cams, 2.0, False) == [-2.0, -2.0, -2.0, 2.0, 2.0, 2.0]
    assert scene_box(None, 2.0, True)[2:6:3] == [-1.0, 1.0]
    with pytest.raises(GridError, match="cameras"):
        scene_box(None, 2.0, False)


def test_export_writes_a_hashed_grid_and_refuses_one_without_a_box(tmp_path):
    model = _constant_density_model(0.0)
    with pytest.raises(ExportError, match="box"):
        export_bundle(model, tmp_path / "nobox", ExportOptions(grid=True))
    assert not (tmp_path / "nobox").exists()
    export_bundle(model, tmp_path / "b", ExportOptions(grid=True, grid_res=16, grid_box=[-2, -2, -2, 2, 2, 2]))
    b = open_bundle(tmp_path / "b")
    occ = b.manifest.occupancy
    assert occ.res == 16 and occ.file == GRID_FILE and b.occupancy().fraction == occ.fraction == 0.0
    assert occ.outside == "empty" and occ.baked["max_density_outside"] == 0.0
    dens = b.manifest.density.bytes if b.manifest.density else 0      # the baked density grid (speed-native.md)
    assert b.size_bytes() == sum(n.bytes for n in b.manifest.networks.values()) + occ.bytes + dens
    (tmp_path / "b" / GRID_FILE).write_bytes(b"tampered")
    with pytest.raises(BundleError, match="occupancy.npz"):
        open_bundle(tmp_path / "b")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model trained on the embedded scene (surfaces, empty space, a white background)."""
    tmp = tmp_path_factory.mktemp("grid")
    scene = load_blender(make_scene(tmp / "scene", size=16, n_train=6, n_val=1, n_test=2, seed=0))
    model = new_model(scene, width=64, depth=4, n_coarse=16, n_fine=16, seed=0)
    train(model, scene, TrainConfig(steps=300, batch_rays=256, n_coarse=16, n_fine=16, lr=1e-3, lr_final=2e-4,
                                    precrop_iters=0, ckpt_every_steps=0, seed=0, grid_warmup=50, grid_every=16))
    return model, scene


def test_grid_never_drops_a_surface_seen_in_the_training_views(trained, tmp_path):
    """The baked grid (default threshold and dilation) with early termination costs at most
    0.1 dB on the training views, and skips a real share of the network evaluations."""
    model, scene = trained
    box = scene_box(scene.poses[:, :3, 3], model.cfg.near, False)
    tr_imgs, tr_poses = scene.subset("train")
    probe = ray_points(tr_poses, scene.H, scene.W, scene.focal, model.cfg.near, model.cfg.far, False, n_rays=512)
    export_bundle(model, tmp_path / "b", ExportOptions(grid=True, grid_box=box, grid_probe=probe))
    b = open_bundle(tmp_path / "b")
    grid = b.occupancy()
    assert 0.0 < grid.fraction < 0.6 and b.manifest.occupancy.baked["outside_mse"] is not None
    nets = [OrtNetwork(b.network_path(w)) for w in ("coarse", "fine")]
    s = SceneSettings.from_manifest(b.manifest)
    imgs, poses = scene.subset("train")
    plain = Renderer(*nets, s)
    skip = Renderer(*nets, s, grid=grid, early_stop=DEFAULT_EARLY_STOP)
    p_plain = render_and_score(plain, imgs, poses, scene.H, scene.W, scene.focal).psnr
    p_skip = render_and_score(skip, imgs, poses, scene.H, scene.W, scene.focal).psnr
    assert p_plain > 15.0  # the model learned the scene: there are surfaces to lose
    assert p_skip >= p_plain - 0.1
    assert skip.timings.samples < 0.8 * plain.timings.samples  # a soft, foggy little model: lego skips 72%
