"""Our Animate Anyone stage-1 step against Moore-AnimateAnyone's own, same sizes and batch, one command.

Ours runs in this process; Moore's runs in a child (`bench/official_step_moore.py`, see why there) from the
checkout given by `--moore-src`, with `--official-pythonpath` first on its PYTHONPATH. Both steps take the same
random inputs (latents, timesteps, CLIP embedding, reference latents, pose image), run forward, MSE loss,
backward, grad-norm clip 1.0 and AdamW, and are timed by the same helper. Each side keeps its own choices: ours
the fused AdamW and bank dtype of our configs, Moore's the plain AdamW and fp16 reference bank of its script.

Sizes: `demo` = conf/model/animate_anyone_tiny.yaml (our CPU demo: 64 px, 2x pixel-shuffle latents, batch 4);
`sd15` = the SD1.5 UNet pair + Pose Guider at 768 px, batch 4 (the paper's stage 1; for a GPU).
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
from bench.official_step_moore import autocast, check_moore_src, time_step  # noqa: E402

UNET_KEYS = (
    "sample_size", "in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
    "layers_per_block", "cross_attention_dim", "attention_head_dim", "norm_num_groups",
)  # fmt: skip
SIZES = {"demo": {"pixel_size": 64, "factor": 2}, "sd15": {"pixel_size": 768, "factor": 8}}


def our_net(size: str):
    """(net, UNet config, pose guider block channels) of our stage-1 network at `size`, random weights."""
    torch.manual_seed(0)
    if size == "sd15":
        from bench.peak_memory import aa_net

        net = aa_net("spatial", False)
        guider = [16, 32, 96, 256]
    else:
        from hydra import compose, initialize_config_dir
        from hydra.utils import instantiate

        from src.config import register_resolvers

        register_resolvers()
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            cfg = compose("train", overrides=["experiment=animate_anyone_demo"])
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
    s, c = px // SIZES[size]["factor"], unet["in_channels"]
    net = net.to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=1e-2, fused=True)
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(batch, c, 1, s, s, generator=g).to(device)
    target = torch.randn(batch, c, 1, s, s, generator=g).to(device)
    reference_latents = torch.randn(batch, c, s, s, generator=g).to(device)
    clip = torch.randn(batch, 1, unet["cross_attention_dim"], generator=g).to(device)
    pose = torch.rand(batch, 3, 1, px, px, generator=g).to(device)
    timesteps = torch.randint(0, 1000, (batch,), generator=g).to(device)

    def step() -> None:
        with autocast(device, bf16):
            pred = net(noisy, timesteps, clip, reference_latents, pose)
        F.mse_loss(pred.float(), target.float()).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return time_step(step, device, steps)


def time_official(
    moore_src: Path, pythonpath: str | None, unet: dict, guider: list[int], size: str, batch: int, steps: int,
    device: str, bf16: bool,
) -> dict:  # fmt: skip
    px = SIZES[size]["pixel_size"]
    cmd = [
        sys.executable, "-m", "bench.official_step_moore", "--moore-src", str(moore_src),
        "--unet", json.dumps(unet), "--pose-guider", json.dumps({"block_channels": guider}),
        "--batch", str(batch), "--latent-size", str(px // SIZES[size]["factor"]), "--pixel-size", str(px),
        "--steps", str(steps), "--device", device, *(["--bf16"] if bf16 else []),
    ]  # fmt: skip
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"The official Moore step failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    out = {"size": size, "batch": batch, "device": device, "bf16": bf16, "ours": ours, "official": official}
    out["speedup"] = official["ms"] / ours["ms"]
    if ours["peak_gib"] is not None and official["peak_gib"] is not None:
        out["memory_ratio"] = ours["peak_gib"] / official["peak_gib"]
    return out


def rows(result: dict) -> list[list[str]]:
    def gib(v):
        return "-" if v is None else f"{v:.2f}"

    ours, official = result["ours"], result["official"]
    return [
        ["system", "size", "batch", "official ms", "ours ms", "official/ours", "official GiB", "ours GiB"],
        [
            "aa stage 1 (Moore)", result["size"], str(result["batch"]), f"{official['ms']:.1f}",
            f"{ours['ms']:.1f}", f"{result['speedup']:.2f}x", gib(official["peak_gib"]), gib(ours["peak_gib"]),
        ],
    ]  # fmt: skip
