"""Fixed evaluation clips from held-out videos: a reference frame, a pose sequence and the ground truth.

Used for Animate Anyone's validation samples and held-out proof. Each item: reference `c h w` in [-1, 1], pose
`c t h w` in [0, 1], frames `c t h w` in [-1, 1], key; plus silhouette `t h w` bool and background
`c h w` in [-1, 1] when the video carries them (the demo's generator knows both).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from src.data.pose_video_dataset import iter_heldout_videos
from src.data.transforms import CropBox, crop_resize


def _to_tensor(
    frames: np.ndarray, size: tuple[int, int], lo: float, hi: float, kind: str = "pixels"
) -> torch.Tensor:
    """`t h w c` uint8 -> `c t h w` float in [lo, hi] at `size` (h, w), resized as the training pipeline does."""
    _, height, width, _ = frames.shape
    x = crop_resize(frames, CropBox(0, 0, height, width), tuple(size), kind=kind)
    return (x * (hi - lo) + lo).permute(1, 0, 2, 3).contiguous()


def scored_frame_indices(num_frames: int, stride: int, start_frame: int) -> list[int]:
    return [start_frame + i * stride for i in range(num_frames)]


class HeldoutClips(Dataset):
    """Fixed clips built once, on load: each video is cut to the frames the protocol scores and resized to
    `size`, so the source-resolution frames are not kept (`videos` may be a generator: one video in memory at a
    time). A video may hold every frame, or only some (then
    "frame_indices" names the source index of each row and "num_source_frames" its length, as
    `load_heldout_videos(frame_indices=...)` gives)."""

    def __init__(
        self,
        videos: Iterable[dict],
        num_frames: int,
        stride: int,
        size: tuple[int, int],
        reference_index: int = 0,
        start_frame: int = 0,
    ) -> None:
        self.num_frames, self.stride, self.size = num_frames, stride, tuple(size)
        self.reference_index, self.start_frame = reference_index, start_frame
        self.items = [self._clip(video) for video in videos]

    def _clip(self, video: dict) -> dict:
        total = video.get("num_source_frames", len(video["frames"]))
        needed = self.start_frame + (self.num_frames - 1) * self.stride + 1
        if total < needed or self.reference_index >= total:
            raise ValueError(
                f"held-out video {video['key']!r} has {total} frames; a clip of {self.num_frames} frames at stride "
                f"{self.stride} from frame {self.start_frame} (and reference index {self.reference_index}) needs "
                f"{max(needed, self.reference_index + 1)}. Lower evaluation.num_frames / stride / start_frame or use "
                "longer videos."
            )
        row = {source: i for i, source in enumerate(video.get("frame_indices", range(total)))}
        idx = np.asarray([row[i] for i in self.frame_indices])
        ref = row[self.reference_index]
        silhouette = video.get("silhouette")
        return clip_item(
            video["key"],
            video["frames"][ref : ref + 1],
            video["frames"][idx],
            video["pose"][idx],
            self.size,
            None if silhouette is None else np.asarray(silhouette)[idx],
            video.get("background"),
        )

    def __len__(self) -> int:
        return len(self.items)

    @property
    def frame_indices(self) -> list[int]:
        """The source-video indices of each clip's frames (the frames scored against the ground truth)."""
        return scored_frame_indices(self.num_frames, self.stride, self.start_frame)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def clip_item(
    key: str,
    reference: np.ndarray,
    frames: np.ndarray,
    pose: np.ndarray,
    size: Sequence[int],
    silhouette: np.ndarray | None = None,
    background: np.ndarray | None = None,
) -> dict:
    """One evaluation clip from the frames it scores (`t h w c` uint8; reference `1 h w c`), sized as in
    training: the one conversion behind both the in-memory clips and the streamed test sets."""
    size = tuple(size)
    item = {
        "key": key,
        "reference": _to_tensor(reference, size, -1, 1)[:, 0],
        "pose": _to_tensor(pose, size, 0, 1, kind="pose"),
        "frames": _to_tensor(frames, size, -1, 1),
    }
    if silhouette is not None:
        sil = torch.from_numpy(np.asarray(silhouette)).float()[:, None]
        item["silhouette"] = F.interpolate(sil, size=size, mode="nearest")[:, 0] > 0.5
        item["background"] = _to_tensor(np.asarray(background)[None], size, -1, 1)[:, 0]
    return item


def load_heldout_clips(
    shards: str | Sequence[str],
    num_videos: int | None,
    num_frames: int,
    stride: int,
    size,
    reference_index: int,
    start_frame: int = 0,
) -> HeldoutClips:
    """The first `num_videos` held-out videos of `shards` (all of them for None) as fixed evaluation clips, decoding
    only the frames the clips use (reference and scored frames) and resizing each video as it loads."""
    used = sorted({reference_index, *scored_frame_indices(num_frames, stride, start_frame)})
    videos = iter_heldout_videos(shards, max_videos=num_videos, frame_indices=used)
    return HeldoutClips(videos, num_frames, stride, tuple(size), reference_index, start_frame)


def val_loader_from_config(data: DictConfig, shards: str | Sequence[str]) -> DataLoader:
    """Validation clips (`data.val`: num_videos, num_frames, stride, reference_index) at `data.size`, batch 1."""
    v = data.val
    clips = load_heldout_clips(shards, v.num_videos, v.num_frames, v.stride, data.size, v.reference_index)
    return DataLoader(clips, batch_size=1, shuffle=False)
