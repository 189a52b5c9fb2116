"""Peak GPU memory of one training step per stage at the papers' settings, with and without activation
checkpointing: Animate Anyone stage 1 (768x768 single frames, batch 4 per GPU), stage 2 (24 frames at 512x512,
batch 1), DynamiCrafter 512 (16 frames at 320x512, batch 2). Full-size architectures, random weights (no files
needed), bf16 autocast over fp32 weights, AdamW on the trainable parameters; frozen encoders are left out
(their inputs are random latents/embeddings), so the numbers are the denoiser's share.

    python bench/peak_memory.py [--stages aa_spatial aa_temporal dc_512] [--steps 2]

Writes bench/results/peak_memory_<gpu>_<time>.json and prints checkpointed/plain ratios side by side.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import require_cuda, table, write_results  # noqa: E402

# sd-image-variations / SD-1.5 UNet (what Animate Anyone's UNets start from); CLIP image embedding = 768.
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768,
    attention_head_dim=8,
)


# Small stand-ins with the same classes, for `bench/gpu_suite.py --smoke` on a CPU.
TINY_UNET = dict(
    SD15_UNET, sample_size=8, block_out_channels=(32, 64, 64, 64), cross_attention_dim=32,
    layers_per_block=1,
)


def aa_net(stage: str, checkpointing: bool, unet: dict | None = None):
    from diffusers import UNet2DConditionModel

    from src.models.animate_anyone import AnimateAnyoneNet
    from src.models.motion import build_motion_adapter
    from src.models.pose_guider import PoseGuider
    from src.trainers.performance import set_activation_checkpointing

    unet = unet or SD15_UNET
    channels = list(unet["block_out_channels"])
    guider = PoseGuider(
        in_channels=3, injection="conv_in", block_channels=[16, 32, 96, 256], out_channels=channels[0]
    )
    net = AnimateAnyoneNet(UNet2DConditionModel(**unet), UNet2DConditionModel(**unet), guider)
    if stage == "temporal":
        net.enable_temporal(build_motion_adapter(channels, unet["layers_per_block"]), zero_proj_out=False)
    net.set_trainable(stage)
    set_activation_checkpointing(net, checkpointing)
    return net


def aa_step(
    stage: str, checkpointing: bool, device, shape: tuple[int, int, int] | None = None, unet: dict | None = None
) -> tuple[Callable[[], torch.Tensor], list]:
    """`shape` = (batch, frames, pixel size); the papers' (4, 1, 768) / (1, 24, 512) by default."""
    unet = unet or SD15_UNET
    net = aa_net(stage, checkpointing, unet).to(device)
    b, t, size = shape or ((4, 1, 768) if stage == "spatial" else (1, 24, 512))
    s = size // 8
    dim = unet["cross_attention_dim"]

    def step() -> torch.Tensor:
        noisy = torch.randn(b, 4, t, s, s, device=device)
        pred = net(
            noisy,
            torch.randint(0, 1000, (b,), device=device),
            torch.randn(b, 1, dim, device=device),
            torch.randn(b, 4, s, s, device=device),
            torch.rand(b, 3, t, size, size, device=device),
        )
        return (pred.float() - noisy).pow(2).mean()

    return step, [p for p in net.parameters() if p.requires_grad]


def dc_step(
    checkpointing: bool, device, experiment: str = "dynamicrafter_512", shape: tuple[int, int, int, int] | None = None
) -> tuple[Callable[[], torch.Tensor], list]:
    """`shape` = (batch, frames, latent h, latent w); DynamiCrafter 512's (2, 16, 40, 64) by default."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from src.config import register_resolvers
    from src.models.keyed_dropout import bind_dropout_draws
    from src.trainers.sample_draws import SampleDraws

    register_resolvers()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    net = instantiate(cfg.model.net).to(device)
    net.set_trainable(False)
    net.set_gradient_checkpointing(checkpointing)
    b, t, h, w = shape or (2, 16, 320 // 8, 512 // 8)
    c = net.unet.out_channels
    emb = net.image_proj.proj_in.in_features
    # the trainer's per-sample dropout masks (model.dropout_masks), as a training step draws them
    bind_dropout_draws(net, SampleDraws(int(cfg.seed), torch.arange(b, device=device)), str(cfg.model.get("dropout_masks", "keyed")))
    text_dim = cfg.model.net.unet.context_dim

    def step() -> torch.Tensor:
        noisy = torch.randn(b, c, t, h, w, device=device)
        cond = torch.randn(b, c, 1, h, w, device=device).expand(-1, -1, t, -1, -1)
        context = net.context(torch.randn(b, 77, text_dim, device=device), torch.randn(b, 257, emb, device=device))
        pred = net(noisy, torch.randint(0, 1000, (b,), device=device), cond, context, torch.full((b,), 24, device=device))
        return (pred.float() - noisy).pow(2).mean()

    return step, [p for p in net.parameters() if p.requires_grad]


def measure(build: Callable[[], tuple[Callable[[], torch.Tensor], list]], steps: int) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        step, params = build()
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        times = []
        for _ in range(steps):
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = step()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return {
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            "step_s": min(times),
            "trainable_params": sum(p.numel() for p in params),
        }
    except torch.cuda.OutOfMemoryError:
        return {"peak_gib": None, "oom": True}
    finally:
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", nargs="+", default=["aa_spatial", "aa_temporal", "dc_512"])
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    device = require_cuda("bench/peak_memory.py")
    builders = {
        "aa_spatial": lambda ck: aa_step("spatial", ck, device),
        "aa_temporal": lambda ck: aa_step("temporal", ck, device),
        "dc_512": lambda ck: dc_step(ck, device),
    }
    results: dict[str, dict] = {}
    rows = [["stage", "plain GiB", "checkpointed GiB", "ratio", "plain s/step", "checkpointed s/step"]]
    for stage in args.stages:
        plain = measure(functools.partial(builders[stage], False), args.steps)
        ckpt = measure(functools.partial(builders[stage], True), args.steps)
        results[stage] = {"plain": plain, "checkpointed": ckpt}
        ratio = (
            f"{ckpt['peak_gib'] / plain['peak_gib']:.2f}" if plain["peak_gib"] and ckpt["peak_gib"] else "-"
        )
        fmt = lambda r, k: "OOM" if r.get("oom") else f"{r[k]:.2f}"  # noqa: E731
        rows.append(
            [
                stage,
                fmt(plain, "peak_gib"),
                fmt(ckpt, "peak_gib"),
                ratio,
                fmt(plain, "step_s"),
                fmt(ckpt, "step_s"),
            ]
        )
        print(table(rows), flush=True)
    path = write_results(
        "peak_memory",
        {"settings": {"steps": args.steps, "precision": "bf16 autocast, fp32 weights"}, "results": results},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
