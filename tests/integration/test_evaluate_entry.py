"""`python -m src.evaluate` as a user runs it: folder mode end to end on generated mp4 folders (paired and
unpaired metrics, a broken file counted, W&B offline files), and a missing weights file named with its key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision import models

from src.data.video_io import decode_mp4
from tests.conftest import run_entry
from tests.unit.evaluate_helpers import write_tiny_i3d, write_videos


def _random_alexnet(path):
    """A torchvision-format AlexNet checkpoint with random features (the LPIPS backbone stand-in)."""
    with torch.device("meta"):
        shapes = models.alexnet(weights=None).state_dict()
    gen = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(v.shape, generator=gen) * 0.05 if k.startswith("features") else torch.zeros(v.shape))
             for k, v in shapes.items()}
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate_entry")
    names = ["a", "b", "c", "d"]
    gen = write_videos(root / "gen", names, seed=3, frames=12, size=24)
    real = write_videos(root / "real", names, seed=4, frames=12, size=32)
    (root / "gen" / "broken.mp4").write_bytes(b"this is not an mp4")
    return {"root": root, "gen": gen, "real": real, "i3d": write_tiny_i3d(root / "i3d.pt"),
            "alex": _random_alexnet(root / "alexnet.pth")}


def _psnr_reference(root, names, frames):
    """PSNR per frame on [0, 1] after resizing the generated frames to the real size, averaged over frames."""
    values = []
    for name in names:
        gen = torch.from_numpy(decode_mp4((root / "gen" / f"{name}.mp4").read_bytes())[:frames]).permute(0, 3, 1, 2)
        real = decode_mp4((root / "real" / f"{name}.mp4").read_bytes())[:frames].astype(np.float64) / 255
        gen = torch.nn.functional.interpolate(gen.float(), size=real.shape[1:3], mode="bilinear", antialias=True)
        gen = gen.round().clamp(0, 255).permute(0, 2, 3, 1).numpy() / 255
        mse = ((gen - real) ** 2).mean(axis=(1, 2, 3))
        values.extend(10 * np.log10(1 / mse))
    return float(np.mean(values))


def test_folder_mode_end_to_end(inputs, tmp_path):
    root = inputs["root"]
    run = tmp_path / "run"
    run_entry(
        "src.evaluate", "eval=animate_anyone_ubc", f"eval.generated_dir={root / 'gen'}", f"eval.real_dir={root / 'real'}",
        f"eval.weights.i3d={inputs['i3d']}", f"eval.weights.lpips_backbone={inputs['alex']}",
        "eval.clip.num_frames=10", "eval.metrics.fvd.num_frames=10", "eval.batch_size=3", f"hydra.run.dir={run}",
        timeout=600,
    )
    results = json.loads((run / "metrics.json").read_text())
    assert results["protocol"] == "animate_anyone_ubc" and results["mode"] == "folder"
    paired = {"ssim", "psnr", "lpips"}
    assert set(results["metrics"]) == paired | {"fvd"} | {f"{m}_without_reference" for m in paired}
    assert results["reference"] == {"frame": 0, "scored": True, "position_in_clip": 0}
    assert results["metrics"]["psnr"] == pytest.approx(_psnr_reference(root, ["a", "b", "c", "d"], 10), rel=1e-6)
    assert 0 < results["metrics"]["lpips"] and results["metrics"]["fvd"] > 0
    counts = results["counts"]
    assert counts["generated"] == 4 and counts["paired"] == 4 and counts["real"] == 4
    assert counts["skipped"]["generated"] == 1 and counts["skipped_videos"][0]["key"] == "broken"
    assert results["weights"]["i3d"]["path"] == str(inputs["i3d"]) and results["weights"]["i3d"]["exists"]
    higher = {"ssim": True, "psnr": True, "lpips": False, "fvd": False}
    assert results["higher_is_better"] == {**higher, **{f"{m}_without_reference": higher[m] for m in paired}}
    assert all("broken" not in s for s in results["samples"]) and len(results["samples"]) == 4
    assert results["config"]["eval"]["clip"]["num_frames"] == 10
    assert list((run / "wandb").glob("offline-run-*"))  # no API key: W&B offline, as training


def test_missing_weights_name_the_file_and_key(inputs, tmp_path):
    root = inputs["root"]
    proc = run_entry(
        "src.evaluate", "eval=animate_anyone_ubc", f"eval.generated_dir={root / 'gen'}", f"eval.real_dir={root / 'real'}",
        f"eval.weights.lpips_backbone={inputs['alex']}", f"eval.weights.i3d={tmp_path / 'nowhere' / 'i3d.pt'}",
        "logger=none", f"hydra.run.dir={tmp_path / 'run'}", check=False, timeout=300,
    )
    assert proc.returncode != 0
    assert "nowhere/i3d.pt" in proc.stderr and "eval.weights.i3d" in proc.stderr
    assert "i3d_pretrained_400.pt" in proc.stderr  # where such a file is published
    assert not (tmp_path / "run" / "metrics.json").exists()
