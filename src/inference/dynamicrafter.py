"""DynamiCrafter sampling: each image animated with its prompt -> `<out>/<image stem>.mp4` + `<out>/samples.json`
(image, prompt, video, settings). Layouts: images `c h w` in [-1, 1]; videos `c t h w`; mp4 `t h w c` uint8."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from src import atomic_io
from src.inference.common import autocast, load_image, load_module, sampling_overrides

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def read_jobs(sample: DictConfig) -> list[tuple[Path, str]]:
    """(image, prompt) pairs from sample.image + sample.prompt, or sample.images (+ sample.prompts)."""
    if (sample.image is None) == (sample.images is None):
        raise ValueError("set exactly one of sample.image (one file) or sample.images (a folder of images).")
    if sample.image is not None:
        return [(Path(sample.image), str(sample.prompt or ""))]
    folder = Path(sample.images)
    images = (
        sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    )
    if not images:
        raise FileNotFoundError(f"sample.images={folder}: no {IMAGE_SUFFIXES} files in that folder.")
    if sample.prompts is None:
        return [(p, str(sample.prompt or "")) for p in images]
    lines = [line for line in Path(sample.prompts).read_text().splitlines() if line.strip()]
    if all("\t" in line for line in lines):
        table = dict(line.split("\t", 1) for line in lines)
        missing = [p.name for p in images if p.name not in table]
        if missing:
            raise ValueError(
                f"sample.prompts={sample.prompts}: no prompt for {missing[:10]} (lines are name<TAB>prompt)."
            )
        return [(p, table[p.name]) for p in images]
    if len(lines) != len(images):
        raise ValueError(
            f"sample.prompts={sample.prompts} has {len(lines)} prompts for {len(images)} images; give one per line "
            "in sorted image order, or '<file name><TAB><prompt>' lines."
        )
    return list(zip(images, lines))


def run(cfg: DictConfig) -> list[dict]:
    """Animate every (image, prompt) job; returns the records written to samples.json."""
    from src.data.video_io import write_mp4
    from src.trainers.callbacks import to_uint8_frames

    sample = cfg.sample
    jobs = read_jobs(sample)
    loaded = load_module(cfg, default_stage="finetune")
    module, device = loaded.module, loaded.device
    size = tuple(sample.size or loaded.stage_cfg.data.size)
    num_frames = int(sample.num_frames or loaded.stage_cfg.data.num_frames)
    overrides = sampling_overrides(cfg)
    out = Path(sample.out)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator(device=device).manual_seed(int(cfg.seed))
    records = []
    for start in range(0, len(jobs), int(sample.batch_size)):
        chunk = jobs[start : start + int(sample.batch_size)]
        images = torch.stack([load_image(path, size) for path, _ in chunk]).to(device)
        prompts = [prompt for _, prompt in chunk]
        log.info("sampling %d video(s): %s", len(chunk), [p.name for p, _ in chunk])
        with torch.no_grad(), autocast(cfg, device):
            videos = module.sample(
                images,
                prompts,
                num_frames=num_frames,
                frame_stride=sample.frame_stride,
                fps=sample.fps,
                generator=generator,
                **overrides,
            )
        for (path, prompt), video in zip(chunk, videos.float().cpu()):
            target = out / f"{path.stem}.mp4"
            write_mp4(target, to_uint8_frames(video), fps=float(sample.save_fps))
            records.append({"image": str(path), "prompt": prompt, "video": str(target)})
    settings = {
        "experiment": cfg.run_name,
        "stage": loaded.stage,
        "weights": loaded.weights,
        "num_frames": num_frames,
        "size": list(size),
        "frame_stride": sample.frame_stride,
        "fps": sample.fps,
        "sampling": {**module.sampling_settings(), **overrides},
        "seed": int(cfg.seed),
    }
    atomic_io.write_json(out / "samples.json", {"settings": settings, "videos": records})
    return records
