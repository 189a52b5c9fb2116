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
