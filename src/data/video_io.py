"""MP4 encode / decode / probe with PyAV (libx264), from and to in-memory bytes.

Layout: videos are `t h w c` uint8 RGB numpy arrays here (the on-disk layout). PyAV is the
one decoder the environment is guaranteed to have (torchvision >= 0.26 has no video IO and
torchcodec needs system FFmpeg), so shards are read with it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from src import atomic_io

__all__ = ["VideoDecodeError", "VideoInfo", "decode_mp4", "encode_mp4", "probe_mp4", "write_mp4"]


class VideoDecodeError(ValueError):
    """The bytes are not a decodable video (corrupt, truncated, empty or without a video stream)."""


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_mp4` reads without decoding pixels; `num_frames` is exact."""

    num_frames: int
    fps: float
    height: int
    width: int


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"expected frames of shape (T, H, W, 3) and dtype uint8, got shape {frames.shape} and dtype "
            f"{frames.dtype}; convert with np.asarray(x, dtype=np.uint8) and put channels last"
        )
    if frames.shape[0] == 0:
        raise ValueError("cannot encode a video with 0 frames; pass at least one frame")
    return np.ascontiguousarray(frames)


def encode_mp4(
    frames: np.ndarray,
    fps: float,
    *,
    crf: int = 18,
    pix_fmt: str = "yuv420p",
    gop: int = 16,
    preset: str = "medium",
) -> bytes:
    """Encode (T, H, W, 3) uint8 RGB frames to H.264 mp4 bytes.

    A short GOP (default 16) makes random clip access cheap (research/data.md section 2).
    yuv420p needs even height and width; use pix_fmt="yuv444p" for odd sizes or thin colour lines.
    """
    frames = _check_frames(frames)
    _, height, width, _ = frames.shape
    if pix_fmt == "yuv420p" and (height % 2 or width % 2):
        raise ValueError(
            f"yuv420p needs even height and width, got {height}x{width}; crop or pad the frames to even "
            f"sizes, or encode with pix_fmt='yuv444p'"
        )
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    rate = Fraction(fps).limit_denominator(1001)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width = width
        stream.height = height
        stream.pix_fmt = pix_fmt
        stream.options = {"crf": str(crf), "g": str(gop), "keyint_min": str(min(gop, 25)), "preset": preset}
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, **encode_kwargs) -> Path:
    """Encode frames with `encode_mp4` and write them to `path` atomically (parent folders are created)."""
    return atomic_io.write_bytes(path, encode_mp4(frames, fps, **encode_kwargs))


def _open(data: bytes) -> av.container.InputContainer:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"expected the video as bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise VideoDecodeError("video bytes are empty")
    try:
        container = av.open(io.BytesIO(bytes(data)), mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoDecodeError(f"cannot open video container: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise VideoDecodeError("the container holds no video stream")
    return container


def probe_mp4(data: bytes) -> VideoInfo:
    """Read frame count, fps and size without decoding pixels.

    The count comes from the container's sample table when it has one, else from counting the
    video packets (demuxing only), so it is exact for constant-rate and variable-rate files.
    """
    container = _open(data)
    try:
        stream = container.streams.video[0]
        num_frames = int(stream.frames or 0)
        if num_frames <= 0:
            num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        height, width = stream.codec_context.height, stream.codec_context.width
    except av.FFmpegError as exc:
        raise VideoDecodeError(f"cannot read the video stream: {exc}") from exc
    finally:
        container.close()
    if num_frames <= 0 or height <= 0 or width <= 0:
        raise VideoDecodeError(f"video has no frames or no size (frames={num_frames}, size={height}x{width})")
    return VideoInfo(num_frames=num_frames, fps=fps, height=height, width=width)


def decode_mp4(data: bytes, indices: Sequence[int] | None = None) -> np.ndarray:
    """Decode frames to (N, H, W, 3) uint8 RGB, in the order of `indices` (all frames if None).

    Decoding stops at the largest requested index, so a clip at the start of a long video is cheap.
    Raises VideoDecodeError for corrupt data and IndexError for indices past the end of the video.
    """
    wanted: list[int] | None = None if indices is None else [int(i) for i in indices]
    if wanted is not None:
        if not wanted:
            raise ValueError("indices is empty; pass None to decode every frame")
        if min(wanted) < 0:
            raise IndexError(f"negative frame index in {wanted}; indices count from 0")
    last = None if wanted is None else max(wanted)
    needed = None if wanted is None else set(wanted)
    decoded: dict[int, np.ndarray] = {}
    ordered: list[np.ndarray] = []
    container = _open(data)
    count = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for count, frame in enumerate(container.decode(stream), start=1):
            index = count - 1
            if needed is None:
                ordered.append(frame.to_ndarray(format="rgb24"))
            elif index in needed:
                decoded[index] = frame.to_ndarray(format="rgb24")
            if last is not None and index >= last:
                break
    except av.FFmpegError as exc:
        raise VideoDecodeError(f"decoding failed after {count} frames: {exc}") from exc
    finally:
        container.close()
    if wanted is None:
        if not ordered:
            raise VideoDecodeError("the video stream decoded to 0 frames")
        return np.stack(ordered)
    if last not in decoded:
        raise IndexError(f"frame index {last} is out of range for a video with {count} decoded frames")
    return np.stack([decoded[i] for i in wanted])
