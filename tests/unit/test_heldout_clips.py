"""Fixed held-out clips: which frames are scored, and a clear error when a video is too short."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.data.heldout_clips import HeldoutClips


def _video(num_frames: int = 12, size: int = 8) -> dict:
    """Frame i is filled with grey level 10 * i, so a scored frame's index can be read back from its pixels."""
    frames = np.stack([np.full((size, size, 3), 10 * i, np.uint8) for i in range(num_frames)])
    return {
        "key": "clip",
        "frames": frames,
        "pose": frames.copy(),
        "silhouette": np.zeros((num_frames, size, size), bool),
        "background": np.zeros((size, size, 3), np.uint8),
    }


def _indices(video: torch.Tensor) -> list[int]:
    """`c t h w` in [-1, 1] -> the source frame index of each clip frame."""
    return [round(((float(frame.mean()) + 1) / 2 * 255) / 10) for frame in video.unbind(1)]


def test_clip_frames_start_at_start_frame_and_the_reference_stays_put():
    clips = HeldoutClips([_video()], num_frames=4, stride=2, size=(8, 8), reference_index=0, start_frame=2)
    item = clips[0]
    assert _indices(item["frames"]) == clips.frame_indices == [2, 4, 6, 8]
    assert _indices(item["reference"][:, None]) == [0]
    assert item["silhouette"].shape == (4, 8, 8) and item["background"].shape == (3, 8, 8)


def test_default_protocol_scores_from_frame_zero():
    item = HeldoutClips([_video()], num_frames=3, stride=3, size=(8, 8))[0]
    assert _indices(item["frames"]) == [0, 3, 6]


def test_too_short_for_the_start_frame_is_a_clear_error():
    with pytest.raises(ValueError, match="from frame 4 .* needs 11.*start_frame"):
        HeldoutClips([_video(10)], num_frames=4, stride=2, size=(8, 8), start_frame=4)


def test_loading_decodes_only_the_used_frames_and_gives_the_same_clips(tmp_path, monkeypatch):
    """load_heldout_clips decodes the reference and the scored frames only (seeking), resized on load, and its
    clips equal those cut from fully decoded videos, so held-out scores are unchanged."""
    from src.data import pose_video_dataset
    from src.data.heldout_clips import load_heldout_clips
    from src.data.pose_video_dataset import load_heldout_videos
    from src.data.shards import ShardSetWriter, encode_npz
    from src.data.video_io import encode_mp4

    rng = np.random.default_rng(0)
    with ShardSetWriter(tmp_path) as writer:
        for i in range(2):
            frames = (rng.random((40, 24, 32, 3)) * 255).astype(np.uint8)
            masks = encode_npz(silhouette=rng.random((40, 24, 32)) > 0.5, background=frames[0])
            # keyframe every 8 frames, so seeking skips the GOPs before the wanted frames
            mp4 = encode_mp4(frames, 8, pix_fmt="yuv444p", crf=10, gop=8)
            writer.write({"__key__": f"v{i}", "mp4": mp4, "pose.mp4": mp4, "mask.npz": masks, "json": {}})
    protocol = dict(num_frames=4, stride=3, size=(16, 16), reference_index=0, start_frame=25)
    decoded = []
    real_decode = pose_video_dataset.decode_mp4

    def counting_decode(data, indices=None, **kwargs):
        frames = real_decode(data, indices, **kwargs)
        decoded.append(len(frames))
        return frames

    monkeypatch.setattr(pose_video_dataset, "decode_mp4", counting_decode)
    clips = load_heldout_clips(str(tmp_path), None, **protocol)
    assert decoded == [5, 5, 5, 5]  # reference 0 and frames 25, 28, 31, 34 of video and pose, per video
    decoded.clear()
    whole = HeldoutClips(load_heldout_videos(str(tmp_path)), **protocol)
    assert decoded == [40, 40, 40, 40]
    assert len(clips) == len(whole) == 2
    for new, old in zip(clips, whole):
        assert new.keys() == old.keys() and new["key"] == old["key"]
        for name in ("reference", "pose", "frames", "silhouette", "background"):
            assert torch.equal(new[name], old[name]), name
    with pytest.raises(ValueError, match="has 40 frames.*needs 48"):
        load_heldout_clips(str(tmp_path), 1, 4, 4, (16, 16), 0, start_frame=35)
