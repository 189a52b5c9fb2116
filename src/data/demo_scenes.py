"""Procedural open-domain demo clips with captions: a textured shape moving over a textured scene.

The embedded DynamiCrafter demo needs image+text -> video pairs whose text says how things move; these
clips supply them ("a red circle moves left over a blue sky"). Scenes are analytic functions of world
coordinates, so camera pans sample them exactly at sub-pixel offsets. Layout: frames `t h w c` uint8,
masks `t h w` bool (the moving object's pixels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MOTIONS", "SCENES", "SHAPES", "SceneClip", "clip_motion", "render_scene_clip"]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
MOTIONS: tuple[str, ...] = (
    "moves left",
    "moves right",
    "moves up",
    "moves down",
    "grows",
    "shrinks",
    "rotates clockwise",
    "rotates counterclockwise",
    "bounces",
    "camera pans left",
    "camera pans right",
)
COLOURS = {
    "red": (215, 35, 35), "green": (40, 170, 60), "blue": (35, 70, 210), "yellow": (245, 215, 40),
    "orange": (245, 135, 30), "purple": (130, 50, 180), "white": (245, 245, 245), "black": (25, 25, 25),
    "pink": (240, 120, 180), "cyan": (40, 200, 220), "brown": (120, 75, 35),
}  # fmt: skip
TEXTURES: tuple[str, ...] = ("solid", "stripes", "dots", "checks")


@dataclass
class SceneClip:
    """One captioned clip; `masks` marks the object's pixels in every frame."""

    frames: np.ndarray
    caption: str
    motion_caption: str
    scene_caption: str
    meta: dict = field(default_factory=dict)
    masks: np.ndarray | None = None


# ----------------------------------------------------------------------------------------------------------
# scenes: colour as a function of world coordinates (x, y in units of the frame height, y down)

