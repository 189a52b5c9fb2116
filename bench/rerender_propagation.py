"""CPU (or GPU) benchmark of Rerender propagation against the simple baselines on the demo's procedural case:
time per non-key frame and the scores (PSNR / SSIM on non-key frames, temporal warp MSE), printed and
written to bench/results/.

    python -m bench.rerender_propagation --frames 13 --height 48 --width 64 --interval 6 --device cpu
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench.common import RESULTS, table
from src.rerender.baselines import BASELINES
from src.rerender.demo import demo_video, stylise
from src.rerender.flow import DisFlow, pair_flows
from src.rerender.keyframes import uniform_keys
from src.rerender.propagation import Propagator
from src.rerender.scoring import score_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--frames", type=int, default=13)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--interval", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    frames_u8, caption = demo_video(args.seed, args.frames, args.height, args.width)

    def tensor(x):
        return torch.from_numpy(x).to(device).permute(0, 3, 1, 2).float() / 255

    frames, truth = tensor(frames_u8), tensor(stylise(frames_u8))
    flow = DisFlow("medium")
    start = time.perf_counter()
    pairs = pair_flows(frames, flow)
    flow_s = time.perf_counter() - start
    truth_pairs = pair_flows(truth, flow)
    key_ids = uniform_keys(args.frames, args.interval)
    keys = {k: truth[k] for k in key_ids}
    non_key = args.frames - len(key_ids)
    methods = {"propagation (ours)": Propagator(), "patch synthesis only, official blend": Propagator(use_warp=False, blend="official")}
    methods.update(BASELINES)
    rows, results = [["method", "PSNR", "SSIM", "warp MSE x1e3", "s / frame"]], {}
    for name, fn in methods.items():
        start = time.perf_counter()
        video = fn(frames, keys, pairs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_frame = (time.perf_counter() - start) / non_key
        score = score_video(video, truth, truth_pairs, key_ids)
        results[name] = {**score, "seconds_per_frame": per_frame}
        rows.append([name, f"{score['psnr']:.2f}", f"{score['ssim']:.3f}", f"{score['temporal_warp_mse'] * 1e3:.3f}", f"{per_frame:.3f}"])
    print(f"{caption}; {args.frames} frames {args.height}x{args.width}, keys {key_ids}, flow {flow_s / (args.frames - 1):.3f} s/pair")
    print(table(rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"rerender_propagation_{args.device}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args), "caption": caption, "flow_s_per_pair": flow_s / (args.frames - 1), "results": results}, indent=2))
    print(path)


if __name__ == "__main__":
    main()
