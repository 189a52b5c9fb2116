"""Procedural demo data: OpenPose drawing, demo characters and captioned scene clips.

Checks that the generators are deterministic, that pose, silhouette and frames agree with each other
(measured from pixels, not from the generator's own bookkeeping), and that captions describe the motion
that the pixels show.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from src.data.demo_characters import MOTIONS as CHARACTER_MOTIONS
from src.data.demo_characters import motion_name, render_demo_video
from src.data.demo_scenes import MOTIONS as SCENE_MOTIONS
from src.data.demo_scenes import clip_motion, render_scene_clip
from src.data.skeleton import LIMB_PAIRS, NUM_DRAWN_LIMBS, PALETTE, draw_openpose, draw_openpose_video


def _seed_for_motion(name: str, motion_of_seed) -> int:
    return next(seed for seed in range(2000) if motion_of_seed(seed) == name)


def _segment_distance(px: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points (N, 2) to the segment a-b."""
    ab = b - a
    t = np.clip(((px - a) @ ab) / max(float(ab @ ab), 1e-9), 0, 1)
    return np.linalg.norm(px - (a + t[:, None] * ab), axis=1)


# ----------------------------------------------------------------------------------------------------------
# skeleton drawing


def test_draw_openpose_single_limb_matches_ellipse_and_palette() -> None:
    kp = np.full((18, 2), np.nan)
    kp[1] = (20.0, 32.0)  # neck
    kp[2] = (44.0, 32.0)  # right shoulder -> limb 0, drawn in PALETTE[0] * 0.6
    img = draw_openpose(kp, 64, 64, stickwidth=2)
    yy, xx = np.mgrid[0:64, 0:64]
    ellipse = ((xx - 32) / 12.0) ** 2 + ((yy - 32) / 2.0) ** 2 <= 1
    dots = ((xx - 20) ** 2 + (yy - 32) ** 2 <= 4) | ((xx - 44) ** 2 + (yy - 32) ** 2 <= 4)
    np.testing.assert_array_equal(img.any(-1), ellipse | dots)
    np.testing.assert_array_equal(img[32, 30], [153, 0, 0])  # limb colour scaled by 0.6
    np.testing.assert_array_equal(img[32, 20], PALETTE[1])  # joints are drawn after scaling, full colour
    np.testing.assert_array_equal(img[32, 44], PALETTE[2])


