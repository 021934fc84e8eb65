import json

import numpy as np
import pytest

from nerfexport.data.datasets import DatasetError, load_blender, load_llff, load_scene

from conftest import write_blender, write_llff


def test_blender_white_and_black(blender_dir):
    s = load_blender(blender_dir, white_bkgd=True)
    assert s.images.shape == (7, 8, 8, 3) and s.poses.shape == (7, 4, 4)
    assert list(s.splits["train"]) == [0, 1, 2] and list(s.splits["test"]) == [5, 6]
    np.testing.assert_allclose(s.images[0, 4, 4], [1, 0, 0])           # opaque red
    np.testing.assert_allclose(s.images[0, 7, 7], [1, 1, 1])           # transparent -> white
    np.testing.assert_allclose(s.images[0, 0, 0], [127 / 255, 1, 127 / 255], atol=1e-6)  # half green on white
    b = load_blender(blender_dir, white_bkgd=False)
    np.testing.assert_allclose(b.images[0, 7, 7], [0, 0, 0])
    assert s.focal == pytest.approx(0.5 * 8 / np.tan(0.5 * 0.69))
    assert (s.near, s.far, s.ndc) == (2.0, 6.0, False)


def test_blender_downscale_is_area_average_after_compositing(blender_dir):
    full = load_blender(blender_dir)
    half = load_blender(blender_dir, downscale=2)
    assert half.images.shape == (7, 4, 4, 3)
    np.testing.assert_allclose(half.images[0], full.images[0].reshape(4, 2, 4, 2, 3).mean((1, 3)), atol=1e-6)
    assert half.focal == pytest.approx(full.focal / 2)


def test_blender_test_every(blender_dir):
    s = load_blender(blender_dir, test_every=2)
    assert len(s.splits["test"]) == 1


def test_blender_bad_input(tmp_path, blender_dir):
    with pytest.raises(DatasetError, match="does not exist"):
        load_scene(tmp_path / "nope")
    with pytest.raises(DatasetError, match="neither"):
        load_scene(tmp_path)
    meta = blender_dir / "transforms_val.json"
    meta.write_text("{not json")
    with pytest.raises(DatasetError, match="malformed"):
        load_blender(blender_dir)
    meta.write_text(json.dumps({"frames": []}))
    with pytest.raises(DatasetError, match="malformed"):
        load_blender(blender_dir)
    d2 = write_blender(tmp_path / "b2")
    (d2 / "train" / "r_1.png").unlink()
    with pytest.raises(DatasetError, match="missing image"):
        load_blender(d2)
    with pytest.raises(DatasetError):
        load_blender(d2, downscale=0)


def test_llff_loader(llff_dir):
    s = load_llff(llff_dir, factor=2, ndc=True, llffhold=2)
    assert s.images.shape == (5, 12, 16, 3)
    assert s.kind == "llff" and s.ndc and (s.near, s.far) == (0.0, 1.0)
    assert list(s.splits["test"]) == [0, 2, 4] and list(s.splits["train"]) == [1, 3]
    assert s.focal == pytest.approx(20.0)
    # [down, right, back] -> [right, up, back]: cameras look down -z, recentred to the mean pose
    np.testing.assert_allclose(s.poses[:, :3, 2].mean(0), [0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(s.poses[:, :3, 3].mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(s.poses[:, 3], np.tile([0, 0, 0, 1], (5, 1)))
    m = load_llff(llff_dir, factor=2, ndc=False)
    # bounds rescaled so that the nearest bound is 1 / 0.75
    assert m.near == pytest.approx(0.9 / 0.75) and m.far == pytest.approx(10 / 2 / 0.75)


def test_llff_downscales_full_images_when_no_images_n(tmp_path):
    root = write_llff(tmp_path / "l", factor=1)
    (root / "images_1").rename(root / "images")
    s = load_llff(root, factor=2)
    assert s.images.shape == (5, 6, 8, 3) and s.focal == pytest.approx(10.0)


def test_llff_bad_input(tmp_path, llff_dir):
    next((llff_dir / "images_2").iterdir()).unlink()
    with pytest.raises(DatasetError, match="images but"):
        load_llff(llff_dir, factor=2)
    np.save(llff_dir / "poses_bounds.npy", np.zeros((3, 5)))
    with pytest.raises(DatasetError, match="17"):
        load_llff(llff_dir, factor=2)
    assert load_scene(write_llff(tmp_path / "ok"), downscale=2).kind == "llff"
