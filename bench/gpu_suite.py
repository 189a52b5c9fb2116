"""Every GPU measurement in one command (< 8 min on one H100/H200): one JSON file and one printed table.

1. `pytest -m gpu` (tests/gpu: DeepSpeed fits, SDPA kernel assertions), pass/fail counts.
2. Training steps of the real architectures with random weights (bench/peak_memory.py builders), bf16 autocast over
   fp32 weights, AdamW: Animate Anyone stage 1 (SD1.5 UNet pair + Pose Guider, 768^2, batch 4), stage 2 (24x512^2,
   batch 1), DynamiCrafter 512 (16x320x512, batch 2). Each from a baseline (SDPA flash, no activation checkpointing,
   eager) varied one switch at a time: SDPA math, checkpointing on, torch.compile on (`--full-grid`: all 8 combos).
   Step time, TFLOP/s, MFU (FLOPs of one baseline step counted by FlopCounterMode; MFU against
   src.trainers.speed_monitor's peak table) and peak memory.
3. EMA update per step: per-parameter loop vs fused foreach (bench/ema_step.py) on the SD1.5 UNet.
   Our training step vs the reference code's step style and vs our step from the latent cache
   (bench/reference_step.py; the demo experiments' networks, batch 8, bf16 autocast).
4. I3D feature throughput for FVD (clips/s, 16x224x224, random weights of the real network).
5. Loader throughput: Animate Anyone stage-1 samples/s through the real loader with 8 workers over generated
   shards, against the GPU's consumption (batch 4 / measured step time); goal: loader >= 2x.
6. Rerender at 512x512 (bench/rerender_keyframes.py, bench/rerender_propagation.py; issue 13's targets): seconds per
   key frame (SD1.5-shaped random models, fp16, 20 steps; < 3 s), per non-key frame (flow + propagation; < 0.3 s),
   peak memory (< 12 GB).

    python bench/gpu_suite.py [--out suite.json] [--skip-pytest] [--full-grid]
    python bench/gpu_suite.py --smoke        # tiny shapes on the CPU (CI runs this: tests/unit/test_gpu_suite.py)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import ema_step, reference_step  # noqa: E402
from bench.common import table  # noqa: E402
from bench.peak_memory import TINY_UNET, aa_step, dc_step  # noqa: E402
from src.trainers.performance import sdpa_backend_context  # noqa: E402
from src.trainers.speed_monitor import DEFAULT_PEAK_TFLOPS, peak_flops  # noqa: E402

BASELINE = {"sdpa": "flash", "checkpointing": False, "compile": False}
VARIANTS = [BASELINE, {**BASELINE, "sdpa": "math"}, {**BASELINE, "checkpointing": True}, {**BASELINE, "compile": True}]
FULL_GRID = [
    {"sdpa": s, "checkpointing": c, "compile": k} for s in ("flash", "math") for c in (False, True) for k in (False, True)
]


def _rerender_keyframes(smoke: bool) -> dict:
    from bench import rerender_keyframes

    return rerender_keyframes.measure(smoke, keys=2 if smoke else 4)


def _rerender_propagation(smoke: bool) -> dict:
    from bench import rerender_propagation

    args = ("cpu", 4, 32, 32, 3, 3, "dis") if smoke else ("cuda", 21, 512, 512, 10, 3, "raft")
    return rerender_propagation.measure(*args)


# Standalone benches run as sections of the suite: name -> measure(smoke) -> their report.
BENCHES: dict[str, Callable[[bool], dict]] = {
    "rerender_keyframes": _rerender_keyframes,
    "rerender_propagation": _rerender_propagation,
}


def configs(smoke: bool) -> dict[str, Callable[[bool, torch.device], tuple[Callable[[], torch.Tensor], list]]]:
    """name -> builder(checkpointing, device) of (step function returning the loss, trainable parameters)."""
    if smoke:
        return {
            "aa_stage1_64px_b1": lambda ck, d: aa_step("spatial", ck, d, (1, 1, 64), TINY_UNET),
            "aa_stage2_4x64px_b1": lambda ck, d: aa_step("temporal", ck, d, (1, 4, 64), TINY_UNET),
            "dc_tiny_8x8x8_b1": lambda ck, d: dc_step(ck, d, "dynamicrafter_demo", (1, 8, 8, 8)),
        }
    return {
        "aa_stage1_768px_b4": lambda ck, d: aa_step("spatial", ck, d),
        "aa_stage2_24x512px_b1": lambda ck, d: aa_step("temporal", ck, d),
        "dc_512_16x320x512_b2": lambda ck, d: dc_step(ck, d),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


def count_flops(build, device: torch.device) -> int:
    """FLOPs of one forward + backward of the baseline variant (the model FLOPs every variant is rated by)."""
    from torch.utils.flop_counter import FlopCounterMode

    step, _ = build(False, device)
    counter = FlopCounterMode(display=False)
    with counter, autocast(device), sdpa_backend_context("auto"):
        step().backward()
    return int(counter.get_total_flops())


def time_variant(build, variant: dict, device: torch.device, steps: int, flops: int, peak: float | None) -> dict:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        step, params = build(variant["checkpointing"], device)
        if variant["compile"]:
            step = torch.compile(step)
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        times = []
        warmup = 2 if device.type == "cuda" else 1  # compilation, allocator
        with sdpa_backend_context(variant["sdpa"]):
            for _ in range(steps + warmup):
                sync(device)
                start = time.perf_counter()
                with autocast(device):
                    loss = step()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                sync(device)
                times.append(time.perf_counter() - start)
        step_s = min(times[warmup:])
        result = {"step_s": step_s, "tflops": flops / step_s / 1e12, "mfu": flops / step_s / peak if peak else None}
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        return result
    except (RuntimeError, torch.cuda.OutOfMemoryError) as err:  # a kernel unavailable here, or OOM
        return {"error": str(err).splitlines()[0][:200]}
    finally:
        torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def run_pytest_gpu(smoke: bool) -> dict:
    if smoke:
        return {"skipped": "--smoke"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/gpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return {"returncode": proc.returncode, "summary": last}


def i3d_throughput(device: torch.device, smoke: bool) -> dict:
    """FVD feature extraction (the I3D extractor with its preprocessing, fp32 as FVD is computed), clips/s."""
    from src.eval.i3d import I3DFeatureExtractor, InceptionI3d

    extractor = I3DFeatureExtractor(InceptionI3d(num_classes=400)).to(device)
    b, t, size = (1, 9, 32) if smoke else (16, 16, 256)
    clips = torch.rand(b, t, 3, size, size, device=device)
    repeats = 1 if smoke else 5
    if not smoke:
        extractor(clips)  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        extractor(clips)
    sync(device)
    return {"clips_per_s": b * repeats / (time.perf_counter() - start), "clip": f"{t}x{size}x{size}", "batch": b}


def loader_throughput(smoke: bool, workers: int, gpu_samples_per_s: float | None) -> dict:
    """Stage-1 samples/s through the real Animate Anyone loader (as `src.train` builds it) over demo shards."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from src.config import register_resolvers
    from src.trainers.runner import build_train_loader, stage_config

    register_resolvers()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            "experiment=animate_anyone_demo", f"paths.cache={tmp}", f"data.num_workers={0 if smoke else workers}",
            f"data.demo.num_train_videos={4 if smoke else 64}", "data.demo.num_heldout_videos=1",
        ]
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            cfg = stage_config(compose("train", overrides=overrides), "spatial")
        shards = instantiate(cfg.data.demo).train
        loader = build_train_loader(cfg, shards, rank=0)
        batches = 2 if smoke else 50
        it = iter(loader)
        next(it)  # workers started
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        rate = batches * cfg.data.batch_size / (time.perf_counter() - start)
    ratio = rate / gpu_samples_per_s if gpu_samples_per_s else None
    return {"workers": cfg.data.num_workers, "samples_per_s": rate, "gpu_samples_per_s": gpu_samples_per_s,
            "ratio": ratio}


