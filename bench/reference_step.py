"""Our training step against the reference code's step style, side by side in one run, same networks and batch.

The networks are the same objects in every column (the experiment's model, random weights), so what differs is
the step around them, as the reference training scripts write it (read from Moore-AnimateAnyone `train_stage_1.py`
and DynamiCrafter `lvdm/models/ddpm3d.py`, reimplemented here, not copied):

- reference, Animate Anyone (Moore): the frozen VAE and CLIP run every step, noise/timesteps/dropout from the
  global RNG, one dropout draw per batch, the CLIP inputs gathered in a Python loop over samples, the loss
  gathered and read on the host (`avg_loss.item()`) every step;
- reference, DynamiCrafter (lvdm): the VAE encodes frame by frame (`perframe_ae`), the empty prompt is encoded
  again every step, dropout masks from the global RNG, the loss dict read on the host for the progress bar;
- ours: `training_step` of our LightningModule (per-sample counter-based draws, whole-batch encodes, the empty
  prompt encoded once, no host reads);
- ours, cached: the same step from a latent cache's features (src.data.cache): no VAE or encoders in the step.

Each: forward + backward + AdamW step, fp32 (or `--bf16` autocast), `--steps` timed after 2 warm-up steps.

    python bench/reference_step.py [--system aa|dc|both] [--device cuda] [--batch 4] [--steps 10] [--bf16]

Prints ms per step per column and the ratios (reference / ours: > 1 means ours is faster).

With `--moore-src PATH` (a Moore-AnimateAnyone checkout the user fetched; never copied here) it times Moore's
own stage-1 step instead, built from its classes at our sizes, against ours; `--dynamicrafter-src PATH` does
the same with the DynamiCrafter release's lvdm UNet (bench/official_compare.py):

    python bench/reference_step.py --moore-src /tmp/moore_src --official-pythonpath /tmp/moore_site \
        [--dynamicrafter-src /tmp/dc_src] [--size demo|real] [--device cuda] [--batch 4] [--steps 5] [--bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import table  # noqa: E402
from src.models.keyed_dropout import bind_dropout_draws  # noqa: E402

EXPERIMENTS = {"aa": "animate_anyone_demo", "dc": "dynamicrafter_demo"}


def build_module(
    system: str,
    device: torch.device,
    overrides: list[str],
    experiment: str | None = None,
    parts: dict[str, dict] | None = None,
):
    """The experiment's first-stage module (the demo's by default), with `parts` (config key -> config node)
    replacing model parts, e.g. random real-size networks where the experiment would read weight files. Built
    with its parameters created on `device` where the constructors allow (a real-size UNet initialises in about a
    second on a GPU, tens of seconds on the host)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from src.config import register_resolvers, stage_config

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("train", overrides=[f"experiment={experiment or EXPERIMENTS[system]}", *overrides])
    stage = next(iter(cfg.stages))
    cfg = stage_config(cfg, stage)
    for key, node in (parts or {}).items():
        OmegaConf.update(cfg, key, node, merge=False)
    torch.manual_seed(0)
    try:
        with torch.device(device):
            module = instantiate(cfg.model, stage=stage, seed=0)
    except Exception:  # noqa: BLE001 - a constructor made a host tensor it then used on the host
        torch.manual_seed(0)
        module = instantiate(cfg.model, stage=stage, seed=0)
    return module.to(device), cfg


def random_batch(system: str, module, cfg, batch: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    h, w = cfg.data.size
    t = cfg.data.num_frames
    out: dict = {
        "sample_index": torch.arange(batch),
        "first_sample_index": 0,
        "skipped": [{} for _ in range(batch)],
    }
    if system == "aa":
        out["pixel_values"] = torch.rand(batch, 3, t, h, w, generator=g) * 2 - 1
        out["pose"] = torch.rand(batch, 3, t, h, w, generator=g)
        out["reference"] = torch.rand(batch, 3, h, w, generator=g) * 2 - 1
    else:
        out["video"] = torch.rand(batch, 3, t, h, w, generator=g) * 2 - 1
        out["caption"] = [f"a red star moves left over a desert {i}" for i in range(batch)]
        out["frame_stride"] = torch.full((batch,), 2, dtype=torch.int64)
        out["fps"] = torch.full((batch,), 4.0)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in out.items()}


