"""Issue 34: the density sampler (fine samples placed from a baked density grid, no coarse network)
and the density grid in the bundle (optional manifest field; older bundles still render)."""
import json

import numpy as np
import pytest

from nerfexport.deploy.density import (DensityGrid, bake_density, decode, encode, load_density, occupied_corners,
                                       save_density)
from nerfexport.deploy.occupancy import OccupancyBits
from nerfexport.data.rays import pose_spherical
from nerfexport.deploy.render import Renderer, SceneSettings, make_renderer

BOX = [-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]


def _field(pts, dirs):
    """A solid ball with a sharp surface (density 0 to 200 over 0.05) and a colour that varies."""
    r = np.linalg.norm(pts - np.array([0.2, -0.1, 0.0], np.float32), axis=-1, keepdims=True)
    dens = np.clip(4000.0 * (0.8 - r), 0.0, 200.0).astype(np.float32)
    rgb = (0.5 + 0.5 * np.sin(3.0 * pts + dirs)).astype(np.float32)
    return rgb, dens


def _density(p):
    return _field(p, np.zeros_like(p))[1][:, 0]


def _occupancy(res=32):
    """Cells with density at a corner, dilated by one (as export/grid.py bakes)."""
    ax = np.linspace(BOX[0], BOX[3], res + 1, dtype=np.float32)
    c = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    hot = (_density(c) > 1.0).reshape(res + 1, res + 1, res + 1)
    occ = np.zeros((res,) * 3, bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                occ |= hot[dx:dx + res, dy:dy + res, dz:dz + res]
    from nerfexport.export.grid import dilate
    return OccupancyBits(dilate(occ, 1), BOX)


def _psnr(a, b):
    return -10 * np.log10(np.mean((a - b) ** 2))


def test_density_sampler_reproduces_the_plain_render():
    """The stated tolerance: >= 35 dB PSNR against the plain 64 + 64 render, largest pixel
    difference 0.1 (a grazing edge), with fewer than half the evaluations of the skipping renderer."""
    s = SceneSettings(2.0, 6.0, True, False, 64, 64)
    c2w = pose_spherical(30.0, -30.0, 4.0)
    H, W, f = 24, 20, 22.0
    plain = Renderer(_field, _field, s, chunk=64)
    a = plain.render_view(H, W, f, c2w)
    grid = _occupancy()
    skip = Renderer(_field, _field, s, chunk=64, grid=grid, early_stop=1e-3)
    skip.render_view(H, W, f, c2w)
    dg = bake_density(_density, grid, 64)     # twice the occupancy grid's resolution
    s32 = SceneSettings(2.0, 6.0, True, False, 64, 32)
    r = Renderer(_field, _field, s32, chunk=64, grid=grid, early_stop=1e-3, proposal=dg)
    b = r.render_view(H, W, f, c2w)
    assert 0.1 < a["acc"].mean() < 0.9                 # the ball and the background are both in view
    assert _psnr(a["rgb"], b["rgb"]) > 35.0
    assert np.abs(a["rgb"] - b["rgb"]).max() < 0.1
    assert np.abs(a["acc"] - b["acc"]).mean() < 2e-3
    assert r.timings.coarse_samples == 0                # no coarse network
    assert r.timings.samples < 0.5 * skip.timings.samples
    assert r.n_proposal == 87                           # about one depth a cell: ceil((6 - 2) / (3 / 64)) + 1
    # two workers render the same image
    c = Renderer(_field, _field, s32, chunk=64, grid=grid, early_stop=1e-3, proposal=dg, workers=2)
    assert np.abs(c.render_view(H, W, f, c2w)["rgb"] - b["rgb"]).max() < 1e-6


def test_the_box_around_matter_skips_rays_and_changes_nothing():
    """Rays that miss the box around the occupied cells are background at once: the image is the
    same as without the box, and the density grid is read for fewer rays."""
    from nerfexport.deploy.volume import box_hits
    grid = _occupancy()
    box = grid.matter_box()
    assert np.all(box[:3] > BOX[:3]) and np.all(box[3:] < BOX[3:])   # the ball, not the whole grid
    p = np.random.default_rng(0).uniform(-1.5, 1.5, (20000, 3)).astype(np.float32)
    outside = ~((p >= box[:3]) & (p <= box[3:])).all(-1)
    assert outside.sum() > 1000 and not grid.query(p[outside]).any()   # nothing occupied outside it
    o = np.array([[0, 0, -5], [3, 3, -5], [0, 0, -5], [0.1, 0.1, -5], [0, 5, 0]], np.float32)
    d = np.array([[0, 0, 1], [0, 0, 1], [0, 0, -1], [0, 0, 1], [0, -1, 0]], np.float32)
    np.testing.assert_array_equal(box_hits(box, o, d, 0.0, 10.0), [True, False, False, True, True])
    np.testing.assert_array_equal(box_hits(box, o, d, 0.0, 3.0), [False] * 5)     # the box lies beyond far
    assert box_hits(None, o, d, 0.0, 1.0).all()
    s32 = SceneSettings(2.0, 6.0, True, False, 64, 32)
    dg = bake_density(_density, grid, 64)
    reads = []
    counted = lambda p: reads.append(len(p)) or dg(p)
    c2w = pose_spherical(30.0, -30.0, 4.0)
    queried = []
    query = grid.query_rays
    grid.query_rays = lambda o, d, z: queried.append(z.size) or query(o, d, z)
    r = Renderer(_field, _field, s32, chunk=64, grid=grid, early_stop=1e-3, proposal=counted)
    a = r.render_view(40, 40, 22.0, c2w)
    with_box, depths_box = sum(reads), sum(queried)
    r._box, reads[:], queried[:] = None, [], []
    b = r.render_view(40, 40, 22.0, c2w)
    # the same image (up to the inverse CDF's 1e-5 floor, spread over fewer bins)
    assert np.abs(a["rgb"] - b["rgb"]).max() < 1e-3
    assert 0.01 < a["acc"].mean() < 0.9 and with_box == sum(reads) > 0   # occupied depths alone are read
    assert depths_box < 0.7 * sum(queried)      # only the stretch of each ray inside the box is proposed


def test_lattice_window_covers_each_segment_with_the_lattice_s_own_depths():
    from nerfexport.deploy.volume import lattice_window, linspace_depths
    lat = linspace_depths(2.0, 6.0, 9, 1)[0]            # 2.0, 2.5, ..., 6.0
    z, real = lattice_window(lat, np.array([3.2, 2.0, 5.6]), np.array([3.9, 2.1, 6.0]))
    assert z.shape == (3, 3)
    np.testing.assert_array_equal(z[0], lat[2:5])       # 3.0 .. 4.0 covers [3.2, 3.9]
    np.testing.assert_array_equal(z[1], lat[0:3])       # [2.0, 2.1]: 2.0, 2.5, then the lattice goes on
    np.testing.assert_array_equal(z[2], [5.5, 6.0, 6.0])   # the lattice ends: its last depth repeats
    np.testing.assert_array_equal(real, [[1, 1, 1], [1, 1, 1], [1, 1, 0]])
    assert all(np.isin(z.ravel(), lat))


def test_density_sampler_misses_no_matter_the_grid_blurs():
    """A thin sheet the density grid does not resolve (its corners read nothing) is still found:
    the occupied cells get a floor of samples."""
    def sheet(pts, dirs):
        dens = np.where(np.abs(pts[:, 0:1] - 0.013) < 0.01, 500.0, 0.0).astype(np.float32)
        return np.full(pts.shape, 0.2, np.float32), dens
    s = SceneSettings(2.0, 6.0, True, False, 64, 32)
    c2w = pose_spherical(90.0, 0.0, 4.0)     # looking along x, through the sheet
    occ = np.zeros((32,) * 3, bool)
    occ[15:17] = True                          # the two cells around x = 0
    grid = OccupancyBits(occ, BOX)
    blind = DensityGrid(np.zeros((33,) * 3, np.float32), BOX)
    out = Renderer(sheet, sheet, s, chunk=64, grid=grid, early_stop=1e-3, proposal=blind).render_view(6, 6, 8.0, c2w)
    assert out["acc"].min() > 0.99


def test_density_codes_round_trip(tmp_path):
    v = np.array([0.0, 1e-3, 0.5, 3.5, 80.0, 1043.0], np.float32)
    codes, scale = encode(v)
    back = decode(codes, scale)
    assert back[0] == 0.0 and abs(back[-1] - 1043.0) < 1e-2 * 1043.0
    big = v > 0.1
    assert np.all(np.abs(back[big] - v[big]) <= 0.03 * v[big] + 0.03)
    dg = DensityGrid(np.random.default_rng(0).uniform(0, 50, (5, 5, 5)).astype(np.float32), BOX)
    sc = save_density(dg, tmp_path / "d.npz")
    again = load_density(tmp_path / "d.npz", 4, BOX, sc)
    assert np.abs(again.values - dg.values).max() <= 0.03 * 50
    with pytest.raises(ValueError):
        load_density(tmp_path / "d.npz", 5, BOX, sc)           # not 6^3 codes
    (tmp_path / "bad.npz").write_bytes(b"not an archive")
    with pytest.raises(ValueError):
        load_density(tmp_path / "bad.npz", 4, BOX, sc)


def test_density_grid_is_baked_only_at_occupied_corners():
    occ = np.zeros((4, 4, 4), bool)
    occ[1, 2, 3] = True
    need = occupied_corners(occ, 8)            # refined twice
    assert need.shape == (9, 9, 9) and need.sum() == 27     # the 3^3 corners of the 2^3 sub-cells
    assert need[2:5, 4:7, 6:9].all()
    calls = []
    dg = bake_density(lambda p: calls.append(len(p)) or np.ones(len(p), np.float32),
                      OccupancyBits(occ, BOX), 8)
    assert sum(calls) == 27 and dg.values.sum() == 27
    with pytest.raises(ValueError):
        occupied_corners(occ, 6)


@pytest.fixture
def exported(tmp_path):
    import torch
    from conftest import tiny_config
    from nerfexport.export.bundle_writer import ExportOptions, export_bundle
    from nerfexport.model.mlp import NeRF
    torch.manual_seed(0)
    model = NeRF(tiny_config(width=16))
    with torch.no_grad():
        for net in (model.coarse, model.fine):
            net.alpha_linear.bias.fill_(2.0)
    new = tmp_path / "new"
    export_bundle(model, new, ExportOptions(grid=True, grid_res=8, grid_box=[-2, -2, -2, 2, 2, 2]))
    old = tmp_path / "old"
    export_bundle(model, old, ExportOptions(grid=True, grid_res=8, grid_box=[-2, -2, -2, 2, 2, 2], density=False))
    return new, old


def _render(path, sampler=None):
    from nerfexport.deploy.bundle import open_bundle
    from nerfexport.deploy.networks import make_networks, render_settings
    from nerfexport.deploy.runtime import load_runtime
    b = open_bundle(path)
    spec = load_runtime("ort-cpu")
    r = make_renderer(spec, make_networks(spec, bundle=b), render_settings(spec, b.manifest), b.occupancy(),
                      True, None, b.density(), sampler)
    return r, r.render_view(6, 5, 8.0, pose_spherical(30.0, -30.0, 4.0))


def test_export_bakes_a_hashed_density_grid(exported):
    from nerfexport.deploy.bundle import BundleError, open_bundle
    new, _ = exported
    m = json.loads((new / "manifest.json").read_text())
    # the density grid is twice as fine as the 8^3 occupancy grid; the sampler spreads weight over
    # one occupancy cell's length: two of its intervals
    assert m["version"] == 1 and m["density"]["file"] == "density.npz" and m["density"]["res"] == 16
    b = open_bundle(new)
    assert b.density().res == 16 and b.manifest.size_bytes() > b.manifest.density.bytes > 0
    r, out = _render(new, "density")
    assert r.proposal is not None and r.timings.coarse_samples == 0 and np.isfinite(out["rgb"]).all()
    assert r.proposal_dilate == 2
    raw = (new / "density.npz").read_bytes()
    (new / "density.npz").write_bytes(raw[:-3] + b"xyz")
    with pytest.raises(BundleError, match="density.npz"):
        open_bundle(new)


def test_a_bundle_without_a_density_grid_still_renders(exported):
    """Bundles written before issue 34 (no ``density`` in the manifest) render with the coarse network."""
    new, old = exported
    assert "density" not in json.loads((old / "manifest.json").read_text())
    r, out = _render(old)
    assert r.proposal is None and r.timings.coarse_samples > 0 and out["rgb"].shape == (6, 5, 3)
    with pytest.raises(ValueError, match="density"):
        _render(old, "density")
    # a new bundle with the field and file removed by hand reads as an old one
    m = json.loads((new / "manifest.json").read_text())
    del m["density"]
    (new / "manifest.json").write_text(json.dumps(m))
    (new / "density.npz").unlink()
    r2, out2 = _render(new)
    assert r2.proposal is None and np.abs(out2["rgb"] - out["rgb"]).max() < 1e-6


def test_large_views_render_in_bands_equal_to_the_whole_view(monkeypatch):
    """render_view cuts a view of more than TILE_RAYS pixels into bands of rows (bounded memory at
    800x800 and beyond); the bands' rays and the image equal the whole view's."""
    import nerfexport.deploy.render as render_mod
    from nerfexport.deploy.rays import band_rays, view_rays
    c2w = pose_spherical(30.0, -30.0, 4.0)
    for focal, ndc in ((9.0, False), ((9.0, 8.0, 4.2, 6.7), False), (9.0, True)):
        whole = view_rays(13, 7, focal, c2w, ndc)
        band = band_rays(13, 7, focal, c2w, ndc, 4, 9)
        for a, b in zip(whole, band):
            np.testing.assert_allclose(b, a[4 * 7:9 * 7], rtol=1e-6, atol=1e-6)
    s = SceneSettings(2.0, 6.0, True, False, 16, 16)
    a = Renderer(_field, _field, s, chunk=64).render_view(13, 7, 9.0, c2w)
    monkeypatch.setattr(render_mod, "TILE_RAYS", 20)     # bands of 2 rows
    b = Renderer(_field, _field, s, chunk=64).render_view(13, 7, 9.0, c2w)
    for k in ("rgb", "depth", "acc"):
        np.testing.assert_allclose(b[k], a[k], atol=1e-6)


def test_density_scale_one_bakes_at_the_occupancy_grids_corners(tmp_path):
    """``density_scale = 1`` (the bundles before it was 2): the density at the occupancy grid's own
    corners, and the sampler spreads weight over one interval; 2: the finer grid agrees with it on
    the corners they share."""
    import torch
    from nerfexport.deploy.bundle import open_bundle
    from nerfexport.export.bundle_writer import ExportOptions, export_bundle
    from nerfexport.model.mlp import NeRF
    from conftest import tiny_config
    torch.manual_seed(0)
    model = NeRF(tiny_config(width=16))
    with torch.no_grad():
        model.fine.alpha_linear.bias.fill_(2.0)
    box = [-2, -2, -2, 2, 2, 2]
    for scale in (1, 2):
        export_bundle(model, tmp_path / f"s{scale}", ExportOptions(grid=True, grid_res=8, grid_box=box,
                                                                   density_scale=scale))
    one, two = open_bundle(tmp_path / "s1"), open_bundle(tmp_path / "s2")
    assert (one.density().res, two.density().res) == (8, 16)
    r, _ = _render(tmp_path / "s1", "density")
    assert r.proposal_dilate == 1
    a, b = one.density().values, two.density().values[::2, ::2, ::2]
    both = (a > 0) & (b > 0)
    assert both.sum() > 10 and np.allclose(a[both], b[both], rtol=0.03)


def test_the_lattice_occupancy_and_weights_equal_the_pointwise_ones():
    """``query_rays`` reads the same cells as ``query`` at the points (inside and outside the box),
    and the lattice weights equal ``ray_weights``."""
    from nerfexport.deploy.proposal import lattice_occupancy, lattice_weights
    from nerfexport.deploy.volume import linspace_depths, ray_weights
    grid = _occupancy()
    rng = np.random.default_rng(3)
    o = rng.uniform(-3, 3, (200, 3)).astype(np.float32)
    d = (rng.uniform(-0.8, 0.8, (200, 3)) - o).astype(np.float32) / 3   # most rays through the ball
    z = linspace_depths(0.0, 6.0, 90, 200)
    pts = o[:, None] + d[:, None] * z[..., None]
    occ = grid.query_rays(o, d, z)
    assert 0.05 < occ.mean() < 0.5 and not occ.all(1).any()
    np.testing.assert_array_equal(occ, grid.query(pts))
    class Plain:   # a grid without query_rays
        query = staticmethod(grid.query)
    np.testing.assert_array_equal(lattice_occupancy(Plain(), o, d, z), occ)
    dens = np.where(occ, rng.uniform(0, 50, occ.shape), 0).astype(np.float32)
    np.testing.assert_allclose(lattice_weights(dens, z, d), ray_weights(dens, z, d), atol=2e-6)


def test_a_density_grid_no_finer_than_the_occupancy_grid_is_named_in_the_note(exported, tmp_path):
    """Bundles exported before the density grid was made finer place samples worse: the render's
    note says so (and to export again); a current bundle's note does not."""
    import torch
    from conftest import tiny_config
    from nerfexport.deploy.run import skip_note
    from nerfexport.export.bundle_writer import ExportOptions, export_bundle
    from nerfexport.model.mlp import NeRF
    new, _ = exported
    torch.manual_seed(0)
    coarse = tmp_path / "coarse"
    export_bundle(NeRF(tiny_config(width=16)), coarse,
                  ExportOptions(grid=True, grid_res=8, grid_box=[-2, -2, -2, 2, 2, 2], density_scale=1))
    notes = {}
    for name, path in (("new", new), ("coarse", coarse)):
        r, _ = _render(path, "density")
        notes[name] = skip_note(r, r.grid, True, path)
    assert "baked density" in notes["new"] and "export it again" not in notes["new"]
    assert "no finer than the occupancy grid (8^3" in notes["coarse"] and "export it again" in notes["coarse"]