def _cell(result: dict, key: str, spec: str) -> str:
    return "-" if result.get(key) is None else format(result[key], spec)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (what CI runs)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/gpu_suite_<time>.json)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--full-grid", action="store_true", help="all 8 sdpa x checkpointing x compile combinations")
    parser.add_argument("--skip-pytest", action="store_true")
    parser.add_argument("--loader-workers", type=int, default=8)
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("bench/gpu_suite.py needs a CUDA GPU (or --smoke for the CPU check).")
    device = torch.device("cpu" if args.smoke else "cuda")
    peak = peak_flops(device, DEFAULT_PEAK_TFLOPS)
    steps = 1 if args.smoke else args.steps
    report: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "smoke": args.smoke, "peak_tflops": peak / 1e12 if peak else None,
    }
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    report["pytest_gpu"] = {"skipped": "--skip-pytest"} if args.skip_pytest else run_pytest_gpu(args.smoke)
    seconds["pytest_gpu"] = time.perf_counter() - started

    rows = [["config", "sdpa", "ckpt", "compile", "step s", "TFLOP/s", "MFU", "peak GiB"]]
    report["steps"] = {}
    variants = VARIANTS[:1] + VARIANTS[2:3] if args.smoke else (FULL_GRID if args.full_grid else VARIANTS)
    for name, build in configs(args.smoke).items():
        flops = count_flops(build, device)
        entry = {"flops_per_step": flops, "variants": []}
        for variant in variants:
            result = {**variant, **time_variant(build, variant, device, steps, flops, peak)}
            entry["variants"].append(result)
            rows.append([name, variant["sdpa"], str(variant["checkpointing"]), str(variant["compile"]),
                         _cell(result, "step_s", ".3f") if "error" not in result else "ERR: " + result["error"][:40],
                         _cell(result, "tflops", ".1f"), _cell(result, "mfu", ".1%"), _cell(result, "peak_gib", ".1f")])
            print(table(rows[-1:]), flush=True)
        report["steps"][name] = entry
    seconds["steps"] = time.perf_counter() - started - sum(seconds.values())

    ema = ema_step.measure(device.type, full=not args.smoke, repeats=2 if args.smoke else 20)
    report["ema"] = ema
    seconds["ema"] = time.perf_counter() - started - sum(seconds.values())
    report["reference_step"] = [
        reference_step.measure(s, device.type, batch=1 if args.smoke else 8, steps=1 if args.smoke else 10,
                               bf16=not args.smoke)
        for s in ("aa", "dc")
    ]  # fmt: skip
    seconds["reference_step"] = time.perf_counter() - started - sum(seconds.values())
    report["i3d"] = i3d_throughput(device, args.smoke)
    seconds["i3d"] = time.perf_counter() - started - sum(seconds.values())
    stage1 = report["steps"][next(iter(report["steps"]))]["variants"][0]
    gpu_rate = 4 / stage1["step_s"] if "step_s" in stage1 and not args.smoke else None
    report["loader"] = loader_throughput(args.smoke, args.loader_workers, gpu_rate)
    seconds["loader"] = time.perf_counter() - started - sum(seconds.values())
    for name, bench in BENCHES.items():
        if device.type == "cuda":
            torch.cuda.empty_cache()
        report[name] = bench(args.smoke)
        seconds[name] = time.perf_counter() - started - sum(seconds.values())
    report["seconds"] = seconds

    print(table(rows))
    print(f"EMA update: per-parameter {ema['per_parameter_ms']:.2f} ms, foreach {ema['foreach_ms']:.2f} ms "
          f"({ema['speedup']:.2f}x, {ema['tensors']} tensors)")
    print(table(reference_step.rows(report["reference_step"])))
    print(f"I3D features: {report['i3d']['clips_per_s']:.1f} clips/s ({report['i3d']['clip']})")
    loader = report["loader"]
    ratio = f", {loader['ratio']:.2f}x the GPU's {loader['gpu_samples_per_s']:.1f}" if loader["ratio"] else ""
    print(f"loader: {loader['samples_per_s']:.1f} samples/s with {loader['workers']} workers{ratio}")
    keys, prop = report["rerender_keyframes"], report["rerender_propagation"]
    print(f"Rerender {keys['size']}px: {keys['seconds_per_key_frame']:.2f} s per key frame (target < 3), peak "
          f"{_cell(keys, 'peak_memory_gb', '.1f')} GB (target < 12); {prop['seconds_per_non_key_frame']:.3f} s per "
          f"non-key frame with {prop['flow']} flow (target < 0.3), peak {_cell(prop, 'peak_memory_gb', '.1f')} GB")
    print(f"pytest -m gpu: {report['pytest_gpu']}")
    print("seconds per section: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    out = args.out or ROOT / "bench" / "results" / f"gpu_suite_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
