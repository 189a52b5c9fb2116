"""DynamiCrafter's held-out proof: animate held-out first frames with their captions and score against the truth.

For every held-out clip the trained model, the untrained model (same architecture at initialisation) and the
repeat-the-condition-frame baseline are scored with SSIM and PSNR against the ground-truth clip (videos
`b c t h w` in [-1, 1]). Side-by-side mp4s (trained | untrained | ground truth) go to `out_dir`. This is what
conf/evaluation/dynamicrafter_heldout.yaml names; the runner calls it after the last stage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from src.data.caption_heldout import load_caption_heldout
from src.data.caption_video_dataset import collate_caption_video
from src.data.video_io import write_mp4
from src.eval.animation_scores import video_psnr, video_ssim
from src.trainers.callbacks import side_by_side, to_uint8_frames
from src.trainers.heldout import trained_and_untrained

log = logging.getLogger(__name__)

BASELINE = "repeat_condition"


def animate(
    model: torch.nn.Module, batch: dict[str, Any], seed: int, sampling: dict[str, Any]
) -> torch.Tensor:
    """`model.sample` on the batch's first frames and captions, with a seeded generator on the model's device."""
    device = next(model.parameters()).device
    video = batch["video"].to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = model.sample(
        video[:, :, 0],
        list(batch["caption"]),
        num_frames=video.shape[2],
        frame_stride=batch["frame_stride"].to(device),
        fps=batch["fps"].to(device),
        generator=generator,
        **sampling,
    )
    return out.float().cpu()


@torch.no_grad()
def evaluate_dynamicrafter(
    *,
    cfg: DictConfig,
    stage_cfg: DictConfig,
    stage: str,
    weights: str,
    heldout_shards,
    out_dir: Path,
    num_videos: int,
    num_frames: int,
    stride: int,
    seed: int = 1234,
    sampling: dict[str, Any] | None = None,
) -> dict:
    """Scores per model (mean SSIM/PSNR over clips), the clips' captions and the side-by-side videos written."""
    sampling = (
        OmegaConf.to_container(sampling, resolve=True)
        if isinstance(sampling, DictConfig)
        else dict(sampling or {})
    )
    data = stage_cfg.data
    clips = load_caption_heldout(heldout_shards, num_videos, num_frames, stride, data.size, data.caption_key)
    models = trained_and_untrained(stage_cfg, stage, weights, cfg.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_model: dict[str, dict[str, list[float]]] = {
        name: {"ssim": [], "psnr": []} for name in [*models, BASELINE]
    }
    videos, captions = [], []
    for index, batch in enumerate(
        DataLoader(clips, batch_size=1, shuffle=False, collate_fn=collate_caption_video)
    ):
        log.info("held-out clip %d/%d: %s (%r)", index + 1, len(clips), batch["key"][0], batch["caption"][0])
        truth = batch["video"]
        outputs = {name: animate(model, batch, seed + index, sampling) for name, model in models.items()}
        outputs[BASELINE] = truth[:, :, :1].expand_as(truth)
        for name, video in outputs.items():
            if video.shape != truth.shape:
                raise ValueError(
                    f"{name} model sampled a video of shape {tuple(video.shape)} for a clip of {tuple(truth.shape)}; "
                    "evaluation.num_frames must be the model's video length and data.size its resolution"
                )
            per_model[name]["ssim"].append(float(video_ssim(video, truth).mean()))
            per_model[name]["psnr"].append(float(video_psnr(video, truth).mean()))
        path = out_dir / f"{batch['key'][0]}.mp4"
        panels = [to_uint8_frames(outputs[name][0]) for name in models] + [to_uint8_frames(truth[0])]
        write_mp4(path, side_by_side(*panels), fps=max(1.0, float(batch["fps"][0])))
        videos.append(str(path))
        captions.append(batch["caption"][0])
    scores = {name: {m: sum(v) / len(v) for m, v in metrics.items()} for name, metrics in per_model.items()}
    return {
        "scores": scores,
        "num_clips": len(clips),
        "panels": [*models, "ground_truth"],
        "captions": captions,
        "sampling": sampling,
        "videos": videos,
    }