Scene = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _waves(rng: np.random.Generator, terms: int = 5, max_freq: float = 5.0) -> Callable[..., np.ndarray]:
    """Smooth noise in [-1, 1] from random plane waves, as a function of world coordinates."""
    freqs = rng.uniform(-max_freq, max_freq, (terms, 2))
    phases = rng.uniform(0, 2 * np.pi, terms)

    def noise(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = sum(np.sin(2 * np.pi * (fx * x + fy * y) + p) for (fx, fy), p in zip(freqs, phases))
        return out / terms

    return noise


def _mix(c1: np.ndarray, c2: np.ndarray, w: np.ndarray) -> np.ndarray:
    return c1 + (c2 - c1) * np.clip(w, 0, 1)[..., None]


def _sky(rng: np.random.Generator, top: tuple, bottom: tuple, clouds: float) -> Scene:
    top_c, bottom_c = np.array(top, float), np.array(bottom, float)
    cloud = _waves(rng, 6, 1.6)

    def scene(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        img = _mix(top_c, bottom_c, y)
        puff = np.clip(cloud(x, y * 1.5) * 2.5 - 0.9, 0, 1) * clouds
        return _mix(img, np.array([250.0, 250, 252]), puff)

    return scene


def _with_ground(
    rng: np.random.Generator, sky: Scene, ground: tuple, horizon: float, texture: float
) -> Scene:
    ground_c = np.array(ground, float)
    grain = _waves(rng, 6, 12.0)
    hills = _waves(rng, 3, 1.5)

    def scene(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        line = horizon + 0.03 * hills(x, 0 * x)
        g = ground_c * (0.85 + 0.2 * (y - line))[..., None] + texture * grain(x, y)[..., None]
        return np.where((y > line)[..., None], g, sky(x, y))

    return scene


def _scene_library(rng: np.random.Generator, name: str) -> Scene:
    """Build the named scene with random details."""
    horizon = rng.uniform(0.55, 0.72)
    if name == "a blue sky":
        return _sky(rng, (60, 120, 215), (170, 210, 245), rng.uniform(0.4, 0.9))
    if name == "a green field":
        return _with_ground(rng, _sky(rng, (80, 140, 225), (200, 225, 245), 0.5), (60, 150, 55), horizon, 14)
    if name == "a desert":
        return _with_ground(
            rng, _sky(rng, (120, 170, 230), (240, 220, 190), 0.1), (220, 185, 120), horizon, 10
        )
    if name == "a snowy field":
        return _with_ground(
            rng, _sky(rng, (150, 160, 175), (210, 215, 225), 0.3), (240, 242, 248), horizon, 5
        )
    if name == "the ocean":
        sky = _sky(rng, (70, 130, 220), (190, 220, 245), 0.5)
        sea_c = np.array([20.0, 80, 140])

        def ocean(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            ripples = np.sin(2 * np.pi * (12 * x + 3 * np.sin(7 * y)) + 60 * y) * (y - horizon) * 30
            sea = sea_c + (25 * (y - horizon) + ripples)[..., None]
            return np.where((y > horizon)[..., None], sea, sky(x, y))

        return ocean
    if name == "a night sky":
        stars = rng.uniform(0, 1, (60, 2)) * [8.0, 1.0]  # tile of stars, repeated every 8 frame heights

        def night(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            img = _mix(np.array([8.0, 10, 35]), np.array([35.0, 40, 90]), y)
            d = np.min(
                np.abs(((x % 8.0)[..., None] - stars[:, 0]) + 1j * (y[..., None] - stars[:, 1])), axis=-1
            )
            return _mix(img, np.array([250.0, 250, 230]), 1 - d / 0.008)

        return night
    if name == "a sunset sky":
        return _sky(rng, (80, 50, 120), (250, 150, 60), rng.uniform(0.2, 0.5))
    if name == "a brick wall":
        brick_c = np.array([rng.uniform(140, 180), rng.uniform(55, 80), 45.0])
        shade = _waves(rng, 5, 6.0)

        def bricks(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            row = np.floor(y / 0.1)
            bx = (x + 0.1 * (row % 2)) / 0.2
            mortar = ((y / 0.1) % 1 < 0.12) | (bx % 1 < 0.06)
            img = brick_c + 18 * shade(np.floor(bx) * 0.37, row * 0.21)[..., None]
            return np.where(mortar[..., None], np.array([200.0, 195, 185]), img)

        return bricks
    # a wooden floor
    wood_c = np.array([rng.uniform(140, 190), rng.uniform(95, 125), 60.0])
    grain = _waves(rng, 4, 30.0)

    def wood(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        plank = (x / 0.18) % 1 < 0.04
        img = wood_c + 14 * grain(x * 0.3, y * 3)[..., None]
        return np.where(plank[..., None], wood_c * 0.6, img)

    return wood


SCENES: tuple[str, ...] = (
    "a blue sky",
    "a green field",
    "a desert",
    "a snowy field",
    "the ocean",
    "a night sky",
    "a sunset sky",
    "a brick wall",
    "a wooden floor",
)


# ----------------------------------------------------------------------------------------------------------
# objects


def _polygon(shape: str) -> np.ndarray:
    """Unit-radius outline vertices (K, 2) of a polygonal shape, in object coordinates (y up)."""
    if shape == "square":
        angles = np.radians([45, 135, 225, 315])
        return np.stack([np.cos(angles), np.sin(angles)], 1) * 0.9
    if shape == "triangle":
        angles = np.radians([90, 210, 330])
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    angles = np.radians(90 + 36 * np.arange(10))
    radius = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    return np.stack([np.cos(angles) * radius, np.sin(angles) * radius], 1)


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Point-in-shape test in object coordinates (unit radius, y up), vectorised."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    verts = _polygon(shape)
    inside = np.zeros(u.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(verts, np.roll(verts, -1, axis=0)):
        crosses = (y0 > v) != (y1 > v)
        x_at = x0 + (v - y0) * (x1 - x0) / (y1 - y0 + 1e-12)
        inside ^= crosses & (u < x_at)
    return inside


def _object_texture(kind: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    if kind == "stripes":
        return (u / period) % 1 < 0.5
    if kind == "dots":
        return ((u / period) % 1 - 0.5) ** 2 + ((v / period) % 1 - 0.5) ** 2 < 0.09
    if kind == "checks":
        return (np.floor(u / period) + np.floor(v / period)) % 2 == 1
    return np.zeros(u.shape, dtype=bool)


def _trajectory(
    motion: str, rng: np.random.Generator, n: int, aspect: float, margin: float
) -> dict[str, np.ndarray]:
    """Object centre (world units of frame height), scale, angle and camera offset per frame; the object
    stays `margin` inside the frame."""
    s = np.linspace(0.0, 1.0, n)
    radius = rng.uniform(0.16, 0.25) * min(1.0, aspect)  # relative to the shorter side of the frame
    scale = np.ones(n)
    angle = np.full(n, rng.uniform(0, 2 * np.pi))
    cam = np.zeros(n)
    span = rng.uniform(0.25, 0.45)
    if motion in ("grows", "shrinks"):
        lo, hi = rng.uniform(0.6, 0.75), rng.uniform(1.3, 1.5)
        radius = min(radius, 0.4 * min(1.0, aspect) / hi)
        scale = lo + (hi - lo) * s if motion == "grows" else hi + (lo - hi) * s
    reach = radius * scale.max() + margin
    x0 = rng.uniform(reach, aspect - reach)
    y0 = rng.uniform(reach, 1 - reach)
    cx, cy = np.full(n, x0), np.full(n, y0)
    if motion in ("moves left", "moves right"):
        span = min(span * aspect, aspect - 2 * reach)
        start = rng.uniform(reach, aspect - reach - span)
        cx = start + span * s if motion == "moves right" else start + span * (1 - s)
    elif motion in ("moves up", "moves down"):
        span = min(span, 1 - 2 * reach)
        start = rng.uniform(reach, 1 - reach - span)
        cy = start + span * s if motion == "moves down" else start + span * (1 - s)
    elif motion.startswith("rotates"):
        turn = rng.uniform(np.pi / 2, np.pi)
        angle = angle + (-turn if motion.endswith("clockwise") and "counter" not in motion else turn) * s
    elif motion == "bounces":
        floor = rng.uniform(max(0.6, 2 * reach), 1 - reach)
        height = min(rng.uniform(0.25, 0.4), floor - reach)
        bounces = rng.integers(1, 3)
        cy = floor - height * np.abs(np.sin(np.pi * bounces * s + np.pi / 2))
    elif motion.startswith("camera pans"):
        span = min(span * aspect, aspect - 2 * reach)
        # world-fixed object: the camera moves by `span`, the object crosses the frame the other way
        cam = span * s if motion == "camera pans right" else -span * s
        x_start = rng.uniform(reach, aspect - reach - span)
        cx = np.full(n, x_start + span) if motion == "camera pans right" else np.full(n, x_start)
    return {"cx": cx, "cy": cy, "radius": radius * scale, "angle": angle, "cam": cam}


def _pick_colour(rng: np.random.Generator, reference: np.ndarray) -> str:
    """An object colour name that stands out against the scene's mean colour."""
    names = list(COLOURS)
    order = rng.permutation(len(names))
    for i in order:
        if np.linalg.norm(np.array(COLOURS[names[i]], float) - reference) > 120:
            return names[i]
    return names[order[0]]


def clip_motion(seed: int) -> str:
    """The motion caption that `render_scene_clip(seed, ...)` will use (cheap; for balancing datasets)."""
    return MOTIONS[np.random.default_rng([int(seed), 0x30F1]).integers(len(MOTIONS))]


def render_scene_clip(seed: int, num_frames: int, height: int, width: int, fps: int = 8) -> SceneClip:
    """Render one captioned clip; deterministic in (seed, num_frames, height, width).

    The caption names the shape, its colour, the motion and the scene, e.g. "a red circle moves left over a
    blue sky"; for camera pans the object is fixed in the world and the whole view moves the other way.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
    if num_frames < 2 or height < 8 or width < 8 or fps <= 0:
        raise ValueError(
            f"need num_frames >= 2, height and width >= 8 and fps > 0; got {num_frames}, {height}x{width}, {fps}."
        )
    motion = clip_motion(seed)
    scene_rng, rng = (np.random.default_rng(s) for s in np.random.SeedSequence([int(seed), 0x5CE7]).spawn(2))
    scene_name = SCENES[scene_rng.integers(len(SCENES))]
    scene = _scene_library(scene_rng, scene_name)
    shape = SHAPES[rng.integers(len(SHAPES))]
    if motion.startswith("rotates") and shape == "circle":
        shape = SHAPES[1 + rng.integers(len(SHAPES) - 1)]  # a rotating circle would look still
    aspect = width / height
    yy = (np.arange(height)[:, None] + 0.5) / height
    xx = (np.arange(width)[None, :] + 0.5) / height
    still = scene(xx * np.ones_like(yy), yy * np.ones_like(xx))
    mean_colour = still.reshape(-1, 3).mean(0)
    colour_name = _pick_colour(rng, mean_colour)
    texture = TEXTURES[rng.choice(len(TEXTURES), p=[0.4, 0.2, 0.2, 0.2])]
    base = np.array(COLOURS[colour_name], float)
    second = base * 0.6 if base.mean() > 90 else base * 0.4 + 100
    period = rng.uniform(0.3, 0.5)
    traj = _trajectory(motion, rng, num_frames, aspect, margin=1.0 / height)

    # 2x2 supersampling for smooth object edges
    sy = ((np.arange(2 * height) + 0.5) / (2 * height))[:, None]
    sx = ((np.arange(2 * width) + 0.5) / (2 * height))[None, :]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    masks = np.empty((num_frames, height, width), dtype=bool)
    static_bg = None if motion.startswith("camera") else still
    for t in range(num_frames):
        wx = xx + traj["cam"][t]
        bg = static_bg if static_bg is not None else scene(wx * np.ones_like(yy), yy * np.ones_like(wx))
        c, s_ = np.cos(traj["angle"][t]), np.sin(traj["angle"][t])
        dx = (sx - (traj["cx"][t] - traj["cam"][t])) / traj["radius"][t]
        dy = (traj["cy"][t] - sy) / traj["radius"][t]  # object coordinates have y up
        u, v = c * dx + s_ * dy, -s_ * dx + c * dy
        inside = _inside(shape, u, v)
        pattern = _object_texture(texture, u, v, period)
        light = 1.0 - 0.25 * np.clip((u - 0.4) ** 2 + (v - 0.4) ** 2, 0, 2) / 2
        obj = np.where(pattern[..., None], second, base) * light[..., None]
        alpha = inside.reshape(height, 2, width, 2).mean(axis=(1, 3))
        obj_px = (obj * inside[..., None]).reshape(height, 2, width, 2, 3).sum(axis=(1, 3)) / np.maximum(
            inside.reshape(height, 2, width, 2).sum(axis=(1, 3)), 1
        )[..., None]
        img = bg * (1 - alpha[..., None]) + obj_px * alpha[..., None]
        frames[t] = np.clip(img, 0, 255).round().astype(np.uint8)
        masks[t] = alpha >= 0.5
    article = "an" if colour_name[0] in "aeiou" else "a"
    scene_caption = f"{article} {colour_name} {shape} over {scene_name}"
    if motion.startswith("camera"):
        caption = f"{scene_caption}, the {motion}"
    else:
        caption = f"{article} {colour_name} {shape} {motion} over {scene_name}"
    meta = {
        "seed": int(seed),
        "num_frames": int(num_frames),
        "height": int(height),
        "width": int(width),
        "fps": int(fps),
        "shape": shape,
        "color": colour_name,
        "texture": texture,
        "scene": scene_name,
        "motion": motion,
        "centers_px": [
            [float((x - c) * height), float(y * height)]
            for x, y, c in zip(traj["cx"], traj["cy"], traj["cam"])
        ],
        "radius_px": [float(r * height) for r in traj["radius"]],
        "angle_rad": [float(a) for a in traj["angle"]],
        "camera_offset_px": [float(c * height) for c in traj["cam"]],
    }
    return SceneClip(frames, caption, motion, scene_caption, meta, masks)
