"""Model mode: the test-set and generator interface, and the Animate Anyone implementation of both.

The runner (src/eval/runner.py) needs two objects, each built from config by `_target_`:

- `eval.test_set`: a `TestSet`: `keys()` (unique names, fixed order), `len()`, and `test_set[i]` -> an item
  dict with `"key"` (str), `"real"` (the ground-truth clip `(T, 3, H, W)` uint8, written next to the
  generated video and scored against it; optional for generators without ground truth) and whatever
  inputs the generator reads (Animate Anyone: "reference", "pose"; DynamiCrafter: the conditioning image
  and a caption). The runner adds `"seed"` (int, derived from the key) before calling the generator.
- `eval.generator`: a `VideoGenerator`: `generate(batch) -> videos`, with `batch` a list of items and
  `videos` a `(B, T, 3, H, W)` uint8 tensor in the items' order. It must seed every item from
  `item["seed"]` (not from the batch position), so a resumed or sharded run generates the same videos
  as a single one. Attribute `fps` (float): frame rate of the written mp4s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from src.data.heldout_clips import clip_item
from src.data.sample_stream import SampleError
from src.data.video_io import VideoDecodeError, decode_mp4
from src.eval.video_sources import ShardSource
from src.models.weights import require_file
from src.trainers.weights_io import load_net_weights

log = logging.getLogger(__name__)


@runtime_checkable
class TestSet(Protocol):
    """Held-out items for generation (see the module docstring)."""

    def keys(self) -> list[str]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


@runtime_checkable
class VideoGenerator(Protocol):
    """`generate(batch: list[item]) -> (B, T, 3, H, W) uint8`; seeds each item from `item["seed"]`."""

    fps: float

    def generate(self, batch: list[dict[str, Any]]) -> Tensor: ...


def to_uint8_clip(video: Tensor) -> Tensor:
    """Model layout `c t h w` in [-1, 1] -> `(T, 3, H, W)` uint8 (the metrics' layout)."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 0, 2, 3).cpu()


def resolve_device(device: str) -> torch.device:
    """"auto" = the first CUDA GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_trained_module(
    model: DictConfig | dict | None,
    weights: str | Path | None,
    stage: str,
    device: str,
    *,
    example_model: str,
    weights_hint: str,
    weights_required: bool = True,
) -> tuple[torch.nn.Module, torch.device]:
    """The experiment's LightningModule built from `model` with the trained `net` weights, in eval mode on
    `device`. With `weights_required` off a null `weights` keeps what the model config loads itself."""
    if model is None:
        raise ValueError(
            f"model mode needs the model config: add `model=<name>` (e.g. model={example_model}) to the command"
        )
    file = require_file(weights, "eval.checkpoint", weights_hint) if weights is not None or weights_required else None
    cfg = model if isinstance(model, DictConfig) else OmegaConf.create(model)
    module = instantiate(cfg, stage=stage, init_weights=None)  # built only once the weights file is known good
    if file is not None:
        load_net_weights(module.net, file)
    target = resolve_device(device)
    return module.eval().to(target), target


class ShardTestSet:
    """A test set read from webdataset shards one sample at a time: listing the keys reads tar headers only,
    and `test_set[i]` reads and decodes sample i alone, so a shard job decodes only the videos it scores."""

    source: ShardSource

    def _open(self, shards: str | Sequence[str], what: str) -> None:
        if not shards:
            raise ValueError(f"eval.test_set.shards is not set: point it at held-out {what} shards")
        self.source = ShardSource(shards if isinstance(shards, str) else list(shards))
        self._keys = self.source.keys()

    def keys(self) -> list[str]:
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class AnimateAnyoneTestSet(ShardTestSet):
    """Held-out pose-video shards as fixed clips with uint8 ground truth. Only the reference frame and the
    clip's frames are decoded (`decode_mp4` stops at the last one), never the whole source video."""

    def __init__(
        self,
        shards: str | Sequence[str],
        num_frames: int,
        stride: int,
        size: Sequence[int],
        reference_index: int = 0,
        start_frame: int = 0,
    ) -> None:
        if not isinstance(start_frame, int) or reference_index is None:
            raise ValueError(
                f"Animate Anyone test clips need a fixed start and reference frame (eval.clip.start={start_frame!r}, "
                f"eval.reference.frame={reference_index!r}): the reference image must be a known frame of each video"
            )
        self._open(shards, "pose-video")
        self.size, self.reference_index = tuple(size), int(reference_index)
        self.frame_indices = [int(start_frame) + i * int(stride) for i in range(int(num_frames))]

    def __getitem__(self, index: int) -> dict[str, Any]:
        raw = self.source.sample(self._keys[index])
        key = raw["__key__"]
        if "pose.mp4" not in raw:
            raise SampleError(f"held-out sample {key} in {raw['__url__']} has no 'pose.mp4' entry")
        try:
            wanted = [self.reference_index, *self.frame_indices]
            frames = decode_mp4(raw["mp4"], wanted)
            pose = decode_mp4(raw["pose.mp4"], self.frame_indices)
        except (IndexError, VideoDecodeError) as error:
            raise SampleError(
                f"held-out sample {key} in {raw['__url__']}: {error}. The protocol needs frames {wanted}; lower "
                "eval.clip.num_frames / stride / start or use longer videos"
            ) from error
        item = clip_item(key, frames[:1], frames[1:], pose, self.size)
        return {"key": key, "reference": item["reference"], "pose": item["pose"], "real": to_uint8_clip(item["frames"])}


class AnimateAnyoneGenerator:
    """A trained Animate Anyone (model config + a stage's `net.safetensors`) animating test items one by one.

    With `model.net.init=moore` the model config loads Moore-AnimateAnyone's released weights itself, so
    `weights` may be null (evaluate the release as is) or a fine-tuned `net.safetensors`.
    """

    def __init__(
        self,
        model: DictConfig | dict | None,
        weights: str | Path | None,
        stage: str = "temporal",
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        device: str = "auto",
        fps: float = 8.0,
    ) -> None:
        init = OmegaConf.select(OmegaConf.create(model), "net.init") if model is not None else None
        self.module, self.device = load_trained_module(
            model, weights, stage, device, example_model="animate_anyone",
            weights_hint="a stage's <run_dir>/<stage>/final/net.safetensors written by python -m src.train",
            weights_required=init != "moore",
        )
        self.num_steps, self.guidance_scale, self.fps = num_steps, guidance_scale, float(fps)

    @torch.no_grad()
    def generate(self, batch: list[dict[str, Any]]) -> Tensor:
        videos = []
        for item in batch:
            generator = torch.Generator(device=self.device).manual_seed(int(item["seed"]))
            video = self.module.animate(
                item["reference"][None].to(self.device),
                item["pose"][None].to(self.device),
                num_steps=self.num_steps,
                guidance_scale=self.guidance_scale,
                generator=generator,
            )
            videos.append(to_uint8_clip(video[0]))
        return torch.stack(videos)
