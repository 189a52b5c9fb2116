"""Every attention in our models goes through F.scaled_dot_product_attention (so `performance.sdpa_backend`
chooses its kernel): a training step of each tiny model is traced and must call SDPA and never a softmax
(the sign of a hand-written attention), and every diffusers Attention uses an SDPA processor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.overrides import TorchFunctionMode

from src.config import register_resolvers, stage_config
from src.trainers.strategies import CONF_DIR

register_resolvers()
SDPA_PROCESSORS = {"AttnProcessor2_0", "ReferenceWriteProcessor", "ReferenceReadProcessor"}
SOFTMAX_NAMES = {"softmax", "_softmax", "log_softmax"}


class AttentionCalls(TorchFunctionMode):
    """Counts SDPA and softmax calls made through torch functions and tensor methods."""

    def __init__(self) -> None:
        super().__init__()
        self.sdpa = 0
        self.softmax: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.sdpa += 1
        elif getattr(func, "__name__", "") in SOFTMAX_NAMES:
            self.softmax.append(str(func))
        return func(*args, **(kwargs or {}))


def build(experiment: str, stage: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    scfg = stage_config(cfg, stage)
    torch.manual_seed(0)
    return instantiate(scfg.model, stage=stage, init_weights=None), scfg


def aa_batch(frames: int, size: int = 64) -> dict:
    return {
        "pixel_values": torch.rand(1, 3, frames, size, size) * 2 - 1,
        "pose": torch.rand(1, 3, frames, size, size),
        "reference": torch.rand(1, 3, size, size) * 2 - 1,
        "sample_index": torch.tensor([0]),
    }


def dc_batch(cfg) -> dict:
    t, (h, w) = cfg.data.num_frames, cfg.data.size
    return {
        "video": torch.rand(1, 3, t, h, w) * 2 - 1,
        "caption": ["a red square moves"],
        "frame_stride": torch.tensor([2]),
        "fps": torch.tensor([4.0]),
        "key": ["k"],
        "skipped": [{}],
        "sample_index": torch.tensor([0]),
    }


def assert_sdpa_only(module, batch) -> None:
    from diffusers.models.attention_processor import Attention

    processors = {type(m.processor).__name__ for m in module.modules() if isinstance(m, Attention)}
    assert processors <= SDPA_PROCESSORS, f"non-SDPA attention processors: {processors - SDPA_PROCESSORS}"
    for m in module.modules():  # transformers models (the tiny HF CLIP) must be on their SDPA implementation
        impl = getattr(getattr(m, "config", None), "_attn_implementation", None)
        assert impl in (None, "sdpa"), f"{type(m).__name__} uses attention implementation {impl!r}"
    module.train()
    calls = AttentionCalls()
    with calls:
        loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    assert calls.sdpa > 0
    assert not calls.softmax, f"softmax outside SDPA (a non-fused attention?): {calls.softmax[:3]}"


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("stage,frames", [("spatial", 1), ("temporal", 4)])
def test_animate_anyone_attention_is_all_sdpa(stage, frames):
    module, _ = build("animate_anyone_demo", stage)
    assert_sdpa_only(module, aa_batch(frames))


@pytest.mark.filterwarnings("ignore")
def test_dynamicrafter_attention_is_all_sdpa():
    if not (CONF_DIR / "experiment" / "dynamicrafter_demo.yaml").is_file():
        pytest.skip("conf/experiment/dynamicrafter_demo.yaml not there yet")
    module, cfg = build("dynamicrafter_demo", "finetune")
    assert_sdpa_only(module, dc_batch(cfg))


def test_the_audit_catches_a_hand_written_attention():
    q = torch.randn(1, 2, 4, 8)
    calls = AttentionCalls()
    with calls:
        (q @ q.transpose(-1, -2)).softmax(-1) @ q
    assert calls.softmax and calls.sdpa == 0
