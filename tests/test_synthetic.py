import numpy as np
import pytest

from nerfexport.data.datasets import load_blender
from nerfexport.data.rays import pose_spherical
from nerfexport.data.synthetic import _shade, make_scene, render_view


def test_make_scene_is_a_loadable_blender_dataset(tmp_path):
    root = make_scene(tmp_path / "scene", size=16, n_train=4, n_val=2, n_test=3, seed=1)
    s = load_blender(root)
    assert s.images.shape == (9, 16, 16, 3)
    assert len(s.splits["train"]) == 4 and len(s.splits["test"]) == 3
    # objects cover part of the image; the rest is the white background
    covered = (s.images < 0.98).any(-1).mean()
    assert 0.05 < covered < 0.9
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_refuses_an_existing_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        make_scene(tmp_path / "x", size=8, n_train=1, n_val=1, n_test=1)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_colour_depends_on_view_direction():
    # the same surface point seen from two directions differs by the specular highlight
    p = np.array([[0.45, -0.2, 0.65]])          # top of the big sphere
    d1 = np.array([[0.0, 0.0, -1.0]])
    d2 = np.array([[0.6, 0.0, -0.8]])
    c1, a1 = _shade(p - 2 * d1, d1)
    c2, a2 = _shade(p - 2 * d2, d2)
    assert a1[0] == a2[0] == 1.0
    assert np.abs(c1 - c2).max() > 0.05


def test_render_view_is_deterministic_and_has_alpha():
    img = render_view(pose_spherical(10, -30, 4.0), 12)
    assert img.shape == (12, 12, 4)
    assert img[..., 3].min() == 0.0 and img[..., 3].max() == 1.0
    np.testing.assert_array_equal(img, render_view(pose_spherical(10, -30, 4.0), 12))
