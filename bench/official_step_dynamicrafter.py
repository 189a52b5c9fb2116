"""DynamiCrafter's own 3D UNet (`lvdm`) training step, timed from the user's checkout (never copied here).

Run by `bench/reference_step.py --dynamicrafter-src PATH` in a child process (as the Moore side is): the
checkout's top-level `lvdm` and `utils` packages go first on sys.path here only. The release builds the whole
LatentVisualDiffusion (VAE, OpenCLIP towers, resampler) from a YAML; the part that trains and costs is
`lvdm.modules.networks.openaimodel3d.UNetModel`, so that is what is timed: forward(x, t, context, fs), MSE,
backward, AdamW, zero_grad, with the same inputs and sizes as our UNet gets in the parent. Its temporal-conv
dropout is the release's `nn.Dropout` (global-RNG masks). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.step_timing import autocast, check_checkout, time_step

DC_FILES = ("lvdm/modules/networks/openaimodel3d.py", "lvdm/modules/attention.py", "utils/utils.py")
DC_URL = "https://github.com/Doubiiu/DynamiCrafter"
TEXT_TOKENS = 77  # the release hard-codes 77 text tokens and 16 image tokens per frame in UNetModel.forward
IMAGE_TOKENS_PER_FRAME = 16


def check_dynamicrafter_src(path: str | Path | None) -> Path:
    """The checkout's root, or a ValueError naming what is missing and how to get it."""
    return check_checkout(path, "--dynamicrafter-src", "DynamiCrafter", DC_URL, DC_FILES)


def build_step(args: argparse.Namespace):
    root = check_dynamicrafter_src(args.dynamicrafter_src)
    sys.path.insert(0, str(root))
    module = importlib.import_module("lvdm.modules.networks.openaimodel3d")
    if not Path(module.__file__).resolve().is_relative_to(root):  # lvdm has no __init__: check the module
        raise SystemExit(f"lvdm was imported from {module.__file__}, not from {root}.")
    unet_cls = module.UNetModel
    device = torch.device(args.device)
    params = json.loads(args.unet)
    torch.manual_seed(0)
    unet = unet_cls(**params).to(device).train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    inputs = make_inputs(params, args.batch, args.frames, args.latent_h, args.latent_w, device)

    step_params = sum(p.numel() for p in unet.parameters())

    def step() -> None:
        x, timesteps, context, fs, target = inputs
        with autocast(device, args.bf16):
            pred = unet(x, timesteps, context, fs=fs)
        F.mse_loss(pred.float(), target.float()).backward()
        optimizer.step()
        optimizer.zero_grad()

    return step, step_params


def make_inputs(params: dict, b: int, t: int, h: int, w: int, device: torch.device) -> tuple:
    """x (noisy + condition latents), timesteps, context (77 text + 16 per frame image tokens), fs, target."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, params["in_channels"], t, h, w, generator=g)
    context = torch.randn(b, TEXT_TOKENS + IMAGE_TOKENS_PER_FRAME * t, params["context_dim"], generator=g)
    target = torch.randn(b, params["out_channels"], t, h, w, generator=g)
    timesteps = torch.randint(0, 1000, (b,), generator=g)
    fs = torch.full((b,), 3, dtype=torch.long)
    return tuple(v.to(device) for v in (x, timesteps, context, fs, target))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dynamicrafter-src", required=True, help="root of a DynamiCrafter checkout")
    parser.add_argument(
        "--unet", required=True, help="JSON: the UNetModel params (the YAML's unet_config.params)"
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, required=True)
    parser.add_argument("--latent-h", type=int, required=True)
    parser.add_argument("--latent-w", type=int, required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args(argv)
    step, n_params = build_step(args)
    result = time_step(step, torch.device(args.device), args.steps) | {"params": n_params}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
