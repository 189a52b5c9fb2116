"""Pose retargeting: rescale a driving skeleton sequence to the reference character's proportions.

The paper rescales "the length of the driving pose skeleton to approximate the length of the character's
skeleton in the reference image" (research note, "pose rescaling"). Here, on OpenPose-18 keypoints
(src.data.skeleton order, pixel (x, y), NaN where missing): every drawn bone (parent -> child, the tree of
`skeleton.LIMB_PAIRS` rooted at the neck) keeps its per-frame direction and gets the reference's length
(bone ratio = reference length / the driving bone's median length over the sequence); the neck starts at the
reference's neck and moves as the driving neck does, scaled by the median bone ratio. Arrays: reference
`(18, 2|3)`, driving `(T, 18, 2|3)`; returns `(T, 18, 2)`.
"""

from __future__ import annotations

import numpy as np

from src.data.skeleton import LIMB_PAIRS, NUM_DRAWN_LIMBS, NUM_KEYPOINTS, SCORE_THRESHOLD

ROOT = 1  # neck
BONES: tuple[tuple[int, int], ...] = LIMB_PAIRS[:NUM_DRAWN_LIMBS]  # parent -> child, a tree rooted at the neck
RETARGET_MODES = ("none", "rescale")


def _points(keypoints: np.ndarray, leading: int, name: str) -> np.ndarray:
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != leading + 2 or kp.shape[-2] != NUM_KEYPOINTS or kp.shape[-1] not in (2, 3):
        raise ValueError(
            f"{name} keypoints must be {'(T, ' if leading else '('}18, 2|3) pixel (x, y[, score]) in OpenPose order, "
            f"got shape {kp.shape}."
        )
    points = kp[..., :2].copy()
    if kp.shape[-1] == 3:
        points[kp[..., 2] <= SCORE_THRESHOLD] = np.nan
    return points


def bone_lengths(points: np.ndarray) -> np.ndarray:
    """(..., 18, 2) -> (..., 17) lengths of the drawn bones (NaN where an end is missing)."""
    parents = points[..., [p for p, _ in BONES], :]
    children = points[..., [c for _, c in BONES], :]
    return np.linalg.norm(children - parents, axis=-1)


def rescale_pose(reference: np.ndarray, driving: np.ndarray) -> np.ndarray:
    """The driving sequence with the reference's bone lengths, placed at the reference's neck (see module doc)."""
    ref = _points(reference, 0, "reference")
    drv = _points(driving, 1, "driving")
    if not np.isfinite(ref[ROOT]).all():
        raise ValueError("retargeting needs the reference's neck (or both shoulders) to be detected; use sample.retarget=none.")
    ref_len = bone_lengths(ref)
    with np.errstate(invalid="ignore"):
        drv_len = np.nanmedian(np.where(bone_lengths(drv) > 0, bone_lengths(drv), np.nan), axis=0) if len(drv) else ref_len
    ratios = ref_len / drv_len
    known = np.isfinite(ratios)
    if not known.any():
        raise ValueError("no bone is visible in both the reference and the driving poses; use sample.retarget=none.")
    overall = float(np.median(ratios[known]))
    ratios = np.where(known, ratios, overall)
    out = np.full_like(drv, np.nan)
    neck = drv[:, ROOT]
    first = np.flatnonzero(np.isfinite(neck).all(axis=1))
    if len(first):
        out[:, ROOT] = ref[ROOT] + overall * (neck - neck[first[0]])
    for (parent, child), ratio in zip(BONES, ratios):  # parents come before their children in BONES
        offset = drv[:, child] - drv[:, parent]
        out[:, child] = out[:, parent] + ratio * offset
        orphan = ~np.isfinite(out[:, child]).all(axis=1) & np.isfinite(drv[:, child]).all(axis=1)
        # a child whose parent is missing in this frame: place it relative to the neck at the overall scale
        out[orphan, child] = out[orphan, ROOT] + overall * (drv[orphan, child] - drv[orphan, ROOT])
    return out


LEFT_WRIST, RIGHT_WRIST, NOSE = 7, 4, 0


def follow_body(driving: np.ndarray, moved: np.ndarray, points: np.ndarray, anchor: int) -> np.ndarray:
    """Points attached to one body joint (a hand to its wrist, the face to the nose), moved with it: (T, K, 2|3)
    translated with the anchor from `driving` (T, 18, 2|3) to `moved` (T, 18, 2) and scaled about it by the
    median bone ratio moved / driving. Scores are kept; NaN where the anchor is missing."""
    drv = _points(driving, 1, "driving")
    out = np.array(points, dtype=np.float64, copy=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = bone_lengths(moved) / bone_lengths(drv)
    known = np.isfinite(ratios) & (ratios > 0)
    scale = float(np.median(ratios[known])) if known.any() else 1.0
    offset = out[..., :2] - drv[:, None, anchor]
    out[..., :2] = moved[:, None, anchor] + scale * offset
    return out
