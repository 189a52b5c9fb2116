"""Per-step cost of the EMA update: one lerp per parameter (the previous loop) vs the fused foreach update
(`EMACallback.update`), side by side in one run, on the parameter list of an SD1.5 UNet (diffusers
UNet2DConditionModel: same tensors as SD1.5; `--full` for its real widths, default a narrow copy that fits a CPU).

    python bench/ema_step.py [--device cuda] [--full] [--repeats 20]

Prints ms per update for each and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from src.trainers.ema import EMACallback  # noqa: E402


def sd15_unet(full: bool) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    if full:
        return UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)  # SD1.5's config
    return UNet2DConditionModel(
        block_out_channels=(32, 64, 64, 64), cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8
    )


def per_parameter_loop(ema: EMACallback, module: torch.nn.Module) -> None:
    """The previous update: one lerp_ (and one cast) per trainable parameter."""
    d = ema.decay_now()
    params = ema.trainable(module)
    with torch.no_grad():
        for name, shadow in ema.shadow.items():
            shadow.lerp_(params[name].detach().to(shadow.device, torch.float32), 1.0 - d)
    ema.num_updates += 1


def ms_per_call(fn, device: torch.device, repeats: int) -> float:
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


def measure(device: str = "cpu", full: bool = False, repeats: int = 20, dtype: torch.dtype = torch.float32) -> dict:
    dev = torch.device(device)
    module = sd15_unet(full).to(dev, dtype)
    ema = EMACallback(decay=0.9999)
    ema.start(module, step=0)
    loop = ms_per_call(lambda: per_parameter_loop(ema, module), dev, repeats)
    fused = ms_per_call(lambda: ema.update(module), dev, repeats)
    return {
        "tensors": len(ema.shadow),
        "params_m": sum(t.numel() for t in ema.shadow.values()) / 1e6,
        "per_parameter_ms": loop,
        "foreach_ms": fused,
        "speedup": loop / fused,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--full", action="store_true", help="SD1.5's real widths (860M parameters)")
    parser.add_argument("--bf16", action="store_true", help="bf16 weights (the shadow stays fp32)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    r = measure(args.device, args.full, args.repeats, torch.bfloat16 if args.bf16 else torch.float32)
    print(
        f"EMA update on {args.device}, {r['tensors']} tensors, {r['params_m']:.1f}M parameters: "
        f"per-parameter loop {r['per_parameter_ms']:.2f} ms, foreach {r['foreach_ms']:.2f} ms ({r['speedup']:.2f}x)"
    )
    return r


if __name__ == "__main__":
    main()
