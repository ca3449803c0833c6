import dataclasses
import math

import numpy as np
import pytest

from dvd.data.procedural import (
    SPLITS,
    Scene,
    Sphere,
    generate,
    intrinsics_for,
    render_clip,
    render_views,
    split_seed,
)
from dvd.errors import DVDError


def _empty_room(half, scene_seed=0):
    scene, _ = generate(scene_seed)
    return Scene(-np.asarray(half, float), np.asarray(half, float), scene.wall_textures)


def _pose(rotation=None, position=(0.0, 0.0, 0.0)):
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = np.eye(3) if rotation is None else rotation, position
    return pose[None]


def test_intrinsics_from_field_of_view():
    k = intrinsics_for(math.pi / 2, 10, 20)
    # tan(45 deg) = 1, so the focal length is half the width; the centre is at (W/2, H/2).
    np.testing.assert_allclose(k, [[10, 0, 10], [0, 10, 5], [0, 0, 1]], atol=1e-12)


def test_fronto_parallel_wall_has_constant_depth():
    scene = _empty_room((10.0, 10.0, 3.0))
    k = intrinsics_for(math.radians(60), 12, 16)
    _, depth = render_views(scene, k, _pose(), 12, 16)
    # Every ray leaves the 20 m wide room through the wall z = 3 m in front, so planar depth is 3 m everywhere.
    np.testing.assert_allclose(depth, 3.0, rtol=1e-6)


def test_tilted_floor_depth_matches_analytic_plane_intersection():
    scene = _empty_room((60.0, 1.5, 60.0))
    pitch = math.radians(25)  # looking down: rotate the forward axis towards +y (down)
    rotation = np.array([[1, 0, 0], [0, math.cos(pitch), math.sin(pitch)], [0, -math.sin(pitch), math.cos(pitch)]])
    k = np.array([[20.0, 0, 16.0], [0, 20.0, 12.0], [0, 0, 1]])
    _, depth = render_views(scene, k, _pose(rotation), 24, 32)
    rows, cols = np.mgrid[0:24, 0:32] + 0.5
    ray_cam = np.stack([(cols - 16.0) / 20.0, (rows - 12.0) / 20.0, np.ones_like(rows)], -1)
    ray_world = ray_cam @ rotation.T
    # Floor y = 1.5 seen from y = 0: t = 1.5 / dy, and with z_cam = 1 rays t is the planar depth.
    downward = ray_world[..., 1] > 0.05
    expected = 1.5 / ray_world[..., 1][downward]
    assert downward.sum() > 200
    np.testing.assert_allclose(depth[0][downward], expected, rtol=1e-6)


def test_sphere_lands_where_the_pinhole_projects_it():
    scene = dataclasses.replace(
        _empty_room((20.0, 20.0, 20.0)),
        spheres=(Sphere(np.array([1.0, 0.0, 5.0]), 0.5, generate(0)[0].wall_textures[0]),),
    )
    k = np.array([[10.0, 0, 10.5], [0, 10.0, 5.5], [0, 0, 1]])
    _, depth = render_views(scene, k, _pose(), 11, 21)
    # x = 1 m right at z = 5 m projects to u = 10 * 1/5 + 10.5 = 12.5: the centre of column 12, row 5.
    # Ray (0.2, 0, 1) meets |t*(0.2,0,1) - (1,0,5)| = 0.5 at 1.04 t^2 - 10.4 t + 25.75 = 0, smaller root.
    t = (10.4 - math.sqrt(10.4**2 - 4 * 1.04 * 25.75)) / (2 * 1.04)
    assert depth[0, 5, 12] == pytest.approx(t, rel=1e-6)
    assert depth[0, 5, 8] == pytest.approx(20.0, rel=1e-6)  # the mirrored pixel on the left sees the far wall


def test_image_rows_grow_downwards():
    scene = dataclasses.replace(
        _empty_room((20.0, 20.0, 20.0)),
        spheres=(Sphere(np.array([0.0, 1.0, 5.0]), 0.3, generate(0)[0].wall_textures[0]),),
    )
    k = np.array([[10.0, 0, 10.5], [0, 10.0, 5.5], [0, 0, 1]])
    _, depth = render_views(scene, k, _pose(), 11, 21)
    # y = +1 m (down) at z = 5 m projects to v = 10 * 1/5 + 5.5 = 7.5, row 7; row 3 is its mirror above.
    assert depth[0, 7, 10] < 5.0
    assert depth[0, 3, 10] == pytest.approx(20.0, rel=1e-6)


