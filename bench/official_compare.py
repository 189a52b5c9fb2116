"""Our training steps against the official code's own, same sizes and batch, one command.

Animate Anyone stage 1 against Moore-AnimateAnyone (`--moore-src`), DynamiCrafter's 3D UNet against the
release's `lvdm` UNetModel (`--dynamicrafter-src`). Ours runs in this process; the official side in a child
(`bench/official_step_moore.py` / `official_step_dynamicrafter.py`, see why there) from the checkout the user
gives, with `--official-pythonpath` first on its PYTHONPATH. Both steps take the same
random inputs (latents, timesteps, CLIP embedding, reference latents, pose image), run forward, MSE loss,
backward, grad-norm clip 1.0 and AdamW, and are timed by the same helper. Each side keeps its own choices:
ours the fused AdamW and bank dtype of our configs, Moore's the plain AdamW and fp16 reference bank of its
script.

Sizes: `demo` = our CPU demos (Animate Anyone: conf/model/animate_anyone_tiny.yaml, 64 px, 2x pixel-shuffle
latents; DynamiCrafter: dynamicrafter_tiny, 8 frames of 8x8x48 latents, 16 image tokens per frame as the
release hard-codes); `real` = the SD1.5 UNet pair + Pose Guider at 768 px / DynamiCrafter 512 (16x40x64
latents), for a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
from bench.official_step_moore import check_moore_src, stage1_inputs  # noqa: E402
from bench.step_timing import autocast, time_step  # noqa: E402

UNET_KEYS = (
    "sample_size", "in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
    "layers_per_block", "cross_attention_dim", "attention_head_dim", "norm_num_groups",
)  # fmt: skip
SIZES = {"demo": {"pixel_size": 64, "factor": 2}, "real": {"pixel_size": 768, "factor": 8}}
# DynamiCrafter: experiment and (frames, latent h, latent w) per size
DC_SIZES = {"demo": ("dynamicrafter_demo", (8, 8, 8)), "real": ("dynamicrafter_512", (16, 40, 64))}
DC_OURS_ONLY = ("text_context_len", "image_tokens_per_frame", "temporal_conv_dropout")


def compose_experiment(name: str, overrides: list[str] | None = None):
    from hydra import compose, initialize_config_dir

    from src.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("train", overrides=[f"experiment={name}", *(overrides or [])])


def our_net(size: str):
    """(net, UNet config, pose guider block channels) of our stage-1 network at `size`, random weights."""
    torch.manual_seed(0)
    if size == "real":
        from bench.peak_memory import aa_net

        net = aa_net("spatial", False)
        guider = [16, 32, 96, 256]
    else:
        from hydra.utils import instantiate

        cfg = compose_experiment("animate_anyone_demo")
        net = instantiate(cfg.model.net)
        net.set_trainable("spatial")
        guider = list(cfg.model.net.pose_guider.block_channels)
    unet = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in net.reference_unet.config.items()
        if k in UNET_KEYS
    }
    return net, unet, guider


def time_ours(net, unet: dict, size: str, batch: int, steps: int, device: torch.device, bf16: bool) -> dict:
    px = SIZES[size]["pixel_size"]
    net = net.to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=1e-2, fused=True)
    noisy, target, reference_latents, clip, pose, timesteps = stage1_inputs(
        unet, batch, px // SIZES[size]["factor"], px, device
    )

    def step() -> None:
        with autocast(device, bf16):
            pred = net(noisy, timesteps, clip, reference_latents, pose)
        F.mse_loss(pred.float(), target.float()).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return time_step(step, device, steps) | {"params": sum(p.numel() for p in net.parameters())}


def time_official(
    moore_src: Path, pythonpath: str | None, unet: dict, guider: list[int], size: str, batch: int, steps: int,
    device: str, bf16: bool,
) -> dict:  # fmt: skip
    px = SIZES[size]["pixel_size"]
    cmd = [
        "bench.official_step_moore", "--moore-src", str(moore_src),
        "--unet", json.dumps(unet), "--pose-guider", json.dumps({"block_channels": guider}),
        "--batch", str(batch), "--latent-size", str(px // SIZES[size]["factor"]), "--pixel-size", str(px),
        "--steps", str(steps), "--device", device, *(["--bf16"] if bf16 else []),
    ]  # fmt: skip
    return run_child(cmd, pythonpath)


def compare_moore(
    moore_src: str | None, pythonpath: str | None, size: str, batch: int, steps: int, device: str, bf16: bool
) -> dict:
    """ms per step and peak memory of both sides, and ours' speedup (official ms / ours ms)."""
    root = check_moore_src(moore_src)  # fail before building anything
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    net, unet, guider = our_net(size)
    ours = time_ours(net, unet, size, batch, steps, dev, bf16)
    del net
    official = time_official(root, pythonpath, unet, guider, size, batch, steps, device, bf16)
    return summary("aa stage 1 (Moore)", size, batch, device, bf16, ours, official)


