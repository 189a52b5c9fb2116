"""DynamiCrafter's frozen OpenCLIP encoders, with parameter names equal to the official checkpoints'.

Text (``cond_stage_model``): open_clip tokenizer (77 tokens) -> token + position embeddings -> all text blocks
but the last (the "penultimate" layer) -> ``ln_final``: ``[b, 77, width]`` (1024 for ViT-H-14).
Image (``embedder``): [-1, 1] images resized to the tower's size (bicubic, antialiased), CLIP-normalised, through
the whole visual transformer; the output is all tokens of the last block (class token first), before ``ln_post``
and the projection: ``[b, 257, 1280]`` for ViT-H-14, what the Resampler takes.

Both keep the parts of the open_clip CLIP that the official wrappers keep (so that the released ``model.ckpt``
loads strictly): the text side has no ``visual``, the image side no text ``transformer``. Weights come from the
released ``model.ckpt`` (which holds both towers), or from an open_clip checkpoint file, or, with
``model_config`` (open_clip CLIP kwargs), a tiny random tower built from ``init_seed`` (tests, CPU demo).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.config import to_plain
from src.models.image_encoders import CLIP_MEAN, CLIP_STD
from src.models.weights import WeightLoadError, load_state_dict_file, load_strict, require_file

__all__ = ["OpenClipTextEncoder", "OpenClipImageTokenEncoder", "build_open_clip"]

OPEN_CLIP_H14_PUBLISHED_AT = (
    "https://huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K (open_clip_pytorch_model.bin); the released "
    "DynamiCrafter model.ckpt also holds both towers (then leave this path null)"
)
TEXT_PARTS = (
    "token_embedding",
    "positional_embedding",
    "transformer",
    "ln_final",
    "text_projection",
    "logit_scale",
)
IMAGE_PARTS = (
    "visual",
    "token_embedding",
    "positional_embedding",
    "ln_final",
    "text_projection",
    "logit_scale",
)




def build_open_clip(model_name: str, model_config: Mapping[str, Any] | None, init_seed: int) -> nn.Module:
    """An open_clip CLIP: ``model_name``'s architecture, or ``model_config`` kwargs; random init from ``init_seed``."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        if model_config is not None:
            return open_clip.CLIP(**to_plain(model_config))
        # the current default device, so a build under `with torch.device("meta")` (the weights doctor) stays there
        return open_clip.create_model(model_name, pretrained=None, device=torch.get_default_device())


