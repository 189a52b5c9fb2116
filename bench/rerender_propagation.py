"""CPU (or GPU) benchmark of Rerender propagation against the simple baselines on the demo's procedural case:
time per non-key frame and the scores (PSNR / SSIM on non-key frames, temporal warp MSE), printed and
written to bench/results/.

    python -m bench.rerender_propagation --frames 13 --height 48 --width 64 --interval 6 --device cpu
    python -m bench.rerender_propagation --frames 21 --height 512 --width 512 --interval 10 --device cuda --flow raft

GPU mode (bench/gpu_suite.py, 512x512): target (issue 13) < 0.3 s per non-key frame, flow included; `--flow raft`
times the default flow provider with random raft_large weights (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench.common import RESULTS, table
from src.rerender.baselines import BASELINES
from src.rerender.demo import demo_video, stylise
from src.rerender.flow import DisFlow, RaftFlow, pair_flows
from src.rerender.keyframes import uniform_keys
from src.rerender.propagation import Propagator
from src.rerender.scoring import score_video

NON_KEY_TARGET_S = 0.3


def _flow(name: str, device: torch.device):
    if name == "dis":
        return DisFlow("medium")
    from torchvision.models.optical_flow import raft_large

    return RaftFlow(raft_large(weights=None), num_flow_updates=12).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    device: str = "cpu",
    frames: int = 13,
    height: int = 48,
    width: int = 64,
    interval: int = 6,
    seed: int = 3,
    flow: str = "dis",
) -> dict:
    """Seconds per non-key frame (flow + propagation, and each alone), scores and peak memory of our propagation
    and of the baselines on the demo's procedural clip with stylised key frames."""
    dev = torch.device(device)
    frames_u8, caption = demo_video(seed, frames, height, width)

    def tensor(x):
        return torch.from_numpy(x).to(dev).permute(0, 3, 1, 2).float() / 255

    video, truth = tensor(frames_u8), tensor(stylise(frames_u8))
    estimator = _flow(flow, dev)
    if dev.type == "cuda":
        pair_flows(video[:2], estimator)  # warm-up (kernels, allocator)
        torch.cuda.reset_peak_memory_stats(dev)
    _sync(dev)
    start = time.perf_counter()
    pairs = pair_flows(video, estimator)
    _sync(dev)
    flow_s = time.perf_counter() - start
    truth_pairs = pair_flows(truth, estimator)
    key_ids = uniform_keys(frames, interval)
    keys = {k: truth[k] for k in key_ids}
    non_key = frames - len(key_ids)
    methods = {
        "propagation (ours)": Propagator(),
        "patch synthesis only, official blend": Propagator(use_warp=False, blend="official"),
    }
    methods.update(BASELINES)
    results = {}
    for name, fn in methods.items():
        _sync(dev)
        start = time.perf_counter()
        out = fn(video, keys, pairs)
        _sync(dev)
        per_frame = (time.perf_counter() - start) / non_key
        results[name] = {**score_video(out, truth, truth_pairs, key_ids), "seconds_per_frame": per_frame}
    ours = results["propagation (ours)"]["seconds_per_frame"] + flow_s / non_key
    return {
        "caption": caption, "size": [height, width], "frames": frames, "keys": key_ids, "device": str(dev),
        "flow": flow, "flow_s_per_pair": flow_s / (frames - 1),
        "seconds_per_non_key_frame": ours,  # flow of every pair + our propagation, over the non-key frames
        "target_s": NON_KEY_TARGET_S, "target_met": ours < NON_KEY_TARGET_S,
        "peak_memory_gb": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
        "results": results,
    }  # fmt: skip


def rows(report: dict) -> list[list[str]]:
    """The printed table of `measure`'s report."""
    out = [["method", "PSNR", "SSIM", "warp MSE x1e3", "s / frame"]]
    for name, r in report["results"].items():
        out.append([name, f"{r['psnr']:.2f}", f"{r['ssim']:.3f}", f"{r['temporal_warp_mse'] * 1e3:.3f}",
                    f"{r['seconds_per_frame']:.3f}"])  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--frames", type=int, default=13)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--interval", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--flow", choices=("dis", "raft"), default="dis", help="raft: random raft_large weights")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = measure(args.device, args.frames, args.height, args.width, args.interval, args.seed, args.flow)
    print(
        f"{report['caption']}; {args.frames} frames {args.height}x{args.width}, keys {report['keys']}, "
        f"flow ({args.flow}) {report['flow_s_per_pair']:.3f} s/pair; ours with flow "
        f"{report['seconds_per_non_key_frame']:.3f} s per non-key frame"
    )
    print(table(rows(report)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"rerender_propagation_{args.device}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args), **report}, indent=2))
    print(path)


if __name__ == "__main__":
    main()
