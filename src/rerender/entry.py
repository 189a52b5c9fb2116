"""Propagation and the demo of the Rerender pipeline (`src.inference.rerender`, `python -m src.sample`).

`propagate_files` reads the video (`sample.video`: mp4 or folder of frames) and the key frames (`sample.keyframes`:
the user's edited frames named by 0-based index); `propagate_frames` computes the flows, propagates the keys to
every frame and writes `<out>/rerender.mp4`, `<out>/keys/<index>.png`, `<out>/settings.json` and, with
`sample.save_frames`, every output frame as `<out>/frames/<index>.png`. `run_demo` (`experiment=rerender_demo`)
first writes a procedural video and its stylised key frames to `<out>/demo/` and runs the same path on them, then
scores the result and the baselines against the stylised truth into `<out>/summary.json`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.data.video_io import write_mp4
from src.rerender.frames_io import read_keyframes, read_video, write_frames
from src.rerender.keyframes import choose_keys

__all__ = ["propagate_files", "propagate_frames", "run_demo"]
log = logging.getLogger(__name__)


def _to_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(frames)).to(device).permute(0, 3, 1, 2).float() / 255


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def propagate_files(cfg: DictConfig, video_path: str, keyframes_dir: str | None, out: Path) -> dict:
    """The user path: video + key frames on disk -> outputs on disk. Returns what the run needs to score it."""
    if keyframes_dir is None:
        raise ValueError(
            "sample.keyframes is not set. Give a folder of your stylised key frames named by their 0-based frame "
            "indices (0000.png, 0010.png, ...), or leave it unset with a model to translate key frames with."
        )
    frames_u8, fps = read_video(video_path)
    keys_u8 = read_keyframes(keyframes_dir, frames_u8.shape[0], frames_u8.shape[1:3])
    inputs = {"video": str(video_path), "keyframes": str(keyframes_dir)}
    return propagate_frames(cfg, frames_u8, fps, keys_u8, out, inputs)


def propagate_frames(
    cfg: DictConfig,
    frames_u8: np.ndarray,
    fps: float | None,
    keys_u8: dict[int, np.ndarray],
    out: Path,
    inputs: dict,
    flow=None,
) -> dict:
    """Frames `t h w 3` + {index: key frame} -> `<out>/rerender.mp4`, `<out>/keys/`, `<out>/settings.json` (with
    `inputs` and any `timing_s` of earlier stages). `flow`: an estimator already built (else from config)."""
    sample, rr = cfg.sample, cfg.rerender
    device = _device(str(sample.device))
    frames = _to_tensor(frames_u8, device)
    keys = {k: _to_tensor(v[None], device)[0] for k, v in keys_u8.items()}
    flow = flow or instantiate(rr.flow, device=device)
    propagator = instantiate(rr.propagation)
    start = time.perf_counter()
    from src.rerender.flow import pair_flows

    pairs = pair_flows(frames, flow)
    flow_s = time.perf_counter() - start
    output = propagator(frames, keys, pairs)
    total_s = time.perf_counter() - start
    video = _to_uint8(output)
    out.mkdir(parents=True, exist_ok=True)
    write_mp4(out / "rerender.mp4", video, fps=float(sample.save_fps if fps is None else fps), pix_fmt="yuv444p")
    write_frames(out / "keys", np.stack([keys_u8[k] for k in sorted(keys_u8)]), sorted(keys_u8))
    if sample.save_frames:
        write_frames(out / "frames", video)
    timing = {**inputs.pop("timing_s", {}), "flow": flow_s, "flow_and_propagation": total_s}
    settings = {
        **inputs,
        "key_indices": sorted(keys_u8),
        "num_frames": int(frames_u8.shape[0]),
        "size": list(frames_u8.shape[1:3]),
        "device": str(device),
        "rerender": OmegaConf.to_container(rr, resolve=True),
        "timing_s": timing,
    }
    (out / "settings.json").write_text(json.dumps(settings, indent=2))
    log.info("propagated %d key frames to %d frames in %.1f s -> %s", len(keys), len(video), total_s, out)
    return {"frames": frames, "keys": keys, "pairs": pairs, "output": output, "flow": flow, "seconds": total_s}


def _write_demo_inputs(cfg: DictConfig, out: Path) -> tuple[Path, Path, np.ndarray, str]:
    """Procedural video + its stylised truth; the stylised key frames go where a user's would."""
    from src.rerender.demo import demo_video, stylise

    demo = cfg.rerender.demo
    frames, caption = demo_video(int(demo.seed), int(demo.num_frames), int(demo.height), int(demo.width))
    truth = stylise(frames)
    kf = cfg.rerender.keyframes
    keys = choose_keys(frames, str(kf.mode), int(kf.interval), int(kf.min_interval), kf.max_interval)
    video_dir = write_frames(out / "demo" / "video", frames)
    keys_dir = write_frames(out / "demo" / "keyframes", truth[keys], keys)
    return video_dir, keys_dir, truth, caption


def _score_demo(cfg: DictConfig, result: dict, truth: np.ndarray, caption: str, out: Path) -> dict:
    from src.rerender.baselines import BASELINES
    from src.rerender.flow import pair_flows
    from src.rerender.scoring import score_video

    truth_t = _to_tensor(truth, result["frames"].device)
    truth_pairs = pair_flows(truth_t, result["flow"])
    keys = sorted(result["keys"])
    num_non_key = truth.shape[0] - len(keys)
    scores = {"propagation": score_video(result["output"], truth_t, truth_pairs, keys)}
    scores["propagation"]["seconds_per_frame"] = result["seconds"] / max(num_non_key, 1)
    for name, fn in BASELINES.items():
        start = time.perf_counter()
        video = fn(result["frames"], result["keys"], result["pairs"])
        scores[name] = score_video(video, truth_t, truth_pairs, keys)
        scores[name]["seconds_per_frame"] = (time.perf_counter() - start) / max(num_non_key, 1)
    scores["stylised_truth"] = {"temporal_warp_mse": score_video(truth_t, truth_t, truth_pairs, keys)["temporal_warp_mse"]}
    summary = {
        "experiment": cfg.run_name,
        "caption": caption,
        "key_indices": keys,
        "num_frames": int(truth.shape[0]),
        "size": list(truth.shape[1:3]),
        "scored": "PSNR/SSIM over the non-key frames; temporal_warp_mse over all consecutive pairs (flows of the stylised truth)",
        "metrics": scores,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_demo(cfg: DictConfig) -> dict:
    """The demo: procedural inputs (or the user's `sample.keyframes`) propagated, then scored."""
    out = Path(cfg.sample.out)
    video_dir, keys_dir, truth, caption = _write_demo_inputs(cfg, out)
    keys_arg = cfg.sample.keyframes or str(keys_dir)
    result = propagate_files(cfg, str(video_dir), keys_arg, out)
    summary = _score_demo(cfg, result, truth, caption, out)
    for name, row in summary["metrics"].items():
        log.info("%-26s %s", name, {k: round(v, 4) for k, v in row.items()})
    return summary
