"""Where evaluation videos come from: a folder of `<name>.mp4` files or webdataset shards, read by name.

Layout: files hold `t h w c` uint8 RGB (the on-disk layout); `read_clip` returns `(T, C, H, W)` uint8
tensors, the layout the metrics' `update()` takes once a batch dim is added. A clip is `num_frames`
frames taken every `stride` frames from `start` (`num_frames=None`: every such frame to the end).
A file that cannot be decoded or is too short raises `BadVideoError`, which the runner counts and reports.
"""

from __future__ import annotations

import json
import logging
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from src.data.shards import list_shards
from src.data.video_io import VideoDecodeError, decode_mp4, probe_mp4

log = logging.getLogger(__name__)
ResizeMode = Literal["resize", "center_crop", "none"]
VIDEO_SUFFIXES = (".mp4",)


class BadVideoError(ValueError):
    """A video that cannot be used (unreadable, too short); counted in metrics.json, never silently dropped."""


def key_seed(base: int, key: str) -> int:
    """A per-video seed from the name, independent of batch position, shard and resume."""
    return (int(base) + zlib.crc32(key.encode())) % (2**31 - 1)


@dataclass(frozen=True)
class ClipSpec:
    """Which frames of a video form the evaluated clip: `start + i * stride` for i < num_frames. `start` may
    be "random": a start drawn per video from (`seed`, its name) among those where the clip fits, as
    DynamiCrafter's zero-shot protocol samples a 16-frame clip anywhere in each test video."""

    num_frames: int | None = 16
    stride: int = 1
    start: int | str = 0
    seed: int = 0

    def __post_init__(self) -> None:
        bad_start = self.start != "random" and not (isinstance(self.start, int) and self.start >= 0)
        if self.stride < 1 or bad_start or (self.num_frames is not None and self.num_frames < 1):
            raise ValueError(
                f"clip needs num_frames >= 1 (or null), stride >= 1 and start >= 0 or 'random', got {self}; fix eval.clip"
            )
        if self.start == "random" and self.num_frames is None:
            raise ValueError("eval.clip.start=random needs a clip length: set eval.clip.num_frames")

    def first_index(self, total: int, key: str = "") -> int:
        """The clip's first frame in a video of `total` frames (drawn from the seed and `key` when random)."""
        if self.start != "random":
            return int(self.start)
        span = (self.num_frames - 1) * self.stride + 1
        if total < span:
            raise BadVideoError(
                f"video has {total} frames; the clip ({self.num_frames} frames at stride {self.stride}) needs {span}"
            )
        return int(np.random.default_rng(key_seed(self.seed, key)).integers(0, total - span + 1))

    def indices(self, total: int, key: str = "") -> list[int]:
        """Frame indices for a video of `total` frames; BadVideoError when the video is too short."""
        start = self.first_index(total, key)
        if self.num_frames is None:
            idx = list(range(start, total, self.stride))
        else:
            idx = [start + i * self.stride for i in range(self.num_frames)]
        if not idx or idx[-1] >= total:
            need = (idx[-1] + 1) if idx else start + 1
            raise BadVideoError(
                f"video has {total} frames; the clip ({self.num_frames} frames at stride {self.stride} from "
                f"{start}) needs {need}"
            )
        return idx


class VideoSource(Protocol):
    """Named videos: `keys()` sorted, `read(key)` the mp4 bytes, `describe()` for metrics.json."""

    def keys(self) -> list[str]: ...

    def read(self, key: str) -> bytes: ...

    def describe(self) -> str: ...


