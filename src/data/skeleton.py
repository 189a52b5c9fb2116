"""Draw OpenPose skeletons (18 body points, optionally 2x21 hand and 68 face points) in the ControlNet/DWPose
colour convention: the one drawing of the demo data, `python -m src.data.extract_poses` and retargeting.

Pose maps drawn here are what pose guiders initialised from ControlNet-openpose expect: a black RGB
canvas, the first 17 limbs as filled ellipses in an 18-colour palette, the canvas scaled by 0.6, then the
joints as dots in the same palette; then (DWPose, as Moore-AnimateAnyone's data) each hand's 20 bones as
2 px lines coloured HSV(i/20, 1, 1) with blue joint dots, and the face as white dots. Sizes are the
reference's at 512 px, scaled with the image. Images are `h w c uint8`; keypoints are pixel (x, y) with
pixel centres at integer coordinates, in OpenPose order, NaN (or score <= 0.3) where a point is missing.
No OpenCV: the ellipses, lines and dots are rasterised with numpy, vectorised over frames.
"""

from __future__ import annotations

import numpy as np

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

# 0-based keypoint index pairs. Only the first NUM_DRAWN_LIMBS are drawn (the ear-shoulder pairs are not),
# and limb i is drawn in PALETTE[i].
LIMB_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)  # fmt: skip
NUM_DRAWN_LIMBS = 17

PALETTE: np.ndarray = np.array(
    [
        [255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0],
        [0, 255, 0], [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255],
        [0, 0, 255], [85, 0, 255], [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85],
    ],
    dtype=np.uint8,
)  # fmt: skip
PALETTE.setflags(write=False)

# hands: 21 points each (wrist, then 4 per finger from thumb to little finger), 20 bones coloured HSV(i/20, 1, 1)
NUM_HAND_KEYPOINTS = 21
HAND_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)  # fmt: skip


def _hsv_ramp(count: int) -> np.ndarray:
    """RGB uint8 of HSV(i / count, 1, 1), i < count, computed as matplotlib's hsv_to_rgb then rounded (as the
    reference passes hsv_to_rgb(...) * 255 to OpenCV, which rounds)."""
    hue6 = np.arange(count) / count * 6.0
    sector = np.floor(hue6).astype(int) % 6
    rise, fall = hue6 - np.floor(hue6), 1.0 - (hue6 - np.floor(hue6))  # matplotlib's t and q with s = v = 1
    one, zero = np.ones(count), np.zeros(count)
    table = [
        (one, rise, zero),
        (fall, one, zero),
        (zero, one, rise),
        (zero, fall, one),
        (rise, zero, one),
        (one, zero, fall),
    ]
    rgb = np.stack([np.choose(sector, [row[c] for row in table]) for c in range(3)], axis=1)
    return np.round(rgb * 255).astype(np.uint8)


HAND_EDGE_COLOURS: np.ndarray = _hsv_ramp(len(HAND_EDGES))
HAND_EDGE_COLOURS.setflags(write=False)
HAND_JOINT_COLOUR = np.array([0, 0, 255], dtype=np.uint8)
NUM_FACE_KEYPOINTS = 68
FACE_COLOUR = np.array([255, 255, 255], dtype=np.uint8)
# reference sizes at 512 px: hand lines 2 px thick, hand dots radius 4, face dots radius 3
REFERENCE_HAND_LINE_HALF_WIDTH, REFERENCE_HAND_DOT, REFERENCE_FACE_DOT = 1.0, 4.0, 3.0

SCORE_THRESHOLD = 0.3  # points with a lower confidence are not drawn (as in the reference drawing)
REFERENCE_STICKWIDTH = 4.0  # limb half-width and dot radius at REFERENCE_SIZE
REFERENCE_SIZE = 512


def default_stickwidth(height: int, width: int) -> float:
    """Limb half-width scaled with the image: 4 px at 512 px as in the reference, never below 1 px."""
    return max(1.0, REFERENCE_STICKWIDTH * min(height, width) / REFERENCE_SIZE)


