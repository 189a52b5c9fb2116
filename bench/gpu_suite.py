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
   (bench/reference_step.py; the demo experiments' networks, batch 8, bf16 autocast), and the raw vs cached step
   at the papers' sizes with every frozen part real-size (bench/cache_step.py: Animate Anyone stage 1 768^2 batch
   4, DynamiCrafter 512 batch 2; target >= 25% less step time).
4. I3D feature throughput for FVD (clips/s, 16x224x224, random weights of the real network).
5. Loader throughput: Animate Anyone stage-1 samples/s through the real loader with 8 workers over generated
   shards, against the GPU's consumption (batch 4 / measured step time); goal: loader >= 2x.
6. Rerender at 512x512 (bench/rerender_keyframes.py, bench/rerender_propagation.py; issue 13's targets): seconds per
   key frame (SD1.5-shaped random models, fp16, 20 steps; < 3 s), per non-key frame (flow + propagation; < 0.3 s),
   peak memory (< 12 GB).

The sections run in the order they are worth having on a short lease: baseline steps, the reference-step
ratios, the real-size cache step, Rerender, EMA, I3D, loader, the other eager variants, `pytest -m gpu`, and torch.compile last. With
`--budget-s` no section starts after that many seconds; the JSON is rewritten after every section (a run killed at
a time limit keeps what it measured) and lists the sections skipped or failed. `bench/device/run.sh` is the one
command for a lent GPU machine.

    python bench/gpu_suite.py [--out suite.json] [--skip-pytest] [--full-grid] [--budget-s 480]
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
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import cache_step, ema_step, reference_step  # noqa: E402
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

    (step, _), _ = build_on(device, build, False)
    counter = FlopCounterMode(display=False)
    with counter, autocast(device), sdpa_backend_context("auto"):
        step().backward()
    return int(counter.get_total_flops())


def build_on(device: torch.device, build, checkpointing: bool):
    """Build the model with its parameters created on `device` (a real-size UNet initialises in about a second on
    a GPU, against tens of seconds on the host), falling back to the host when a constructor insists on it."""
    try:
        with torch.device(device):
            return build(checkpointing, device), "device"
    except Exception:  # noqa: BLE001 - some constructor made a host tensor it then used on the host
        return build(checkpointing, device), "host"


def time_variant(build, variant: dict, device: torch.device, steps: int, flops: int, peak: float | None) -> dict:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        (step, params), built_on = build_on(device, build, variant["checkpointing"])
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
        result = {"step_s": step_s, "tflops": flops / step_s / 1e12, "mfu": flops / step_s / peak if peak else None,
                  "first_step_s": times[0], "built_on": built_on}
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        return result
    except (RuntimeError, torch.cuda.OutOfMemoryError) as err:  # a kernel unavailable here, or OOM
        return {"error": str(err).splitlines()[0][:200]}
    finally:
        torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def run_pytest_gpu(smoke: bool, timeout_s: float = 240) -> dict:
    if smoke:
        return {"skipped": "--smoke"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/gpu"],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as err:
        tail = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        return {"error": f"timed out after {timeout_s:.0f} s", "tail": tail.splitlines()[-30:]}
    lines = proc.stdout.strip().splitlines() or [""]
    result = {"returncode": proc.returncode, "summary": lines[-1]}
    if proc.returncode != 0:  # the failures' short summary, for the one look a lease allows
        result["tail"] = lines[-40:] + proc.stderr.strip().splitlines()[-10:]
    return result


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


class Suite:
    """The sections in the order they are worth having when a lease runs short: each starts only while the time
    budget lasts, a failing one is recorded and the rest go on, and the JSON is rewritten after every section so
    that a run killed at its time limit still leaves what it measured."""

    def __init__(self, args: argparse.Namespace, device: torch.device, out: Path):
        self.args, self.device, self.out = args, device, out
        self.smoke = args.smoke
        self.peak = peak_flops(device, DEFAULT_PEAK_TFLOPS)
        self.steps = 1 if args.smoke else args.steps
        self.started = time.perf_counter()
        self.rows = [["config", "sdpa", "ckpt", "compile", "step s", "TFLOP/s", "MFU", "peak GiB"]]
        self.report: dict = {
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "smoke": args.smoke, "budget_s": args.budget_s,
            "peak_tflops": self.peak / 1e12 if self.peak else None, "steps": {}, "seconds": {},
            "skipped_for_budget": [], "failed_sections": [],
        }

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float | None:
        return None if self.args.budget_s is None else self.args.budget_s - self.elapsed()

    def write(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.report, indent=2))
        tmp.replace(self.out)

    def run(self, name: str, section: Callable[[], dict | None]) -> None:
        left = self.left()
        if left is not None and left <= 0:
            self.report["skipped_for_budget"].append(name)
            print(f"[suite] {name}: skipped, the {self.args.budget_s:.0f} s budget is spent", flush=True)
            return
        begun = time.perf_counter()
        print(f"[suite] {name} (at {self.elapsed():.0f} s)", flush=True)
        try:
            result = section()
        except (Exception, SystemExit) as err:  # noqa: BLE001 - one broken section must not cost the others
            result = {"error": f"{type(err).__name__}: {err}"[:500],
                      "traceback": traceback.format_exc().splitlines()[-12:]}
            self.report["failed_sections"].append(name)
            print(f"[suite] {name} FAILED: {result['error']}", flush=True)
        if result is not None:
            self.report[name] = result
        self.report["seconds"][name] = time.perf_counter() - begun
        self.write()

    # sections -----------------------------------------------------------------------------------------------
    def step_variants(self, variants: list[dict]) -> None:
        for name, build in configs(self.smoke).items():
            entry = self.report["steps"].setdefault(name, {"variants": []})
            if "flops_per_step" not in entry:
                entry["flops_per_step"] = count_flops(build, self.device)
            for variant in variants:
                result = {**variant, **time_variant(build, variant, self.device, self.steps, entry["flops_per_step"],
                                                    self.peak)}
                entry["variants"].append(result)
                self.rows.append([
                    name, variant["sdpa"], str(variant["checkpointing"]), str(variant["compile"]),
                    _cell(result, "step_s", ".3f") if "error" not in result else "ERR: " + result["error"][:40],
                    _cell(result, "tflops", ".1f"), _cell(result, "mfu", ".1%"), _cell(result, "peak_gib", ".1f"),
                ])
                print(table(self.rows[:1] + self.rows[-1:]), flush=True)
                self.write()

    def gpu_samples_per_s(self) -> float | None:
        """Stage 1's consumption rate (batch 4 over the baseline step time), which the loader must outpace."""
        if self.smoke or not self.report["steps"]:
            return None
        baseline = self.report["steps"][next(iter(self.report["steps"]))]["variants"][0]
        return 4 / baseline["step_s"] if "step_s" in baseline else None

    def plan(self) -> list[tuple[str, Callable[[], dict | None]]]:
        """Priority order: the issue's headline figures first, torch.compile (minutes of compiling) last."""
        smoke, dev, args = self.smoke, self.device, self.args
        grid = FULL_GRID if args.full_grid else VARIANTS
        eager_extra = [v for v in grid if v != BASELINE and not v["compile"]]
        compiled = [v for v in grid if v["compile"]]
        if smoke:
            eager_extra, compiled = VARIANTS[2:3], []
        sections = [
            ("steps_baseline", lambda: self.step_variants([BASELINE])),
            ("reference_step", lambda: [
                reference_step.measure(s, dev.type, batch=1 if smoke else 8, steps=1 if smoke else 10,
                                       bf16=not smoke)
                for s in ("aa", "dc")
            ]),
            ("cache_step", lambda: cache_step.measure(smoke, dev.type)),
        ]
        if args.dynamicrafter_src or args.moore_src:
            sections.append(("official_step", self.official_step))
        sections += [(name, lambda bench=bench: bench(smoke)) for name, bench in BENCHES.items()]
        sections += [
            ("ema", lambda: ema_step.measure(dev.type, full=not smoke, repeats=2 if smoke else 20)),
            ("i3d", lambda: i3d_throughput(dev, smoke)),
            ("loader", lambda: loader_throughput(smoke, args.loader_workers, self.gpu_samples_per_s())),
            ("steps_variants", lambda: self.step_variants(eager_extra)),
        ]
        if not args.skip_pytest:
            sections.append(("pytest_gpu", lambda: run_pytest_gpu(smoke, self.pytest_timeout())))
        if compiled:
            sections.append(("steps_compile", lambda: self.step_variants(compiled)))
        return sections

    def official_step(self) -> list[dict]:
        """The released code's own training step against ours, same sizes and device (bench/official_compare.py;
        the checkouts come from the user, never from this repository): the DynamiCrafter 512 UNet at batch 2 and
        Moore's stage 1 at 768^2 batch 4, bf16 autocast (demo sizes, fp32 and batch 1 with --smoke)."""
        from bench.official_compare import compare_dynamicrafter, compare_moore
        from bench.official_compare import rows as official_rows

        size, steps, device, bf16 = ("demo", 1, "cpu", False) if self.smoke else ("real", 5, "cuda", True)
        results = []
        if self.args.dynamicrafter_src:
            results.append(compare_dynamicrafter(self.args.dynamicrafter_src, self.args.official_pythonpath, size,
                                                 1 if self.smoke else 2, steps, device, bf16))
        if self.args.moore_src:
            results.append(compare_moore(self.args.moore_src, self.args.official_pythonpath, size,
                                         1 if self.smoke else 4, steps, device, bf16))
        print(table(official_rows(results)), flush=True)
        return results

    def pytest_timeout(self) -> float:
        left = self.left()
        return 240 if left is None else max(60.0, left)


def print_summary(report: dict, rows: list[list[str]]) -> None:
    """The printed table: whatever sections ran."""
    print(table(rows))
    if "error" not in report.get("ema", {"error": 1}):
        ema = report["ema"]
        print(f"EMA update: per-parameter {ema['per_parameter_ms']:.2f} ms, foreach {ema['foreach_ms']:.2f} ms "
              f"({ema['speedup']:.2f}x, {ema['tensors']} tensors)")
    if isinstance(report.get("reference_step"), list):
        print(table(reference_step.rows(report["reference_step"])))
    cached = {k: r for k, r in report.get("cache_step", {}).items() if isinstance(r, dict) and "ours_ms" in r}
    if cached:
        print(table(cache_step.rows(cached)) + "\n(cache target: time saved >= 25% on a GPU)")
    if isinstance(report.get("official_step"), list):
        from bench.official_compare import rows as official_rows

        print(table(official_rows(report["official_step"])))
    if "clips_per_s" in report.get("i3d", {}):
        print(f"I3D features: {report['i3d']['clips_per_s']:.1f} clips/s ({report['i3d']['clip']})")
    loader = report.get("loader", {})
    if "samples_per_s" in loader:
        ratio = f", {loader['ratio']:.2f}x the GPU's {loader['gpu_samples_per_s']:.1f}" if loader["ratio"] else ""
        print(f"loader: {loader['samples_per_s']:.1f} samples/s with {loader['workers']} workers{ratio}")
    keys, prop = report.get("rerender_keyframes", {}), report.get("rerender_propagation", {})
    if "seconds_per_key_frame" in keys:
        print(f"Rerender {keys['size']}px: {keys['seconds_per_key_frame']:.2f} s per key frame (target < 3), peak "
              f"{_cell(keys, 'peak_memory_gb', '.1f')} GB (target < 12)")
    if "seconds_per_non_key_frame" in prop:
        print(f"Rerender propagation: {prop['seconds_per_non_key_frame']:.3f} s per non-key frame with "
              f"{prop['flow']} flow (target < 0.3), peak {_cell(prop, 'peak_memory_gb', '.1f')} GB")
    if "pytest_gpu" in report:
        print(f"pytest -m gpu: {report['pytest_gpu']}")
    for name in report["failed_sections"]:
        print(f"FAILED section {name}: {report[name].get('error')}")
    if report["skipped_for_budget"]:
        print(f"skipped for the time budget: {', '.join(report['skipped_for_budget'])}")
    print("seconds per section: " + ", ".join(f"{k} {v:.0f}" for k, v in report["seconds"].items()))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (what CI runs)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/gpu_suite_<time>.json)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--full-grid", action="store_true", help="all 8 sdpa x checkpointing x compile combinations")
    parser.add_argument("--skip-pytest", action="store_true")
    parser.add_argument("--loader-workers", type=int, default=8)
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no section after this many seconds (a lease's time limit); the JSON keeps "
                             "what ran and lists what was skipped")
    parser.add_argument("--dynamicrafter-src", help="a DynamiCrafter checkout: also time its own lvdm UNet step")
    parser.add_argument("--moore-src", help="a Moore-AnimateAnyone checkout: also time its own stage-1 step")
    parser.add_argument("--official-pythonpath",
                        help="first on the official side's PYTHONPATH (Moore: diffusers==0.24.0 transformers==4.30.2)")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("bench/gpu_suite.py needs a CUDA GPU (or --smoke for the CPU check).")
    device = torch.device("cpu" if args.smoke else "cuda")
    out = args.out or ROOT / "bench" / "results" / f"gpu_suite_{time.strftime('%Y%m%d-%H%M%S')}.json"
    suite = Suite(args, device, out)
    for name, section in suite.plan():
        if device.type == "cuda":
            torch.cuda.empty_cache()
        suite.run(name, section)
    suite.write()
    print_summary(suite.report, suite.rows)
    print(f"wrote {out}")
    return suite.report


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
