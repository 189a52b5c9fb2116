"""Procedural demo videos of clothed, articulated characters with exact pose, silhouette and background.

The embedded Animate Anyone demo trains on these instead of real dance videos. One 3D stick skeleton per
frame (forward kinematics from joint-angle tracks) is both projected to the 18 OpenPose keypoints and
dressed with tapered capsules that are z-buffered into the image, so the pose map, the silhouette and the
frames agree exactly. `character_seed` fixes the body, skin, hair, clothing and background; `motion_seed`
fixes the motion. Layout: frames and pose `t h w c` uint8, silhouette `t h w` bool, keypoints `t 18 2`
float32 pixel (x, y) with pixel centres at integers, NaN where a face point is turned away.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from src.data.skeleton import draw_openpose_video

__all__ = ["DemoVideo", "MOTIONS", "describe_clothing", "motion_name", "render_demo_video"]

MOTIONS: tuple[str, ...] = (
    "walk_in_place",
    "walk_across",
    "wave",
    "dance",
    "squat",
    "jump",
    "jumping_jacks",
    "turn",
    "kick",
)


@dataclass
class DemoVideo:
    """One rendered demo clip (see the module docstring for layouts)."""

    frames: np.ndarray
    pose: np.ndarray
    silhouette: np.ndarray
    background: np.ndarray
    keypoints: np.ndarray
    meta: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# appearance

SKIN_TONES = np.array(
    [[255, 224, 196], [241, 194, 167], [234, 192, 134], [224, 172, 105], [198, 134, 66],
     [160, 110, 75], [141, 85, 36], [110, 70, 45], [94, 54, 33], [70, 42, 28]], dtype=np.float64,
)  # fmt: skip
HAIR_COLOURS = {
    "black": (25, 20, 20), "dark brown": (60, 38, 25), "brown": (105, 70, 40), "auburn": (130, 50, 30),
    "blonde": (215, 180, 110), "grey": (160, 160, 160), "white": (225, 225, 220), "pink": (220, 90, 160),
    "blue": (50, 90, 200),
}  # fmt: skip
CLOTH_COLOURS = {
    "red": (200, 40, 40), "dark red": (120, 20, 30), "orange": (235, 130, 40), "yellow": (235, 205, 50),
    "lime": (150, 210, 60), "green": (40, 140, 60), "teal": (30, 140, 140), "sky blue": (100, 170, 230),
    "blue": (40, 80, 200), "navy": (25, 35, 90), "purple": (120, 60, 170), "pink": (235, 120, 170),
    "white": (235, 235, 235), "grey": (130, 130, 135), "black": (30, 30, 35), "brown": (110, 70, 40),
    "beige": (210, 190, 150), "olive": (110, 115, 50), "denim": (60, 90, 140), "maroon": (100, 30, 50),
}  # fmt: skip
PATTERNS: tuple[str, ...] = ("solid", "stripes", "pinstripes", "checks", "dots")

# material ids used by the renderer
SKIN, SHIRT, BOTTOM, LEGWEAR, SHOES, HAIR, EYES = range(7)


@dataclass(frozen=True)
class _Body:
    """Body measurements in body units (standing height from sole to crown == 1)."""

    head_r: float
    neck_len: float
    neck_r: float
    torso_len: float
    shoulder_hw: float
    hip_hw: float
    chest_d: float
    hip_d: float
    upper_arm: float
    fore_arm: float
    hand_len: float
    arm_r: float
    fore_r: float
    hand_r: float
    thigh: float
    shin: float
    ankle_h: float
    foot_len: float
    thigh_r: float
    shin_r: float
    foot_r: float


def _sample_body(rng: np.random.Generator) -> _Body:
    """Random but plausible proportions, normalised to unit standing height."""
    build = rng.uniform(0.8, 1.25)  # thin .. stocky
    u = rng.uniform
    lengths = {
        "head_r": u(0.058, 0.074), "neck_len": u(0.028, 0.045), "torso_len": u(0.27, 0.32),
        "shin": u(0.21, 0.25), "thigh": u(0.22, 0.26), "ankle_h": u(0.032, 0.04),
    }  # fmt: skip
    total = (
        lengths["ankle_h"] + lengths["shin"] + lengths["thigh"] + lengths["torso_len"]
        + lengths["neck_len"] + 2 * lengths["head_r"]
    )  # fmt: skip
    k = 1.0 / total
    arm_r = u(0.022, 0.03) * build
    thigh_r = u(0.034, 0.046) * build
    return _Body(
        head_r=lengths["head_r"] * k,
        neck_len=lengths["neck_len"] * k,
        neck_r=u(0.019, 0.026) * build,
        torso_len=lengths["torso_len"] * k,
        shoulder_hw=u(0.085, 0.115) * build**0.5,
        hip_hw=u(0.05, 0.072) * build**0.5,
        chest_d=u(0.05, 0.065) * build,
        hip_d=u(0.05, 0.065) * build,
        upper_arm=u(0.16, 0.19),
        fore_arm=u(0.14, 0.16),
        hand_len=u(0.04, 0.05),
        arm_r=arm_r,
        fore_r=arm_r * u(0.75, 0.9),
        hand_r=arm_r * 0.8,
        thigh=lengths["thigh"] * k,
        shin=lengths["shin"] * k,
        ankle_h=lengths["ankle_h"] * k,
        foot_len=u(0.05, 0.065),
        thigh_r=thigh_r,
        shin_r=thigh_r * u(0.7, 0.82),
        foot_r=u(0.018, 0.024),
    )


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int] | np.ndarray, amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=np.float64) + rng.uniform(-amount, amount, 3), 0, 255)


def _sample_material(rng: np.random.Generator, avoid: str | None = None) -> dict:
    """A cloth material: base colour, pattern, second colour and pattern period (body units)."""
    names = [n for n in CLOTH_COLOURS if n != avoid]
    name = names[rng.integers(len(names))]
    pattern = PATTERNS[rng.choice(len(PATTERNS), p=[0.36, 0.2, 0.1, 0.17, 0.17])]
    other = [n for n in CLOTH_COLOURS if n != name]
    name2 = other[rng.integers(len(other))]
    return {
        "color_name": name,
        "color": _jitter(rng, CLOTH_COLOURS[name], 18).round().tolist(),
        "pattern": pattern,
        "color2_name": name2,
        "color2": _jitter(rng, CLOTH_COLOURS[name2], 18).round().tolist(),
        "period": float(rng.uniform(0.07, 0.12)),
    }


def _sample_appearance(rng: np.random.Generator) -> dict:
    """Skin, hair and clothing of one character, as a json-serialisable description."""
    skin = _jitter(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 10).round().tolist()
    hair_name = list(HAIR_COLOURS)[
        rng.choice(len(HAIR_COLOURS), p=[0.24, 0.2, 0.18, 0.08, 0.12, 0.06, 0.03, 0.05, 0.04])
    ]
    hair_style = ["short", "long", "bun", "bald"][rng.choice(4, p=[0.45, 0.35, 0.14, 0.06])]
    shirt = _sample_material(rng)
    bottom = _sample_material(rng, avoid=shirt["color_name"])
    bottom_kind = ["trousers", "shorts", "skirt"][rng.choice(3, p=[0.55, 0.2, 0.25])]
    if bottom_kind == "trousers" and rng.random() < 0.35:
        bottom.update(color_name="denim", color=_jitter(rng, CLOTH_COLOURS["denim"], 15).round().tolist())
    tights = bottom_kind != "trousers" and rng.random() < 0.3
    legwear = _sample_material(rng) if tights else {"color_name": "skin", "color": skin, "pattern": "solid"}
    if tights:
        legwear["pattern"] = "solid"
    shoes = list(CLOTH_COLOURS)[rng.integers(len(CLOTH_COLOURS))]
    return {
        "skin": skin,
        "hair": {
            "style": hair_style,
            "color_name": hair_name,
            "color": _jitter(rng, HAIR_COLOURS[hair_name], 12).round().tolist(),
            "length": float(rng.uniform(1.4, 2.6)),
        },
        "shirt": {
            **shirt,
            "sleeves": ["sleeveless", "short", "long"][rng.choice(3, p=[0.15, 0.45, 0.4])],
            "sleeve_fraction": float(rng.uniform(0.45, 0.8)),
        },  # fmt: skip
        "bottom": {
            **bottom,
            "kind": bottom_kind,
            "shorts_fraction": float(rng.uniform(0.4, 0.75)),
            "skirt_length": float(rng.uniform(0.16, 0.3)),
        },  # fmt: skip
        "legwear": legwear,
        "shoes": {"color_name": shoes, "color": _jitter(rng, CLOTH_COLOURS[shoes], 12).round().tolist()},
        "light_side": float(rng.choice([-1.0, 1.0])),
    }


def describe_clothing(appearance: dict) -> str:
    """A short human-readable outfit description, e.g. 'red striped shirt with short sleeves, blue jeans'."""
    adjective = {
        "solid": "",
        "stripes": "striped ",
        "pinstripes": "pinstriped ",
        "checks": "checked ",
        "dots": "dotted ",
    }
    shirt, bottom = appearance["shirt"], appearance["bottom"]
    sleeves = {"sleeveless": "sleeveless ", "short": "short-sleeved ", "long": "long-sleeved "}[
        shirt["sleeves"]
    ]
    kind = bottom["kind"]
    if kind == "trousers" and bottom["color_name"] == "denim" and bottom["pattern"] == "solid":
        kind = "jeans"
    hair = appearance["hair"]
    hair_text = "bald" if hair["style"] == "bald" else f"{hair['color_name']} {hair['style']} hair"
    return (
        f"{sleeves}{shirt['color_name']} {adjective[shirt['pattern']]}shirt, "
        f"{bottom['color_name']} {adjective[bottom['pattern']]}{kind}, "
        f"{appearance['shoes']['color_name']} shoes, {hair_text}"
    )


# ----------------------------------------------------------------------------------------------------------
# backgrounds


def _smooth_noise(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, terms: int = 6) -> np.ndarray:
    """Low-frequency noise in [-1, 1] from a few random plane waves (coordinates in frame fractions)."""
    out = np.zeros(np.broadcast_shapes(yy.shape, xx.shape))
    for _ in range(terms):
        fy, fx = rng.uniform(-4, 4, 2)
        out += np.sin(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 2 * np.pi))
    return out / terms


BACKGROUND_KINDS: tuple[str, ...] = ("gradient", "wall_floor", "outdoor", "texture", "plain")


def _render_background(
    rng: np.random.Generator, size: int, kinds: tuple[str, ...] = BACKGROUND_KINDS[:4]
) -> tuple[np.ndarray, dict]:
    """A static background: gradient, wall/floor split, outdoor sky/ground, low-contrast texture, or plain
    (one colour with faint low-frequency noise: no layout to copy by position, for the tiniest models)."""
    yy = (np.arange(size)[:, None] + 0.5) / size
    xx = (np.arange(size)[None, :] + 0.5) / size
    kind = kinds[rng.integers(len(kinds))]
    grey = rng.uniform(60, 210)
    c1 = grey + rng.uniform(-1, 1, 3) * rng.uniform(10, 70)  # mostly muted colours, some saturated
    c2 = np.clip(c1 + rng.uniform(-80, 80, 3), 0, 255)
    noise = _smooth_noise(rng, yy, xx)[..., None]
    desc: dict = {"kind": kind}
    if kind == "gradient":
        img = c1 + (c2 - c1) * yy[..., None] + 10 * noise
    elif kind == "wall_floor":
        horizon = rng.uniform(0.5, 0.72)
        wall = c1 + 8 * noise + 10 * (np.sin(2 * np.pi * xx * rng.integers(6, 14)) > 0.6)[..., None]
        depth = np.clip((yy - horizon) / (1 - horizon), 1e-3, 1)
        planks = (np.sin(2 * np.pi * 3.0 / depth) > 0.85)[..., None]
        floor = c2 * (0.85 + 0.15 * depth[..., None]) - 14 * planks + 6 * noise
        img = np.where((yy < horizon)[..., None], wall, floor)
        desc["horizon"] = float(horizon)
    elif kind == "outdoor":
        horizon = rng.uniform(0.45, 0.7)
        sky_top = np.array([rng.uniform(40, 120), rng.uniform(100, 170), rng.uniform(190, 250)])
        sky = sky_top + (np.array([225.0, 235.0, 245.0]) - sky_top) * (yy / horizon)[..., None] + 6 * noise
        ground_c = np.array([[70, 140, 50], [190, 170, 120], [120, 110, 100], [60, 110, 60]])[rng.integers(4)]
        ground = ground_c + rng.uniform(-20, 20, 3) + 18 * noise
        img = np.where((yy < horizon)[..., None], sky, ground)
        desc["horizon"] = float(horizon)
    elif kind == "texture":
        img = c1 + rng.uniform(12, 28) * noise + 8 * _smooth_noise(rng, yy * 3, xx * 3)[..., None]
    else:
        img = c1 + 4 * noise
    return np.clip(np.broadcast_to(img, (size, size, 3)), 0, 255).astype(np.uint8), desc


# ----------------------------------------------------------------------------------------------------------
# motion: joint-angle tracks in degrees (swing > 0 = forward, abduction > 0 = outward, flexion > 0 = bent)

ANGLE_TRACKS: tuple[str, ...] = (
    "torso_pitch", "torso_roll", "torso_twist", "head_pitch", "head_roll", "head_yaw", "yaw",
    "r_sh_swing", "r_sh_abd", "r_elbow", "r_fore_abd", "l_sh_swing", "l_sh_abd", "l_elbow", "l_fore_abd",
    "r_hip_swing", "r_hip_abd", "r_knee", "l_hip_swing", "l_hip_abd", "l_knee",
)  # fmt: skip


def _sample_motion(rng: np.random.Generator) -> dict:
    """Motion family and its parameters (json-serialisable)."""
    name = MOTIONS[rng.integers(len(MOTIONS))]
    freq = {
        "walk_in_place": (0.7, 1.1), "walk_across": (0.7, 1.1), "wave": (1.0, 1.8), "dance": (0.6, 1.2),
        "squat": (0.3, 0.55), "jump": (0.55, 0.85), "jumping_jacks": (0.7, 1.1), "turn": (0.15, 0.3),
        "kick": (0.45, 0.7),
    }[name]  # fmt: skip
    side = float(rng.choice([-1.0, 1.0]))
    yaw0 = {
        "walk_across": side * rng.uniform(55, 85), "kick": side * rng.uniform(35, 70),
        "squat": rng.uniform(-60, 60), "turn": rng.uniform(-15, 15),
    }.get(name, rng.uniform(-30, 30))  # fmt: skip
    return {
        "name": name,
        "freq_hz": float(rng.uniform(*freq)),
        "amplitude": float(rng.uniform(0.75, 1.2)),
        "phase": float(rng.uniform(0, 2 * np.pi)),
        "side": side,  # which arm waves / leg kicks, and the walking direction
        "both_arms": bool(rng.random() < 0.3),
        "yaw0_deg": float(yaw0),
        "sway": float(rng.uniform(0.0, 0.03)),
        # walk_across: speed in body heights per second (clipped later so the walk stays in frame);
        # other motions: amplitude of a slow sideways wander, in body heights
        "drift": float(rng.uniform(0.15, 0.35)) if name == "walk_across" else float(rng.uniform(-0.08, 0.08)),
        "idle_seed": int(rng.integers(2**31)),
    }


def _motion_tracks(motion: dict, times: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Angle tracks (degrees, each (T,)), sideways root drift profile and airborne height (body units)."""
    zeros = np.zeros_like(times)
    a = {k: zeros.copy() for k in ANGLE_TRACKS}
    amp = motion["amplitude"]
    ph = 2 * np.pi * motion["freq_hz"] * times + motion["phase"]
    side = motion["side"]
    for s in "rl":  # neutral stance
        a[f"{s}_sh_abd"] += 8
        a[f"{s}_elbow"] += 12
        a[f"{s}_hip_abd"] += 3
        a[f"{s}_knee"] += 3
    a["yaw"] += motion["yaw0_deg"]
    air = zeros.copy()
    name = motion["name"]
    if name in ("walk_in_place", "walk_across"):
        swing = 28 * amp * np.sin(ph)
        a["r_hip_swing"] += swing
        a["l_hip_swing"] -= swing
        a["r_knee"] += 40 * amp * np.maximum(0, np.cos(ph)) ** 1.5
        a["l_knee"] += 40 * amp * np.maximum(0, -np.cos(ph)) ** 1.5
        a["r_sh_swing"] -= 0.8 * swing
        a["l_sh_swing"] += 0.8 * swing
        a["r_elbow"] += 12 + 12 * np.sin(ph)
        a["l_elbow"] += 12 - 12 * np.sin(ph)
        a["torso_twist"] += 6 * np.sin(ph)
        a["torso_pitch"] += 4
    elif name == "wave":
        arms = "rl" if motion["both_arms"] else ("r" if side > 0 else "l")
        for s in arms:
            a[f"{s}_sh_abd"] += 95 + 25 * amp
            a[f"{s}_elbow"] += 10
            a[f"{s}_fore_abd"] += 35 + 28 * amp * np.sin(ph)
        a["torso_roll"] += 3 * np.sin(ph)
        a["head_roll"] += 5 * np.sin(ph + 1)
    elif name == "dance":
        a["r_sh_abd"] += 35 + 45 * amp * (0.5 + 0.5 * np.sin(ph))
        a["l_sh_abd"] += 35 + 45 * amp * (0.5 + 0.5 * np.sin(ph + np.pi * motion["both_arms"]))
        a["r_sh_swing"] += 40 * amp * np.sin(ph + 0.5)
        a["l_sh_swing"] -= 40 * amp * np.sin(ph + 0.5)
        a["r_elbow"] += 30 + 40 * (0.5 + 0.5 * np.cos(ph))
        a["l_elbow"] += 30 + 40 * (0.5 - 0.5 * np.cos(ph))
        bounce = 0.5 + 0.5 * np.sin(2 * ph)
        for s in "rl":
            a[f"{s}_knee"] += 25 * amp * bounce
            a[f"{s}_hip_swing"] += 12 * amp * bounce
        a["torso_roll"] += 8 * amp * np.sin(ph)
        a["torso_pitch"] += 5 * bounce
        a["head_roll"] -= 6 * np.sin(ph)
        a["yaw"] += 25 * amp * np.sin(ph / 2)
    elif name == "squat":
        depth = amp * (0.5 - 0.5 * np.cos(ph))
        for s in "rl":
            a[f"{s}_hip_swing"] += 70 * depth
            a[f"{s}_knee"] += 115 * depth
            a[f"{s}_hip_abd"] += 8 * depth
            a[f"{s}_sh_swing"] += 80 * depth
            a[f"{s}_elbow"] += 10 * depth
        a["torso_pitch"] += 30 * depth
    elif name == "jump":
        crouch = np.maximum(0, -np.sin(ph))
        up = np.maximum(0, np.sin(ph))
        air = (0.06 + 0.06 * amp) * up**1.5
        for s in "rl":
            a[f"{s}_hip_swing"] += 45 * crouch + 10 * up
            a[f"{s}_knee"] += 80 * crouch + 25 * up
            a[f"{s}_sh_swing"] += -35 * crouch + 150 * amp * up**2
            a[f"{s}_elbow"] += 15 * crouch
        a["torso_pitch"] += 25 * crouch
    elif name == "jumping_jacks":
        open_ = 0.5 - 0.5 * np.cos(ph)
        air = 0.035 * amp * np.abs(np.sin(ph))
        for s in "rl":
            a[f"{s}_sh_abd"] += 140 * amp * open_
            a[f"{s}_fore_abd"] += 20 * open_
            a[f"{s}_hip_abd"] += 16 * amp * open_
            a[f"{s}_knee"] += 8 * np.abs(np.sin(ph))
    elif name == "turn":
        a["yaw"] += 70 * amp * np.sin(ph)
        a["head_yaw"] += 15 * np.sin(ph - 0.6)
        for s in "rl":
            a[f"{s}_sh_abd"] += 12
            a[f"{s}_elbow"] += 15
    elif name == "kick":
        kick = np.maximum(0, np.sin(ph)) ** 2
        k, o = ("r", "l") if side > 0 else ("l", "r")
        a[f"{k}_hip_swing"] += 85 * amp * kick
        a[f"{k}_knee"] += 70 * 4 * kick * (1 - kick) + 5
        a[f"{o}_sh_swing"] += 45 * kick
        a[f"{k}_sh_swing"] -= 25 * kick
        a["r_sh_abd"] += 20 * kick
        a["l_sh_abd"] += 20 * kick
        a["torso_pitch"] -= 12 * kick
    # small smooth idle motion on every joint, so no two clips of a family are identical
    idle = np.random.default_rng(motion["idle_seed"])
    for k in ANGLE_TRACKS:
        if k != "yaw":
            for _ in range(2):
                a[k] += idle.uniform(0, 3.5) * np.sin(
                    2 * np.pi * idle.uniform(0.1, 0.6) * times + idle.uniform(0, 6.3)
                )
    a["r_knee"] = np.maximum(a["r_knee"], 0)
    a["l_knee"] = np.maximum(a["l_knee"], 0)
    duration = max(times[-1], 1e-6)
    drift = np.sign(np.sin(np.radians(motion["yaw0_deg"]))) * motion["drift"] * (times - duration / 2)
    if name != "walk_across":
        drift = motion["drift"] * np.sin(np.pi * times / duration)  # small wander
    drift = drift + motion["sway"] * np.sin(ph)
    return a, drift, air