# ------------------------------------------------------------------------------------ reference-style steps
def moore_style_loss(module, batch: dict, host_losses: list[float]) -> torch.Tensor:
    """Moore-AnimateAnyone's stage-1 step around our networks (see the module docstring)."""
    pixels, pose, reference = batch["pixel_values"], batch["pose"], batch["reference"]
    b = pixels.shape[0]
    with torch.no_grad():
        latents = module.encode_video(pixels)
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, module.objective.num_timesteps, (b,), device=latents.device)
    uncond_fwd = random.random() < module.cond_drop_prob  # one draw for the whole batch
    clip_images = []
    for i in range(b):  # Moore gathers the CLIP inputs per sample
        clip_images.append(torch.zeros_like(reference[i]) if uncond_fwd else reference[i])
    with torch.no_grad():
        reference_latents = module.codec.encode(reference)
        clip_embeds = module.image_encoder(torch.stack(clip_images))
    noisy = module.objective.add_noise(latents, noise, timesteps)
    use_reference = torch.zeros(b, dtype=torch.bool, device=latents.device) if uncond_fwd else None
    prediction = module.net(
        noisy, timesteps, clip_embeds, reference_latents, pose, use_reference=use_reference
    )
    loss = F.mse_loss(prediction.float(), module.objective.target(latents, noise, timesteps).float())
    host_losses.append(loss.detach().repeat(b).mean().item())  # their train_loss += avg_loss.item()
    return loss


def lvdm_style_loss(module, batch: dict, host_losses: list[float]) -> torch.Tensor:
    """DynamiCrafter's (lvdm) step around our networks (see the module docstring)."""
    bind_dropout_draws(module.net, None, masks="global")  # the release's nn.Dropout: global-RNG masks
    video = batch["video"]
    b, _, t = video.shape[:3]
    with torch.no_grad():
        frames = [module.codec.encode(video[:, :, i]) for i in range(t)]  # perframe_ae
        latents = torch.stack(frames, dim=2)
        text = module.encode_text(list(batch["caption"]))
        null_prompt = module.encode_text([""])  # encoded again every step
    r = torch.rand(b, device=video.device)
    p = module.uncond_prob
    prompt_mask = (r < 2 * p)[:, None, None]
    input_mask = 1 - ((r >= p) & (r < 3 * p)).float()[:, None, None, None]
    text = torch.where(prompt_mask, null_prompt, text)
    index = torch.randint(0, t, (1,)).item()  # the release draws one condition frame index for the batch
    with torch.no_grad():
        image = module.encode_image(video[:, :, index] * input_mask)
    context = module.net.context(text, image)
    concat = latents[:, :, index : index + 1].expand_as(latents)
    timesteps = torch.randint(0, module.schedule.num_timesteps, (b,), device=video.device)
    clean = module.schedule.rescale_latents(latents, timesteps)
    noise = torch.randn_like(clean)
    noisy = module.schedule.add_noise(clean, noise, timesteps)
    fs = module.fs_values(b, video.device, batch["frame_stride"], batch["fps"])
    prediction = module.net(noisy, timesteps, concat, context, fs)
    loss = F.mse_loss(prediction.float(), module.schedule.target(clean, noise, timesteps).float())
    host_losses.append(loss.item())  # log_dict(..., prog_bar=True) reads it every step
    return loss


# ------------------------------------------------------------------------------------------------ timing
def time_steps(loss_fn, params: list, device: torch.device, steps: int, bf16: bool) -> float:
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def one() -> None:
        with autocast:
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1e3