class FolderSource:
    """A folder of `<name>.mp4` files (not recursive); the key is the file stem."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"video folder {self.folder} does not exist; set eval.generated_dir / eval.real_dir to a folder "
                f"of <name>.mp4 files"
            )
        self._files = {p.stem: p for p in self.folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES}

    def keys(self) -> list[str]:
        return sorted(self._files)

    def read(self, key: str) -> bytes:
        try:
            return self._files[key].read_bytes()
        except OSError as error:
            raise BadVideoError(f"cannot read {self._files[key]}: {error}") from error

    def describe(self) -> str:
        return str(self.folder)


class ShardSource:
    """The entries of webdataset shards, read by sample key: tar headers are indexed once and the data of
    one sample is read on demand, so a job holds no video it does not score. `read(key)` is the `entry`
    (mp4) of a sample; `sample(key)` all its entries, as webdataset names them ("mp4", "pose.mp4", "json")."""

    def __init__(self, spec: str | Sequence[str], entry: str = "mp4") -> None:
        self.spec, self.entry = spec, entry
        self._index: dict[str, dict[str, tuple[str, int, int]]] = {}
        for shard in list_shards(spec):
            with tarfile.open(shard) as archive:
                for member in archive:
                    name = member.name.rsplit("/", 1)[-1]
                    key, _, ext = name.partition(".")
                    if member.isfile() and ext:
                        self._index.setdefault(key, {})[ext] = (shard, member.offset_data, member.size)
        self._index = {k: v for k, v in self._index.items() if entry in v}
        if not self._index:
            raise FileNotFoundError(f"shards {spec!r} hold no '.{entry}' entries; set eval.real_shards correctly")

    def keys(self) -> list[str]:
        return sorted(self._index)

    def _read(self, where: tuple[str, int, int]) -> bytes:
        shard, offset, size = where
        with open(shard, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)

    def read(self, key: str) -> bytes:
        return self._read(self._index[key][self.entry])

    def sample(self, key: str) -> dict[str, Any]:
        """Every entry of sample `key` as bytes, plus "__key__" and "__url__" (its shard), as webdataset gives it."""
        entries = self._index[key]
        out: dict[str, Any] = {ext: self._read(where) for ext, where in entries.items()}
        out["__key__"], out["__url__"] = key, entries[self.entry][0]
        return out

    def describe(self) -> str:
        return f"shards {self.spec}"


def build_source(folder: str | None, shards: str | Sequence[str] | None, what: str) -> VideoSource | None:
    """A FolderSource or ShardSource from the config pair (`<what>_dir`, `<what>_shards`); None if neither."""
    if folder and shards:
        raise ValueError(f"set only one of eval.{what}_dir and eval.{what}_shards, not both")
    if folder:
        return FolderSource(folder)
    if shards:
        return ShardSource(shards if isinstance(shards, str) else list(shards))
    return None


def read_clip(data: bytes, clip: ClipSpec, key: str = "") -> Tensor:
    """mp4 bytes of video `key` -> `(T, 3, H, W)` uint8 clip; BadVideoError for unreadable or too-short videos."""
    try:
        total = probe_mp4(data).num_frames
        frames = decode_mp4(data, clip.indices(total, key))
    except (VideoDecodeError, IndexError, OSError) as error:
        raise BadVideoError(str(error)) from error
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()


def resize_clip(frames: Tensor, size: Sequence[int] | None, mode: ResizeMode) -> Tensor:
    """`(T, 3, H, W)` uint8 -> uint8 at `size` (h, w): "resize" stretches, "center_crop" scales the shorter
    side to cover then crops the centre, "none" (or size None) keeps it. Antialiased bilinear, rounded."""
    if size is None or mode == "none":
        return frames
    if mode not in ("resize", "center_crop"):
        raise ValueError(f"eval.resize must be 'resize', 'center_crop' or 'none', got {mode!r}")
    out_h, out_w = int(size[0]), int(size[1])
    h, w = frames.shape[-2:]
    if (h, w) == (out_h, out_w):
        return frames
    x = frames.float()
    if mode == "resize":
        x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
    else:
        scale = max(out_h / h, out_w / w)
        new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
        x = x[..., top : top + out_h, left : left + out_w]
    return x.round().clamp(0, 255).to(torch.uint8)


def encode_frames_for_storage(frames: Tensor) -> np.ndarray:
    """`(T, 3, H, W)` uint8 -> `t h w c` uint8 numpy (the on-disk layout) for write_mp4."""
    return frames.permute(0, 2, 3, 1).contiguous().numpy()


def read_prompts(path: str | Path | None) -> dict[str, dict[str, str]]:
    """`{name: {"source_prompt": ..., "target_prompt": ...}}` from a JSON file (Fram-Acc needs both)."""
    if not path:
        return {}
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"eval.prompts_file {file} does not exist; it maps video names to prompts")
    data = json.loads(file.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{file} must hold a JSON object {{name: {{source_prompt, target_prompt}}}}")
    return data