class _Parts(nn.Module):
    """Holds the named children/parameters of an open_clip CLIP that one side keeps (official key layout)."""

    def __init__(self, clip: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        for name in names:
            setattr(self, name, getattr(clip, name))


class _FrozenOpenClip(nn.Module):
    """Shared: build, optional strict load of an open_clip file's relevant keys, freeze; eval mode always."""

    parts: tuple[str, ...] = ()

    def __init__(
        self,
        model_name: str,
        checkpoint: str | Path | None,
        model_config: Mapping[str, Any] | None,
        config_key: str,
        init_seed: int,
    ) -> None:
        super().__init__()
        clip = build_open_clip(model_name, model_config, init_seed)
        self.model = _Parts(clip, self.parts)
        self._init_from(clip)
        if checkpoint is not None:
            self.load_open_clip_file(checkpoint, config_key)
        self.requires_grad_(False).eval()

    def _init_from(self, clip: nn.Module) -> None:
        """Side-specific attributes taken from the full CLIP before it is dropped."""

    def train(self, mode: bool = True) -> _FrozenOpenClip:
        """Frozen encoder: stays in eval mode whatever the parent does."""
        return super().train(False)

    def load_open_clip_file(self, path: str | Path, config_key: str) -> None:
        """Strictly load the keys this side keeps from an open_clip ``open_clip_pytorch_model.bin``/safetensors."""
        path = require_file(path, config_key, OPEN_CLIP_H14_PUBLISHED_AT)
        state_dict = load_state_dict_file(path)
        kept = {k: v for k, v in state_dict.items() if k.split(".", 1)[0] in self.parts}
        if not kept:
            raise WeightLoadError(
                f"{path} has none of the keys {list(self.parts)}: it is not an open_clip CLIP state dict "
                f"(first keys: {', '.join(list(state_dict)[:5])}). Set `{config_key}` to open_clip's file."
            )
        load_strict(self.model, kept, source=f"{path} ({type(self).__name__} keys)")

    def load_official(self, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
        """Strict load of the checkpoint part (``cond_stage_model.`` / ``embedder.`` stripped: keys ``model.*``)."""
        load_strict(
            self, state_dict, source, hint="Build the encoder with the release's architecture (ViT-H-14)."
        )


class OpenClipTextEncoder(_FrozenOpenClip):
    """Captions -> ``[b, context_length, width]`` penultimate-layer tokens after ``ln_final`` (official layout)."""

    parts = TEXT_PARTS

    def __init__(
        self,
        model_name: str = "ViT-H-14",
        checkpoint: str | Path | None = None,
        model_config: Mapping[str, Any] | None = None,
        config_key: str = "model.text_encoder.checkpoint",
        init_seed: int = 0,
    ) -> None:
        super().__init__(model_name, checkpoint, model_config, config_key, init_seed)
        self.context_length = int(self.model.positional_embedding.shape[0])
        self.width = int(self.model.positional_embedding.shape[1])

    def _init_from(self, clip: nn.Module) -> None:
        self.register_buffer("attn_mask", clip.attn_mask.clone(), persistent=False)

    def tokenize(self, captions: Sequence[str], device: torch.device) -> torch.Tensor:
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise TypeError(f"OpenClipTextEncoder expects a list of str captions, got {captions!r:.200}.")
        import open_clip

        # The release tokenizes with open_clip.tokenize (CLIP BPE, 77 tokens, truncated keeping end-of-text).
        tokens = open_clip.tokenize(list(captions), context_length=self.context_length)
        return tokens.to(device)

    def forward(self, captions: Sequence[str]) -> torch.Tensor:
        device = self.model.positional_embedding.device
        tokens = self.tokenize(captions, device)
        dtype = self.model.positional_embedding.dtype
        x = self.model.token_embedding(tokens).to(dtype) + self.model.positional_embedding
        penultimate = len(self.model.transformer.resblocks) - 2
        if penultimate < 0:
            raise ValueError(
                "OpenClipTextEncoder needs at least 2 text layers (it reads the penultimate one)."
            )
        _, intermediates = self.model.transformer.forward_intermediates(
            x, attn_mask=self.attn_mask, indices=[penultimate], stop_early=True
        )
        return self.model.ln_final(intermediates[0])


class OpenClipImageTokenEncoder(_FrozenOpenClip):
    """[-1, 1] images ``[b, 3, h, w]`` -> all last-layer visual tokens ``[b, 1 + grid^2, width]`` (no ln_post/proj)."""

    parts = IMAGE_PARTS

    def __init__(
        self,
        model_name: str = "ViT-H-14",
        checkpoint: str | Path | None = None,
        model_config: Mapping[str, Any] | None = None,
        config_key: str = "model.image_encoder.checkpoint",
        init_seed: int = 0,
    ) -> None:
        super().__init__(model_name, checkpoint, model_config, config_key, init_seed)
        size = self.model.visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        self.width = int(self.model.visual.positional_embedding.shape[-1])
        self.num_tokens = int(self.model.visual.positional_embedding.shape[0])
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> resized to the tower's size (bicubic, antialiased, no crop) -> CLIP-normalised.

        The release resizes with kornia (bicubic, align_corners, antialias); torch's antialiased bicubic is
        close but not bit-identical.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"OpenClipImageTokenEncoder expects images (b, 3, h, w) in [-1, 1], got {tuple(images.shape)}."
            )
        x = images.float()
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=True, antialias=True)
        x = (x + 1.0) / 2.0
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dtype = self.model.visual.conv1.weight.dtype
        out = self.model.visual.forward_intermediates(
            self.preprocess(images).to(dtype),
            indices=1,
            intermediates_only=True,
            output_fmt="NLC",
            output_extra_tokens=True,
        )
        return torch.cat([out["image_intermediates_prefix"][0], out["image_intermediates"][0]], dim=1)
