"""What a run from a latent cache no longer builds: the training module with and without `data.cache`.

Each variant builds the stage's module through the runner's own `build_module` in a fresh process, so the
memory figures don't share an allocator. Printed side by side: build seconds, parameters held by the module,
and the process's peak resident memory. With `data.cache` the codec and encoders are deferred
(src.trainers.deferred_parts): the module holds only what training updates or reads.

    python bench/cache_frozen_parts.py [--experiment dynamicrafter_512] [--override model.checkpoint=null ...]

Real-size configs need their weight files, except DynamiCrafter's: with `model.checkpoint=null` its parts are
random ViT-H-14 towers, a kl-f8 VAE and the 512 UNet at the released shapes. Runs on a CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import table  # noqa: E402


def build(experiment: str, overrides: list[str], cached: bool) -> dict:
    """Build the first stage's module in this process; its build time, parameter count and peak RSS."""
    from hydra import compose, initialize_config_dir

    from src.config import register_resolvers, stage_config
    from src.trainers.runner import build_module, stage_names

    register_resolvers()
    extra = ["data.cache=/nonexistent/only-its-presence-matters"] if cached else []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", *overrides, *extra])
    name = stage_names(cfg)[0]
    scfg = stage_config(cfg, name)
    if cached:
        scfg.data.cache = extra[0].split("=", 1)[1]
    started = time.perf_counter()
    module = build_module(scfg, name, None)
    seconds = time.perf_counter() - started
    params = sum(p.numel() for p in module.parameters())
    deferred = sorted(getattr(module, "_deferred_parts", None).factories) if cached else []
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"build_s": seconds, "parameters": params, "peak_rss_mib": peak_mib, "deferred": deferred}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="dynamicrafter_demo")
    parser.add_argument("--override", action="append", default=[], help="a Hydra override (repeatable)")
    parser.add_argument("--variant", choices=("raw", "cached"), help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(build(args.experiment, args.override, args.variant == "cached")))
        return
    results = {}
    for variant in ("raw", "cached"):
        command = [sys.executable, __file__, "--experiment", args.experiment, "--variant", variant]
        command += [f"--override={o}" for o in args.override]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            sys.exit(f"the {variant} build failed:\n{done.stderr[-4000:]}")
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    raw, cached = results["raw"], results["cached"]
    rows = [["", "build s", "parameters", "peak RSS MiB", "deferred parts"]]
    for variant, r in results.items():
        rows.append([variant, f"{r['build_s']:.1f}", f"{r['parameters'] / 1e6:.1f}M", f"{r['peak_rss_mib']:.0f}",
                     ",".join(r["deferred"]) or "-"])  # fmt: skip
    results["ratios"] = {
        "build_time_raw_over_cached": raw["build_s"] / cached["build_s"],
        "parameters_cached_over_raw": cached["parameters"] / raw["parameters"],
        "peak_rss_cached_over_raw": cached["peak_rss_mib"] / raw["peak_rss_mib"],
    }
    print(f"{args.experiment} {' '.join(args.override)}")
    print(table(rows))
    print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in results["ratios"].items()))
    if args.json:
        args.json.write_text(json.dumps({"experiment": args.experiment, "overrides": args.override, **results}, indent=1))


if __name__ == "__main__":
    main()
