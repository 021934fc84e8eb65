import torch

from nerfexport.train.occupancy import OccupancyGrid, default_aabb, grid_samples


def ball_density(pts):
    return (pts.norm(dim=-1) < 0.5).float() * 50.0


def test_update_marks_the_ball_and_only_the_ball():
    g = OccupancyGrid([-1, -1, -1, 1, 1, 1], res=16)
    assert g.fraction == 1.0  # unknown cells count as occupied
    g.update(ball_density, threshold=1.0, all_cells=True, generator=torch.Generator().manual_seed(0))
    assert 0.0 < g.fraction < 0.2
    assert bool(g.query(torch.tensor([[0.0, 0.0, 0.0]]))[0])
    assert not bool(g.query(torch.tensor([[0.9, 0.9, 0.9]]))[0])
    assert not bool(g.query(torch.tensor([[3.0, 0.0, 0.0]]))[0])  # outside the box


def test_grid_samples_concentrate_in_occupied_cells():
    g = OccupancyGrid([-1, -1, -1, 1, 1, 1], res=16)
    g.update(ball_density, threshold=1.0, all_cells=True)
    o = torch.tensor([[0.0, 0.0, -3.0], [0.0, 0.95, -3.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    z, active = grid_samples(g, o, d, 2.0, 4.0, 64, floor=0.0, generator=torch.Generator().manual_seed(0))
    assert active.tolist() == [True, False]
    assert ((z[0, :-1] > 2.4) & (z[0, :-1] < 3.6)).all()   # inside the ball, up to a cell
    assert (z[:, -1] == 4.0).all()                          # the last sample stays at far
    assert (z[:, 1:] >= z[:, :-1]).all()


def test_default_aabb_holds_points_near_from_every_camera():
    cams = torch.tensor([[4.0, 0, 0], [0, 4.03, 0]])
    assert default_aabb(cams, 2.0) == [-2.03, -2.03, -2.03, 2.03, 2.03, 2.03] or \
        abs(default_aabb(cams, 2.0)[3] - 2.03) < 1e-5
