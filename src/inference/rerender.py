"""Rerender-A-Video behind `python -m src.sample experiment=rerender|rerender_demo`.

Three paths, by what is given:
- `rerender.demo` and no `sample.video`: the CPU demo (procedural clip, stylised key frames propagated, scored);
- `sample.keyframes=DIR`: the user's own key frames propagated to every frame (no diffusion, no SD weights);
- otherwise: key frames chosen every K (`rerender.keyframes`), translated with SD1.5 + ControlNet under the
  cross-frame constraints (`src.rerender.keyframe_translation`), then propagated.
Each writes `<out>/rerender.mp4`, `<out>/keys/<index>.png` and `<out>/settings.json` (translation settings and
timings included). Frames `t h w 3` uint8 on disk, `t 3 h w` in [0, 1] in between.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig

from src.inference.common import pick_device, sampling_overrides

__all__ = ["processing_size", "run"]
log = logging.getLogger(__name__)


def processing_size(size: tuple[int, int], short_side: int | None, multiple: int) -> tuple[int, int]:
    """(h, w) with the short side at `short_side` (None: as is), both rounded to a multiple of `multiple`."""
    scale = 1.0 if short_side is None else short_side / min(size)
    return tuple(max(multiple, round(s * scale / multiple) * multiple) for s in size)


def load_components(cfg: DictConfig, device: torch.device):
    """SD1.5 + ControlNet on `device`, loaded strictly from `model.sd` / `model.controlnet` (fp16 on CUDA by default,
    `model.sd.dtype`); the VAE is kept in float32, since E* compares small round-trip differences."""
    from src.rerender.sd_loading import load_sd_components

    components = load_sd_components(cfg.model, device)
    components.vae.to(device, torch.float32)
    return components


def translate_and_propagate(cfg: DictConfig, out: Path) -> None:
    from src.rerender.entry import propagate_frames
    from src.rerender.frames_io import read_video
    from src.rerender.keyframe_translation import KeyframeTranslator, size_multiple
    from src.rerender.keyframes import choose_keys
    from src.rerender.sd_loading import call_target
    from src.rerender.translation_settings import settings_from_config

    sample, rr = cfg.sample, cfg.rerender
    settings = settings_from_config(cfg.model, sample.prompt, cfg.seed, sampling_overrides(cfg))
    device = pick_device(str(sample.device))
    frames_u8, fps = read_video(sample.video)
    start = time.perf_counter()
    control_maps = call_target(cfg.model.control_map, device=device)  # a missing HED file fails before SD loads
    components = load_components(cfg, device)
    load_s = time.perf_counter() - start
    size = processing_size(frames_u8.shape[1:3], rr.get("resolution"), size_multiple(components))
    frames = torch.from_numpy(np.array(frames_u8)).to(device).permute(0, 3, 1, 2).float() / 255
    if tuple(frames.shape[-2:]) != size:
        frames = F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(
            0, 1
        )
    frames_u8 = (frames * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    kf = rr.keyframes
    keys = choose_keys(frames_u8, str(kf.mode), int(kf.interval), int(kf.min_interval), kf.max_interval)
    flow = instantiate(rr.flow, device=device)
    translator = KeyframeTranslator(components, settings, flow)
    start = time.perf_counter()
    translated = translator.translate(frames, keys, control_maps(frames[keys]))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    keys_s = time.perf_counter() - start
    log.info("translated %d key frames in %.1f s (%.2f s each)", len(keys), keys_s, keys_s / len(keys))
    keys_u8 = {
        k: (v.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy() for k, v in translated.items()
    }
    translation = asdict(settings)
    translation["windows"] = {k: list(v) for k, v in asdict(settings.windows).items()}
    translation["start_step"] = settings.start_step()
    translation["cross_frame_layers"] = translator.layers
    inputs = {
        "video": str(sample.video),
        "keyframes": "translated",
        "prompt": settings.full_prompt,
        "model": {
            **{part: {k: str(v) for k, v in cfg.model[part].items() if k != "_target_"}
               for part in ("sd", "controlnet", "control_map")},
            "control_type": components.control_type,
        },
        "translation": translation,
        "timing_s": {"load_models": load_s, "key_frames": keys_s, "per_key_frame": keys_s / len(keys)},
    }
    if device.type == "cuda":
        inputs["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    propagate_frames(cfg, frames_u8, fps, keys_u8, out, inputs, flow=flow)


def run(cfg: DictConfig) -> list[dict]:
    """Runs the path the inputs ask for; returns one record with the video written."""
    from src.rerender.entry import propagate_files, run_demo

    out = Path(cfg.sample.out)
    if cfg.sample.video is None and cfg.rerender.get("demo") is not None:
        run_demo(cfg)
    elif cfg.sample.keyframes is not None:
        propagate_files(cfg, cfg.sample.video, cfg.sample.keyframes, out)
    else:
        translate_and_propagate(cfg, out)
    return [{"video": str(out / "rerender.mp4"), "settings": str(out / "settings.json")}]
