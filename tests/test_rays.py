import numpy as np

from nerfexport.data.rays import get_rays, intrinsics, pose_spherical
from nerfexport.deploy.rays import ndc_rays, view_rays


def test_centre_ray_looks_down_camera_minus_z():
    c2w = pose_spherical(30.0, -30.0, 4.0)
    o, d = get_rays(8, 8, intrinsics(8, 8, 10.0), c2w)
    centre = d.reshape(8, 8, 3)[4, 4]
    np.testing.assert_allclose(centre, -c2w[:3, 2], atol=1e-6)
    np.testing.assert_allclose(o[0], c2w[:3, 3])
    # the camera looks at the origin from radius 4
    np.testing.assert_allclose(np.linalg.norm(c2w[:3, 3]), 4.0, rtol=1e-6)
    np.testing.assert_allclose(c2w[:3, 3] / 4.0, c2w[:3, 2], atol=1e-6)


def test_ndc_maps_near_plane_to_minus_one_and_infinity_to_one():
    H, W, f = 6, 8, 5.0
    o, d = get_rays(H, W, intrinsics(H, W, f), np.eye(4))
    on, dn = ndc_rays(H, W, f, 1.0, o, d)
    np.testing.assert_allclose(on[:, 2], -1.0, atol=1e-6)
    assert np.all(np.abs(on[:, :2]) <= 1.0 + 1e-6)
    np.testing.assert_allclose((on + dn)[:, 2], 1.0, atol=1e-6)  # t = 1 is z = -inf


def test_view_rays_unit_viewdirs():
    o, d, v = view_rays(4, 5, 3.0, pose_spherical(0, -20, 4), ndc=False)
    assert o.shape == d.shape == v.shape == (20, 3)
    np.testing.assert_allclose(np.linalg.norm(v, axis=-1), 1.0, rtol=1e-6)