def _reprojection_errors(clip, a, b):
    """Relative error between frame b's depth and frame a's points moved by the poses (inverse depth, bilinear)."""
    _, h, w = clip.depth.shape
    k = clip.intrinsics
    rows, cols = np.mgrid[0:h, 0:w] + 0.5
    pixels = np.stack([cols, rows, np.ones_like(rows)], -1).reshape(-1, 3)
    points_cam = (pixels @ np.linalg.inv(k).T) * clip.depth[a].reshape(-1, 1)
    points_world = points_cam @ clip.poses[a][:3, :3].T + clip.poses[a][:3, 3]
    world_to_b = np.linalg.inv(clip.poses[b])
    points_b = points_world @ world_to_b[:3, :3].T + world_to_b[:3, 3]
    z = points_b[:, 2]
    u, v = (points_b[:, 0] / z) * k[0, 0] + k[0, 2] - 0.5, (points_b[:, 1] / z) * k[1, 1] + k[1, 2] - 0.5
    inside = (z > 0) & (u >= 0) & (u < w - 1) & (v >= 0) & (v < h - 1)
    u, v, z = u[inside], v[inside], z[inside]
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - u0, v - v0
    inv = 1.0 / clip.depth[b].astype(np.float64)
    # Inverse depth is affine in pixel coordinates on a plane, so bilinear interpolation of it is exact there.
    sampled = (
        inv[v0, u0] * (1 - fu) * (1 - fv)
        + inv[v0, u0 + 1] * fu * (1 - fv)
        + inv[v0 + 1, u0] * (1 - fu) * fv
        + inv[v0 + 1, u0 + 1] * fu * fv
    )
    moved = np.hypot(u - (pixels[inside, 0] - 0.5), v - (pixels[inside, 1] - 0.5))
    return np.abs(sampled * z - 1.0), moved


@pytest.mark.parametrize("room_only", [True, False])
def test_depth_moves_as_the_poses_say(room_only):
    seed = 5
    scene, trajectory = generate(seed)
    if room_only:
        scene = dataclasses.replace(scene, spheres=(), boxes=())
    poses = trajectory.poses(9)[[0, 8]]
    k = intrinsics_for(trajectory.hfov, 96, 128)
    rgb, depth = render_views(scene, k, poses, 96, 128)
    clip = dataclasses.replace(render_clip(seed, 1, 2, 2), rgb=rgb, depth=depth, intrinsics=k, poses=poses)
    errors, moved = _reprojection_errors(clip, 0, 1)
    assert len(errors) > 5000
    assert np.median(moved) > 5.0  # the camera really moved between the two frames
    assert np.median(errors) < 1e-6
    if room_only:
        # Planes only: exact except where the 2x2 interpolation straddles a room corner.
        assert np.mean(errors < 1e-5) > 0.95
    else:
        # Spheres are not planes (interpolated inverse depth is only close) and parallax occludes some points.
        assert np.mean(errors < 1e-2) > 0.9


def test_clip_contents_shapes_and_poses():
    clip = render_clip(3, 5, 20, 30)
    assert clip.rgb.shape == (5, 20, 30, 3) and clip.rgb.dtype == np.uint8
    assert clip.depth.shape == (5, 20, 30) and clip.depth.dtype == np.float32
    assert clip.intrinsics.shape == (3, 3) and clip.poses.shape == (5, 4, 4)
    assert (clip.depth > 0.3).all() and np.isfinite(clip.depth).all()
    rotations = clip.poses[:, :3, :3]
    np.testing.assert_allclose(
        rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (5, 3, 3)), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-12)
    np.testing.assert_array_equal(clip.poses[:, 3], np.broadcast_to([0, 0, 0, 1], (5, 4)))
    assert clip.rgb.std() > 20  # textured, not flat


def test_rendering_is_deterministic_and_prefix_stable():
    a, b = render_clip(11, 5, 16, 24), render_clip(11, 5, 16, 24)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth, b.depth)
    longer = render_clip(11, 9, 16, 24)
    np.testing.assert_array_equal(longer.depth[:5], a.depth)
    np.testing.assert_array_equal(longer.poses[:5], a.poses)
    other = render_clip(12, 5, 16, 24)
    assert not np.array_equal(other.depth, a.depth)


def test_splits_have_disjoint_seeds():
    seeds = {split: {split_seed(split, i) for i in range(2000)} for split in SPLITS}
    assert all(len(s) == 2000 for s in seeds.values())
    assert not seeds["train"] & seeds["val"]
    assert not seeds["train"] & seeds["test"]
    assert not seeds["val"] & seeds["test"]
    with pytest.raises(DVDError, match="unknown synthetic split"):
        split_seed("validation", 0)


def test_bad_size_is_a_user_error():
    with pytest.raises(DVDError):
        render_clip(0, 0, 8, 8)
