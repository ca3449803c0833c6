"""A procedural synthetic world with exact depth: textured rooms seen by a smoothly moving camera.

Every clip is a pure function of an integer seed, so tests, demos and the training proof need no download. A seed
fixes the room, its objects, their procedural textures, the light, the field of view and the camera path; the clip
size only samples that world, so `render_clip(s, 5, h, w)` equals the first 5 frames of `render_clip(s, 9, h, w)`.

Conventions (the same as OpenCV):
- camera axes: x right, y down, z forward; `poses[t]` maps camera coordinates to world coordinates (camera-to-world);
- the world's y axis points down too, so the floor is the plane y = room_max[1];
- pixel (row i, column j) has its centre at image coordinates (j + 0.5, i + 0.5), so cx = W/2 and cy = H/2;
- depth is planar z-depth in metres (the z coordinate in the camera frame), not the distance along the ray.

The world is static; only the camera moves, so two frames of a clip are related exactly by their poses.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from dvd.errors import DVDError

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = typing.get_args(Split)
TEXTURE_KINDS = ("checker", "stripes", "waves")


def split_seed(split: str, index: int) -> int:
    """Seed of clip `index` of a named split; the splits interleave, so no seed belongs to two splits."""
    if split not in SPLITS:
        raise DVDError(f"unknown synthetic split {split!r}: expected one of {', '.join(SPLITS)}")
    if index < 0:
        raise DVDError(f"synthetic clip index must be >= 0, got {index}")
    return index * len(SPLITS) + SPLITS.index(split)


@dataclass(frozen=True, eq=False)
class Texture:
    """A two-colour procedural pattern laid on a surface; `period` is in metres, so texture scales with distance."""

    base: np.ndarray
    accent: np.ndarray
    kind: str
    period: float
    angle: float
    phase: float


@dataclass(frozen=True, eq=False)
class Sphere:
    centre: np.ndarray
    radius: float
    texture: Texture


@dataclass(frozen=True, eq=False)
class Box:
    """An axis-aligned solid box between corners `lo` and `hi`."""

    lo: np.ndarray
    hi: np.ndarray
    texture: Texture


@dataclass(frozen=True, eq=False)
class Scene:
    """A closed axis-aligned room (seen from inside) holding spheres and boxes, lit by one directional light.

    `wall_textures` are ordered -x, +x, -y (ceiling), +y (floor), -z, +z. `light` is the unit vector towards the light.
    """

    room_min: np.ndarray
    room_max: np.ndarray
    wall_textures: tuple[Texture, ...]
    spheres: tuple[Sphere, ...] = ()
    boxes: tuple[Box, ...] = ()
    light: np.ndarray = field(default_factory=lambda: np.array([0.3, -0.8, -0.5]) / np.linalg.norm([0.3, -0.8, -0.5]))


@dataclass(frozen=True)
class Trajectory:
    """A camera orbiting the room centre on an ellipse at constant angular speed, looking at a wobbling target.

    Frame k sits at angle `theta0 + omega * k`, so the motion per frame does not depend on the clip length.
    """

    radius_x: float
    radius_z: float
    height: float
    theta0: float
    omega: float
    target: tuple[float, float, float]
    wobble: float
    roll: float
    hfov: float

    def poses(self, num_frames: int) -> np.ndarray:
        """Camera-to-world matrices float64 [T,4,4] of the first `num_frames` frames."""
        k = np.arange(num_frames, dtype=np.float64)
        theta = self.theta0 + self.omega * k
        eye = np.stack(
            [self.radius_x * np.cos(theta), self.height + 0.05 * np.sin(0.37 * k), self.radius_z * np.sin(theta)], -1
        )
        target = np.asarray(self.target) + self.wobble * np.stack(
            [np.sin(0.11 * k), 0.3 * np.sin(0.07 * k + 1.0), np.cos(0.13 * k)], -1
        )
        forward = target - eye
        forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
        # The world y axis points down, so "down" is +y; right = down x forward keeps the frame right-handed.
        right = np.cross(np.array([0.0, 1.0, 0.0]), forward)
        right /= np.linalg.norm(right, axis=-1, keepdims=True)
        down = np.cross(forward, right)
        roll = self.roll * np.sin(0.09 * k)[:, None]
        right, down = np.cos(roll) * right + np.sin(roll) * down, np.cos(roll) * down - np.sin(roll) * right
        poses = np.zeros((num_frames, 4, 4))
        poses[:, :3, 0], poses[:, :3, 1], poses[:, :3, 2], poses[:, :3, 3] = right, down, forward, eye
        poses[:, 3, 3] = 1.0
        return poses


@dataclass(frozen=True, eq=False)
class SyntheticClip:
    """One rendered clip: rgb uint8 [T,H,W,3], depth float32 [T,H,W] (metres, planar z, > 0),
    intrinsics float64 [3,3], poses float64 [T,4,4] (camera-to-world, OpenCV axes)."""

    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: np.ndarray
    poses: np.ndarray


def intrinsics_for(hfov: float, height: int, width: int) -> np.ndarray:
    """Pinhole matrix with square pixels, horizontal field of view `hfov` (radians) and the centre at (W/2, H/2)."""
    focal = (width / 2) / math.tan(hfov / 2)
    return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


def _random_texture(rng: np.random.Generator) -> Texture:
    base = rng.uniform(0.15, 0.95, 3)
    # The accent differs in brightness as well as hue so the pattern stays visible in grey-scale.
    accent = np.clip(base * rng.uniform(0.3, 0.7) + rng.uniform(0.0, 0.5, 3), 0.0, 1.0)
    return Texture(
        base=base,
        accent=accent,
        kind=TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))],
        period=float(rng.uniform(0.25, 1.2)),
        angle=float(rng.uniform(0, math.pi)),
        phase=float(rng.uniform(0, 1)),
    )


def _far_from_path(xz: np.ndarray, size: float, radius_x: float, radius_z: float) -> bool:
    """Whether a footprint of half-size `size` at `xz` keeps 0.6 m clear of the whole camera ellipse."""
    theta = np.linspace(0, 2 * math.pi, 256, endpoint=False)
    path = np.stack([radius_x * np.cos(theta), radius_z * np.sin(theta)], -1)
    return bool(np.min(np.linalg.norm(path - xz, axis=-1)) > size * math.sqrt(2) + 0.6)


def _placement(rng: np.random.Generator, radius_x: float, radius_z: float) -> tuple[float, np.ndarray, float, Texture]:
    """Half-size, floor position (x, z), lift above the floor and texture of an object clear of the camera path."""
    while True:
        size = float(rng.uniform(0.25, 0.7))
        xz = rng.uniform(-1.0, 1.0, 2) * [radius_x, radius_z]
        lift = float(rng.uniform(0.0, 0.8)) if rng.uniform() < 0.3 else 0.0
        texture = _random_texture(rng)
        if _far_from_path(xz, size, radius_x, radius_z):
            return size, xz, lift, texture


def generate(seed: int) -> tuple[Scene, Trajectory]:
    """The world and camera path of `seed`: a 6-10 m wide room, 2-4 spheres and 1-3 boxes clear of the camera's
    elliptic orbit around the room centre, which the camera keeps looking at."""
    rng = np.random.default_rng(seed)
    half = np.array([rng.uniform(3.0, 5.0), rng.uniform(1.3, 2.0), rng.uniform(4.0, 7.0)])
    walls = tuple(_random_texture(rng) for _ in range(6))
    radius_x, radius_z = half[0] * rng.uniform(0.45, 0.7), half[2] * rng.uniform(0.45, 0.7)
    eye_height = half[1] - rng.uniform(1.2, 1.7)
    trajectory = Trajectory(
        radius_x=float(radius_x),
        radius_z=float(radius_z),
        height=float(eye_height),
        theta0=float(rng.uniform(0, 2 * math.pi)),
        omega=float(rng.uniform(0.008, 0.02) * rng.choice([-1.0, 1.0])),
        target=(
            float(rng.uniform(-0.5, 0.5)),
            float(eye_height + rng.uniform(-0.2, 0.5)),
            float(rng.uniform(-0.5, 0.5)),
        ),
        wobble=float(rng.uniform(0.2, 0.6)),
        roll=float(rng.uniform(0.0, 0.08)),
        hfov=float(np.deg2rad(rng.uniform(55.0, 75.0))),
    )
    floor = half[1]
    num_spheres, num_boxes = int(rng.integers(2, 5)), int(rng.integers(1, 4))
    spheres = []
    for _ in range(num_spheres):
        size, xz, lift, texture = _placement(rng, radius_x, radius_z)
        spheres.append(Sphere(np.array([xz[0], floor - size - lift, xz[1]]), size, texture))
    boxes = []
    for _ in range(num_boxes):
        size, xz, lift, texture = _placement(rng, radius_x, radius_z)
        tall = size * float(rng.uniform(0.8, 2.5))
        lo = np.array([xz[0] - size, floor - tall - lift, xz[1] - size])
        boxes.append(Box(lo, np.array([xz[0] + size, floor - lift, xz[1] + size]), texture))
    return Scene(-half, half, walls, tuple(spheres), tuple(boxes)), trajectory


def _pattern(texture: Texture, uv: np.ndarray) -> np.ndarray:
    """Albedo [N,3] of the texture at surface coordinates uv [N,2] (metres)."""
    c, s = math.cos(texture.angle), math.sin(texture.angle)
    a = (uv[:, 0] * c + uv[:, 1] * s) / texture.period + texture.phase
    b = (uv[:, 1] * c - uv[:, 0] * s) / texture.period
    if texture.kind == "checker":
        mix = (np.floor(a) + np.floor(b)) % 2
    elif texture.kind == "stripes":
        mix = np.clip(0.5 + 1.5 * np.sin(2 * math.pi * a), 0.0, 1.0)
    else:
        mix = 0.5 + 0.25 * (np.sin(2 * math.pi * a + 1.7 * np.sin(1.4 * math.pi * b)) + np.sin(2 * math.pi * b))
    grain = 1.0 + 0.1 * np.sin(2 * math.pi * 2.3 * a) * np.sin(2 * math.pi * 1.9 * b)
    return (texture.base * (1 - mix[:, None]) + texture.accent * mix[:, None]) * grain[:, None]


def _slab_uv(points: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Surface coordinates on an axis-aligned face: the two world coordinates other than the face's normal axis."""
    others = np.array([[1, 2], [0, 2], [0, 1]])[axis]
    return np.take_along_axis(points, others, axis=1)


