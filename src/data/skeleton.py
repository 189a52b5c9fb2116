"""Draw 18-keypoint OpenPose body skeletons in the ControlNet/DWPose colour convention.

Pose maps drawn here are what pose guiders initialised from ControlNet-openpose expect: a black RGB
canvas, the first 17 limbs as filled ellipses in an 18-colour palette, the canvas scaled by 0.6, then the
joints as dots in the same palette. Images are `h w c uint8`; keypoints are pixel (x, y) with pixel
centres at integer coordinates, in OpenPose order, NaN (or score <= 0.3) where a point is missing.
No OpenCV: the ellipses and dots are rasterised with numpy, vectorised over frames.
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

SCORE_THRESHOLD = 0.3  # points with a lower confidence are not drawn (as in the reference drawing)
REFERENCE_STICKWIDTH = 4.0  # limb half-width and dot radius at REFERENCE_SIZE
REFERENCE_SIZE = 512


def default_stickwidth(height: int, width: int) -> float:
    """Limb half-width scaled with the image: 4 px at 512 px as in the reference, never below 1 px."""
    return max(1.0, REFERENCE_STICKWIDTH * min(height, width) / REFERENCE_SIZE)


def _as_points(keypoints: np.ndarray, leading: int) -> np.ndarray:
    """Check the keypoint array and return float64 (..., 18, 2) with NaN for missing / low-score points."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != leading + 2 or kp.shape[-2] != NUM_KEYPOINTS or kp.shape[-1] not in (2, 3):
        raise ValueError(
            f"keypoints must have shape {'(N, ' * leading}18, 2) or (..., 18, 3) with scores, got {kp.shape}; "
            "pass pixel (x, y) coordinates in OpenPose order (see skeleton.KEYPOINT_NAMES)."
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


def _fill_ellipses(
    canvas: np.ndarray, a: np.ndarray, b: np.ndarray, half_width: float, colour: np.ndarray
) -> None:
    """Fill, per frame, the ellipse whose major axis runs from a to b (T,2) with minor semi-axis half_width."""
    valid = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    if not valid.any():
        return
    frames = np.nonzero(valid)[0]
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
    sub = canvas[frames]
    _paint_windows(sub, origin, inside, colour)
    canvas[frames] = sub


def _fill_discs(canvas: np.ndarray, centre: np.ndarray, radius: float, colour: np.ndarray) -> None:
    """Fill, per frame, a disc of `radius` px around centre (T,2); NaN centres are skipped."""
    valid = np.isfinite(centre).all(axis=1)
    if not valid.any():
        return
    frames = np.nonzero(valid)[0]
    centre = centre[frames]
    origin, oy, ox = _window_grid(centre - radius, centre + radius, *canvas.shape[1:3])
    dx = (ox[None] + origin[:, 1, None, None]) - centre[:, 0, None, None]
    dy = (oy[None] + origin[:, 0, None, None]) - centre[:, 1, None, None]
    inside = dx**2 + dy**2 <= radius**2
    sub = canvas[frames]
    _paint_windows(sub, origin, inside, colour)
    canvas[frames] = sub


def draw_openpose_video(
    keypoints: np.ndarray, height: int, width: int, stickwidth: float | None = None
) -> np.ndarray:
    """Draw one skeleton per frame: keypoints (T, 18, 2|3) -> (T, H, W, 3) uint8, vectorised over frames."""
    points = _as_points(keypoints, leading=1)
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}.")
    return _draw_people(points[:, None], height, width, stickwidth)


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