def our_dc_unet(size: str, batch: int, device: torch.device, overrides: list[str] | None = None):
    """Our DynamiCrafter UNet at `size` (16 image tokens per frame, as the release), the release's params."""
    from omegaconf import OmegaConf

    from src.models.dynamicrafter.unet import DynamiCrafterUNet
    from src.models.keyed_dropout import bind_dropout_draws
    from src.trainers.sample_draws import SampleDraws

    cfg = compose_experiment(DC_SIZES[size][0], overrides)
    params = OmegaConf.to_container(cfg.model.net.unet, resolve=True)
    params.pop("_target_")
    params["image_tokens_per_frame"] = 16
    torch.manual_seed(0)
    unet = DynamiCrafterUNet(**params).to(device).train()
    # the trainer's per-sample dropout masks (model.dropout_masks), as a training step draws them
    masks = str(cfg.model.get("dropout_masks", "keyed"))
    bind_dropout_draws(unet, SampleDraws(int(cfg.seed), torch.arange(batch, device=device)), masks)
    return unet, {k: v for k, v in params.items() if k not in DC_OURS_ONLY}


def time_our_dc(
    size: str, batch: int, shape: tuple, steps: int, dev: torch.device, bf16: bool, overrides=None
):
    from bench.official_step_dynamicrafter import make_inputs

    unet, params = our_dc_unet(size, batch, dev, overrides)
    x, timesteps, context, fs, target = make_inputs(params, batch, *shape, dev)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5, fused=True)

    def step() -> None:
        with autocast(dev, bf16):
            pred = unet(x, timesteps, context, fs)
        F.mse_loss(pred.float(), target.float()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    n_params = sum(p.numel() for p in unet.parameters())
    return time_step(step, dev, steps) | {"params": n_params}, params


def compare_dynamicrafter(
    dc_src: str | None, pythonpath: str | None, size: str, batch: int, steps: int, device: str, bf16: bool,
    overrides: list[str] | None = None,
) -> dict:  # fmt: skip
    """The same as compare_moore for DynamiCrafter's 3D UNet (forward, MSE, backward, AdamW); `overrides` are
    Hydra overrides of our experiment (e.g. model.dropout_masks=global)."""
    from bench.official_step_dynamicrafter import check_dynamicrafter_src

    root = check_dynamicrafter_src(dc_src)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    t, h, w = DC_SIZES[size][1]
    ours, params = time_our_dc(size, batch, (t, h, w), steps, dev, bf16, overrides)
    cmd = [
        "bench.official_step_dynamicrafter", "--dynamicrafter-src", str(root), "--unet", json.dumps(params),
        "--batch", str(batch), "--frames", str(t), "--latent-h", str(h), "--latent-w", str(w),
        "--steps", str(steps), "--device", device, *(["--bf16"] if bf16 else []),
    ]  # fmt: skip
    official = run_child(cmd, pythonpath)
    return summary("dc UNet (lvdm)", size, batch, device, bf16, ours, official)


def run_child(cmd: list[str], pythonpath: str | None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"The official step ({cmd[0]}) failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(system: str, size: str, batch: int, device: str, bf16: bool, ours: dict, official: dict) -> dict:
    out = {"system": system, "size": size, "batch": batch, "device": device, "bf16": bf16}
    out |= {"ours": ours, "official": official, "speedup": official["ms"] / ours["ms"]}
    if ours["peak_gib"] is not None and official["peak_gib"] is not None:
        out["memory_ratio"] = ours["peak_gib"] / official["peak_gib"]
    return out


def rows(results: list[dict]) -> list[list[str]]:
    def gib(v):
        return "-" if v is None else f"{v:.2f}"

    head = ["system", "size", "batch", "params official/ours"]
    out = [head + ["official ms", "ours ms", "official/ours", "official GiB", "ours GiB"]]
    for r in results:
        ours, official = r["ours"], r["official"]
        out.append([
            r["system"], r["size"], str(r["batch"]),
            f"{official['params'] / 1e6:.2f}M/{ours['params'] / 1e6:.2f}M",
            f"{official['ms']:.1f}", f"{ours['ms']:.1f}",
            f"{r['speedup']:.2f}x", gib(official["peak_gib"]), gib(ours["peak_gib"]),
        ])  # fmt: skip
    return out