def _as_points(
    keypoints: np.ndarray, leading: int, count: int = NUM_KEYPOINTS, name: str = "keypoints"
) -> np.ndarray:
    """Check the keypoint array and return float64 (..., count, 2) with NaN for missing / low-score points."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != leading + 2 or kp.shape[-2] != count or kp.shape[-1] not in (2, 3):
        raise ValueError(
            f"{name} must have shape {'(N, ' * leading}{count}, 2) or (..., {count}, 3) with scores, got "
            f"{kp.shape}; pass pixel (x, y) coordinates in OpenPose order (see skeleton.KEYPOINT_NAMES)."
        )
    points = kp[..., :2].copy()
    if kp.shape[-1] == 3:
        points[kp[..., 2] <= SCORE_THRESHOLD] = np.nan
    return points


def _paint_windows(canvas: np.ndarray, origin: np.ndarray, inside: np.ndarray, colour: np.ndarray) -> None:
    """Write `colour` into canvas (T,H,W,3) where `inside` (T,h,w) is true, windows placed at origin (T,2) = (y, x)."""
    t_idx, wy, wx = np.nonzero(inside)
    ys = wy + origin[t_idx, 0]
    xs = wx + origin[t_idx, 1]
    ok = (ys >= 0) & (ys < canvas.shape[1]) & (xs >= 0) & (xs < canvas.shape[2])
    canvas[t_idx[ok], ys[ok], xs[ok]] = colour


def _window_grid(
    lo: np.ndarray, hi: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window origins (T,2)=(y,x) covering [lo, hi] (T,2 as x,y) clipped to the canvas, plus offsets (h,1),(1,w)."""
    limit = np.array([width - 1, height - 1])
    lo_i = np.clip(np.floor(lo), 0, limit).astype(np.int64)
    hi_i = np.clip(np.ceil(hi), 0, limit).astype(np.int64)
    size = hi_i - lo_i + 1
    origin = np.stack([lo_i[:, 1], lo_i[:, 0]], axis=1)
    return origin, np.arange(size[:, 1].max())[:, None], np.arange(size[:, 0].max())[None, :]


def _finite_frames(*points: np.ndarray) -> np.ndarray:
    """Indices of the frames where every given point (T,2) is finite (NaN marks an undetected joint)."""
    return np.nonzero(np.logical_and.reduce([np.isfinite(p).all(axis=1) for p in points]))[0]


def _paint_frames(
    canvas: np.ndarray, frames: np.ndarray, origin: np.ndarray, inside: np.ndarray, colour: np.ndarray
) -> None:
    """Paint the windows' `inside` masks in `colour` on the selected frames of `canvas`."""
    sub = canvas[frames]
    _paint_windows(sub, origin, inside, colour)
    canvas[frames] = sub


def _fill_ellipses(
    canvas: np.ndarray, a: np.ndarray, b: np.ndarray, half_width: float, colour: np.ndarray
) -> None:
    """Fill, per frame, the ellipse whose major axis runs from a to b (T,2) with minor semi-axis half_width."""
    frames = _finite_frames(a, b)
    if frames.size == 0:
        return
    a, b = a[frames], b[frames]
    centre = (a + b) / 2.0
    axis = b - a
    half_len = np.linalg.norm(axis, axis=1) / 2.0
    unit = np.where(half_len[:, None] > 0, axis / np.maximum(2.0 * half_len[:, None], 1e-12), [1.0, 0.0])
    half_len = np.maximum(half_len, 0.5)  # a zero-length limb still shows as a small blob
    reach = np.maximum(half_len, half_width)[:, None]
    origin, oy, ox = _window_grid(centre - reach, centre + reach, *canvas.shape[1:3])
    dx = (ox[None] + origin[:, 1, None, None]) - centre[:, 0, None, None]
    dy = (oy[None] + origin[:, 0, None, None]) - centre[:, 1, None, None]
    along = dx * unit[:, 0, None, None] + dy * unit[:, 1, None, None]
    across = dy * unit[:, 0, None, None] - dx * unit[:, 1, None, None]
    inside = (along / half_len[:, None, None]) ** 2 + (across / half_width) ** 2 <= 1.0
    _paint_frames(canvas, frames, origin, inside, colour)


def _fill_segments(
    canvas: np.ndarray, a: np.ndarray, b: np.ndarray, half_width: float, colour: np.ndarray
) -> None:
    """Fill, per frame, the pixels within `half_width` of the segment a-b (T,2): a line with round caps."""
    frames = _finite_frames(a, b)
    if frames.size == 0:
        return
    a, b = a[frames], b[frames]
    origin, oy, ox = _window_grid(
        np.minimum(a, b) - half_width, np.maximum(a, b) + half_width, *canvas.shape[1:3]
    )
    px = (ox[None] + origin[:, 1, None, None]) - a[:, 0, None, None]
    py = (oy[None] + origin[:, 0, None, None]) - a[:, 1, None, None]
    d = b - a
    length2 = np.maximum((d**2).sum(axis=1), 1e-12)[:, None, None]
    along = np.clip((px * d[:, 0, None, None] + py * d[:, 1, None, None]) / length2, 0.0, 1.0)
    inside = (px - along * d[:, 0, None, None]) ** 2 + (
        py - along * d[:, 1, None, None]
    ) ** 2 <= half_width**2
    _paint_frames(canvas, frames, origin, inside, colour)


