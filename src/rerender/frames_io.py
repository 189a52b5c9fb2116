"""Reading the input video (an mp4, decoded by the project's PyAV reader, or a folder of PNG/JPG frames
ordered by the number in their names), the user's key frames, and writing frames as lossless PNGs named by
their 0-based index. Frames `t h w 3` uint8 RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from src.data.video_io import decode_mp4, probe_mp4
from src.rerender.keyframes import indexed_images

__all__ = ["read_keyframes", "read_video", "write_frames"]


def _read_image(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def read_video(path: str | Path, what: str = "sample.video") -> tuple[np.ndarray, float | None]:
    """(frames, fps) of an mp4 file, or of a folder of frames (fps None: unknown)."""
    if path is None:
        raise ValueError(f"{what} is not set: give an mp4 file or a folder of frames (0000.png, 0001.png, ...)")
    path = Path(path)
    if path.is_dir():
        images = [_read_image(p) for p in indexed_images(path, what).values()]
        sizes = {im.shape for im in images}
        if len(sizes) > 1:
            raise ValueError(f"{what}={path}: frames differ in size {sorted(sizes)}; resize them to one size")
        return np.stack(images), None
    if not path.is_file():
        raise FileNotFoundError(f"{what}={path}: no such file or folder (an mp4 or a folder of frames)")
    data = path.read_bytes()
    return decode_mp4(data), probe_mp4(data).fps


def read_keyframes(folder: str | Path, num_frames: int, size: tuple[int, int], what: str = "sample.keyframes") -> dict[int, np.ndarray]:
    """{0-based frame index: frame} of the user's key frames, checked against the video's length and size."""
    keys = {}
    for index, path in indexed_images(folder, what).items():
        if index >= num_frames:
            raise ValueError(
                f"{what}: '{path.name}' names frame {index} but the video has {num_frames} frames (0..{num_frames - 1}); "
                "key frame names are 0-based frame indices"
            )
        image = _read_image(path)
        if image.shape[:2] != tuple(size):
            raise ValueError(
                f"{what}: '{path.name}' is {image.shape[0]}x{image.shape[1]} but the video frames are "
                f"{size[0]}x{size[1]}; resize the key frames to the video's size"
            )
        keys[index] = image
    return keys


def write_frames(folder: str | Path, frames: np.ndarray, indices: list[int] | None = None) -> Path:
    """Write `frames` as `<index:04d>.png` (indices default to 0..t-1)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in zip(indices if indices is not None else range(len(frames)), frames):
        Image.fromarray(frame).save(folder / f"{i:04d}.png")
    return folder