# ----------------------------------------------------------------------------------------------------------
# skeleton (3D, body units; x right in the image, y up, z towards the camera)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _limb_dir(
    swing: np.ndarray, abd: np.ndarray, fwd: np.ndarray, up: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """Direction of a limb from its swing (forward) and abduction (outward) angles, in degrees."""
    s, ab = np.radians(swing)[:, None], np.radians(abd)[:, None]
    return np.cos(ab) * (-np.cos(s) * up + np.sin(s) * fwd) + np.sin(ab) * out


def _skeleton(
    body: _Body, a: dict[str, np.ndarray], drift: np.ndarray, air: np.ndarray
) -> dict[str, np.ndarray]:
    """Forward kinematics: named 3D points (T, 3) plus frame vectors, feet resting on y == 0 unless airborne."""
    n = drift.shape[0]
    yaw = np.radians(a["yaw"])
    up = np.tile([0.0, 1.0, 0.0], (n, 1))
    fwd = np.stack([np.sin(yaw), np.zeros(n), np.cos(yaw)], axis=1)
    right = np.cross(fwd, up)  # the person's right: image left when facing the camera
    tp, tr, tw = (np.radians(a[k])[:, None] for k in ("torso_pitch", "torso_roll", "torso_twist"))
    t_up = _unit(np.cos(tp) * np.cos(tr) * up + np.sin(tp) * fwd + np.cos(tp) * np.sin(tr) * right)
    t_right = np.cos(tw) * right + np.sin(tw) * fwd
    t_right = _unit(t_right - (t_right * t_up).sum(1, keepdims=True) * t_up)
    t_fwd = np.cross(t_up, t_right)
    pelvis = np.zeros((n, 3))
    p: dict[str, np.ndarray] = {"pelvis": pelvis}
    p["neck"] = pelvis + body.torso_len * t_up
    hp, hr, hy = (np.radians(a[k])[:, None] for k in ("head_pitch", "head_roll", "head_yaw"))
    h_up = _unit(t_up + np.tan(hp) * t_fwd + np.tan(hr) * t_right)
    h_fwd = np.cos(hy) * t_fwd + np.sin(hy) * t_right
    h_fwd = _unit(h_fwd - (h_fwd * h_up).sum(1, keepdims=True) * h_up)
    h_right = np.cross(h_fwd, h_up)
    p["head"] = p["neck"] + (body.neck_len + body.head_r) * h_up
    hr_ = body.head_r
    p["nose"] = p["head"] + hr_ * (0.95 * h_fwd - 0.15 * h_up)
    for sign, s in ((1.0, "r"), (-1.0, "l")):
        p[f"{s}_eye"] = p["head"] + hr_ * (0.8 * h_fwd + 0.22 * h_up + sign * 0.38 * h_right)
        p[f"{s}_ear"] = p["head"] + hr_ * (-0.05 * h_fwd + 0.02 * h_up + sign * 0.98 * h_right)
        p[f"{s}_eye_normal"] = _unit(h_fwd + sign * 0.5 * h_right)
        p[f"{s}_ear_normal"] = sign * h_right
        out_t = sign * t_right
        p[f"{s}_shoulder"] = p["neck"] + body.shoulder_hw * out_t
        d_up = _limb_dir(a[f"{s}_sh_swing"], a[f"{s}_sh_abd"], t_fwd, t_up, out_t)
        p[f"{s}_elbow"] = p[f"{s}_shoulder"] + body.upper_arm * d_up
        fore_swing = a[f"{s}_sh_swing"] + a[f"{s}_elbow"]
        fore_abd = a[f"{s}_sh_abd"] + a[f"{s}_fore_abd"]
        p[f"{s}_wrist"] = p[f"{s}_elbow"] + body.fore_arm * _limb_dir(
            fore_swing, fore_abd, t_fwd, t_up, out_t
        )
        p[f"{s}_hand"] = p[f"{s}_wrist"] + body.hand_len * _limb_dir(
            fore_swing + 10, fore_abd, t_fwd, t_up, out_t
        )
        out = sign * right
        p[f"{s}_hip"] = pelvis + body.hip_hw * out
        p[f"{s}_knee"] = p[f"{s}_hip"] + body.thigh * _limb_dir(
            a[f"{s}_hip_swing"], a[f"{s}_hip_abd"], fwd, up, out
        )
        shin_swing = a[f"{s}_hip_swing"] - a[f"{s}_knee"]
        p[f"{s}_ankle"] = p[f"{s}_knee"] + body.shin * _limb_dir(shin_swing, a[f"{s}_hip_abd"], fwd, up, out)
        foot_dir = _limb_dir(shin_swing + 90, a[f"{s}_hip_abd"] * 0, fwd, up, out)
        p[f"{s}_heel"] = p[f"{s}_ankle"] - 0.45 * body.ankle_h * up - 0.15 * body.foot_len * foot_dir
        p[f"{s}_toe"] = p[f"{s}_heel"] + body.foot_len * foot_dir
    # rest the lowest foot on the ground, then lift by the airborne height and move sideways
    lowest = np.minimum.reduce([p[f"{s}_{q}"][:, 1] for s in "rl" for q in ("heel", "toe")]) - body.foot_r
    shift = np.stack([drift, -lowest + air, np.zeros(n)], axis=1)
    for k in list(p):
        if not k.endswith("_normal"):
            p[k] = p[k] + shift
    p.update(fwd=fwd, right=right, t_fwd=t_fwd, t_right=t_right, h_fwd=h_fwd, h_up=h_up)
    return p


