"""Frozen CLIP image embedders: images (N, 3, H, W) in [-1, 1] -> projected embedding as one token (N, 1, D).

Animate Anyone replaces the text encoder with the CLIP image embedding of the reference image; the
reproductions use the *projected* embedding (`image_embeds`, 768-d for ViT-L/14) as a single
cross-attention token. Preprocessing (resize, center crop, CLIP normalisation) happens inside, so callers
pass the same [-1, 1] images they give the latent codec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.config import to_plain
from src.models.weights import (
    WeightLoadError,
    find_weights_file,
    load_state_dict_file,
    load_strict,
    require_file,
)

__all__ = ["ClipImageEmbedder", "HFClipImageEmbedder", "OpenClipImageEmbedder", "CLIP_MEAN", "CLIP_STD"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HF_CLIP_PUBLISHED_AT = (
    "https://huggingface.co/lambdalabs/sd-image-variations-diffusers/tree/main/image_encoder "
    "(config.json + pytorch_model.bin)"
)
OPEN_CLIP_PUBLISHED_AT = (
    "https://huggingface.co/laion/CLIP-ViT-L-14-laion2B-s32B-b82K (open_clip_pytorch_model.bin), or the "
    "OpenAI ViT-L/14 weights as an open_clip state dict (use model_name='ViT-L-14-quickgelu' for those)"
)


class ClipImageEmbedder(nn.Module):
    """Base class: frozen, always in eval mode; `forward` does the CLIP preprocessing then `embed`."""

    embed_dim: int
    image_size: int

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> ClipImageEmbedder:
        """Frozen encoder: stays in eval mode (no dropout) whatever the parent does."""
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> CLIP input: shortest side to image_size (bicubic, antialias), center crop, normalise.

        Crop offsets are floor((size_in - size) / 2), as transformers' CLIPImageProcessor computes them.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"{type(self).__name__} expects images (N, 3, H, W) in [-1, 1], got {tuple(images.shape)}."
            )
        x = (images.float() + 1.0) / 2.0
        h, w = x.shape[-2:]
        size = self.image_size
        # shortest side -> size, longer side truncated as transformers' CLIPImageProcessor and torchvision do
        new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        x = x[..., top : top + size, left : left + size].clamp(0.0, 1.0)
        return (x - self.mean) / self.std

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised CLIP input (N, 3, S, S) -> projected embedding (N, D)."""
        raise NotImplementedError

    def zero_input_embedding(self, batch: int) -> torch.Tensor:
        """(batch, 1, D) embedding of an all-zero CLIP input (zeros after normalisation): Moore-AnimateAnyone's
        unconditional CLIP input in training (`zeros_like(clip_image)` of the processed image)."""
        param = next(self.parameters())
        pixel_values = torch.zeros(batch, 3, self.image_size, self.image_size, device=param.device, dtype=param.dtype)
        return self.embed(pixel_values).unsqueeze(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixel_values = self.preprocess(images)
        param = next(self.parameters())
        return self.embed(pixel_values.to(param.dtype)).unsqueeze(1)


class HFClipImageEmbedder(ClipImageEmbedder):
    """transformers CLIPVisionModelWithProjection from a local folder (strict load), or random from a config dict.

    `path`: the `image_encoder` folder of lambdalabs/sd-image-variations-diffusers (what Moore-AnimateAnyone
    uses). `config`: CLIPVisionConfig kwargs for tiny random models (tests, CPU demo); those are initialised
    from `init_seed` alone, so every rebuild (resume, evaluation, the next stage) gets the same frozen
    encoder without it being saved.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        config: dict[str, Any] | None = None,
        image_size: int | None = None,
        config_key: str = "model.image_encoder.path",
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        if (path is None) == (config is None):
            raise ValueError(
                "HFClipImageEmbedder needs exactly one of `path` (local folder) or `config` (dict)."
            )
        if path is not None:
            folder = require_file(path, config_key, HF_CLIP_PUBLISHED_AT)
            vision_config = CLIPVisionConfig.from_json_file(
                str(require_file(folder / "config.json", config_key, HF_CLIP_PUBLISHED_AT))
            )
            self.model = CLIPVisionModelWithProjection(vision_config)
            weights = find_weights_file(folder, ("model.safetensors", "pytorch_model.bin"))
            if weights is None:
                raise FileNotFoundError(
                    f"No weights in {folder}: expected model.safetensors or pytorch_model.bin. Set `{config_key}`; "
                    f"published at {HF_CLIP_PUBLISHED_AT}"
                )
            state_dict = _drop_legacy_position_ids(load_state_dict_file(weights), self.model, str(weights))
            load_strict(self.model, state_dict, source=str(weights))
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(init_seed)
                self.model = CLIPVisionModelWithProjection(CLIPVisionConfig(**to_plain(config)))
        self.model.requires_grad_(False).eval()
        self.embed_dim = int(self.model.config.projection_dim)
        self.image_size = int(image_size or self.model.config.image_size)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).image_embeds




def _drop_legacy_position_ids(
    state_dict: dict[str, torch.Tensor], model: nn.Module, source: str
) -> dict[str, torch.Tensor]:
    """Older transformers saved `embeddings.position_ids` (a constant arange); newer ones do not persist it.

    It is dropped only when the model has no such key and the stored values are the expected arange, so a
    real mismatch still fails the strict load.
    """
    key = "vision_model.embeddings.position_ids"
    if key in state_dict and key not in model.state_dict():
        ids = state_dict[key]
        if not torch.equal(ids.flatten().long(), torch.arange(ids.numel())):
            raise WeightLoadError(f"{source}: {key} is not the constant 0..N-1 range it should be.")
        state_dict = {k: v for k, v in state_dict.items() if k != key}
    return state_dict


class OpenClipImageEmbedder(ClipImageEmbedder):
    """open_clip image tower with a strict load of a local open_clip checkpoint; output = encode_image (projected).

    The full CLIP model is built (by `model_name`, or from `model_config` = open_clip CLIP kwargs for tiny
    test models), the checkpoint's `visual.*` keys are loaded strictly into the image tower and the text
    tower is discarded (its keys in the file are not used). OpenAI-trained weights need the QuickGELU
    variant of the architecture (`ViT-L-14-quickgelu`).
    """

    def __init__(
        self,
        model_name: str = "ViT-L-14",
        checkpoint: str | Path | None = None,
        model_config: dict[str, Any] | None = None,
        image_size: int | None = None,
        config_key: str = "model.image_encoder.checkpoint",
    ) -> None:
        super().__init__()
        import open_clip

        if model_config is not None:
            clip = open_clip.CLIP(**to_plain(model_config))
        else:
            clip = open_clip.create_model(model_name, pretrained=None)
        self.visual = clip.visual
        del clip
        if checkpoint is not None:
            path = require_file(checkpoint, config_key, OPEN_CLIP_PUBLISHED_AT)
            state_dict = load_state_dict_file(path)
            visual = {k[len("visual.") :]: v for k, v in state_dict.items() if k.startswith("visual.")}
            if not visual:
                raise WeightLoadError(
                    f"{path} has no 'visual.*' keys: it is not an open_clip CLIP state dict "
                    f"(first keys: {', '.join(list(state_dict)[:5])})."
                )
            load_strict(self.visual, visual, source=f"{path} (visual.*)")
        self.visual.requires_grad_(False).eval()
        self.embed_dim = int(self.visual.output_dim)
        size = image_size or getattr(self.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        mean = getattr(self.visual, "image_mean", None) or CLIP_MEAN
        std = getattr(self.visual, "image_std", None) or CLIP_STD
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual(pixel_values)
