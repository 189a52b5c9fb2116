"""The demo's proof, run exactly as a user runs it: `python -m src.train experiment=animate_anyone_demo`.

Both stages train on the generated characters; held-out characters are then animated with held-out pose
sequences. The trained model must beat the untrained one clearly on SSIM, PSNR and silhouette IoU, and the
repeat-the-reference baseline on IoU, which is what shows pose control: the baseline's character is sharp
and in the right colours, only wrongly posed (measured: 0.453 against 0.368, and 0.465 / 0.436 for seeds
42 / 1 on one thread each; see the README's demo section). The scored frames start after the reference
frame, so the baseline is never exact by construction.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import run_entry


@pytest.mark.slow
def test_animate_anyone_demo_learns_pose_control(tmp_path, demo_cache):
    run_dir = tmp_path / "demo"
    started = time.time()
    run_entry(
        "src.train", "experiment=animate_anyone_demo", f"paths.cache={demo_cache}", f"hydra.run.dir={run_dir}",
        timeout=1500,
    )
    elapsed = time.time() - started
    summary = json.loads((run_dir / "summary.json").read_text())
    scores = summary["metrics"]["heldout"]
    trained, untrained, repeat = scores["trained"], scores["untrained"], scores["repeat_reference"]
    print(json.dumps(scores, indent=1), f"wall time {elapsed:.0f} s")
    assert summary["stages_run"] == ["spatial", "temporal"]
    assert trained["ssim"] > untrained["ssim"] + 0.1
    assert trained["psnr"] > untrained["psnr"] + 4.0
    assert trained["iou"] > untrained["iou"] + 0.08
    assert trained["iou"] > repeat["iou"]
    protocol = summary["heldout"]["protocol"]
    assert protocol["reference_frame"] not in protocol["scored_frames"]
    assert elapsed < 15 * 60
    # a sequence twice the motion window, animated in context windows: frames across window boundaries differ no
    # more than frames inside windows. Measured (seed 42): windowed 0.977, one pass 0.977, ground truth 0.962; the
    # bound 1.25 leaves room for seed-to-seed variation, and the windowed video must stay within 0.2 of the
    # seam-free one-pass video of the same model.
    long = summary["heldout"]["long"]
    print(json.dumps(long["scores"], indent=1))
    assert long["num_frames"] == 2 * long["context_frames"] and long["boundaries"]
    assert long["scores"]["seam_ratio"] < 1.25
    assert long["scores"]["seam_ratio"] < long["scores"]["seam_ratio_one_pass"] + 0.2
    for path in summary["heldout"]["videos"]:
        assert (run_dir / "heldout").joinpath(path.split("/")[-1]).is_file()
