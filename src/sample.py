"""Sampling entry point: `python -m src.sample experiment=<name> sample.image=IMG sample.prompt=... sample.out=DIR`.

Builds the experiment's model (its stage settings merged, as training does), loads trained net weights when
`sample.weights` is set, animates each image with its prompt and writes `<out>/<image stem>.mp4` plus
`<out>/samples.json` (image, prompt, video, settings). Images are read as RGB, resized on the shorter side and
center-cropped to the stage's `data.size`. Layouts: images `c h w` in [-1, 1]; videos `c t h w`; mp4 `t h w c` uint8.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from src import atomic_io
from src.config import register_resolvers

register_resolvers()
log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_image(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """RGB image file -> `3 h w` float in [-1, 1] at `size` (shorter-side resize + center crop, as the data)."""
    from PIL import Image

    from src.data.caption_video_dataset import to_model_video

    if not path.is_file():
        raise FileNotFoundError(f"sample image not found: {path} (set sample.image or sample.images).")
    frames = np.asarray(Image.open(path).convert("RGB"))[None]
    return to_model_video(frames, size)[:, 0]


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


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(cfg: DictConfig) -> list[dict]:
    """Animate every (image, prompt) job; returns the records written to samples.json."""
    from hydra.utils import instantiate

    from src.data.video_io import write_mp4
    from src.trainers.callbacks import to_uint8_frames
    from src.trainers.runner import stage_config
    from src.trainers.weights_io import load_net_weights

    sample = cfg.sample
    stages = list(cfg.stages.keys()) if cfg.stages else []
    stage = sample.stage or (stages[-1] if stages else None)
    scfg = stage_config(cfg, stage) if stage else cfg
    size = tuple(sample.size or scfg.data.size)
    num_frames = int(sample.num_frames or scfg.data.num_frames)
    jobs = read_jobs(sample)
    device = pick_device(sample.device)

    torch.manual_seed(cfg.seed)
    module = instantiate(scfg.model, stage=stage or "finetune", init_weights=None)
    if sample.weights:
        load_net_weights(module.net, sample.weights)
    module = module.to(device).eval()
    overrides = OmegaConf.to_container(sample.sampling, resolve=True) if sample.sampling else {}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    out = Path(sample.out)
    out.mkdir(parents=True, exist_ok=True)
    autocast = torch.autocast(
        "cuda", dtype=torch.bfloat16, enabled=bool(sample.autocast) and device.type == "cuda"
    )
    generator = torch.Generator(device=device).manual_seed(int(cfg.seed))
    records = []
    for start in range(0, len(jobs), int(sample.batch_size)):
        chunk = jobs[start : start + int(sample.batch_size)]
        images = torch.stack([load_image(path, size) for path, _ in chunk]).to(device)
        prompts = [prompt for _, prompt in chunk]
        log.info("sampling %d video(s): %s", len(chunk), [p.name for p, _ in chunk])
        with torch.no_grad(), autocast:
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
        "stage": stage,
        "weights": sample.weights,
        "num_frames": num_frames,
        "size": list(size),
        "frame_stride": sample.frame_stride,
        "fps": sample.fps,
        "sampling": {**module.sampling_settings(), **overrides}
        if hasattr(module, "sampling_settings")
        else overrides,
        "seed": int(cfg.seed),
    }
    atomic_io.write_json(out / "samples.json", {"settings": settings, "videos": records})
    return records


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    if cfg.get("rerender") is not None:  # Rerender-A-Video: video + key frames -> propagated video
        from src.rerender.entry import run_rerender

        run_rerender(cfg)
        return
    for record in run(cfg):
        print(record["video"])


if __name__ == "__main__":
    main()
