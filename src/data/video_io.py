"""MP4 encode / decode / probe with PyAV (libx264), from and to in-memory bytes.

Layout: videos are `t h w c` uint8 RGB numpy arrays here (the on-disk layout). PyAV is the
one decoder the environment is guaranteed to have (torchvision >= 0.26 has no video IO and
torchcodec needs system FFmpeg), so shards are read with it.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from src import atomic_io

__all__ = [
    "VideoDecodeError",
    "VideoInfo",
    "decode_mp4",
    "encode_mp4",
    "encode_mp4_chunks",
    "iter_mp4_frames",
    "probe_mp4",
    "write_mp4",
]


class VideoDecodeError(ValueError):
    """The bytes are not a decodable video (corrupt, truncated, empty or without a video stream).

    `reason` ("undecodable" or "empty") is the category a skipped sample is counted under."""

    def __init__(self, message: str, reason: str = "undecodable") -> None:
        super().__init__(message)
        self.reason = reason


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
    deterministic: bool = True,
) -> bytes:
    """Encode (T, H, W, 3) uint8 RGB frames to H.264 mp4 bytes.

    A short GOP (default 16) makes random clip access cheap (research/data.md section 2).
    yuv420p needs even height and width; use pix_fmt="yuv444p" for odd sizes or thin colour lines.
    `deterministic` (default) turns off x264's macroblock tree (`mbtree=0`), so the same frames give the same bytes.
    With it on, x264's output varied from run to run even on one thread: 5 different files in 150 encodes of one
    64x64 demo pose clip, pixels up to 8 levels apart. Regenerated demo data, and every model trained on it,
    differed. With it off, 150 encodes of each clip tried gave one file, at the same speed. A 512x512 noise video
    came out 11% larger.
    """
    return encode_mp4_chunks(
        [frames], fps, crf=crf, pix_fmt=pix_fmt, gop=gop, preset=preset, deterministic=deterministic
    )


def encode_mp4_chunks(
    chunks: Iterable[np.ndarray],
    fps: float,
    *,
    crf: int = 18,
    pix_fmt: str = "yuv420p",
    gop: int = 16,
    preset: str = "medium",
    deterministic: bool = True,
) -> bytes:
    """`encode_mp4` of the chunks' frames in order, each chunk (t, H, W, 3) uint8 RGB, drawn lazily: a long video
    is encoded with only one chunk of raw frames in memory."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    rate = Fraction(fps).limit_denominator(1001)
    buffer = io.BytesIO()
    stream = None
    with av.open(buffer, mode="w", format="mp4") as container:
        for chunk in chunks:
            frames = _check_frames(chunk)
            _, height, width, _ = frames.shape
            if stream is None:
                if pix_fmt == "yuv420p" and (height % 2 or width % 2):
                    raise ValueError(
                        f"yuv420p needs even height and width, got {height}x{width}; crop or pad the frames to "
                        f"even sizes, or encode with pix_fmt='yuv444p'"
                    )
                stream = container.add_stream("libx264", rate=rate)
                stream.width = width
                stream.height = height
                stream.pix_fmt = pix_fmt
                stream.options = {
                    "crf": str(crf), "g": str(gop), "keyint_min": str(min(gop, 25)), "preset": preset,
                    **({"x264-params": "mbtree=0"} if deterministic else {}),
                }  # fmt: skip
            elif (height, width) != (stream.height, stream.width):
                raise ValueError(
                    f"chunk of {height}x{width} frames in a {stream.height}x{stream.width} video"
                )
            for frame in frames:
                video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                for packet in stream.encode(video_frame):
                    container.mux(packet)
        if stream is None:
            raise ValueError("cannot encode a video with 0 frames; pass at least one frame")
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
        raise VideoDecodeError("video bytes are empty", reason="empty")
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


def decode_mp4(
    data: bytes, indices: Sequence[int] | None = None, *, threads: int = 1, seek: bool = True
) -> np.ndarray:
    """Decode frames to (N, H, W, 3) uint8 RGB, in the order of `indices` (all frames if None).

    With `seek` (default) only the frames from the keyframe before each wanted run to its last wanted frame are
    decoded: the container's packet table (demuxed, not decoded) maps frame indices to timestamps and keyframes,
    so a clip deep in a video or a stage-1 pair (reference + target) costs a GOP or two, not a decode from frame 0.
    `seek=False` decodes from frame 0 to the largest wanted index (the result is identical; tests compare them).
    `threads`: FFmpeg decode threads; 1 (default) suits loader workers (8 workers x N threads would oversubscribe
    the cores), 0 lets FFmpeg use every core (one process decoding alone).
    Raises VideoDecodeError for corrupt data and IndexError for indices past the end of the video.
    """
    wanted: list[int] | None = None if indices is None else [int(i) for i in indices]
    if wanted is not None:
        if not wanted:
            raise ValueError("indices is empty; pass None to decode every frame")
        if min(wanted) < 0:
            raise IndexError(f"negative frame index in {wanted}; indices count from 0")
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = FFmpeg's choice), got {threads}")
    container = _open(data)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO" if threads != 1 else "NONE"
        stream.codec_context.thread_count = threads
        if wanted is None:
            frames = [frame.to_ndarray(format="rgb24") for frame in _decode_all(container, stream)]
            if not frames:
                raise VideoDecodeError("the video stream decoded to 0 frames")
            return np.stack(frames)
        decoded = _decode_seeking(container, stream, sorted(set(wanted))) if seek else None
        if decoded is None:  # no usable packet table, or a seek that did not land where the table said
            container.close()
            container = _open(data)
            stream = container.streams.video[0]
            stream.thread_type = "AUTO" if threads != 1 else "NONE"
            stream.codec_context.thread_count = threads
            decoded = _decode_from_start(container, stream, set(wanted))
    finally:
        container.close()
    return np.stack([decoded[i] for i in wanted])


