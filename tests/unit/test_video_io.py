"""PyAV mp4 round trips: values close to the input, exact frame counts, subset decode, clear errors."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from src.data.video_io import VideoDecodeError, decode_mp4, encode_mp4, probe_mp4, write_mp4


def smooth_video(num_frames: int = 24, height: int = 32, width: int = 32) -> np.ndarray:
    """A moving gradient: easy for H.264, so round-trip error must be small."""
    t, y, x = np.meshgrid(np.arange(num_frames), np.arange(height), np.arange(width), indexing="ij")
    video = np.stack([(x * 6 + t * 3) % 256, (y * 6) % 256, np.full_like(x, 128) + t], axis=-1)
    return video.astype(np.uint8)


def test_round_trip_is_close_and_frame_count_exact() -> None:
    video = smooth_video()
    data = encode_mp4(video, fps=8)
    info = probe_mp4(data)
    assert (info.num_frames, info.height, info.width) == (24, 32, 32)
    assert info.fps == pytest.approx(8.0)
    decoded = decode_mp4(data)
    assert decoded.shape == video.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - video).mean() < 3.0


def test_subset_decode_equals_same_frames_of_full_decode() -> None:
    video = smooth_video()
    data = encode_mp4(video, fps=8, gop=4)
    full = decode_mp4(data)
    indices = [17, 3, 3, 0, 23]
    subset = decode_mp4(data, indices)
    np.testing.assert_array_equal(subset, full[indices])
    # frames are distinguishable, so the order really is the requested one
    assert not np.array_equal(subset[0], subset[1])


def test_yuv444_keeps_pure_skeleton_colours() -> None:
    frames = np.zeros((6, 33, 31, 3), np.uint8)  # odd sizes are fine in yuv444p
    palette = np.array([[255, 0, 0], [0, 255, 85], [85, 0, 255], [255, 255, 0]], np.uint8)
    for i, colour in enumerate(palette):
        frames[:, 4 + 6 * i : 8 + 6 * i, 5:25] = colour
    decoded = decode_mp4(encode_mp4(frames, fps=8, pix_fmt="yuv444p", crf=4))
    assert decoded.shape == frames.shape
    for i, colour in enumerate(palette):
        block = decoded[:, 5 + 6 * i : 7 + 6 * i, 7:23].reshape(-1, 3).astype(int)
        assert np.abs(block - colour).max() <= 6


def test_yuv420_rejects_odd_sizes_with_a_hint() -> None:
    with pytest.raises(ValueError, match="yuv444p"):
        encode_mp4(np.zeros((2, 33, 32, 3), np.uint8), fps=8)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        encode_mp4(np.zeros((2, 32, 32), np.uint8), fps=8)


@pytest.mark.parametrize("mangle", [lambda b: b"", lambda b: b"not a video" * 40, lambda b: b[: len(b) // 2]])
def test_corrupt_data_raises_video_decode_error(mangle) -> None:
    data = mangle(encode_mp4(smooth_video(8), fps=8))
    with pytest.raises(VideoDecodeError):
        probe_mp4(data)
    with pytest.raises(VideoDecodeError):
        decode_mp4(data)


def test_index_past_the_end_raises_index_error() -> None:
    data = encode_mp4(smooth_video(8), fps=8)
    with pytest.raises(IndexError, match="out of range"):
        decode_mp4(data, [2, 8])


def test_probe_counts_frames_when_container_has_no_count() -> None:
    """Matroska stores no frame count; probe must count packets and still be exact."""
    video = smooth_video(13)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    data = buffer.getvalue()
    assert probe_mp4(data).num_frames == 13
    assert len(decode_mp4(data)) == 13


def test_write_mp4_and_fractional_fps(tmp_path) -> None:
    path = write_mp4(tmp_path / "sub" / "clip.mp4", smooth_video(5), fps=30000 / 1001)
    info = probe_mp4(path.read_bytes())
    assert info.num_frames == 5
    assert info.fps == pytest.approx(29.97, abs=0.01)


def noisy_video(num_frames: int, seed: int = 0) -> np.ndarray:
    """Random content so every frame differs and B-frames are used (libx264 medium)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (1, 32, 32, 3))
    drift = rng.integers(-20, 21, (num_frames, 1, 1, 3)).cumsum(axis=0)
    return np.clip(base + drift + rng.integers(-8, 9, (num_frames, 32, 32, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("fps", [8, 29.97])
def test_seeking_decode_equals_the_decode_from_frame_0_and_decodes_only_from_the_keyframe(monkeypatch, fps) -> None:
    import src.data.video_io as video_io

    data = encode_mp4(noisy_video(64), fps=fps, gop=8)
    full = decode_mp4(data, seek=False)
    counted = []
    original = video_io._decode_all

    def counting(container, stream):
        for frame in original(container, stream):
            counted.append(frame.pts)
            yield frame

    def no_fallback(*_):
        raise AssertionError("the seeking decode fell back to decoding from frame 0")

    monkeypatch.setattr(video_io, "_decode_all", counting)
    monkeypatch.setattr(video_io, "_decode_from_start", no_fallback)
    rng = np.random.default_rng(1)
    cases = [[60], [5, 50], [50, 5, 50], list(range(40, 64, 1)), list(range(0, 48, 2)), [63, 0]]
    cases += [sorted(rng.choice(64, size=2, replace=False).tolist()) for _ in range(6)]
    for indices in cases:
        counted.clear()
        np.testing.assert_array_equal(decode_mp4(data, indices), full[indices], err_msg=str(indices))
        if indices == [60]:  # from keyframe 56: 5 frames, not 61
            assert len(counted) == 5, counted
        if indices == [5, 50]:  # 0..5, then a seek to keyframe 48: 48..50
            assert len(counted) == 9, counted
    with pytest.raises(IndexError, match="out of range"):
        decode_mp4(data, [3, 64])


def test_the_same_frames_always_encode_to_the_same_bytes() -> None:
    """x264's macroblock tree made the bytes (and decoded pixels) of sparse skeleton clips vary from run to run, so
    regenerated demo data differed and so did every model trained on it. With it on, this clip gave 5 different
    files in 150 encodes; the default encode must give one."""
    from src.data.demo_dataset import DEMO_CRF, render_demo_video

    pose = render_demo_video(3, 1_000_000_003, 24, size=64, fps=8).pose
    encodes = {encode_mp4(pose, 8, pix_fmt="yuv444p", crf=DEMO_CRF) for _ in range(60)}
    assert len(encodes) == 1
