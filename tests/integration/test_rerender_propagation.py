"""Rerender propagation through the real entry point: the demo beats the three baselines, and a user's mp4
with unevenly spaced key frames comes out as an mp4, key frames, settings and lossless frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from src.data.video_io import decode_mp4, write_mp4
from src.rerender.demo import demo_video, stylise
from tests.conftest import run_entry


@pytest.mark.slow  # ~4 min on the loaded 2-core box (13 frames of PatchMatch at 48x64)
def test_demo_propagation_beats_every_baseline_on_psnr_and_temporal_consistency(tmp_path):
    out = tmp_path / "demo"
    run_entry("src.sample", "experiment=rerender_demo", f"sample.out={out}", timeout=1200)
    summary = json.loads((out / "summary.json").read_text())
    metrics = summary["metrics"]
    ours = metrics["propagation"]
    assert summary["key_indices"] == [0, 6, 12] and summary["num_frames"] == 13
    for name in ("nearest_key", "warp_previous_key", "bidirectional_warp_blend"):
        assert ours["psnr"] > metrics[name]["psnr"], (name, metrics)
        assert ours["temporal_warp_mse"] < metrics[name]["temporal_warp_mse"], (name, metrics)
    assert (out / "rerender.mp4").is_file() and sorted(p.name for p in (out / "keys").iterdir()) == ["0000.png", "0006.png", "0012.png"]


def test_user_mp4_with_uneven_key_frames_writes_video_keys_settings_and_frames(tmp_path):
    frames, _ = demo_video(5, 9, 32, 48)
    video = write_mp4(tmp_path / "in.mp4", frames, fps=8, pix_fmt="yuv444p", crf=0)
    decoded = decode_mp4(video.read_bytes())
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    styled = stylise(decoded)
    for k in (0, 3, 8):
        Image.fromarray(styled[k]).save(keys_dir / f"{k:04d}.png")
    out = tmp_path / "out"
    run_entry(
        "src.sample", "experiment=rerender", f"sample.video={video}", f"sample.keyframes={keys_dir}",
        f"sample.out={out}", "sample.save_frames=true", "rerender.flow.name=dis", "sample.device=cpu",
        "rerender.propagation.search_vote_iters=2", "rerender.propagation.patchmatch_iters=2", timeout=600,
    )
    assert decode_mp4((out / "rerender.mp4").read_bytes()).shape == (9, 32, 48, 3)
    written = sorted(p.name for p in (out / "frames").iterdir())
    assert written == [f"{i:04d}.png" for i in range(9)]
    for k in (0, 3, 8):  # lossless PNGs: the key frames come back exactly
        assert np.array_equal(np.asarray(Image.open(out / "frames" / f"{k:04d}.png")), styled[k])
    settings = json.loads((out / "settings.json").read_text())
    assert settings["key_indices"] == [0, 3, 8] and settings["rerender"]["flow"]["name"] == "dis"
    assert sorted(p.name for p in (out / "keys").iterdir()) == ["0000.png", "0003.png", "0008.png"]


def test_without_key_frames_or_sd_weights_the_error_names_the_weights_key(tmp_path):
    """No sample.keyframes: key frames are translated with SD; a missing weight file is named with its config key,
    the HED annotator's (the cheapest load) before SD's, and with Canny maps SD's own checkpoint."""
    frames, _ = demo_video(5, 3, 16, 16)
    video = write_mp4(tmp_path / "in.mp4", frames, fps=8)
    for extra, key in (([], "model.control_map.hed_checkpoint"),
                       (["model.controlnet.control_type=canny"], "model.sd.checkpoint")):
        proc = run_entry("src.sample", "experiment=rerender", f"sample.video={video}", f"sample.out={tmp_path / 'o'}",
                         f"paths.weights={tmp_path / 'none'}", *extra, check=False)
        assert proc.returncode != 0 and key in proc.stderr, proc.stderr[-2000:]


def test_a_bad_setting_names_its_key(tmp_path):
    bad = "rerender.propagation.blend=fancy"
    frames, _ = demo_video(5, 3, 16, 16)
    video = write_mp4(tmp_path / "in.mp4", frames, fps=8)
    keys = tmp_path / "k"
    keys.mkdir()
    Image.fromarray(frames[0]).save(keys / "0000.png")
    proc = run_entry(
        "src.sample", "experiment=rerender", f"sample.video={video}", f"sample.keyframes={keys}",
        f"sample.out={tmp_path / 'o'}", bad, check=False,
    )
    assert proc.returncode != 0 and bad.split("=")[0].rsplit(".", 1)[0] in proc.stderr
