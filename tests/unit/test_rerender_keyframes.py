"""Key-frame choice and the user's key-frame folders."""

import numpy as np
import pytest
from PIL import Image

from src.rerender.frames_io import read_keyframes, read_video, write_frames
from src.rerender.keyframes import adaptive_keys, choose_keys, indexed_images, uniform_keys


def test_uniform_keys_every_k():
    assert uniform_keys(21, 10) == [0, 10, 20]
    assert uniform_keys(25, 10) == [0, 10, 20]
    with pytest.raises(ValueError, match="interval"):
        uniform_keys(10, 0)


def test_adaptive_keys_crowd_where_the_content_changes():
    frames = np.zeros((40, 4, 4, 3))
    for t in range(1, 40):  # still for 30 frames, then a burst of change
        frames[t] = frames[t - 1] + (10.0 if t >= 30 else 0.01)
    keys = adaptive_keys(frames, interval=10, min_interval=2, max_interval=20)
    assert keys[0] == 0 and len(keys) >= 3
    assert sum(k >= 30 for k in keys) >= 2  # the changing tail gets several keys
    assert max(np.diff(keys)) <= 20 and min(np.diff(keys)) >= 2
    assert choose_keys(frames, "uniform", 10) == [0, 10, 20, 30]
    with pytest.raises(ValueError, match="uniform' or 'adaptive"):
        choose_keys(frames, "random", 10)


def test_key_frame_folders_are_indexed_by_the_number_in_their_names(tmp_path):
    frame = np.full((6, 8, 3), 90, np.uint8)
    for name in ("0000.png", "key_0017.png", "0005.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x") if name.endswith(".txt") else Image.fromarray(frame).save(tmp_path / name)
    assert list(indexed_images(tmp_path, "sample.keyframes")) == [0, 5, 17]
    keys = read_keyframes(tmp_path, 20, (6, 8))
    assert sorted(keys) == [0, 5, 17] and keys[17].shape == (6, 8, 3)
    with pytest.raises(ValueError, match="0-based frame indices"):
        read_keyframes(tmp_path, 10, (6, 8))
    with pytest.raises(ValueError, match="resize the key frames"):
        read_keyframes(tmp_path, 20, (6, 9))
    Image.fromarray(frame).save(tmp_path / "17.png")
    with pytest.raises(ValueError, match="both claim frame 17"):
        indexed_images(tmp_path, "sample.keyframes")


def test_video_folders_read_in_number_order_and_write_back(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (3, 4, 6, 3), dtype=np.uint8)
    write_frames(tmp_path / "v", frames, [2, 10, 1])  # names 0002, 0010, 0001
    read, fps = read_video(tmp_path / "v")
    assert fps is None and np.array_equal(read, frames[[2, 0, 1]])  # 0001, 0002, 0010
    with pytest.raises(FileNotFoundError, match="sample.video"):
        read_video(tmp_path / "missing.mp4")