def measure(
    system: str,
    device: str = "cpu",
    batch: int = 2,
    steps: int = 5,
    bf16: bool = False,
    overrides: list[str] | None = None,
    experiment: str | None = None,
    parts: dict[str, dict] | None = None,
) -> dict:
    """ms per step: reference style, ours, ours from the cache; the ratios reference / ours; on a GPU, each
    column's peak memory (GiB). `experiment`/`parts`: see `build_module`."""
    dev = torch.device(device)
    module, cfg = build_module(system, dev, list(overrides or []), experiment, parts)
    module.train()
    data = random_batch(system, module, cfg, batch, dev)
    with torch.no_grad():
        features = module.frozen_features(data)
    cached = {k: v for k, v in data.items() if k not in module.frozen_inputs} | features
    params = [p for p in module.parameters() if p.requires_grad]
    host: list[float] = []
    reference_fn = moore_style_loss if system == "aa" else lvdm_style_loss
    columns = {
        "reference": lambda: reference_fn(module, data, host),
        "ours": lambda: module.training_step(data, 0),
        "ours_cached": lambda: module.training_step(cached, 0),
    }
    results: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer warns once per call
        for name, loss_fn in columns.items():
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            results[f"{name}_ms"] = time_steps(loss_fn, params, dev, steps, bf16)
            if dev.type == "cuda":
                results[f"{name}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    results["ours_speedup"] = results["reference_ms"] / results["ours_ms"]
    results["cached_speedup"] = results["reference_ms"] / results["ours_cached_ms"]
    results["cache_vs_ours"] = results["ours_ms"] / results["ours_cached_ms"]
    results["cached_step_time_saved"] = 1 - results["ours_cached_ms"] / results["ours_ms"]
    size = f"{cfg.data.num_frames}x{cfg.data.size[0]}x{cfg.data.size[1]}"
    return {"system": system, "experiment": experiment or EXPERIMENTS[system], "batch": batch, "frames_hw": size,
            "device": device, "bf16": bf16, **results}  # fmt: skip


def rows(results: list[dict]) -> list[list[str]]:
    out = [
        [
            "system",
            "batch",
            "reference ms",
            "ours ms",
            "ours cached ms",
            "ref/ours",
            "ref/cached",
            "ours/cached",
        ]
    ]
    for r in results:
        out.append([r["experiment"], str(r["batch"]), f"{r['reference_ms']:.1f}", f"{r['ours_ms']:.1f}",
                    f"{r['ours_cached_ms']:.1f}", f"{r['ours_speedup']:.2f}x", f"{r['cached_speedup']:.2f}x",
                    f"{r['cache_vs_ours']:.2f}x"])  # fmt: skip
    return out


def official_main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[dict]:
    """--moore-src / --dynamicrafter-src: official steps against ours (bench/official_compare.py)."""
    from bench.official_compare import compare_dynamicrafter, compare_moore
    from bench.official_compare import rows as official_rows
    from bench.official_step_dynamicrafter import check_dynamicrafter_src
    from bench.official_step_moore import check_moore_src

    try:  # before building anything
        if args.moore_src or not args.dynamicrafter_src:
            check_moore_src(args.moore_src)
        if args.dynamicrafter_src:
            check_dynamicrafter_src(args.dynamicrafter_src)
    except ValueError as err:
        parser.error(str(err))
    common = (args.official_pythonpath, args.size, args.batch, args.steps, args.device, args.bf16)
    results = []
    if args.moore_src:
        results.append(compare_moore(args.moore_src, *common))
    if args.dynamicrafter_src:
        results.append(compare_dynamicrafter(args.dynamicrafter_src, *common, args.overrides))
    print(table(official_rows(results)))
    return results


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", choices=["aa", "dc", "both"], default="both")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast over fp32 weights")
    parser.add_argument("--moore-src", help="a Moore-AnimateAnyone checkout's root: time its stage-1 step")
    parser.add_argument(
        "--official-pythonpath",
        help="first on the official side's PYTHONPATH (a dir with diffusers==0.24.0 transformers==4.30.2)",
    )
    parser.add_argument(
        "--dynamicrafter-src", help="a DynamiCrafter checkout's root: time its own lvdm UNet's step"
    )
    parser.add_argument("--size", choices=["demo", "real"], default="demo", help="with *-src: network size")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the experiment (e.g. model sizes)")
    args = parser.parse_args(argv)
    if args.moore_src or args.dynamicrafter_src or args.official_pythonpath:
        return official_main(parser, args)
    systems = ["aa", "dc"] if args.system == "both" else [args.system]
    results = [measure(s, args.device, args.batch, args.steps, args.bf16, args.overrides) for s in systems]
    print(table(rows(results)))
    return results


if __name__ == "__main__":
    main()
