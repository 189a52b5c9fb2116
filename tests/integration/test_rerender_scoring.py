"""A user's frames and hand-edited key frames through `python -m src.sample experiment=rerender_demo
sample.video=DIR sample.keyframes=DIR`, scored in the same run with `sample.score=true` (eval=rerender through
src.evaluate's runner), and the same folder scored by `python -m src.evaluate eval=rerender`: the numbers agree.
Tiny stand-ins for the metric weights: a random torchvision raft_small file and a tiny random open_clip CLIP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from torchvision.models.optical_flow import raft_small

from src.config import register_resolvers
from src.data.video_io import decode_mp4
from src.rerender.demo import demo_video, stylise
from src.rerender.frames_io import write_frames
from src.rerender.score_output import CONF_DIR, scoring_config
from tests.conftest import run_entry

KEYS = [0, 2, 6]  # unevenly spaced, as a user's edited frames may be
TINY_CLIP = (
    "{_target_:open_clip.model.CLIP,_convert_:all,embed_dim:16,quick_gelu:true,"
    "vision_cfg:{layers:1,width:32,head_width:16,patch_size:32,image_size:224},"
    "text_cfg:{context_length:77,vocab_size:49408,width:32,heads:2,layers:1}}"
)


def _eval_overrides(raft: str) -> list[str]:
    """The eval=rerender overrides that swap the real weights for tiny random stand-ins."""
    return [
        f"eval.weights.raft={raft}",
        "eval.metrics.pixel_mse.variant=raft_small",
        "eval.metrics.fram_acc.checkpoint=null",
        f"+eval.metrics.fram_acc.model={TINY_CLIP}",
        "eval.metrics.tem_con.checkpoint=null",
        f"+eval.metrics.tem_con.model={TINY_CLIP}",
        "eval.progress=false",
    ]


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerender_scoring")
    frames, _ = demo_video(5, 7, 48, 64)  # RAFT needs sides divisible by 8
    video_dir = write_frames(root / "frames", frames)
    keys_dir = write_frames(root / "keys", stylise(frames)[KEYS], KEYS)
    raft = root / "raft_small.pth"
    torch.manual_seed(0)
    torch.save(raft_small(weights=None).state_dict(), raft)
    out = root / "out"
    listed = ",".join(f"'{o}'" for o in _eval_overrides(str(raft)))
    run_entry(
        "src.sample",
        "experiment=rerender_demo",
        f"sample.video={video_dir}",
        f"sample.keyframes={keys_dir}",
        f"sample.out={out}",
        "sample.save_frames=true",
        "sample.score=true",
        "sample.prompt='a watercolor painting'",
        "sample.source_prompt='a photo of shapes'",
        f"sample.score_overrides=[{listed}]",
        "rerender.propagation.search_vote_iters=2",
        "rerender.propagation.patchmatch_iters=2",
        timeout=600,
    )
    return root, frames, raft, out


def test_user_frames_and_key_frames_are_propagated_and_scored(scored_run):
    root, frames, _, out = scored_run
    video = decode_mp4((out / "rerender.mp4").read_bytes())
    assert video.shape == frames.shape
    for k in KEYS:  # the user's key frames come out unchanged, at their own indices
        assert np.array_equal(np.asarray(Image.open(out / "frames" / f"{k:04d}.png")), stylise(frames)[k])
    settings = json.loads((out / "settings.json").read_text())
    assert settings["key_indices"] == KEYS and settings["video"] == str(root / "frames")
    assert not (out / "demo").exists()  # the user's inputs, not the demo's procedural clip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "rerender" and metrics["counts"]["generated"] == 1
    assert metrics["subset"]["generated_keys"] == ["rerender"]
    assert set(metrics["metrics"]) == {"fram_acc", "tem_con", "pixel_mse", "pixel_mse_skipped_videos"}
    assert metrics["metrics"]["pixel_mse_skipped_videos"] == 0
    assert 0 <= metrics["metrics"]["fram_acc"] <= 1 and -1 <= metrics["metrics"]["tem_con"] <= 1
    assert metrics["metrics"]["pixel_mse"] > 0
    assert json.loads((out / "prompts.json").read_text()) == {
        "rerender": {"source_prompt": "a photo of shapes", "target_prompt": "a watercolor painting"}
    }


def test_evaluate_entry_scores_the_output_folder_as_the_sample_run_did(scored_run):
    _, _, raft, out = scored_run
    run_dir = out.parent / "evaluate"
    run_entry(
        "src.evaluate",
        "eval=rerender",
        "logger=none",
        f"eval.generated_dir={out}",
        f"eval.prompts_file={out / 'prompts.json'}",
        f"hydra.run.dir={run_dir}",
        *_eval_overrides(str(raft)),
    )
    ours = json.loads((run_dir / "metrics.json").read_text())
    during_sampling = json.loads((out / "metrics.json").read_text())
    assert ours["counts"]["generated"] == 1 and ours["counts"]["missing_prompts"] == 0
    # RAFT is loaded from the same file, so Pixel-MSE is the same number (the tiny CLIPs are random per process)
    assert ours["metrics"]["pixel_mse"] == pytest.approx(during_sampling["metrics"]["pixel_mse"], rel=1e-6)
    assert set(ours["metrics"]) == set(during_sampling["metrics"])


def _sample_cfg(tmp_path, *overrides):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "sample",
            overrides=[
                "experiment=rerender_demo",
                f"sample.out={tmp_path}",
                f"paths.weights={tmp_path / 'no_weights'}",
                *overrides,
            ],
        )


def test_scoring_problems_are_named_before_anything_runs(tmp_path):
    cfg = _sample_cfg(tmp_path, "sample.score=true", "sample.prompt=x")
    with pytest.raises(ValueError, match=r"sample\.source_prompt.*eval\.metrics\.fram_acc=null"):
        scoring_config(cfg, tmp_path)
    cfg = _sample_cfg(tmp_path, "sample.score=true", 'sample.score_overrides=["eval.metrics.fram_acc=null"]')
    with pytest.raises(
        FileNotFoundError, match=r"eval\.weights\.clip=.*ViT-B-32.*eval\.weights\.raft=.*raft_large"
    ):
        scoring_config(cfg, tmp_path)
    cfg = _sample_cfg(tmp_path, "sample.score=true", 'sample.score_overrides=["eval.no_such_key=1"]')
    with pytest.raises(ValueError, match=r"score_overrides.*eval=rerender"):
        scoring_config(cfg, tmp_path)