def _openpose_points(p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(T, 18, 3) OpenPose points in body space and (T, 18) visibility (face points turned away are hidden)."""
    order = ["nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
             "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear"]  # fmt: skip
    pts = np.stack([p[k] for k in order], axis=1)
    vis = np.ones(pts.shape[:2], dtype=bool)
    vis[:, 0] = p["h_fwd"][:, 2] > -0.2
    vis[:, 14] = p["r_eye_normal"][:, 2] > 0.05
    vis[:, 15] = p["l_eye_normal"][:, 2] > 0.05
    vis[:, 16] = p["r_ear_normal"][:, 2] > -0.35
    vis[:, 17] = p["l_ear_normal"][:, 2] > -0.35
    return pts, vis


# ----------------------------------------------------------------------------------------------------------
# dressing the skeleton: tapered capsules in pixel space


@dataclass
class _Part:
    """A tapered capsule (or flat-ended trapezoid) from a to b, z-buffered by its interpolated depth."""

    a: np.ndarray  # (T, 3) body space
    b: np.ndarray
    ra: np.ndarray | float  # half-widths in body units, scalar or (T,)
    rb: np.ndarray | float
    material: int
    material_b: int | None = None  # material beyond `switch` along the axis (sleeves, shorts)
    switch: float = 2.0
    caps: bool = True
    bias: float = 0.0
    visible: np.ndarray | None = None  # (T,) bool
    cut_centre: np.ndarray | None = None  # (T, 3): pixels inside this disc are not part of the capsule
    cut_r: float = 0.0


def _projected_half_width(
    axis_2d: np.ndarray, w_dir: np.ndarray, w: float, d_dir: np.ndarray, d: float
) -> np.ndarray:
    """Half-width, across the projected axis, of an elliptic cross-section (semi-axes w along w_dir, d along d_dir)."""
    normal = np.stack([-axis_2d[:, 1], axis_2d[:, 0]], axis=1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    return np.hypot(w * (w_dir[:, :2] * normal).sum(1), d * (d_dir[:, :2] * normal).sum(1))


def _dress(body: _Body, look: dict, p: dict[str, np.ndarray], vis: np.ndarray) -> list[_Part]:
    """The body parts of one character, with clothing materials and depth biases."""
    hr = body.head_r
    parts: list[_Part] = []
    torso_axis = (p["neck"] - p["pelvis"])[:, :2]
    top_w = _projected_half_width(
        torso_axis, p["t_right"], body.shoulder_hw + 0.2 * body.arm_r, p["t_fwd"], body.chest_d
    )
    hip_w = _projected_half_width(
        torso_axis, p["right"], body.hip_hw + 0.8 * body.thigh_r, p["fwd"], body.hip_d
    )
    up = p["neck"] - p["pelvis"]
    up = up / np.linalg.norm(up, axis=1, keepdims=True)
    parts.append(_Part(p["pelvis"], p["neck"], hip_w, top_w, SHIRT, caps=False))
    parts.append(_Part(p["neck"] - 0.2 * hr * up, p["head"], body.neck_r, body.neck_r, SKIN, bias=-0.02))
    h_up = p["h_up"]
    parts.append(
        _Part(
            p["head"] - 0.12 * hr * h_up, p["head"] + 0.12 * hr * h_up, 0.92 * hr, 0.92 * hr, SKIN, bias=0.03
        )
    )
    hair = look["hair"]
    if hair["style"] != "bald":
        face = p["head"] + hr * (0.6 * p["h_fwd"] - 0.28 * h_up)
        cap_c = p["head"] + 0.06 * hr * h_up
        parts.append(
            _Part(cap_c, cap_c, 1.06 * hr, 1.06 * hr, HAIR, bias=0.04, cut_centre=face, cut_r=0.86 * hr)
        )
        back = p["head"] - 0.45 * hr * p["h_fwd"]
        if hair["style"] == "long":
            end = back - hair["length"] * hr * h_up
            parts.append(_Part(back + 0.3 * hr * h_up, end, 1.0 * hr, 0.85 * hr, HAIR, bias=0.012))
        elif hair["style"] == "bun":
            bun = p["head"] + hr * (0.95 * h_up - 0.5 * p["h_fwd"])
            parts.append(_Part(bun, bun, 0.5 * hr, 0.5 * hr, HAIR, bias=0.005))
    for s in "rl":
        vis_eye = vis[:, 14 if s == "r" else 15]
        parts.append(
            _Part(p[f"{s}_eye"], p[f"{s}_eye"], 0.14 * hr, 0.14 * hr, EYES, bias=0.05, visible=vis_eye)
        )
    shirt = look["shirt"]
    sleeve = {"sleeveless": 0.0, "short": shirt["sleeve_fraction"], "long": 2.0}[shirt["sleeves"]]
    for s in "rl":
        parts.append(
            _Part(
                p[f"{s}_shoulder"],
                p[f"{s}_elbow"],
                body.arm_r,
                0.9 * body.arm_r,
                SHIRT,
                SKIN,
                sleeve,
                bias=0.03,
            )
        )
        fore_mat = SHIRT if sleeve > 1 else SKIN
        parts.append(
            _Part(p[f"{s}_elbow"], p[f"{s}_wrist"], 0.9 * body.arm_r, body.fore_r, fore_mat, bias=0.03)
        )
        parts.append(
            _Part(p[f"{s}_wrist"], p[f"{s}_hand"], body.hand_r, body.hand_r * 0.95, SKIN, bias=0.031)
        )
    bottom = look["bottom"]
    kind = bottom["kind"]
    thigh_switch = {"trousers": 2.0, "shorts": bottom["shorts_fraction"], "skirt": -1.0}[kind]
    shin_mat = BOTTOM if kind == "trousers" else LEGWEAR
    for s in "rl":
        parts.append(
            _Part(
                p[f"{s}_hip"],
                p[f"{s}_knee"],
                body.thigh_r,
                0.85 * body.thigh_r,
                BOTTOM,
                LEGWEAR,
                thigh_switch,
                bias=-0.004,
            )
        )
        parts.append(
            _Part(p[f"{s}_knee"], p[f"{s}_ankle"], 0.85 * body.thigh_r, body.shin_r, shin_mat, bias=-0.004)
        )
        parts.append(_Part(p[f"{s}_heel"], p[f"{s}_toe"], body.foot_r, body.foot_r, SHOES, bias=-0.003))
    waist = p["pelvis"] + 0.06 * up
    waist_w = _projected_half_width(torso_axis, p["right"], body.hip_hw + body.thigh_r, p["fwd"], body.hip_d)
    parts.append(
        _Part(p["pelvis"] - 0.05 * up, waist, waist_w, waist_w * 0.97, BOTTOM, caps=False, bias=0.002)
    )
    if kind == "skirt":
        thighs = (p["r_knee"] - p["r_hip"]) + (p["l_knee"] - p["l_hip"])
        hang = _unit(_unit(thighs) - up)  # between hanging straight down and following the thighs
        hem = p["pelvis"] + bottom["skirt_length"] * hang
        parts.append(_Part(waist, hem, waist_w, waist_w * 1.7, BOTTOM, caps=False, bias=0.05))
    return parts


def _rasterise(
    parts: list[_Part], scale: float, offset: np.ndarray, size: int, n: int
) -> dict[str, np.ndarray]:
    """Z-buffer all parts: per pixel the winning part, its material, depth and local texture coordinates."""
    zbuf = np.full((n, size, size), -np.inf, dtype=np.float32)
    winner = np.full((n, size, size), -1, dtype=np.int16)
    count = len(parts)
    geo_a = np.zeros((count, n, 2), dtype=np.float32)
    geo_unit = np.zeros((count, n, 2), dtype=np.float32)
    geo_len = np.ones((count, n), dtype=np.float32)
    geo_ra = np.ones((count, n), dtype=np.float32)
    geo_rb = np.ones((count, n), dtype=np.float32)
    cells = np.arange(64, dtype=np.float32)

    def to_px(q: np.ndarray) -> np.ndarray:
        return np.stack([offset[0] + scale * q[:, 0], offset[1] - scale * q[:, 1]], axis=1).astype(np.float32)

    for index, part in enumerate(parts):
        a_all, b_all = to_px(part.a), to_px(part.b)
        ra_all = np.broadcast_to(np.asarray(part.ra, dtype=np.float32) * scale, (n,))
        rb_all = np.broadcast_to(np.asarray(part.rb, dtype=np.float32) * scale, (n,))
        ab_all = b_all - a_all
        len_all = np.sqrt((ab_all**2).sum(1))
        unit_all = np.where(
            len_all[:, None] > 1e-6, ab_all / np.maximum(len_all, 1e-6)[:, None], np.float32([0, -1])
        )
        len_all = np.maximum(len_all, 1e-6)
        geo_a[index], geo_unit[index], geo_len[index] = a_all, unit_all, len_all
        geo_ra[index], geo_rb[index] = ra_all, rb_all
        frames = np.arange(n) if part.visible is None else np.nonzero(part.visible)[0]
        if frames.size == 0:
            continue
        a, b, ra, rb = a_all[frames], b_all[frames], ra_all[frames], rb_all[frames]
        length, unit = len_all[frames], unit_all[frames]
        reach = np.maximum(ra, rb)[:, None]
        lo = np.floor(np.minimum(a, b) - reach).astype(np.int64)
        hi = np.ceil(np.maximum(a, b) + reach).astype(np.int64)
        np.clip(lo, 0, size - 1, out=lo)
        np.clip(hi, 0, size - 1, out=hi)
        h = int((hi[:, 1] - lo[:, 1]).max()) + 1
        w = int((hi[:, 0] - lo[:, 0]).max()) + 1
        if h > cells.size or w > cells.size:
            cells = np.arange(max(h, w), dtype=np.float32)
        ys = lo[:, 1, None, None].astype(np.float32) + cells[None, :h, None]  # (F, h, 1)
        xs = lo[:, 0, None, None].astype(np.float32) + cells[None, None, :w]  # (F, 1, w)
        dx = xs - a[:, 0, None, None]
        dy = ys - a[:, 1, None, None]
        ux, uy = unit[:, 0, None, None], unit[:, 1, None, None]
        along = dx * ux + dy * uy
        across = dy * ux - dx * uy
        t_raw = along / length[:, None, None]
        t = np.minimum(np.maximum(t_raw, 0.0), 1.0)
        radius = ra[:, None, None] + t * (rb - ra)[:, None, None]
        if part.caps:
            gap = along - t * length[:, None, None]
            inside = gap * gap + across * across <= radius * radius
        else:
            inside = (t_raw >= 0) & (t_raw <= 1) & (np.abs(across) <= radius)
        if part.cut_centre is not None:
            c = to_px(part.cut_centre)[frames]
            cut_r = part.cut_r * scale
            inside &= (xs - c[:, 0, None, None]) ** 2 + (ys - c[:, 1, None, None]) ** 2 > cut_r**2
        inside &= (ys < size) & (xs < size)
        f_i, y_i, x_i = np.nonzero(inside)
        if f_i.size == 0:
            continue
        za, zb = part.a[frames, 2], part.b[frames, 2]
        depth = (za[f_i] + t[f_i, y_i, x_i] * (zb - za)[f_i] + part.bias).astype(np.float32)
        gf, gy, gx = frames[f_i], y_i + lo[f_i, 1], x_i + lo[f_i, 0]
        win = depth > zbuf[gf, gy, gx]
        gf, gy, gx = gf[win], gy[win], gx[win]
        zbuf[gf, gy, gx] = depth[win]
        winner[gf, gy, gx] = index
    # local coordinates of the winning part, computed once per covered pixel
    f_i, y_i, x_i = np.nonzero(winner >= 0)
    g = winner[f_i, y_i, x_i].astype(np.int64)
    dx = x_i - geo_a[g, f_i, 0]
    dy = y_i - geo_a[g, f_i, 1]
    along = dx * geo_unit[g, f_i, 0] + dy * geo_unit[g, f_i, 1]
    across = dy * geo_unit[g, f_i, 0] - dx * geo_unit[g, f_i, 1]
    t_raw = along / geo_len[g, f_i]
    t = np.minimum(np.maximum(t_raw, 0.0), 1.0)
    radius = geo_ra[g, f_i] + t * (geo_rb[g, f_i] - geo_ra[g, f_i])
    mat_a = np.array([part.material for part in parts], dtype=np.int8)
    mat_b = np.array(
        [part.material if part.material_b is None else part.material_b for part in parts], dtype=np.int8
    )
    switch = np.array([part.switch for part in parts], dtype=np.float32)
    out = {
        "part": winner,
        "depth": zbuf,
        "material": np.full((n, size, size), -1, dtype=np.int8),
        "along": np.zeros((n, size, size), dtype=np.float32),  # body units from the part's start
        "across": np.zeros((n, size, size), dtype=np.float32),  # signed body units from the axis
        "across_norm": np.zeros((n, size, size), dtype=np.float32),  # -1 .. 1 across the part
    }
    out["material"][f_i, y_i, x_i] = np.where(t_raw > switch[g], mat_b[g], mat_a[g])
    out["along"][f_i, y_i, x_i] = along / scale
    out["across"][f_i, y_i, x_i] = across / scale
    out["across_norm"][f_i, y_i, x_i] = np.clip(across / np.maximum(radius, 1e-6), -1, 1)
    return out


def _material_table(look: dict) -> list[dict]:
    hair = look["hair"]
    hair_mat = {"color": hair["color"], "pattern": "pinstripes", "period": 0.035,
                "color2": np.clip(np.asarray(hair["color"]) * 0.8, 0, 255).tolist()}  # fmt: skip
    return [
        {"color": look["skin"], "pattern": "solid"},
        look["shirt"],
        look["bottom"],
        look["legwear"],
        {"color": look["shoes"]["color"], "pattern": "solid"},
        hair_mat,
        {"color": [25, 20, 20], "pattern": "solid"},
    ]


def _pattern_mask(material: dict, along: np.ndarray, across: np.ndarray) -> np.ndarray:
    """Where a textured material shows its second colour (texture coordinates in body units)."""
    kind, period = material["pattern"], material.get("period", 0.1)
    if kind == "stripes":
        return (along / period) % 1.0 < 0.5
    if kind == "pinstripes":
        return (across / period) % 1.0 < 0.4
    if kind == "checks":
        return (np.floor(along / period) + np.floor(across / period)) % 2 == 1
    if kind == "dots":
        du = (along / period) % 1.0 - 0.5
        dv = (across / period + 0.5) % 1.0 - 0.5
        return du**2 + dv**2 < 0.3**2
    return np.zeros(along.shape, dtype=bool)


def _shade(ras: dict[str, np.ndarray], look: dict, pelvis_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour the z-buffered parts: material colour/texture, cylinder shading, depth dimming, edge lines."""
    material = ras["material"]
    covered = material >= 0
    table = _material_table(look)
    palette = np.array([spec["color"] for spec in table] + [[0, 0, 0]], dtype=np.float32)
    colour = palette[material]  # index -1 (background) picks the trailing black row
    for m, spec in enumerate(table):
        if spec["pattern"] == "solid":
            continue
        sel = material == m
        if not sel.any():
            continue
        second = _pattern_mask(spec, ras["along"][sel], ras["across"][sel])
        colour[sel] = np.where(second[:, None], np.asarray(spec["color2"], dtype=np.float32), colour[sel])
    c = ras["across_norm"]
    shade = 0.72 + 0.28 * np.sqrt(np.maximum(1 - c * c, 0)) + np.float32(0.1 * look["light_side"]) * c
    depth = ras["depth"] - pelvis_z[:, None, None].astype(np.float32)
    shade *= np.minimum(np.maximum(1 + 1.2 * depth, 0.72), 1.1)
    # dark line where a part lies in front of a different part or of the background
    z = np.where(covered, ras["depth"], np.float32(-1e9))
    part = ras["part"]
    edge = np.zeros_like(covered)
    for axis in (1, 2):
        lo = (slice(None),) * axis + (slice(None, -1),)
        hi = (slice(None),) * axis + (slice(1, None),)
        differ = part[lo] != part[hi]
        edge[hi] |= differ & (z[lo] < z[hi] - 0.015)
        edge[lo] |= differ & (z[hi] < z[lo] - 0.015)
    shade[edge] *= 0.8
    frames = np.minimum(np.maximum(colour * shade[..., None], 0), 255)
    return frames, covered


# ----------------------------------------------------------------------------------------------------------
# placement and the public entry point


def _extent(parts: list[_Part], n: int) -> np.ndarray:
    """Per-frame (T, 4) bounding box (xmin, xmax, ymin, ymax) of all parts, in body units."""
    lo = np.full((n, 2), np.inf)
    hi = np.full((n, 2), -np.inf)
    for part in parts:
        for q, r in ((part.a, part.ra), (part.b, part.rb)):
            r = np.broadcast_to(np.asarray(r, dtype=np.float64), (n,))[:, None]
            lo = np.minimum(lo, q[:, :2] - r)
            hi = np.maximum(hi, q[:, :2] + r)
    return np.stack([lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1]], axis=1)


