"""Animate Anyone sampling: a reference image animated with a pose video, for any length.

`sample.reference=IMG sample.pose_video=POSE.mp4` (a skeleton video in the training convention) writes
`<out>/<reference>_<pose>.mp4`, `<out>/<reference>_<pose>_side_by_side.mp4` (pose | animation) and
`<out>/samples.json` (inputs, outputs, every setting). Longer pose videos are sampled in the model's context
windows (`sample.sampling.context_frames` / `context_overlap`). Layouts: reference `c h w` in [-1, 1], pose
`c t h w` in [0, 1], videos `c t h w` in [-1, 1], mp4 `t h w c` uint8.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from src.inference.common import autocast, load_image, load_module, sampling_overrides

log = logging.getLogger(__name__)


def load_pose_video(
    path: Path, size: tuple[int, int], num_frames: int | None, stride: int
) -> tuple[torch.Tensor, float, np.ndarray]:
    """Pose mp4 -> (`3 t h w` in [0, 1] at `size`, the sampled frames' fps, the raw `t H W 3` frames).

    Frames 0, stride, 2*stride, ... (the first `num_frames` of them; all when None); shorter-side resize and
    center crop as the training data, with the pose kind of resampling (area / nearest, no blur)."""
    from src.data.caption_video_dataset import center_crop_box
    from src.data.transforms import crop_resize
    from src.data.video_io import decode_mp4, probe_mp4

    if not path.is_file():
        raise FileNotFoundError(
            f"sample.pose_video={path}: no such file (a skeleton video, e.g. written by python -m src.data.extract_poses)."
        )
    if stride < 1:
        raise ValueError(f"sample.pose_stride must be >= 1, got {stride}.")
    data = path.read_bytes()
    info = probe_mp4(data)
    indices = list(range(0, info.num_frames, stride))[: num_frames or None]
    if num_frames and len(indices) < num_frames:
        raise ValueError(
            f"sample.pose_video={path} has {info.num_frames} frames: {num_frames} at stride {stride} do not fit; "
            "lower sample.num_frames / sample.pose_stride or set sample.num_frames=null for the whole video."
        )
    frames = decode_mp4(data, indices)
    box = center_crop_box(frames.shape[1], frames.shape[2], size)
    pose = crop_resize(frames, box, tuple(size), kind="pose").permute(1, 0, 2, 3).contiguous()
    return pose, (info.fps or 8.0) / stride, frames


def run(cfg: DictConfig) -> list[dict]:
    """Animate sample.reference with sample.pose_video; returns the records written to samples.json."""
    from src.data.video_io import write_mp4
    from src.trainers.callbacks import side_by_side, to_uint8_frames

    sample = cfg.sample
    if sample.reference is None or sample.pose_video is None:
        raise ValueError(
            "Animate Anyone sampling needs sample.reference=IMAGE and sample.pose_video=POSE.mp4 (a skeleton video)."
        )
    reference_path, pose_path = Path(sample.reference), Path(sample.pose_video)
    loaded = load_module(cfg, default_stage="temporal")
    module, device = loaded.module, loaded.device
    size = tuple(sample.size or loaded.stage_cfg.data.size)
    reference = load_image(reference_path, size, key="sample.reference")[None].to(device)
    pose, fps, _ = load_pose_video(pose_path, size, sample.num_frames, int(sample.pose_stride))
    overrides = sampling_overrides(cfg)
    settings = asdict(module.sampling_config(**overrides))
    log.info("animating %s with %d pose frames (%s)", reference_path.name, pose.shape[1], settings)
    generator = torch.Generator(device=device).manual_seed(int(cfg.seed))
    with torch.no_grad(), autocast(cfg, device):
        video = module.animate(reference, pose[None].to(device), generator=generator, progress=True, **overrides)
    out = Path(sample.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{reference_path.stem}_{pose_path.stem}"
    frames = to_uint8_frames(video[0].float().cpu())
    target = write_mp4(out / f"{name}.mp4", frames, fps=fps)
    both = write_mp4(
        out / f"{name}_side_by_side.mp4", side_by_side(to_uint8_frames(pose, (0.0, 1.0)), frames), fps=fps
    )
    windows = module.context_windows(module.sampling_config(**overrides), pose.shape[1])
    record = {
        "reference": str(reference_path),
        "pose_video": str(pose_path),
        "video": str(target),
        "side_by_side": str(both),
        "num_frames": int(pose.shape[1]),
        "windows": None if windows is None else [w.tolist() for w in windows.windows(pose.shape[1])],
    }
    meta = {
        "experiment": cfg.run_name,
        "stage": loaded.stage,
        "weights": loaded.weights,
        "size": list(size),
        "pose_stride": int(sample.pose_stride),
        "fps": fps,
        "sampling": settings,
        "seed": int(cfg.seed),
    }
    (out / "samples.json").write_text(json.dumps({"settings": meta, "videos": [record]}, indent=2))
    return [record]
