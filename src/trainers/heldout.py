"""The held-out proof: animate held-out clips and score them next to the untrained model and a baseline.

For every clip: the trained model, the untrained model (same architecture at initialisation) and the
repeat-the-reference baseline are scored with SSIM and PSNR against the ground truth and, when the
silhouette is known, with the IoU of the generated foreground against it (pose following).
Side-by-side mp4s (pose | trained | untrained | ground truth) go to `out_dir`. `evaluate_animate_anyone`
is what conf/evaluation/animate_anyone_heldout.yaml names; the runner calls it after the last stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from src.data.heldout_clips import HeldoutClips, load_heldout_clips
from src.data.video_io import write_mp4
from src.eval.animation_scores import (
    boundary_inside_ratio,
    foreground_mask,
    silhouette_iou,
    video_psnr,
    video_ssim,
)
from src.models.weights_io import load_net_weights
from src.trainers.callbacks import side_by_side, to_uint8_frames

log = logging.getLogger(__name__)


def score_videos(video: torch.Tensor, batch: dict, threshold: float) -> dict[str, torch.Tensor]:
    scores = {"ssim": video_ssim(video, batch["frames"]), "psnr": video_psnr(video, batch["frames"])}
    if "silhouette" in batch:
        mask = foreground_mask(video, batch["background"], threshold)
        scores["iou"] = silhouette_iou(mask, batch["silhouette"])
    return scores


#: one way to animate a clip: a module with `animate(reference, pose, generator=..., **overrides)` and the overrides
Run = tuple[torch.nn.Module, dict]
#: (videos by run name, the clip's batch) -> {group: {metric: per-clip tensor}}
Scorer = Callable[[dict[str, torch.Tensor], dict], dict[str, dict[str, torch.Tensor]]]


@torch.no_grad()
def animate_clips(
    runs: dict[str, Run], clips: HeldoutClips, out_dir: Path, score: Scorer, seed: int, fps: int, suffix: str = ""
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """The clip loop: every run animates every clip on its module's device with a generator seeded `seed` + clip
    index (so every run of a clip draws the same noise), `score` scores the videos, and a side-by-side mp4 (pose |
    runs in order | ground truth) is written as `<key><suffix>.mp4`. Returns the mean scores per group and metric,
    and the mp4 paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    totals: dict[str, dict[str, list[float]]] = {}
    videos_written = []
    for index, batch in enumerate(DataLoader(clips, batch_size=1, shuffle=False)):
        log.info("held-out clip %d/%d: %s", index + 1, len(clips), batch["key"][0])
        videos = {}
        for name, (model, overrides) in runs.items():
            device = next(model.parameters()).device
            moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            generator = torch.Generator(device=device).manual_seed(seed + index)
            videos[name] = model.animate(moved["reference"], moved["pose"], generator=generator, **overrides).cpu()
        for group, scores in score(videos, batch).items():
            for metric, value in scores.items():
                totals.setdefault(group, {}).setdefault(metric, []).append(float(value.mean()))
        panels = [to_uint8_frames(batch["pose"][0], (0.0, 1.0))]
        panels += [to_uint8_frames(videos[name][0]) for name in runs]
        panels.append(to_uint8_frames(batch["frames"][0]))
        path = out_dir / f"{batch['key'][0]}{suffix}.mp4"
        write_mp4(path, side_by_side(*panels), fps=fps)
        videos_written.append(str(path))
    means = {
        group: {metric: sum(values) / len(values) for metric, values in metrics.items()}
        for group, metrics in totals.items()
    }
    return means, videos_written


def evaluate_heldout(
    models: dict[str, torch.nn.Module],
    clips: HeldoutClips,
    out_dir: Path,
    seed: int = 1234,
    foreground_threshold: float = 0.12,
    fps: int = 8,
) -> dict:
    """`models` maps a name to a module with `animate(reference, pose, generator=...)`; returns mean scores of each
    and of the repeat-the-reference baseline."""

    def score(videos: dict[str, torch.Tensor], batch: dict) -> dict[str, dict[str, torch.Tensor]]:
        t = batch["frames"].shape[2]
        videos = {**videos, "repeat_reference": batch["reference"][:, :, None].expand(-1, -1, t, -1, -1)}
        return {name: score_videos(video, batch, foreground_threshold) for name, video in videos.items()}

    runs = {name: (model, {}) for name, model in models.items()}
    means, videos = animate_clips(runs, clips, out_dir, score, seed, fps)
    return {
        "scores": means,
        "num_clips": len(clips),
        "panels": ["pose", *models, "ground_truth"],
        "videos": videos,
    }


