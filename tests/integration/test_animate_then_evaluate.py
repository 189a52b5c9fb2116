"""The Animate Anyone user journey's last step through both entry points: `python -m src.sample` animates a folder
of pose videos (each with its clip's own first frame as the reference), then `python -m src.evaluate` folder mode
scores `<out>/videos` against the real clips, paired by name with no renaming in between."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from src.data.video_io import decode_mp4, write_mp4
from tests.conftest import run_entry
from tests.unit.evaluate_helpers import write_tiny_i3d, write_videos


def test_sampled_folder_is_scored_by_evaluate_folder_mode(tmp_path):
    real = write_videos(tmp_path / "real", ["clip_a", "clip_b"], seed=5, frames=10, size=16)
    poses, refs = tmp_path / "poses", tmp_path / "refs"
    refs.mkdir()
    for i, (key, frames) in enumerate(real.items()):
        Image.fromarray(frames[0]).save(refs / f"{key}.png")  # the test clip's first frame is its reference
        pose = np.zeros((10, 16, 16, 3), dtype=np.uint8)
        for f in range(10):
            pose[f, 2:14, 3 + f + i : 5 + f + i] = (255, 0, 0)  # a limb sliding right
        write_mp4(poses / f"{key}.mp4", pose, fps=8)
    (poses / "broken.mp4").write_bytes(b"not an mp4")  # skipped and listed, the batch goes on
    Image.fromarray(real["clip_a"][0]).save(refs / "broken.png")
    out = tmp_path / "sampled"
    run_entry(
        "src.sample",
        "experiment=animate_anyone_demo",
        f"sample.reference={refs}",
        f"sample.pose_videos={poses}",
        "sample.size=[16,16]",
        "sample.sampling.num_steps=2",
        f"sample.out={out}",
        timeout=300,
    )
    record = json.loads((out / "samples.json").read_text())
    assert [v["name"] for v in record["videos"]] == ["clip_a", "clip_b"]
    assert [v["reference"] for v in record["videos"]] == [str(refs / "clip_a.png"), str(refs / "clip_b.png")]
    assert [s["name"] for s in record["skipped"]] == ["broken"]
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["clip_a.mp4", "clip_b.mp4"]
    assert decode_mp4((out / "side_by_side" / "clip_b.mp4").read_bytes()).shape == (10, 16, 32, 3)

    run = tmp_path / "eval"
    run_entry(
        "src.evaluate",
        "eval=animate_anyone_ubc",
        f"eval.generated_dir={record['settings']['videos_dir']}",
        f"eval.real_dir={tmp_path / 'real'}",
        f"eval.weights.i3d={write_tiny_i3d(tmp_path / 'i3d.pt')}",
        "eval.metrics.lpips=null",
        "eval.clip.num_frames=10",
        "eval.metrics.fvd.num_frames=10",
        "logger=none",
        f"hydra.run.dir={run}",
        timeout=300,
    )
    results = json.loads((run / "metrics.json").read_text())
    counts = results["counts"]
    assert counts["generated"] == 2 and counts["paired"] == 2 and counts["missing_real"] == 0
    assert results["subset"]["generated_keys"] == results["subset"]["real_keys"] == ["clip_a", "clip_b"]
    assert {"ssim", "psnr", "fvd"} <= set(results["metrics"]) and results["metrics"]["psnr"] > 0
