"""Pose retargeting: a driving skeleton twice the reference's size, moving, gets the reference's bone lengths."""

from __future__ import annotations

import numpy as np
import pytest

from src.data.pose_retarget import BONES, bone_lengths, rescale_pose

REFERENCE = np.array(
    [[50, 20], [50, 32], [40, 33], [36, 46], [34, 58], [60, 33], [64, 46], [66, 58], [44, 60], [43, 78],
     [42, 96], [56, 60], [57, 78], [58, 96], [47, 18], [53, 18], [44, 19], [56, 19]],
    dtype=np.float64,
)  # fmt: skip


def rotate_limbs(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate every bone's direction by `angle` times its index (keeps the lengths)."""
    out = points.copy()
    for k, (parent, child) in enumerate(BONES):
        offset = points[child] - points[parent]
        a = angle * (k % 3 - 1)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        out[child] = out[parent] + rot @ offset
    return out


def test_a_driving_skeleton_twice_the_reference_size_gets_its_bone_lengths_within_a_pixel():
    driving = np.stack([2.0 * rotate_limbs(REFERENCE, 0.1 * t) + [30.0 + 3 * t, 5.0] for t in range(6)])
    assert np.allclose(bone_lengths(driving), 2 * bone_lengths(REFERENCE)[None])
    out = rescale_pose(REFERENCE, driving)
    assert out.shape == (6, 18, 2)
    assert np.abs(bone_lengths(out) - bone_lengths(REFERENCE)[None]).max() < 1.0
    np.testing.assert_allclose(out[0, 1], REFERENCE[1])  # starts at the reference's neck
    np.testing.assert_allclose(out[:, 1, 0] - out[0, 1, 0], 1.5 * np.arange(6))  # the neck's motion, halved
    # directions are the driving ones
    k = 3
    p, c = BONES[k]
    d_dir = driving[:, c] - driving[:, p]
    o_dir = out[:, c] - out[:, p]
    np.testing.assert_allclose(o_dir / np.linalg.norm(o_dir, axis=1, keepdims=True),
                               d_dir / np.linalg.norm(d_dir, axis=1, keepdims=True), atol=1e-9)  # fmt: skip


def test_missing_points_stay_missing_and_low_scores_count_as_missing():
    driving = np.concatenate([2.0 * REFERENCE, np.ones((18, 1))], axis=1)[None].repeat(3, axis=0)
    driving[1, 4, 2] = 0.1  # right wrist undetected in frame 1
    out = rescale_pose(REFERENCE, driving)
    assert np.isnan(out[1, 4]).all() and np.isfinite(out[0, 4]).all()
    reference = REFERENCE.copy()
    reference[1] = np.nan
    with pytest.raises(ValueError, match="neck"):
        rescale_pose(reference, driving)


def test_sample_redraws_the_pose_video_from_retargeted_keypoints(tmp_path):
    """src.inference.animate_anyone.retargeted_pose: keypoints of both -> rescale by default, drawn with the shared
    OpenPose drawing at the model size; the neck dot sits at the reference's neck mapped into the model frame."""
    import json

    from omegaconf import OmegaConf

    from src.data.skeleton import PALETTE
    from src.inference.animate_anyone import retargeted_pose

    pose_video = tmp_path / "dance.mp4"  # only its name matters here: keypoints default to dance.npz beside it
    driving = np.stack([2.0 * rotate_limbs(REFERENCE, 0.05 * t) + [20.0 * t, 0.0] for t in range(4)])
    np.savez(tmp_path / "dance.npz", body=driving, size=np.array([240, 240]))
    reference_kp = tmp_path / "hero.json"
    reference_kp.write_text(json.dumps({"body": REFERENCE.tolist(), "height": 120, "width": 100}))
    sample = OmegaConf.create({"retarget": None, "reference_keypoints": str(reference_kp), "pose_keypoints": None})
    driving_kp = pose_video.with_suffix(".npz")
    pose, mode = retargeted_pose(sample, reference_kp, driving_kp, (60, 60), [0, 2])
    assert mode == "rescale" and pose.shape == (3, 2, 60, 60)
    # reference 120x100 -> center crop 100x100 from top 10 -> 60x60: neck (50, 32) -> (29.8, 13.0)
    neck = (pose[:, 0, 13, 30] * 255).round().to(int).tolist()
    assert neck == PALETTE[1].tolist()
    sample.retarget = "none"
    assert retargeted_pose(sample, reference_kp, driving_kp, (60, 60), [0, 2]) == (None, "none")
    sample.retarget = "rescale"
    sample.reference_keypoints = None
    with pytest.raises(ValueError, match="reference_keypoints"):
        retargeted_pose(sample, None, driving_kp, (60, 60), [0])


def test_hands_and_face_follow_their_wrist_and_nose_at_the_body_scale():
    from src.data.pose_retarget import LEFT_WRIST, NOSE, follow_body

    driving = np.stack([2.0 * rotate_limbs(REFERENCE, 0.1 * t) + [30.0 + 3 * t, 5.0] for t in range(3)])
    moved = rescale_pose(REFERENCE, driving)
    hand = driving[:, LEFT_WRIST, None] + np.array([[0.0, 0.0], [8.0, 6.0], [-4.0, 10.0]])[None]  # (T, 3, 2)
    scores = np.full((3, 3, 1), 0.9)
    followed = follow_body(driving, moved, np.concatenate([hand, scores], axis=-1), LEFT_WRIST)
    np.testing.assert_allclose(followed[:, 0, :2], moved[:, LEFT_WRIST], atol=1e-9)  # the wrist point sits on it
    np.testing.assert_allclose(followed[:, 1, :2] - moved[:, LEFT_WRIST], [[4.0, 3.0]] * 3, atol=0.05)  # half size
    np.testing.assert_array_equal(followed[..., 2], 0.9)
    face = follow_body(driving, moved, driving[:, [NOSE]], NOSE)
    np.testing.assert_allclose(face[:, 0], moved[:, NOSE], atol=1e-9)