def evaluate_long_clips(
    model: torch.nn.Module,
    clips: HeldoutClips,
    out_dir: Path,
    seed: int = 1234,
    foreground_threshold: float = 0.12,
    fps: int = 8,
) -> dict:
    """Animate clips longer than the motion window in the model's context windows and in one pass; returns the
    scores of the windowed videos and the seam scores (boundary/inside ratio) of both and of the ground truth."""
    num_frames = clips.num_frames
    windows = model.context_windows(model.sampling_config(), num_frames)
    if windows is None or len(windows.windows(num_frames)) < 2:
        raise ValueError(
            f"evaluation.long: {num_frames} frames fit in one context window of model.sampling.context_frames="
            f"{model.sampling.context_frames}; use a longer evaluation.long.num_frames (e.g. 2x the window)."
        )
    boundaries = windows.boundaries(num_frames)

    def score(videos: dict[str, torch.Tensor], batch: dict) -> dict[str, dict[str, torch.Tensor]]:
        scores = score_videos(videos["windows"], batch, foreground_threshold)
        scores["seam_ratio"] = boundary_inside_ratio(videos["windows"], boundaries)
        scores["seam_ratio_one_pass"] = boundary_inside_ratio(videos["one_pass"], boundaries)
        scores["seam_ratio_ground_truth"] = boundary_inside_ratio(batch["frames"], boundaries)
        return {"long": scores}

    runs = {"windows": (model, {}), "one_pass": (model, {"context_frames": num_frames, "context_overlap": 0})}
    means, videos = animate_clips(runs, clips, out_dir, score, seed, fps, suffix="_long")
    return {
        "scores": means.get("long", {}),
        "num_clips": len(clips),
        "num_frames": num_frames,
        "context_frames": windows.frames,
        "context_overlap": windows.overlap,
        "boundaries": boundaries,
        "panels": ["pose", *runs, "ground_truth"],
        "videos": videos,
    }


def trained_and_untrained(stage_cfg: DictConfig, stage: str, weights: str, seed: int) -> dict[str, torch.nn.Module]:
    """The stage's module with the trained `weights` and the same architecture at initialisation, in eval mode."""
    L.seed_everything(seed, workers=True)
    untrained = instantiate(stage_cfg.model, stage=stage, init_weights=None)
    trained = instantiate(stage_cfg.model, stage=stage, init_weights=None)
    load_net_weights(trained.net, weights)  # the whole container (motion modules, query transformer, ...)
    return {"trained": trained.eval(), "untrained": untrained.eval()}


def evaluate_animate_anyone(
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
    reference_index: int = 0,
    foreground_threshold: float = 0.12,
    seed: int = 1234,
    start_frame: int = 0,
    long: dict | None = None,
) -> dict:
    """Held-out proof of an Animate Anyone run (the runner's `evaluation._target_`); returns `evaluate_heldout`'s dict
    plus the clip protocol. `start_frame` past `reference_index` keeps the reference frame out of the scored frames,
    where repeating the reference would be exact by construction. `long` (num_videos, num_frames, stride,
    start_frame) adds `evaluate_long_clips` of the trained model under "long" (its scores under
    scores["trained_long"]); a spatial-stage run has no context windows, so "long" says it was skipped."""
    clips = load_heldout_clips(
        heldout_shards, num_videos, num_frames, stride, stage_cfg.data.size, reference_index, start_frame
    )
    models = trained_and_untrained(stage_cfg, stage, weights, cfg.seed)
    fps = cfg.data.demo.fps if cfg.data.demo else 8
    result = evaluate_heldout(models, clips, out_dir, seed, foreground_threshold, fps)
    result["protocol"] = {"reference_frame": reference_index, "scored_frames": clips.frame_indices}
    if long and stage != "temporal":
        # Context windows are a motion-module notion: a spatial model animates every frame on its own.
        reason = f"stage {stage!r} has no motion modules; the long-clip (context window) scores need stage temporal"
        log.info("evaluation.long skipped: %s", reason)
        result["long"] = {"skipped": reason}
    elif long:
        long_clips = load_heldout_clips(
            heldout_shards, long["num_videos"], long["num_frames"], long["stride"], stage_cfg.data.size,
            reference_index, long["start_frame"],
        )  # fmt: skip
        result["long"] = evaluate_long_clips(models["trained"], long_clips, out_dir, seed, foreground_threshold, fps)
        result["long"]["scored_frames"] = long_clips.frame_indices
        result["scores"]["trained_long"] = result["long"]["scores"]
        result["videos"] += result["long"]["videos"]
    return result