def test_draw_openpose_skips_missing_and_low_score_points_and_ear_limbs() -> None:
    kp = np.zeros((18, 3))
    kp[:, :2] = np.stack([np.linspace(5, 59, 18), np.full(18, 30.0)], 1)
    kp[:, 2] = 1.0
    kp[4, 2] = 0.2  # right wrist below the 0.3 threshold: neither the dot nor the elbow-wrist limb
    img = draw_openpose(kp, 64, 64, stickwidth=1)
    assert not (img == PALETTE[4]).all(-1).any()
    assert not (img == PALETTE[3].astype(int) * 3 // 5).all(-1).any()
    only_ears = np.full((18, 2), np.nan)
    only_ears[[2, 16]] = [[10, 10], [50, 50]]  # shoulder-ear pair (limb 17) is never drawn
    img = draw_openpose(only_ears, 64, 64)
    assert img[30, 30].sum() == 0 and img.any()
    far = np.full((18, 2), np.nan)
    far[1], far[2] = (10, 10), (1e7, 10)  # a wild detection far off the canvas: clipped, not a huge window
    img = draw_openpose(far, 64, 64, stickwidth=1)
    np.testing.assert_array_equal(img[10, 12:], np.tile([153, 0, 0], (52, 1)))


def test_draw_openpose_video_equals_per_frame_drawing_and_scales_width() -> None:
    rng = np.random.default_rng(0)
    kp = rng.uniform(4, 60, (3, 18, 2))
    kp[1, 5] = np.nan
    video = draw_openpose_video(kp, 64, 64)
    for t in range(3):
        np.testing.assert_array_equal(video[t], draw_openpose(kp[t], 64, 64))
    big = draw_openpose(np.array([[256.0, 256.0]] + [[np.nan, np.nan]] * 17), 512, 512)
    assert big.any(-1).sum() == int(
        (np.add.outer((np.arange(512) - 256) ** 2, (np.arange(512) - 256) ** 2) <= 16).sum()
    )
    with pytest.raises(ValueError, match="18, 2"):
        draw_openpose(np.zeros((17, 2)), 64, 64)


# ----------------------------------------------------------------------------------------------------------
# demo characters


def test_character_video_is_deterministic_with_contract_shapes() -> None:
    a = render_demo_video(3, 11, num_frames=6, size=48, fps=8)
    b = render_demo_video(3, 11, num_frames=6, size=48, fps=8)
    for name in ("frames", "pose", "silhouette", "background", "keypoints"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert json.dumps(a.meta) == json.dumps(b.meta)
    assert a.frames.shape == (6, 48, 48, 3) and a.frames.dtype == np.uint8
    assert a.pose.shape == (6, 48, 48, 3) and a.pose.dtype == np.uint8
    assert a.silhouette.shape == (6, 48, 48) and a.silhouette.dtype == bool
    assert a.background.shape == (48, 48, 3) and a.background.dtype == np.uint8
    assert a.keypoints.shape == (6, 18, 2) and a.keypoints.dtype == np.float32
    for key in ("character_seed", "motion_seed", "fps", "motion", "clothing"):
        assert key in a.meta
    with pytest.raises(ValueError, match="character_seed"):
        render_demo_video(-1, 0, 4)


def test_character_seed_fixes_appearance_and_motion_seed_fixes_motion() -> None:
    base = render_demo_video(5, 1, num_frames=8)
    other_motion = render_demo_video(5, 2, num_frames=8)
    other_character = render_demo_video(6, 1, num_frames=8)
    np.testing.assert_array_equal(base.background, other_motion.background)
    assert base.meta["appearance"] == other_motion.meta["appearance"]
    assert not np.allclose(base.keypoints, other_motion.keypoints, equal_nan=True)
    assert not np.array_equal(base.background, other_character.background)
    assert base.meta["appearance"] != other_character.meta["appearance"]
    assert base.meta["motion_params"] == other_character.meta["motion_params"]


@pytest.mark.parametrize("seeds", [(0, 0), (7, 3), (12, 9), (21, 14)])
def test_silhouette_is_exactly_where_frames_differ_from_background(seeds: tuple[int, int]) -> None:
    v = render_demo_video(*seeds, num_frames=8)
    differs = (v.frames != v.background[None]).any(-1)
    assert not differs[~v.silhouette].any(), "pixels outside the silhouette must be the background"
    assert differs[v.silhouette].mean() > 0.97
    assert v.silhouette.sum(axis=(1, 2)).min() > 100  # a big character, not a speck


@pytest.mark.parametrize("seeds", [(1, 4), (8, 6), (30, 10)])
def test_keypoints_lie_on_the_character_and_pose_pixels_lie_on_the_skeleton(seeds: tuple[int, int]) -> None:
    v = render_demo_video(*seeds, num_frames=6, size=64)
    kp = v.keypoints
    visible = np.isfinite(kp).all(-1)
    assert visible[:, :14].all(), "body keypoints are always present"
    assert (kp[visible] >= 0).all() and (kp[visible] <= 63).all()
    yy, xx = np.mgrid[0:64, 0:64]
    grid = np.stack([xx.ravel(), yy.ravel()], 1).astype(float)
    checked = 0
    for t in range(kp.shape[0]):
        sil = np.argwhere(v.silhouette[t])[:, ::-1]
        for j in range(14):  # body joints sit on (or within a pixel of) the drawn body
            assert np.min(np.linalg.norm(sil - kp[t, j], axis=1)) <= 1.5, (t, j)
        near = np.zeros(grid.shape[0], dtype=bool)
        for i, j in LIMB_PAIRS[:NUM_DRAWN_LIMBS]:
            if visible[t, i] and visible[t, j]:
                near |= _segment_distance(grid, kp[t, i].astype(float), kp[t, j].astype(float)) <= 1.6
        for j in np.nonzero(visible[t])[0]:
            near |= np.linalg.norm(grid - kp[t, j], axis=1) <= 1.6
        drawn = v.pose[t].any(-1).ravel()
        assert drawn.sum() > 80
        assert not (drawn & ~near).any(), "skeleton pixels away from every limb and joint"
        drawn_limbs = [
            n for n, (i, j) in enumerate(LIMB_PAIRS[:NUM_DRAWN_LIMBS]) if visible[t, i] and visible[t, j]
        ]
        for n in drawn_limbs:  # a limb's middle shows its palette colour * 0.6 unless drawn over later
            mid = kp[t, list(LIMB_PAIRS[n])].mean(0).astype(float)
            later = [LIMB_PAIRS[m] for m in drawn_limbs if m > n]
            if all(
                _segment_distance(mid[None], kp[t, i].astype(float), kp[t, j].astype(float))[0] > 3
                for i, j in later
            ) and (np.linalg.norm(kp[t][visible[t]] - mid, axis=1).min() > 3):
                x, y = np.round(mid).astype(int)
                np.testing.assert_array_equal(v.pose[t, y, x], PALETTE[n].astype(int) * 3 // 5)
                checked += 1
        for j in np.nonzero(visible[t])[0]:  # every joint dot not painted over by a later joint shows
            later = [k for k in range(j + 1, 18) if visible[t, k]]
            if all(np.linalg.norm(kp[t, k] - kp[t, j]) > 4.5 for k in later):
                assert (v.pose[t] == PALETTE[j]).all(-1).any(), f"joint {j} colour missing"
    assert checked >= 2 * kp.shape[0], "too few limbs could be checked"


def test_right_side_keypoints_are_on_the_image_left_when_facing_the_camera() -> None:
    seed = _seed_for_motion("wave", motion_name)
    v = render_demo_video(2, seed, num_frames=4)
    yaw = v.meta["motion_params"]["yaw0_deg"]
    assert abs(yaw) <= 30
    assert (v.keypoints[:, 2, 0] < v.keypoints[:, 5, 0]).all()  # right shoulder left of left shoulder
    assert (v.keypoints[:, 8, 0] < v.keypoints[:, 11, 0]).all()  # right hip left of left hip
    assert (v.keypoints[:, 0, 1] < v.keypoints[:, 1, 1]).all()  # nose above neck


@pytest.mark.parametrize("motion", CHARACTER_MOTIONS)
def test_every_motion_family_moves_the_silhouette(motion: str) -> None:
    seed = _seed_for_motion(motion, motion_name)
    v = render_demo_video(4, seed, num_frames=16)
    assert v.meta["motion"] == motion
    s = v.silhouette
    iou = (s[0] & s[1:]).sum(axis=(1, 2)) / (s[0] | s[1:]).sum(axis=(1, 2))
    assert iou.min() < 0.9, f"{motion}: silhouette barely changes (min IoU {iou.min():.2f})"


def test_walk_across_moves_in_the_facing_direction() -> None:
    v = render_demo_video(9, _seed_for_motion("walk_across", motion_name), num_frames=24)
    xs = np.nonzero(v.silhouette)[2]
    t = np.nonzero(v.silhouette)[0]
    centroid = np.array([xs[t == i].mean() for i in range(24)])
    facing = np.sign(v.meta["motion_params"]["yaw0_deg"])
    assert facing * (centroid[-1] - centroid[0]) > 4


def test_characters_are_large_inside_the_frame_and_varied() -> None:
    fractions, patterns, motions, backgrounds = [], set(), set(), set()
    for seed in range(24):
        v = render_demo_video(100 + seed, 200 + seed, num_frames=12, size=64)
        s = v.silhouette
        assert not (s[:, 0].any() or s[:, -1].any() or s[:, :, 0].any() or s[:, :, -1].any()), (
            "touches the border"
        )
        rows = s.any(axis=2)
        heights = [np.ptp(np.nonzero(r)[0]) + 1 for r in rows]
        fractions.append(max(heights) / 64)
        patterns |= {v.meta["appearance"]["shirt"]["pattern"], v.meta["appearance"]["bottom"]["pattern"]}
        motions.add(v.meta["motion"])
        backgrounds.add(v.meta["background"]["kind"])
    fractions = np.array(fractions)
    assert fractions.min() >= 0.55 and fractions.max() <= 0.87, fractions
    assert len(patterns) >= 4 and len(motions) >= 6 and len(backgrounds) >= 3


def test_render_time_is_small() -> None:
    import time

    render_demo_video(0, 0, num_frames=24)
    start = time.perf_counter()
    for seed in range(5):
        render_demo_video(seed, seed, num_frames=24)
    assert (time.perf_counter() - start) / 5 < 0.25  # ~0.04 s on one idle core; generous for busy CI


# ----------------------------------------------------------------------------------------------------------
# scene clips


def _centroids(masks: np.ndarray) -> np.ndarray:
    t, y, x = np.nonzero(masks)
    return np.array([[x[t == i].mean(), y[t == i].mean()] for i in range(masks.shape[0])])


def test_scene_clip_is_deterministic_and_captioned() -> None:
    a = render_scene_clip(5, 6, 40, 56)
    b = render_scene_clip(5, 6, 40, 56)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.frames.shape == (6, 40, 56, 3) and a.frames.dtype == np.uint8
    assert a.masks is not None and a.masks.shape == (6, 40, 56)
    assert a.caption == b.caption and json.dumps(a.meta) == json.dumps(b.meta)
    assert a.motion_caption in a.caption or a.motion_caption.replace("camera", "the camera") in a.caption
    assert a.scene_caption.split(" over ")[0] in a.caption
    assert not np.array_equal(a.frames, render_scene_clip(6, 6, 40, 56).frames)


@pytest.mark.parametrize("motion", ["moves left", "moves right", "moves up", "moves down"])
def test_scene_translation_matches_caption(motion: str) -> None:
    clip = render_scene_clip(_seed_for_motion(motion, clip_motion), 12, 64, 80)
    assert motion in clip.caption
    c = _centroids(clip.masks)
    dx, dy = c[-1] - c[0]
    expected = {"moves left": (-1, 0), "moves right": (1, 0), "moves up": (0, -1), "moves down": (0, 1)}[
        motion
    ]
    moved = dx * expected[0] + dy * expected[1]
    assert moved > 8 and moved > 3 * abs(dx * expected[1] + dy * expected[0])
    # the pixels the object reaches at the end show it there, not the scene seen in the first frame
    arrived = clip.masks[-1] & ~clip.masks[0]
    assert (
        np.abs(clip.frames[-1].astype(int) - clip.frames[0].astype(int)).sum(-1)[arrived] > 30
    ).mean() > 0.8


@pytest.mark.parametrize("motion", ["grows", "shrinks"])
def test_scene_size_change_matches_caption(motion: str) -> None:
    clip = render_scene_clip(_seed_for_motion(motion, clip_motion), 8, 64, 64)
    area = clip.masks.sum(axis=(1, 2))
    assert (area[-1] > 1.5 * area[0]) if motion == "grows" else (area[0] > 1.5 * area[-1])


def _tip_profile(mask: np.ndarray) -> np.ndarray:
    """Farthest object pixel from the centroid per 2-degree direction (angles counterclockwise on screen)."""
    y, x = np.nonzero(mask)
    angle = np.degrees(np.arctan2(-(y - y.mean()), x - x.mean())) % 360
    radius = np.hypot(y - y.mean(), x - x.mean())
    prof = np.zeros(180)
    np.maximum.at(prof, (angle // 2).astype(int), radius)
    return prof


@pytest.mark.parametrize("motion", ["rotates clockwise", "rotates counterclockwise"])
def test_scene_rotation_direction_matches_caption(motion: str) -> None:
    clip = render_scene_clip(_seed_for_motion(motion, clip_motion), 16, 128, 128)
    total = 0
    for t in range(15):  # per-frame rotation is small, so the best circular shift is unambiguous
        a, b = _tip_profile(clip.masks[t]), _tip_profile(clip.masks[t + 1])
        shifts = np.arange(-8, 9)
        errors = [np.abs(np.roll(a, k) - b).sum() for k in shifts]
        total += shifts[int(np.argmin(errors))]
    assert (total < -3) if motion == "rotates clockwise" else (total > 3)
    c = _centroids(clip.masks)
    assert np.abs(c - c[0]).max() < 3  # rotation in place


def test_scene_bounce_goes_down_and_up() -> None:
    clip = render_scene_clip(_seed_for_motion("bounces", clip_motion), 16, 64, 64)
    y = _centroids(clip.masks)[:, 1]
    assert np.diff(y).max() > 0.5 and np.diff(y).min() < -0.5


@pytest.mark.parametrize("motion", ["camera pans left", "camera pans right"])
def test_scene_camera_pan_shifts_the_whole_view(motion: str) -> None:
    clip = render_scene_clip(_seed_for_motion(motion, clip_motion), 8, 64, 96)
    a, b = clip.frames[0].astype(float), clip.frames[4].astype(float)
    shifts = np.arange(-20, 21)
    errors = [np.abs(a[:, 25:-25] - np.roll(b, -k, axis=1)[:, 25:-25]).mean() for k in shifts]
    content_shift = shifts[int(np.argmin(errors))]  # where frame-0 content sits in frame 4
    assert (content_shift > 0) if motion == "camera pans left" else (content_shift < 0)
    dx = _centroids(clip.masks)[4, 0] - _centroids(clip.masks)[0, 0]
    assert abs(dx - content_shift) <= 1.5  # the object is fixed in the world and moves with the view


def test_scene_motions_all_reachable() -> None:
    assert {clip_motion(s) for s in range(300)} == set(SCENE_MOTIONS)


@pytest.mark.parametrize("height,width", [(32, 48), (48, 24)])
def test_scene_object_stays_inside_the_frame(height: int, width: int) -> None:
    for seed in range(20):
        masks = render_scene_clip(seed, 6, height, width).masks
        assert masks.any(axis=(1, 2)).all(), "object missing from a frame"
        border = masks[:, 0].any() or masks[:, -1].any() or masks[:, :, 0].any() or masks[:, :, -1].any()
        assert not border, f"seed {seed}: object touches the frame border"


def test_plain_backgrounds_are_near_uniform_and_kinds_are_validated():
    from src.data.demo_characters import render_demo_video

    for seed in range(6):
        video = render_demo_video(seed, seed, num_frames=2, size=64, backgrounds=("plain",))
        assert video.meta["background"]["kind"] == "plain"
        assert video.background.reshape(-1, 3).astype(float).std(axis=0).max() < 4.0
    with pytest.raises(ValueError, match="backgrounds"):
        render_demo_video(0, 0, num_frames=2, backgrounds=("marble",))


def test_demo_clis_generate_once_and_describe_the_set(tmp_path, capsys) -> None:
    from src.data import caption_demo, demo_dataset

    assert demo_dataset.main(["--root", str(tmp_path), "--num-train-videos", "2", "--num-heldout-videos", "1",
                              "--num-frames", "4", "--size", "32"]) == 0
    printed = capsys.readouterr().out
    assert "demo dataset: " in printed and "train: 2 videos in 1 shards" in printed
    assert "heldout: 1 videos in 1 shards" in printed and ".tar" in printed  # the pose demo lists its shards
    assert caption_demo.main(["--root", str(tmp_path / "captions"), "--num-train-videos", "2",
                              "--num-heldout-videos", "1", "--num-frames", "4"]) == 0
    printed = capsys.readouterr().out
    assert "caption demo dataset: " in printed and "train: 2 videos in 1 shards" in printed