def _trace(scene: Scene, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit along rays `origin + t * dirs`: t [N], surface id [N] and unit normal [N,3] facing the camera.

    Surface ids: 0-5 room faces (see `Scene.wall_textures`), then spheres, then boxes.
    """
    n = len(dirs)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Leaving the room: the first face each ray reaches is the smallest positive exit distance over the 3 axes.
        bound = np.where(dirs > 0, scene.room_max, scene.room_min)
        t_axes = (bound - origin) / dirs
        t_axes[~(t_axes > 0)] = np.inf
        axis = np.argmin(t_axes, axis=1)
        t = t_axes[np.arange(n), axis]
        surface = 2 * axis + (dirs[np.arange(n), axis] > 0)
        normal = np.zeros((n, 3))
        normal[np.arange(n), axis] = -np.sign(dirs[np.arange(n), axis])

        a = np.einsum("ij,ij->i", dirs, dirs)
        for index, sphere in enumerate(scene.spheres, start=6):
            rel = origin - sphere.centre
            half_b = np.einsum("nj,j->n", dirs, rel)
            disc = half_b**2 - a * (rel @ rel - sphere.radius**2)
            hit_t = (-half_b - np.sqrt(np.maximum(disc, 0.0))) / a
            closer = (disc >= 0) & (hit_t > 0) & (hit_t < t)
            t = np.where(closer, hit_t, t)
            surface[closer] = index
            normal[closer] = (origin + hit_t[closer, None] * dirs[closer] - sphere.centre) / sphere.radius

        for index, box in enumerate(scene.boxes, start=6 + len(scene.spheres)):
            t_lo, t_hi = (box.lo - origin) / dirs, (box.hi - origin) / dirs
            t_near_axes = np.minimum(t_lo, t_hi)
            box_axis = np.argmax(np.nan_to_num(t_near_axes, nan=-np.inf), axis=1)
            t_near = t_near_axes[np.arange(n), box_axis]
            t_far = np.min(np.maximum(t_lo, t_hi), axis=1)
            closer = (t_near <= t_far) & (t_near > 0) & (t_near < t)
            t = np.where(closer, t_near, t)
            surface[closer] = index
            face_normal = np.zeros((int(closer.sum()), 3))
            face_normal[np.arange(len(face_normal)), box_axis[closer]] = -np.sign(dirs[closer, box_axis[closer]])
            normal[closer] = face_normal
    return t, surface, normal


def _shade(scene: Scene, points: np.ndarray, surface: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Colour [N,3] in [0,1]: procedural albedo times a soft Lambert term (no shadows)."""
    albedo = np.zeros_like(points)
    surfaces = list(scene.wall_textures) + [s.texture for s in scene.spheres] + [b.texture for b in scene.boxes]
    for index, texture in enumerate(surfaces):
        hit = surface == index
        if not hit.any():
            continue
        if index < 6:
            uv = _slab_uv(points[hit], np.full(int(hit.sum()), index // 2))
        elif index < 6 + len(scene.spheres):
            sphere = scene.spheres[index - 6]
            n = normal[hit]
            uv = sphere.radius * np.stack([np.arctan2(n[:, 2], n[:, 0]), np.arccos(np.clip(n[:, 1], -1, 1))], -1)
        else:
            uv = _slab_uv(points[hit], np.argmax(np.abs(normal[hit]), axis=1))
        albedo[hit] = _pattern(texture, uv)
    lambert = 0.5 + 0.5 * np.einsum("nj,j->n", normal, scene.light)
    return np.clip(albedo * (0.35 + 0.65 * lambert[:, None]), 0.0, 1.0)


def render_views(
    scene: Scene, intrinsics: np.ndarray, poses: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast `scene` from each camera-to-world pose: rgb uint8 [T,H,W,3] and planar depth float32 [T,H,W].

    Rays are built with a camera-frame z component of 1, so the hit parameter t is the planar depth itself.
    """
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    pixels = np.stack([cols.ravel(), rows.ravel(), np.ones(cols.size)], -1)
    # einsum rather than matmul for [N,3] x [3,3] products here and in `_trace`: BLAS threads gain nothing on such
    # thin products and stall for tenths of a second when other processes hold the cores.
    rays_cam = np.einsum("ij,nj->ni", np.linalg.inv(intrinsics), pixels)
    rgb = np.empty((len(poses), height, width, 3), np.uint8)
    depth = np.empty((len(poses), height, width), np.float32)
    # One frame at a time bounds memory to a frame's rays, whatever the clip length.
    for k, pose in enumerate(poses):
        dirs = np.einsum("ij,nj->ni", pose[:3, :3], rays_cam)
        t, surface, normal = _trace(scene, pose[:3, 3], dirs)
        colour = _shade(scene, pose[:3, 3] + t[:, None] * dirs, surface, normal)
        rgb[k] = np.round(colour * 255).astype(np.uint8).reshape(height, width, 3)
        depth[k] = t.reshape(height, width)
    return rgb, depth


def render_frames(seed: int, frames: Sequence[int], height: int, width: int) -> SyntheticClip:
    """Render frames `frames` (positions along the camera path, in the order given) of the world of `seed` at
    `height` x `width`, with exact depth and cameras; only the frames asked for are ray-cast."""
    if not frames or min(frames) < 0 or height < 1 or width < 1:
        raise DVDError(
            f"synthetic clip needs frames >= 0 and height and width >= 1, got frames {list(frames)[:5]}, "
            f"{height}, {width}"
        )
    scene, trajectory = generate(seed)
    intrinsics = intrinsics_for(trajectory.hfov, height, width)
    poses = trajectory.poses(max(frames) + 1)[list(frames)]
    rgb, depth = render_views(scene, intrinsics, poses, height, width)
    return SyntheticClip(rgb=rgb, depth=depth, intrinsics=intrinsics, poses=poses)


def render_clip(seed: int, num_frames: int, height: int, width: int) -> SyntheticClip:
    """Render the first `num_frames` frames of the world of `seed` at `height` x `width`."""
    if num_frames < 1:
        raise DVDError(f"synthetic clip needs num_frames >= 1, got {num_frames}")
    return render_frames(seed, range(num_frames), height, width)