def iter_mp4_frames(data: bytes, *, threads: int = 1) -> Iterator[np.ndarray]:
    """Every frame as (H, W, 3) uint8 RGB, in order, decoded one at a time: a long video never sits whole in
    memory (pose extraction of 1000-frame dance videos). Raises VideoDecodeError as `decode_mp4` does."""
    container = _open(data)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO" if threads != 1 else "NONE"
        stream.codec_context.thread_count = threads
        count = 0
        for frame in _decode_all(container, stream):
            count += 1
            yield frame.to_ndarray(format="rgb24")
        if count == 0:
            raise VideoDecodeError("the video stream decoded to 0 frames")
    finally:
        container.close()


def _decode_all(container: av.container.InputContainer, stream: av.VideoStream):
    count = 0
    try:
        for count, frame in enumerate(container.decode(stream), start=1):  # noqa: B007 (count read in except)
            yield frame
    except av.FFmpegError as exc:
        raise VideoDecodeError(f"decoding failed after {count} frames: {exc}") from exc


def _decode_from_start(container, stream, needed: set[int]) -> dict[int, np.ndarray]:
    """Frames `needed`, decoding from frame 0 up to the largest one."""
    last = max(needed)
    decoded: dict[int, np.ndarray] = {}
    index = -1
    for index, frame in enumerate(_decode_all(container, stream)):
        if index in needed:
            decoded[index] = frame.to_ndarray(format="rgb24")
        if index >= last:
            break
    if last not in decoded:
        raise IndexError(f"frame index {last} is out of range for a video with {index + 1} decoded frames")
    return decoded


def _packet_table(container, stream) -> tuple[list[int], list[int]] | None:
    """(pts of every frame in presentation order, indices of keyframes), by demuxing only; None if unusable."""
    pts, key_pts = [], []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.pts is None:
                return None
            pts.append(int(packet.pts))
            if packet.is_keyframe:
                key_pts.append(int(packet.pts))
    except av.FFmpegError as exc:
        raise VideoDecodeError(f"cannot read the video packets: {exc}") from exc
    pts.sort()
    if not pts or len(set(pts)) != len(pts) or not key_pts:
        return None
    position = {p: i for i, p in enumerate(pts)}
    return pts, sorted(position[p] for p in key_pts)


def _decode_seeking(container, stream, wanted: list[int]) -> dict[int, np.ndarray] | None:
    """Frames `wanted` (sorted, unique): seek to the keyframe before each run of wanted frames and decode forward.

    Returns None when the packet table is unusable or a seek lands after the frame it was meant for (the caller
    then decodes from frame 0)."""
    table = _packet_table(container, stream)
    if table is None:
        return None
    pts, keyframes = table
    if wanted[-1] >= len(pts):
        raise IndexError(f"frame index {wanted[-1]} is out of range for a video with {len(pts)} frames")
    index_of = {p: i for i, p in enumerate(pts)}
    decoded: dict[int, np.ndarray] = {}
    todo = list(wanted)
    while todo:
        start = keyframes[bisect.bisect_right(keyframes, todo[0]) - 1] if keyframes[0] <= todo[0] else None
        if start is None:
            return None
        container.seek(pts[start], stream=stream, backward=True, any_frame=False)
        first = True
        for frame in _decode_all(container, stream):
            index = index_of.get(frame.pts)
            if index is None or (first and index > todo[0]):
                return None
            first = False
            if index > todo[0]:  # the decoder skipped a wanted frame
                return None
            if index == todo[0]:
                decoded[todo.pop(0)] = frame.to_ndarray(format="rgb24")
                if not todo:
                    break
                next_key = keyframes[bisect.bisect_right(keyframes, todo[0]) - 1]
                if next_key > index + 1:  # a later keyframe is closer to the next wanted frame: seek again
                    break
        else:
            return None  # ran off the end without the wanted frames
    return decoded
