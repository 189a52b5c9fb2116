"""Moore-AnimateAnyone's own stage-1 training step, timed from a checkout the user gives (never copied here).

Run by `bench/reference_step.py --moore-src PATH` in a child process, because Moore's tree is a top-level
package named `src` (as ours is) and needs diffusers 0.24 / transformers 4.30 (ours needs newer): the parent
passes those through `--official-pythonpath`. This file imports nothing of our `src`; the timing helper
(bench/step_timing.py) is shared with the parent so both sides are measured the same way.

The step is what `train_stage_1.py`'s loop does around `Net.forward` (read from that file): PoseGuider on the
pose image, the ReferenceNet (Moore's UNet2DConditionModel) run with the writer `ReferenceAttentionControl`,
`reader.update(writer)` (its default fp16 bank; bf16 under --bf16), the denoising UNet3DConditionModel, MSE
loss, the host read of the gathered loss, backward, grad-norm clip 1.0, AdamW, zero_grad, reader/writer clear.
`Net` itself is not imported: its forward moves the pose to "cuda" and train_stage_1.py imports
mlflow/accelerate/DWPose; the calls are the same, in the same order. Always the conditional branch (Moore
skips the ReferenceNet on its 10% uncond draws), so every step does the same work. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.step_timing import autocast, check_checkout, time_step

# What a Moore-AnimateAnyone checkout has, relative to its root (the files this bench imports or mirrors).
MOORE_FILES = (
    "train_stage_1.py",
    "src/models/unet_2d_condition.py",
    "src/models/unet_3d.py",
    "src/models/pose_guider.py",
    "src/models/mutual_self_attention.py",
)
# Moore's module (under its src/models/) -> the class this bench builds from it
MOORE_MODULES = {
    "unet_2d_condition": "UNet2DConditionModel",
    "unet_3d": "UNet3DConditionModel",
    "pose_guider": "PoseGuider",
    "mutual_self_attention": "ReferenceAttentionControl",
}
MOORE_URL = "https://github.com/MooreThreads/Moore-AnimateAnyone"


def check_moore_src(path: str | Path | None) -> Path:
    """The checkout's root, or a ValueError naming what is missing and how to get it."""
    return check_checkout(path, "--moore-src", "Moore-AnimateAnyone", MOORE_URL, MOORE_FILES)


def import_moore(root: Path):
    """Moore's classes from its own tree: its root first on sys.path, ours (holding `bench`) off it."""
    ours = Path(__file__).resolve().parents[1]
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != ours]
    sys.path.insert(0, str(root))
    import diffusers

    if not diffusers.__version__.startswith("0.24"):
        raise SystemExit(
            f"Moore-AnimateAnyone needs diffusers 0.24 but {diffusers.__version__} was imported from "
            f"{diffusers.__file__}: `pip install --target DIR diffusers==0.24.0 transformers==4.30.2 einops "
            "omegaconf` "
            "and pass --official-pythonpath DIR."
        )
    modules = [importlib.import_module(f"src.models.{name}") for name in MOORE_MODULES]
    if not Path(sys.modules["src"].__file__).resolve().is_relative_to(root):
        raise SystemExit(f"`src` was imported from {sys.modules['src'].__file__}, not from {root}.")
    return [getattr(module, name) for module, name in zip(modules, MOORE_MODULES.values())]


def to_3d(unet: dict) -> dict:
    """The block-type rewrite of Moore's UNet3DConditionModel.from_pretrained_2d."""
    out = dict(unet)
    out["down_block_types"] = [t.replace("2D", "3D") for t in unet["down_block_types"]]
    out["up_block_types"] = [t.replace("2D", "3D") for t in unet["up_block_types"]]
    out["mid_block_type"] = "UNetMidBlock3DCrossAttn"
    return out


def stage1_inputs(unet: dict, b: int, s: int, px: int, device: torch.device) -> tuple:
    """One stage-1 batch, the same on both sides of the comparison (seeded): noisy latents, target, reference
    latents, CLIP embedding, pose video, timesteps."""
    g = torch.Generator().manual_seed(0)
    c = unet["in_channels"]
    noisy = torch.randn(b, c, 1, s, s, generator=g)
    target = torch.randn(b, c, 1, s, s, generator=g)
    reference_latents = torch.randn(b, c, s, s, generator=g)
    clip = torch.randn(b, 1, unet["cross_attention_dim"], generator=g)
    pose = torch.rand(b, 3, 1, px, px, generator=g)
    timesteps = torch.randint(0, 1000, (b,), generator=g)
    return tuple(v.to(device) for v in (noisy, target, reference_latents, clip, pose, timesteps))


def build_step(args: argparse.Namespace) -> tuple[Callable[[], None], int]:
    unet2d, unet3d, pose_guider_cls, control = import_moore(check_moore_src(args.moore_src))
    device = torch.device(args.device)
    unet = json.loads(args.unet)
    guider = json.loads(args.pose_guider)
    torch.manual_seed(0)
    reference_unet = unet2d.from_config(unet).to(device)
    denoising_unet = unet3d.from_config(
        to_3d(unet), use_motion_module=False, unet_use_temporal_attention=False
    ).to(device)
    pose_guider = pose_guider_cls(
        conditioning_embedding_channels=unet["block_out_channels"][0],
        block_out_channels=guider["block_channels"],
    ).to(device)
    # train_stage_1.py's trainable set: all but the ReferenceNet's last up block
    for name, param in reference_unet.named_parameters():
        param.requires_grad_("up_blocks.3" not in name)
    writer = control(reference_unet, do_classifier_free_guidance=False, mode="write", fusion_blocks="full")
    reader = control(denoising_unet, do_classifier_free_guidance=False, mode="read", fusion_blocks="full")
    params = [
        p for m in (reference_unet, denoising_unet, pose_guider) for p in m.parameters() if p.requires_grad
    ]
    optimizer = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)

    noisy, target, reference_latents, clip, pose, timesteps = stage1_inputs(
        unet, args.batch, args.latent_size, args.pixel_size, device
    )

    # Moore's default bank dtype is fp16, its training precision; under --bf16 the bank takes the compute
    # dtype (an fp16 bank inside bf16 autocast fails in torch.cat), as the default does in fp16 training.
    bank_dtype = torch.bfloat16 if args.bf16 else torch.float16

    def step() -> None:
        with autocast(device, args.bf16):
            pose_fea = pose_guider(pose)
            zero = torch.zeros_like(timesteps)
            reference_unet(reference_latents, zero, encoder_hidden_states=clip, return_dict=False)
            reader.update(writer, dtype=bank_dtype)
            pred = denoising_unet(noisy, timesteps, pose_cond_fea=pose_fea, encoder_hidden_states=clip).sample
        loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
        loss.repeat(args.batch).mean().item()  # train_loss += avg_loss.item()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        reader.clear()
        writer.clear()

    return step, sum(p.numel() for m in (reference_unet, denoising_unet, pose_guider) for p in m.parameters())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moore-src", required=True, help="root of a Moore-AnimateAnyone checkout")
    parser.add_argument("--unet", required=True, help="JSON: the diffusers UNet2DConditionModel config")
    parser.add_argument("--pose-guider", required=True, help='JSON: {"block_channels": [...]}')
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--latent-size", type=int, required=True)
    parser.add_argument("--pixel-size", type=int, required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    step, n_params = build_step(args)
    result = time_step(step, device, args.steps) | {"params": n_params}
    import diffusers

    result["diffusers"] = diffusers.__version__
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
