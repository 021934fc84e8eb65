"""nerfstudio / instant-ngp ``transforms.json`` and train-only Blender folders (issue 35)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nerfexport.data.datasets import DatasetError, load_scene
from nerfexport.data import transforms as T
from nerfexport.deploy.manifest import BundleError, Camera
from nerfexport.data.rays import pose_spherical
from nerfexport.deploy.rays import view_rays
from nerfexport.deploy.views import orbit_views, resize_camera

from conftest import write_blender


def _write(root: Path, meta: dict, n: int = 9, w: int = 12, h: int = 8, sub: str = "images",
           poses=None, rgba: bool = False) -> Path:
    """A transforms.json with ``n`` frames ``sub/frame_NNN.png`` on a ring at radius 4 around the origin."""
    (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    frames = []
    poses = poses if poses is not None else [pose_spherical(a, -30.0, 4.0) for a in np.linspace(-180, 180, n, endpoint=False)]
    for i, c2w in enumerate(poses):
        img = rng.integers(0, 256, (h, w, 4 if rgba else 3), dtype=np.uint8)
        Image.fromarray(img).save(root / sub / f"frame_{i:03d}.png")
        fr = {"file_path": f"{sub}/frame_{i:03d}.png", "transform_matrix": np.asarray(c2w).tolist()}
        fr.update(meta.pop(f"frame{i}", {}))
        frames.append(fr)
    (root / "transforms.json").write_text(json.dumps({**meta, "frames": frames}))
    return root


def _cam_dir(pose, i, j, fx, fy, cx, cy):
    """nerfstudio's ray through pixel (i, j): the pixel's centre is (i + 0.5, j + 0.5)."""
    d = np.array([(i + 0.5 - cx) / fx, -(j + 0.5 - cy) / fy, -1.0])
    return pose[:3, :3] @ d


def test_nerfstudio_global_intrinsics_off_centre_and_fx_ne_fy(tmp_path):
    _write(tmp_path, {"camera_model": "OPENCV", "fl_x": 10.0, "fl_y": 12.0, "cx": 5.2, "cy": 3.7, "w": 12, "h": 8,
                      "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0})
    s = load_scene(tmp_path)
    assert s.kind == "transforms" and (s.H, s.W) == (8, 12)
    np.testing.assert_allclose(s.pinhole, (10.0, 12.0, 4.7, 3.2))
    # every 8th frame held out, and the loader says so
    assert s.splits["test"].tolist() == [0, 8] and 0 not in s.splits["train"] and len(s.splits["train"]) == 7
    assert any("every 8th frame" in n for n in s.notes)
    # the rays honour fx != fy and the off-centre principal point in nerfstudio's pixel-centre convention
    o, d, v = view_rays(s.H, s.W, s.cam, s.poses[3])
    for i, j in ((0, 0), (11, 7), (5, 2)):
        np.testing.assert_allclose(d[j * s.W + i], _cam_dir(s.poses[3], i, j, 10.0, 12.0, 5.2, 3.7), atol=1e-5)
    # cameras at 4 around the origin: the Blender scenes' bounds, poses untouched
    assert (s.near, s.far) == (2.0, 6.0)
    assert not any("centred" in n for n in s.notes)


def test_nerfstudio_per_frame_intrinsics(tmp_path):
    meta = {f"frame{i}": {"fl_x": 10.0, "fl_y": 12.0, "cx": 5.2, "cy": 3.7, "w": 12, "h": 8} for i in range(9)}
    _write(tmp_path, meta)
    s = load_scene(tmp_path)
    np.testing.assert_allclose(s.pinhole, (10.0, 12.0, 4.7, 3.2))
    # a frame's value wins over the top of the file
    meta = {"fl_x": 99.0, "fl_y": 99.0, **{f"frame{i}": {"fl_x": 10.0, "fl_y": 10.0} for i in range(9)}}
    _write(tmp_path / "b", meta)
    # no cx, cy: the image centre in nerfstudio's pixel-centre convention, (W/2 - 0.5, H/2 - 0.5) for the rays
    assert load_scene(tmp_path / "b").cam == (10.0, 10.0, 5.5, 3.5)


def test_per_frame_intrinsics_that_differ_are_refused(tmp_path):
    meta = {f"frame{i}": {"fl_x": 10.0 + i, "w": 12, "h": 8} for i in range(9)}
    _write(tmp_path, meta)
    with pytest.raises(DatasetError, match="different intrinsics") as e:
        load_scene(tmp_path)
    assert "\n" not in str(e.value)


def test_named_splits_and_sub_folders(tmp_path):
    meta = {"fl_x": 10.0, "train_filenames": [f"images/frame_{i:03d}.png" for i in range(6)],
            "test_filenames": ["images/frame_007.png", "images/frame_008.png"]}
    _write(tmp_path, meta)
    s = load_scene(tmp_path, test_every=2)
    assert s.splits["train"].tolist() == list(range(6)) and s.splits["test"].tolist() == [7]
    assert s.splits["val"].tolist() == [7, 8] and not any("held out" in n for n in s.notes)


def test_instant_ngp_aabb_scale_scale_offset(tmp_path):
    # instant-ngp maps p -> p * scale + offset and marches in [0.5 - a/2, 0.5 + a/2]^3: box centre (0.5 - offset) / scale
    scale, offset, a = 0.5, [0.5, 0.5, 0.7], 2
    c = (0.5 - np.array(offset)) / scale
    poses = [pose_spherical(t, -30.0, 4.0) for t in np.linspace(-180, 180, 9, endpoint=False)]
    for p in poses:
        p[:3, 3] += c
    _write(tmp_path, {"camera_angle_x": 0.9, "aabb_scale": a, "scale": scale, "offset": offset}, poses=poses)
    s = load_scene(tmp_path)
    # the box centre moved to the origin (the cameras were at 4 from it, so no scaling)
    np.testing.assert_allclose(s.poses[:, :3, 3], np.stack(poses)[:, :3, 3] - c, atol=1e-5)
    assert any("centred" in n for n in s.notes)
    # near / far: the nearest any camera comes to the box (half-side a / 2 / scale = 2) and its farthest corner
    half = 0.5 * a / scale
    pos = s.poses[:, :3, 3].astype(np.float64)
    gap = np.maximum(np.abs(pos) - half, 0.0)
    near = np.linalg.norm(gap, axis=-1).min()
    corners = np.array([[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)])
    far = np.linalg.norm(pos[:, None] - corners[None], axis=-1).max()
    assert near * 0.99 <= s.near <= near and far <= s.far <= far * 1.01
    # camera_angle_x with no cx: the image centre in nerfstudio's convention
    assert s.pinhole is not None
    np.testing.assert_allclose(s.pinhole[2:], (5.5, 3.5))
    np.testing.assert_allclose(s.focal, 6.0 / np.tan(0.45))


def test_far_away_cameras_are_centred_and_scaled(tmp_path):
    poses = [pose_spherical(t, -30.0, 40.0) for t in np.linspace(-180, 180, 9, endpoint=False)]
    for p in poses:
        p[:3, 3] += [100.0, 0.0, 0.0]
    _write(tmp_path, {"fl_x": 10.0}, poses=poses)
    s = load_scene(tmp_path)
    np.testing.assert_allclose(np.linalg.norm(s.poses[:, :3, 3], axis=-1), 4.0, rtol=1e-4)
    assert (s.near, s.far) == (2.0, 6.0) and any("scaled by 0.1" in n for n in s.notes)


def test_given_near_far(tmp_path):
    _write(tmp_path, {"fl_x": 10.0, "near": 1.5, "far": 7.0})
    s = load_scene(tmp_path)
    assert (s.near, s.far) == (1.5, 7.0)


def test_downscaled_copies_and_downscaling_here(tmp_path):
    _write(tmp_path, {"fl_x": 10.0, "fl_y": 12.0, "cx": 5.2, "cy": 3.7, "w": 12, "h": 8})
    here = load_scene(tmp_path, downscale=2)
    assert (here.H, here.W) == (4, 6)
    # corner-origin intrinsics halve; nerfexport's ray generator takes the principal point less half a pixel
    np.testing.assert_allclose(here.pinhole, (5.0, 6.0, 2.6 - 0.5, 1.85 - 0.5))
    (tmp_path / "images_2").mkdir()
    for p in (tmp_path / "images").iterdir():
        with Image.open(p) as im:
            im.resize((6, 4)).save(tmp_path / "images_2" / p.name)
    copies = load_scene(tmp_path, downscale=2)
    np.testing.assert_allclose(copies.pinhole, here.pinhole)
    with Image.open(tmp_path / "images_2" / "frame_000.png") as im:
        np.testing.assert_allclose(copies.images[0], np.asarray(im, np.float32) / 255.0)


def test_rays_equal_the_blender_loaders(tmp_path):
    from nerfexport.data.synthetic import make_scene
    a = load_scene(make_scene(tmp_path / "blender", 8, 3, 1, 2, seed=1))
    b = load_scene(make_scene(tmp_path / "ns", 8, 3, 1, 2, seed=1, fmt="nerfstudio"))
    assert b.kind == "transforms" and (a.near, a.far, a.H, a.W) == (b.near, b.far, b.H, b.W)
    assert {k: v.tolist() for k, v in a.splits.items()} == {k: v.tolist() for k, v in b.splits.items()}
    np.testing.assert_array_equal(a.images, b.images)
    for pa, pb in zip(a.poses, b.poses):
        for x, y in zip(view_rays(a.H, a.W, a.cam, pa), view_rays(b.H, b.W, b.cam, pb)):
            np.testing.assert_array_equal(x, y)


def test_train_only_blender_folder_holds_views_out(tmp_path):
    root = write_blender(tmp_path / "s", (10, 2, 2))
    (root / "transforms_val.json").unlink()
    (root / "transforms_test.json").unlink()
    s = load_scene(root)
    assert s.splits["test"].tolist() == [0, 8] == s.splits["val"].tolist()
    assert sorted(s.splits["train"].tolist()) == [1, 2, 3, 4, 5, 6, 7, 9]
    assert len(s.notes) == 1 and "transforms_val.json and transforms_test.json are missing" in s.notes[0]
    assert "every 8th training view (2 of 10) is held out" in s.notes[0]


def test_train_and_test_only_blender_folder(tmp_path):
    root = write_blender(tmp_path / "s", (10, 2, 3))
    (root / "transforms_val.json").unlink()
    s = load_scene(root)
    assert s.splits["val"].tolist() == [0, 8] and len(s.splits["train"]) == 8
    assert s.splits["test"].tolist() == [10, 11, 12]
    assert "transforms_val.json is missing" in s.notes[0]


def test_distortion_is_refused_naming_what_is_missing(tmp_path):
    _write(tmp_path, {"camera_model": "OPENCV", "fl_x": 10.0, "k1": 0.05, "p2": -0.001})
    with pytest.raises(DatasetError) as e:
        load_scene(tmp_path)
    msg = str(e.value)
    assert "k1=0.05" in msg and "p2=-0.001" in msg and "undistort" in msg and "\n" not in msg
    _write(tmp_path / "fish", {"camera_model": "OPENCV_FISHEYE", "fl_x": 10.0})
    with pytest.raises(DatasetError, match="not a pinhole camera"):
        load_scene(tmp_path / "fish")
    meta = {"fl_x": 10.0, **{f"frame{i}": {"k2": 0.01} for i in range(9)}}   # per-frame distortion too
    _write(tmp_path / "pf", meta)
    with pytest.raises(DatasetError, match="k2=0.01"):
        load_scene(tmp_path / "pf")


BAD = [
    ({"fl_x": float("nan")}, None, "fl_x must be a finite"),
    ({"fl_x": -3.0}, None, "fl_x must be a finite positive"),
    ({"fl_x": 10.0, "cx": 1e9}, None, "cx must be"),
    ({"fl_x": 10.0, "w": 13, "h": 8}, None, "says 13x8"),
    ({"camera_angle_x": 4.0}, None, "below pi"),
    ({}, None, "no focal length"),
    ({"fl_x": 10.0, "aabb_scale": 1000}, None, "aabb_scale must be"),
    ({"fl_x": 10.0, "offset": [0, 0]}, None, "offset must be three numbers"),
    ({"fl_x": 10.0, "near": 5.0, "far": 1.0}, None, "near .* must be below far"),
    ({"fl_x": 10.0, "camera_model": 3}, None, "camera_model must be"),
    ({"fl_x": 10.0, "applied_transform": [[1, 0]]}, None, "applied_transform must be"),
    ({"fl_x": 10.0, "train_filenames": ["images/nope.png"]}, None, "which no frame has"),
    ({"fl_x": 10.0}, {"file_path": "../outside.png"}, "outside the folder"),
    ({"fl_x": 10.0}, {"file_path": "/etc/passwd"}, "outside the folder"),
    ({"fl_x": 10.0}, {"file_path": "images/missing.png"}, "missing image"),
    ({"fl_x": 10.0}, {"transform_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}, "4x4"),
    ({"fl_x": 10.0}, {"transform_matrix": [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}, "orthonormal"),
    ({"fl_x": 10.0}, {"transform_matrix": [[1, 0, 0, 1e300], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}, "finite"),
]


@pytest.mark.parametrize("meta,frame,match", BAD)
def test_bad_values_are_refused_in_one_line(tmp_path, meta, frame, match):
    _write(tmp_path, dict(meta))
    if frame is not None:
        doc = json.loads((tmp_path / "transforms.json").read_text())
        doc["frames"][2].update(frame)
        (tmp_path / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=match) as e:
        load_scene(tmp_path)
    assert "\n" not in str(e.value)


def test_bounded_counts_and_size(tmp_path, monkeypatch):
    _write(tmp_path, {"fl_x": 10.0})
    monkeypatch.setattr(T, "MAX_FRAMES", 5)
    with pytest.raises(DatasetError, match="at most 5"):
        load_scene(tmp_path)
    monkeypatch.setattr(T, "MAX_JSON_BYTES", 100)
    with pytest.raises(DatasetError, match="larger than"):
        load_scene(tmp_path)
    (tmp_path / "transforms.json").write_text("{\"frames\": []}")
    monkeypatch.setattr(T, "MAX_JSON_BYTES", 1 << 20)
    with pytest.raises(DatasetError, match="non-empty"):
        load_scene(tmp_path)


def test_manifest_camera_pinhole_is_additive():
    old = Camera.parse({"H": 8, "W": 12, "focal": 10.0})
    assert old.pinhole is None and old.cam == 10.0 and old.to_dict() == {"H": 8, "W": 12, "focal": 10.0}
    new = Camera.parse({"H": 8, "W": 12, "focal": 10.0, "fx": 10.0, "fy": 12.0, "cx": 4.7, "cy": 3.2})
    assert new.cam == (10.0, 12.0, 4.7, 3.2) and Camera.parse(new.to_dict()) == new
    for bad in ({"fx": 10.0}, {"fx": 10.0, "fy": 12.0, "cx": float("inf"), "cy": 3.2},
                {"fx": -1.0, "fy": 12.0, "cx": 4.7, "cy": 3.2}):
        with pytest.raises(BundleError):
            Camera.parse({"H": 8, "W": 12, "focal": 10.0, **bad})


def test_checkpoint_camera_record_reaches_the_renderer(tmp_path):
    from nerfexport.train.factory import camera_record
    _write(tmp_path, {"fl_x": 10.0, "fl_y": 12.0, "cx": 5.2, "cy": 3.7})
    s = load_scene(tmp_path)
    cam = Camera.parse(camera_record(s))
    assert cam.cam == s.cam
    v = orbit_views(cam.to_dict(), s.near, s.far, False, frames=2)
    assert v.focal == s.cam
    # torch's training rays and the numpy renderer's rays are the same function of the camera
    from nerfexport.train.render import scene_rays
    r = scene_rays(s, "test")
    o, d, _ = view_rays(s.H, s.W, s.cam, s.poses[s.splits["test"][0]])
    np.testing.assert_array_equal(r["d"][: s.H * s.W], d)


def test_resize_keeps_the_pinhole():
    H, W, cam = resize_camera(8, 12, (10.0, 12.0, 4.7, 3.2), scale=2.0)
    assert (H, W) == (16, 24)
    np.testing.assert_allclose(cam, (20.0, 24.0, (4.7 + 0.5) * 2 - 0.5, (3.2 + 0.5) * 2 - 0.5))
    assert resize_camera(8, 12, 10.0, scale=2.0) == (16, 24, 20.0)   # a plain focal length as before


def test_camera_path_pinhole(tmp_path):
    from nerfexport.deploy.views import camera_path_views
    doc = {"render_width": 12, "render_height": 8, "fl_x": 10.0, "fl_y": 12.0, "cx": 5.2, "cy": 3.7,
           "camera_path": [{"camera_to_world": np.eye(4).ravel().tolist(), "fov": 50.0}]}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    v = camera_path_views(tmp_path / "p.json")
    np.testing.assert_allclose(v.focal, (10.0, 12.0, 4.7, 3.2))
    doc["cx"] = float("inf")
    (tmp_path / "p.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="cx must be"):
        camera_path_views(tmp_path / "p.json")
