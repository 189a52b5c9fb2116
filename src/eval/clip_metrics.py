"""Rerender/FateZero CLIP metrics: FrameAccuracy (Fram-Acc) and TemporalConsistency (Tem-Con).

Videos enter `update()` as `(B, T, C, H, W)`, uint8 in [0, 255] or float in [0, 1] (video_input.py).
As FateZero's `CLIP/frame_acc_tem_con.py`: CLIP ViT-B/32 (OpenAI weights), each frame cropped to its bottom
square when portrait, resized to 224 (bicubic, shorter side), center-cropped, CLIP-normalised.

- Fram-Acc: per video, the fraction of frames whose softmax over [source prompt, target prompt] gives the
  target at least the source's probability (ties count); then the mean over videos.
- Tem-Con: per video, the mean cosine similarity of CLIP image embeddings of consecutive frames; then the
  mean over videos.
The model is any module with `encode_image(images)`, `encode_text(tokens)` and `logit_scale` (open_clip's
CLIP); `load_clip_vit_b32` builds it from a local checkpoint.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.eval.feature_stats import MergeableMetric
from src.eval.video_input import video_to_unit_float
from src.eval.weights import require_weight_file

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_RESOLUTION = 224
CLIP_PUBLISHED_AT = (
    "OpenAI ViT-B-32.pt: https://openaipublic.azureedge.net/clip/models/"
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt, or the open_clip-format copy "
    "https://huggingface.co/timm/vit_base_patch32_clip_224.openai (open_clip_pytorch_model.bin)"
)


def fatezero_clip_preprocess(frames: Tensor, size: int = CLIP_RESOLUTION) -> Tensor:
    """`(N, 3, H, W)` in [0, 1] -> CLIP input: bottom square if portrait, bicubic resize, center crop, normalise."""
    h, w = frames.shape[-2:]
    if h > w:  # FateZero: image.crop((0, h - w, w, h))
        frames = frames[..., h - w :, :]
        h = w
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    frames = F.interpolate(frames, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    frames = frames[..., top : top + size, left : left + size].clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=frames.device, dtype=frames.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=frames.device, dtype=frames.dtype).view(1, 3, 1, 1)
    return (frames - mean) / std


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def load_clip_vit_b32(
    path: str | Path | None, config_key: str = "eval.clip_checkpoint"
) -> tuple[nn.Module, Callable[[Sequence[str]], Tensor]]:
    """open_clip ViT-B-32 (QuickGELU, as OpenAI's) from a local file, plus its offline BPE tokenizer.

    Accepts OpenAI's original `ViT-B-32.pt` (a TorchScript archive) or an open_clip-format state dict,
    loaded strictly.
    """
    file = require_weight_file(path, config_key, CLIP_PUBLISHED_AT)
    if _is_torchscript_archive(file):
        model = open_clip.load_openai_model(str(file), precision="fp32", device="cpu")
    else:
        model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
        open_clip.load_checkpoint(model, str(file), strict=True)
    return model.eval().requires_grad_(False), open_clip.get_tokenizer("ViT-B-32")


class _ClipVideoMetric(MergeableMetric):
    """Shared model handling and per-video averaging (sum over videos + video count)."""

    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        model: nn.Module | None = None,
        tokenizer: Callable[[Sequence[str]], Tensor] | None = None,
        config_key: str = "eval.clip_checkpoint",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if model is None:
            model, tokenizer = load_clip_vit_b32(checkpoint, config_key)
        self.model = model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.tokenizer = tokenizer or open_clip.get_tokenizer("ViT-B-32")
        self.add_mergeable_state("video_score_sum", torch.zeros((), dtype=torch.float64), "sum")
        self.add_mergeable_state("video_count", torch.zeros((), dtype=torch.float64), "sum")

    def train(self, mode: bool = True) -> _ClipVideoMetric:
        super().train(mode)
        self.model.eval()
        return self

    def image_embeddings(self, video: Tensor) -> Tensor:
        """`(T, 3, H, W)` in [0, 1] -> `(T, D)` L2-normalised float64 CLIP image embeddings."""
        with torch.no_grad():
            emb = self.model.encode_image(fatezero_clip_preprocess(video))
        return F.normalize(emb.to(torch.float64), dim=-1)

    def text_embeddings(self, prompts: Sequence[str]) -> Tensor:
        tokens = self.tokenizer(list(prompts)).to(self.device)
        with torch.no_grad():
            emb = self.model.encode_text(tokens)
        return F.normalize(emb.to(torch.float64), dim=-1)

    def add_video_scores(self, scores: Tensor) -> None:
        self.video_score_sum = self.video_score_sum + scores.to(torch.float64).sum()
        self.video_count = self.video_count + scores.numel()

    def compute(self) -> Tensor:
        if self.video_count == 0:
            raise RuntimeError(f"{type(self).__name__} has no videos; call update() first")
        return self.video_score_sum / self.video_count


class FrameAccuracy(_ClipVideoMetric):
    """Fram-Acc: mean over videos of the fraction of frames CLIP matches to the target prompt."""

    def update(self, videos: Tensor, source_prompts: Sequence[str], target_prompts: Sequence[str]) -> None:
        """Add edited videos with, per video, the source (original) and target (edit) prompts."""
        clips = video_to_unit_float(videos)
        if not (len(source_prompts) == len(target_prompts) == clips.shape[0]):
            raise ValueError(
                f"need one source and one target prompt per video: {clips.shape[0]} videos, "
                f"{len(source_prompts)} source and {len(target_prompts)} target prompts"
            )
        scores = []
        for video, source, target in zip(clips, source_prompts, target_prompts):
            text = self.text_embeddings([source, target])
            logits = self.model.logit_scale.exp().to(torch.float64) * self.image_embeddings(video) @ text.T
            probs = logits.softmax(dim=-1)
            scores.append((probs[:, 1] >= probs[:, 0]).to(torch.float64).mean())
        self.add_video_scores(torch.stack(scores))


class TemporalConsistency(_ClipVideoMetric):
    """Tem-Con: mean over videos of the mean cosine similarity of consecutive frames' CLIP embeddings."""

    def update(self, videos: Tensor) -> None:
        """Add videos `(B, T, C, H, W)` with T >= 2."""
        clips = video_to_unit_float(videos)
        if clips.shape[1] < 2:
            raise ValueError(f"Tem-Con needs at least 2 frames per video, got shape {tuple(videos.shape)}")
        scores = []
        for video in clips:
            emb = self.image_embeddings(video)
            scores.append((emb[:-1] * emb[1:]).sum(dim=-1).mean())
        self.add_video_scores(torch.stack(scores))
