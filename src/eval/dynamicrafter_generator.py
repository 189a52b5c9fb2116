"""Model mode for DynamiCrafter: caption-video shards as a test set, and a fine-tuned model as the generator.

Implements src.eval.generators' `TestSet` / `VideoGenerator` interface: each test item is the clip's first
frame (the condition image, as in the zero-shot protocols), its caption and the ground-truth clip; the
generator animates the image with the caption, seeded from the item's own seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from src.data.caption_heldout import caption_clip_item
from src.data.sample_stream import SampleError
from src.eval.generators import ShardTestSet, load_trained_module, to_uint8_clip
from src.eval.video_sources import ClipSpec

__all__ = ["DynamiCrafterGenerator", "DynamiCrafterTestSet"]


class DynamiCrafterTestSet(ShardTestSet):
    """Held-out caption-video shards as fixed clips: "image" (first frame), "caption", "fps", "real". A clip
    is read and decoded (its frames only) when the runner asks for it, so no job holds the whole set. The
    clip starts at `start`, or, for "random", at a frame drawn from `seed` and the video's name (the same
    draw as folder mode's real clips, src.eval.video_sources.ClipSpec)."""

    def __init__(
        self,
        shards: str | Sequence[str],
        num_frames: int,
        stride: int,
        size: Sequence[int],
        caption_key: str = "caption",
        start: int | str = 0,
        seed: int = 0,
    ) -> None:
        self.clip = ClipSpec(int(num_frames), int(stride), start, int(seed))  # validates; start may be "random"
        self._open(shards, "caption-video")
        self.size, self.caption_key = tuple(size), caption_key

    def _clip(self, index: int) -> dict[str, Any]:
        raw = self.source.sample(self._keys[index])
        key = raw["__key__"]
        try:
            return caption_clip_item(raw, self.clip.num_frames, self.clip.stride, self.size, self.caption_key,
                                     start_of=lambda total: self.clip.first_index(total, key))
        except Exception as exc:
            raise SampleError(
                f"cannot use held-out sample {raw['__key__']} from {raw['__url__']}: {exc}. Lower eval.clip "
                "num_frames or stride, or fix the held-out shards."
            ) from exc

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self._clip(index)
        video = item["video"]  # c t h w in [-1, 1]
        return {
            "key": item["key"],
            "image": video[:, 0],
            "caption": item["caption"],
            "frame_stride": int(item["frame_stride"]),
            "fps": float(item["fps"]),
            "num_frames": int(video.shape[1]),
            "real": to_uint8_clip(video),
        }


class DynamiCrafterGenerator:
    """A DynamiCrafter (model config + a `finetune/final/net.safetensors`, or the released checkpoint the
    model config loads when `weights` is null) animating each test item's image with its caption."""

    def __init__(
        self,
        model: DictConfig | dict | None,
        weights: str | Path | None,
        stage: str = "finetune",
        sampling: dict | None = None,
        device: str = "auto",
        fps: float = 8.0,
    ) -> None:
        self.module, self.device = load_trained_module(
            model, weights, stage, device, example_model="dynamicrafter_512", weights_required=False,
            weights_hint="<run_dir>/finetune/final/net.safetensors written by python -m src.train",
        )
        self.sampling = dict(sampling or {})
        self.fps = float(fps)

    @torch.no_grad()
    def generate(self, batch: list[dict[str, Any]]) -> Tensor:
        videos = []
        for item in batch:
            generator = torch.Generator(device=self.device).manual_seed(int(item["seed"]))
            video = self.module.sample(
                item["image"][None].to(self.device),
                [item["caption"]],
                num_frames=item["num_frames"],
                frame_stride=torch.tensor([item["frame_stride"]], device=self.device),
                fps=torch.tensor([item["fps"]], device=self.device),
                generator=generator,
                **self.sampling,
            )
            videos.append(to_uint8_clip(video[0]))
        return torch.stack(videos)
