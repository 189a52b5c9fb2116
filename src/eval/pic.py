"""PerceptualInputConformity (PIC, DynamiCrafter): mean over frames of 1 - DreamSim(input image, frame).

`update(videos, images)`: generated videos `(B, T, C, H, W)` and their conditioning images `(B, C, H, W)`,
uint8 in [0, 255] or float in [0, 1] (video_input.py). Per video PIC = (1/L) Σ_l (1 − D(x_in, x^l)) with D
the DreamSim distance (1 − cosine of embeddings), so PIC is the mean cosine similarity; the metric is the
mean over videos. The embedder is the DreamSim ensemble from a local folder (dreamsim.py) or any module
mapping `(N, 3, H, W)` [0, 1] images to `(N, D)` embeddings (tests use a tiny stand-in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.eval.dreamsim import load_dreamsim_ensemble
from src.eval.feature_stats import MergeableMetric
from src.eval.video_input import image_to_unit_float, video_to_unit_float


class PerceptualInputConformity(MergeableMetric):
    """PIC: how well generated frames conform to the input image under DreamSim (higher is better)."""

    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        dreamsim_dir: str | Path | None = None,
        embedder: nn.Module | None = None,
        config_key: str = "eval.dreamsim_dir",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.embedder = embedder if embedder is not None else load_dreamsim_ensemble(dreamsim_dir, config_key)
        self.embedder.eval()
        for param in self.embedder.parameters():
            param.requires_grad_(False)
        self.embedder_name = "dreamsim_ensemble" if embedder is None else type(embedder).__name__
        self.add_mergeable_state("video_score_sum", torch.zeros((), dtype=torch.float64), "sum")
        self.add_mergeable_state("video_count", torch.zeros((), dtype=torch.float64), "sum")

    def train(self, mode: bool = True) -> PerceptualInputConformity:
        super().train(mode)
        self.embedder.eval()
        return self

    def partial_signature(self) -> dict[str, Any]:
        return {**super().partial_signature(), "embedder": self.embedder_name}

    def update(self, videos: Tensor, images: Tensor) -> None:
        """Add generated videos `(B, T, C, H, W)` and their input images `(B, C, H, W)`."""
        clips = video_to_unit_float(videos, "videos")
        inputs = image_to_unit_float(images, "images")
        if inputs.shape[0] != clips.shape[0]:
            raise ValueError(
                f"one input image per video: got {inputs.shape[0]} images for {clips.shape[0]} videos"
            )
        with torch.no_grad():
            for video, image in zip(clips, inputs):
                emb_in = self.embedder(image[None]).to(torch.float64)  # embedded once per video
                emb_frames = self.embedder(video).to(torch.float64)
                conformity = F.cosine_similarity(emb_frames, emb_in.expand_as(emb_frames), dim=-1)
                self.video_score_sum = self.video_score_sum + conformity.mean()
                self.video_count = self.video_count + 1

    def compute(self) -> Tensor:
        if self.video_count == 0:
            raise RuntimeError("PerceptualInputConformity has no videos; call update(videos, images) first")
        return self.video_score_sum / self.video_count
