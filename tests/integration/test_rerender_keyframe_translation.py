"""Rerender end to end through `python -m src.sample experiment=rerender`: tiny random SD1.5 + ControlNet saved as
diffusers folders, DIS flow, a procedural clip -> key frames translated under the cross-frame constraints (SDEdit
start, both passes, pixel fusion with E*), propagated; the mp4, the key frames and the settings are written."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from src.data.video_io import decode_mp4, write_mp4
from src.rerender.demo import demo_video
from tests.conftest import run_entry
from tests.tiny_sd import save_tiny_sd_folder


def test_video_and_prompt_to_rerendered_video_with_translated_key_frames(tmp_path):
    weights = save_tiny_sd_folder(tmp_path / "weights")
    frames, _ = demo_video(3, 7, 48, 72)  # resized to 64 x 96 (short side 64, sides multiples of 32)
    video = write_mp4(tmp_path / "in.mp4", frames, fps=8, pix_fmt="yuv444p", crf=0)
    out = tmp_path / "out"
    run_entry(
        "src.sample",
        "experiment=rerender",
        f"sample.video={video}",
        "sample.prompt='a cat, oil painting'",
        f"sample.out={out}",
        "sample.device=cpu",
        "sample.save_frames=true",
        f"model.sd.checkpoint={weights / 'sd'}",
        f"model.controlnet.checkpoint={weights / 'controlnet'}",
        "model.controlnet.control_type=canny",
        "model.denoising_strength=0.75",
        "model.store_dtype=float32",
        "rerender.resolution=64",
        "rerender.keyframes.interval=3",
        "rerender.flow.name=dis",
        "rerender.propagation.search_vote_iters=2",
        "rerender.propagation.patchmatch_iters=2",
        timeout=600,
    )
    assert decode_mp4((out / "rerender.mp4").read_bytes()).shape == (7, 64, 96, 3)
    keys = sorted(p.name for p in (out / "keys").iterdir())
    assert keys == ["0000.png", "0003.png", "0006.png"]
    images = {k: np.asarray(Image.open(out / "keys" / k)) for k in keys}
    for k in keys:  # the written video carries the translated key frames exactly
        assert np.array_equal(np.asarray(Image.open(out / "frames" / k)), images[k])
    assert not np.array_equal(images["0000.png"], images["0003.png"])
    settings = json.loads((out / "settings.json").read_text())
    t = settings["translation"]
    assert (t["num_steps"], t["guidance_scale"], t["start_step"], t["pixel_fusion"]) == (
        20,
        7.5,
        5,
        "official",
    )
    assert t["windows"] == {
        "cross_attention": [0.0, 1.0],
        "shape_fusion": [0.0, 0.1],
        "pixel_fusion": [0.5, 0.8],
        "adain": [0.8, 1.0],
    }
    assert len(t["cross_frame_layers"]) == 4 and settings["prompt"] == "a cat, oil painting"
    assert settings["key_indices"] == [0, 3, 6] and settings["size"] == [64, 96]
    assert settings["timing_s"]["per_key_frame"] > 0 and settings["keyframes"] == "translated"