def _check_args(character_seed: int, motion_seed: int, num_frames: int, size: int, fps: int) -> None:
    for name, value in (("character_seed", character_seed), ("motion_seed", motion_seed)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(
                f"{name} must be a non-negative int, got {value!r}; seeds index the demo dataset."
            )
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}.")
    if size < 16:
        raise ValueError(f"size must be >= 16 px so the character is recognisable, got {size}.")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}.")


def motion_name(motion_seed: int) -> str:
    """The motion family that `render_demo_video(..., motion_seed, ...)` will use (cheap; for balancing datasets)."""
    return _sample_motion(np.random.default_rng([int(motion_seed), 0x3071]))["name"]


def render_demo_video(
    character_seed: int,
    motion_seed: int,
    num_frames: int,
    size: int = 64,
    fps: int = 8,
    backgrounds: tuple[str, ...] = BACKGROUND_KINDS[:4],
) -> DemoVideo:
    """Render one demo clip: a procedurally dressed character performing a procedural motion.

    Deterministic in (character_seed, motion_seed, num_frames, size, fps). The character stays inside the
    frame and its tallest frame spans about 55-85% of the frame height.
    """
    _check_args(character_seed, motion_seed, num_frames, size, fps)
    look_rng = np.random.default_rng([int(character_seed), 0xC4A2])
    body = _sample_body(look_rng)
    look = _sample_appearance(look_rng)
    unknown = set(backgrounds) - set(BACKGROUND_KINDS)
    if not backgrounds or unknown:
        raise ValueError(f"backgrounds must be a non-empty subset of {BACKGROUND_KINDS}, got {backgrounds}")
    background, bg_desc = _render_background(look_rng, size, tuple(backgrounds))
    height_frac = float(look_rng.uniform(0.62, 0.8))
    motion = _sample_motion(np.random.default_rng([int(motion_seed), 0x3071]))
    place_rng = np.random.default_rng([int(character_seed), int(motion_seed), 0x91AC])

    times = np.arange(num_frames) / float(fps)
    angles, drift, air = _motion_tracks(motion, times)
    n = num_frames

    # fit: drift is clipped so the whole clip fits; the scale keeps the tallest frame <= 85% of the frame
    margin = max(1.0, 0.03 * size)
    still = _skeleton(body, angles, np.zeros(n), air)
    vis = _openpose_points(still)[1]
    box = _extent(_dress(body, look, still, vis), n)
    tallest = (box[:, 3] - box[:, 2]).max()
    clip_height = box[:, 3].max() - box[:, 2].min()
    scale = min(
        height_frac * size,
        0.85 * size / tallest,
        (size - 2 * margin) / clip_height,
        (size - 2 * margin) / (box[:, 1].max() - box[:, 0].min()),
    )
    room = max((size - 2 * margin) / scale - (box[:, 1].max() - box[:, 0].min()), 0.0)
    span = drift.max() - drift.min()
    if span > room:
        drift = drift * (room / span)
    skel = _skeleton(body, angles, drift, air)
    points3d, vis = _openpose_points(skel)
    parts = _dress(body, look, skel, vis)
    box = _extent(parts, n)
    x_lo, x_hi = margin - scale * box[:, 0].min(), size - margin - scale * box[:, 1].max()
    y_lo, y_hi = margin + scale * box[:, 3].max(), size - margin + scale * box[:, 2].min()
    offset = np.array([place_rng.uniform(min(x_lo, x_hi), max(x_lo, x_hi)),
                       place_rng.uniform(min(y_lo, y_hi), max(y_lo, y_hi))])  # fmt: skip

    ras = _rasterise(parts, scale, offset, size, n)
    colour, silhouette = _shade(ras, look, skel["pelvis"][:, 2])
    frames = np.where(silhouette[..., None], colour.astype(np.uint8), background[None])

    keypoints = np.stack(
        [offset[0] + scale * points3d[..., 0], offset[1] - scale * points3d[..., 1]], axis=-1
    )
    keypoints = np.where(vis[..., None], keypoints, np.nan).astype(np.float32)
    pose = draw_openpose_video(keypoints, size, size)
    meta = {
        "character_seed": int(character_seed),
        "motion_seed": int(motion_seed),
        "fps": int(fps),
        "num_frames": int(num_frames),
        "size": int(size),
        "motion": motion["name"],
        "motion_params": motion,
        "clothing": describe_clothing(look),
        "appearance": look,
        "background": bg_desc,
        "body": {k: float(v) for k, v in vars(body).items()},
        "pixels_per_body_height": float(scale),
    }
    return DemoVideo(
        frames=frames, pose=pose, silhouette=silhouette, background=background, keypoints=keypoints, meta=meta
    )
