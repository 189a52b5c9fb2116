"""Fram-Acc and Tem-Con: arithmetic with a stand-in CLIP whose answers are known, FateZero preprocessing,
a tiny open_clip model through the real interface and tokenizer, and the missing-checkpoint error."""

import os
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from torch import nn

from src.eval.clip_metrics import (
    CLIP_MEAN,
    CLIP_STD,
    FrameAccuracy,
    TemporalConsistency,
    fatezero_clip_preprocess,
    load_clip_vit_b32,
)
from src.eval.weights import MissingWeightFileError

COLORS = {"red": (1.0, 0.0, 0.0), "blue": (0.0, 0.0, 1.0), "green": (0.0, 1.0, 0.0)}


class ColorClip(nn.Module):
    """Image embedding = mean normalised colour; text embedding = the colour word's unit axis."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(np.log(100.0)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(tokens, 3).float()


def color_tokenizer(prompts):
    return torch.tensor([list(COLORS).index(next(w for w in p.split() if w in COLORS)) for p in prompts])


def _frames(*names: str, h: int = 16, w: int = 16) -> torch.Tensor:
    return torch.stack([torch.tensor(COLORS[n]).view(3, 1, 1).expand(3, h, w) for n in names])


def test_frame_accuracy_counts_frames_matching_the_target():
    videos = torch.stack([_frames("red", "red", "red", "blue"), _frames("blue", "blue", "blue", "blue")])
    metric = FrameAccuracy(model=ColorClip(), tokenizer=color_tokenizer)
    metric.update(
        videos, source_prompts=["a blue car", "a red car"], target_prompts=["a red car", "a blue car"]
    )
    assert float(metric.compute()) == pytest.approx((0.75 + 1.0) / 2)


def test_frame_accuracy_ties_count_as_success():
    gray = torch.tensor(CLIP_MEAN).view(3, 1, 1).expand(1, 1, 3, 16, 16)  # normalises to zero: equal logits
    metric = FrameAccuracy(model=ColorClip(), tokenizer=color_tokenizer)
    metric.update(gray, ["a red car"], ["a blue car"])
    assert float(metric.compute()) == 1.0


def test_temporal_consistency_is_mean_consecutive_cosine_per_video():
    videos = torch.stack([_frames("red", "red", "green"), _frames("blue", "green", "green")])
    metric = TemporalConsistency(model=ColorClip(), tokenizer=color_tokenizer)
    metric.update(videos)
    mean, std = np.array(CLIP_MEAN), np.array(CLIP_STD)

    def emb(name):
        e = (np.array(COLORS[name]) - mean) / std
        return e / np.linalg.norm(e)

    def video_score(names):
        return np.mean([emb(a) @ emb(b) for a, b in zip(names[:-1], names[1:])])

    expected = (video_score(["red", "red", "green"]) + video_score(["blue", "green", "green"])) / 2
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-6)


def test_fatezero_preprocessing_crops_portrait_frames_to_the_bottom_square():
    portrait = torch.zeros(1, 3, 40, 20)
    portrait[..., 20:, :] = 1.0  # bottom square white, top black
    out = fatezero_clip_preprocess(portrait)
    assert out.shape == (1, 3, 224, 224)
    white = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(out.mean(dim=(2, 3))[0], white, atol=1e-5, rtol=0)
    landscape = torch.rand(2, 3, 30, 50)
    assert fatezero_clip_preprocess(landscape).shape == (2, 3, 224, 224)


def test_tiny_open_clip_model_through_the_real_interface():
    torch.manual_seed(0)
    tiny = open_clip.model.CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=32, image_size=224),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
        quick_gelu=True,
    )
    acc = FrameAccuracy(model=tiny)  # default tokenizer: open_clip's bundled BPE vocabulary, offline
    tem = TemporalConsistency(model=tiny)
    videos = torch.randint(0, 256, (2, 3, 3, 32, 48), dtype=torch.uint8)
    acc.update(videos, ["a photo of a cat", "a dog"], ["a watercolor cat", "a robot dog"])
    tem.update(videos)
    assert 0.0 <= float(acc.compute()) <= 1.0
    assert -1.0 <= float(tem.compute()) <= 1.0


def test_prompt_count_mismatch_and_missing_checkpoint_are_clear_errors(tmp_path):
    metric = FrameAccuracy(model=ColorClip(), tokenizer=color_tokenizer)
    with pytest.raises(ValueError, match="one source and one target prompt per video"):
        metric.update(_frames("red", "red")[None], ["a red car", "x red"], ["a blue car"])
    with pytest.raises(MissingWeightFileError, match=r"eval\.clip_checkpoint.*ViT-B-32"):
        TemporalConsistency(checkpoint=tmp_path / "ViT-B-32.pt")


_REAL_CLIP = Path(
    os.environ.get(
        "CLIP_VIT_B32", Path(os.environ.get("I2V_WEIGHTS_DIR", "~/.cache/i2v-weights")) / "ViT-B-32.pt"
    )
).expanduser()


@pytest.mark.skipif(
    not _REAL_CLIP.is_file(), reason=f"real CLIP ViT-B/32 checkpoint not found at {_REAL_CLIP}"
)
def test_real_clip_checkpoint_loads():
    model, tokenizer = load_clip_vit_b32(_REAL_CLIP)
    assert float(model.logit_scale.exp()) == pytest.approx(100.0, rel=1e-3)  # OpenAI's trained temperature
    metric = TemporalConsistency(model=model, tokenizer=tokenizer)
    metric.update(torch.rand(1, 1, 3, 64, 64).expand(1, 2, 3, 64, 64).contiguous())
    assert float(metric.compute()) == pytest.approx(1.0, abs=1e-3)  # the 2 frames are identical