def _fill_discs(canvas: np.ndarray, centre: np.ndarray, radius: float, colour: np.ndarray) -> None:
    """Fill, per frame, a disc of `radius` px around centre (T,2); NaN centres are skipped."""
    frames = _finite_frames(centre)
    if frames.size == 0:
        return
    centre = centre[frames]
    origin, oy, ox = _window_grid(centre - radius, centre + radius, *canvas.shape[1:3])
    dx = (ox[None] + origin[:, 1, None, None]) - centre[:, 0, None, None]
    dy = (oy[None] + origin[:, 0, None, None]) - centre[:, 1, None, None]
    inside = dx**2 + dy**2 <= radius**2
    _paint_frames(canvas, frames, origin, inside, colour)


def draw_openpose_video(
    keypoints: np.ndarray,
    height: int,
    width: int,
    stickwidth: float | None = None,
    *,
    hands: np.ndarray | None = None,
    faces: np.ndarray | None = None,
) -> np.ndarray:
    """Draw one skeleton per frame: keypoints (T, 18, 2|3) -> (T, H, W, 3) uint8, vectorised over frames.

    hands (T, 2, 21, 2|3) and faces (T, 68, 2|3), when given, are drawn over the body as DWPose does."""
    points = _as_points(keypoints, leading=1)
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}.")
    canvas = _draw_people(points[:, None], height, width, stickwidth)
    scale = min(height, width) / REFERENCE_SIZE
    if hands is not None:
        hand_points = _as_points(hands, leading=2, count=NUM_HAND_KEYPOINTS, name="hands")
        if hand_points.shape[:2] != (len(points), 2):
            raise ValueError(f"hands must be (T={len(points)}, 2, 21, 2|3), got {np.shape(hands)}.")
        line = max(0.5, REFERENCE_HAND_LINE_HALF_WIDTH * scale)
        for hand in range(2):
            for edge, (i, j) in enumerate(HAND_EDGES):
                _fill_segments(
                    canvas, hand_points[:, hand, i], hand_points[:, hand, j], line, HAND_EDGE_COLOURS[edge]
                )
            for joint in range(NUM_HAND_KEYPOINTS):
                _fill_discs(
                    canvas,
                    hand_points[:, hand, joint],
                    max(1.0, REFERENCE_HAND_DOT * scale),
                    HAND_JOINT_COLOUR,
                )
    if faces is not None:
        face_points = _as_points(faces, leading=1, count=NUM_FACE_KEYPOINTS, name="faces")
        if len(face_points) != len(points):
            raise ValueError(f"faces must be (T={len(points)}, 68, 2|3), got {np.shape(faces)}.")
        for joint in range(NUM_FACE_KEYPOINTS):
            _fill_discs(canvas, face_points[:, joint], max(1.0, REFERENCE_FACE_DOT * scale), FACE_COLOUR)
    return canvas


def draw_openpose(
    keypoints: np.ndarray, height: int, width: int, stickwidth: float | None = None
) -> np.ndarray:
    """Draw one skeleton (18, 2|3) or several people (P, 18, 2|3) on one black (H, W, 3) uint8 canvas.

    stickwidth is the limb half-width and dot radius in px; None scales the reference 4 px at 512 px to
    this image size (at least 1 px for limbs and 1.5 px for dots, so skeletons stay visible at 64 px).
    """
    kp = np.asarray(keypoints)
    people = _as_points(kp[None] if kp.ndim == 2 else kp, leading=1)
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}.")
    return _draw_people(people[None], height, width, stickwidth)[0]


def _draw_people(points: np.ndarray, height: int, width: int, stickwidth: float | None) -> np.ndarray:
    """points (T, P, 18, 2) float with NaN for missing -> (T, H, W, 3) uint8 skeleton frames."""
    limb_half_width = default_stickwidth(height, width) if stickwidth is None else float(stickwidth)
    dot_radius = limb_half_width if stickwidth is not None else max(1.5, limb_half_width)
    canvas = np.zeros((points.shape[0], height, width, 3), dtype=np.uint8)
    for limb in range(NUM_DRAWN_LIMBS):
        i, j = LIMB_PAIRS[limb]
        for person in range(points.shape[1]):
            _fill_ellipses(canvas, points[:, person, i], points[:, person, j], limb_half_width, PALETTE[limb])
    # the reference scales the limb canvas by 0.6 (float multiply, truncated); *3//5 gives the same bytes
    canvas = (canvas.astype(np.uint16) * 3 // 5).astype(np.uint8)
    for joint in range(NUM_KEYPOINTS):
        for person in range(points.shape[1]):
            _fill_discs(canvas, points[:, person, joint], dot_radius, PALETTE[joint])
    return canvas
