"""Makes reference.pt: outputs of Moore-AnimateAnyone's own model classes on tiny float64 fake weights.

Not part of the package and not run by the tests. Run it from the root of a Moore-AnimateAnyone checkout
(commit in README.md) with diffusers 0.24.0 importable, e.g.

    PYTHONPATH=<site dir with diffusers==0.24.0 transformers==4.30.2 einops omegaconf>:<moore root> \
        python <this repo>/tests/data/moore_reference/make_reference.py <this repo>/tests/data/moore_reference/reference.pt

It builds Moore's UNet2DConditionModel (reference), UNet3DConditionModel (stage 1 without and stage 2 with
motion modules, with the unet_additional_kwargs of Moore's configs/inference/inference_v2.yaml) and PoseGuider
from a tiny SD-shaped config, fills them with `moore_fake_weights.fake_state_dict` (seeded by key name), and
runs the calls Moore's train_stage_{1,2}.py `Net.forward` makes, with Moore's ReferenceAttentionControl
writer/reader. Only key shapes, the sinusoidal tables, the inputs and the outputs are saved.
"""

import importlib.util
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path.cwd()))
from src.models.mutual_self_attention import ReferenceAttentionControl  # noqa: E402  (Moore's tree)
from src.models.unet_2d_condition import UNet2DConditionModel  # noqa: E402
from src.models.unet_3d import UNet3DConditionModel  # noqa: E402

from src.models.pose_guider import PoseGuider  # noqa: E402

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("fake", HERE.parents[1] / "unit" / "moore_fake_weights.py")
fake = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fake)

torch.set_default_dtype(torch.float64)
UNET_CONFIG = {
    "sample_size": 4,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "block_out_channels": [32, 64],
    "layers_per_block": 2,
    "cross_attention_dim": 16,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
POSE_GUIDER = {"conditioning_embedding_channels": 32, "block_out_channels": [4, 8, 8, 16]}
# What Moore trains stage 2 with, read from its own tree (not repeated here): inference_v2.yaml's
# unet_additional_kwargs, motion_module_kwargs included. Our copy is src.models.moore.MOORE_MOTION_MODULE_KWARGS,
# which tests/unit/test_aa_moore.py checks against the motion_module_kwargs saved below.
UNET3D_EXTRA = OmegaConf.to_container(OmegaConf.load("configs/inference/inference_v2.yaml").unet_additional_kwargs)
MOTION_KWARGS = UNET3D_EXTRA["motion_module_kwargs"]


def unet3d(extra):
    cfg = dict(UNET_CONFIG)  # the config rewriting of UNet3DConditionModel.from_pretrained_2d
    cfg["down_block_types"] = ["CrossAttnDownBlock3D", "DownBlock3D"]
    cfg["up_block_types"] = ["UpBlock3D", "CrossAttnUpBlock3D"]
    cfg["mid_block_type"] = "UNetMidBlock3DCrossAttn"
    return UNet3DConditionModel.from_config(cfg, **extra)


def shapes(sd):
    return {k: list(v.shape) for k, v in sd.items()}


reference_unet = UNet2DConditionModel.from_config(UNET_CONFIG).eval()
stage1 = unet3d({"use_motion_module": False, "unet_use_temporal_attention": False}).eval()
stage2 = unet3d(UNET3D_EXTRA).eval()
pose_guider = PoseGuider(**POSE_GUIDER).eval()

files = {
    "reference_unet": shapes(reference_unet.state_dict()),
    "denoising_unet": shapes(stage1.state_dict()),
    "pose_guider": shapes(pose_guider.state_dict()),
    "motion_module": shapes({k: v for k, v in stage2.state_dict().items() if "motion_module" in k}),
}
pe = {k: v.clone() for k, v in stage2.state_dict().items() if k.endswith("pos_encoder.pe")}
weights = {name: fake.fake_state_dict({k: s for k, s in sh.items() if k not in pe}) for name, sh in files.items()}
reference_unet.load_state_dict(weights["reference_unet"], strict=True)
stage1.load_state_dict(weights["denoising_unet"], strict=True)
pose_guider.load_state_dict(weights["pose_guider"], strict=True)
stage2.load_state_dict({**weights["denoising_unet"], **weights["motion_module"], **pe}, strict=True)

g = torch.Generator().manual_seed(0)
b, frames = 2, 4
inputs = {
    "reference_latents": torch.randn(b, 4, 4, 4, generator=g),
    "clip_embeds": torch.randn(b, 1, 16, generator=g),
    "uncond_clip_embeds": torch.randn(b, 1, 16, generator=g),
    "timesteps": torch.tensor([17, 703]),
    "noisy_stage1": torch.randn(b, 4, 1, 4, 4, generator=g),
    "pose_stage1": torch.randint(0, 256, (b, 3, 1, 32, 32), generator=g, dtype=torch.uint8),
    "noisy_stage2": torch.randn(b, 4, frames, 4, 4, generator=g),
    "pose_stage2": torch.randint(0, 256, (b, 3, frames, 32, 32), generator=g, dtype=torch.uint8),
}


@torch.no_grad()
def net_forward(denoising_unet, noisy, pose, clip, uncond_fwd, bank_dtype=torch.float64):
    """What Moore's Net.forward (train_stage_1.py / train_stage_2.py) computes, minus its .to('cuda')."""
    writer = ReferenceAttentionControl(reference_unet, do_classifier_free_guidance=False, mode="write", fusion_blocks="full")
    reader = ReferenceAttentionControl(denoising_unet, do_classifier_free_guidance=False, mode="read", fusion_blocks="full")
    pose_fea = pose_guider(pose.double() / 255.0)  # pose images in [0, 1], stored as uint8
    if not uncond_fwd:
        t = inputs["timesteps"]
        reference_unet(inputs["reference_latents"], torch.zeros_like(t), encoder_hidden_states=clip, return_dict=False)
        reader.update(writer, dtype=bank_dtype)
    out = denoising_unet(noisy, inputs["timesteps"], pose_cond_fea=pose_fea, encoder_hidden_states=clip).sample
    writer.clear()
    reader.clear()
    return out


outputs = {
    "stage1": net_forward(stage1, inputs["noisy_stage1"], inputs["pose_stage1"], inputs["clip_embeds"], False),
    "stage1_uncond": net_forward(
        stage1, inputs["noisy_stage1"], inputs["pose_stage1"], inputs["uncond_clip_embeds"], True
    ),
    "stage1_fp16_bank": net_forward(
        stage1, inputs["noisy_stage1"], inputs["pose_stage1"], inputs["clip_embeds"], False, torch.float16
    ),
    "stage2": net_forward(stage2, inputs["noisy_stage2"], inputs["pose_stage2"], inputs["clip_embeds"], False),
}
torch.save(
    {
        "unet_config": UNET_CONFIG,
        "pose_guider": POSE_GUIDER,
        "motion_module_kwargs": MOTION_KWARGS,
        "files": files,
        # one sinusoidal table per width (every motion module of a width holds the same one)
        "pos_encoder_pe": {int(v.shape[-1]): v for v in pe.values()},
        "inputs": inputs,
        "outputs": outputs,
    },
    sys.argv[1],
)
print({k: (tuple(v.shape), float(v.abs().mean())) for k, v in outputs.items()})
