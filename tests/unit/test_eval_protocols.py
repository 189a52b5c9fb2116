"""Protocol choices that decide whether our numbers compare with the papers': which videos are scored
(seeded, class-stratified, recorded), whether the reference frame is scored (and the score without it always
beside), and that a shard job reads only its own slice of a model-mode test set."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
from hydra.utils import instantiate

from src.data.shards import ShardSetWriter
from src.data.video_io import decode_mp4, encode_mp4, write_mp4
from src.eval.runner import run_evaluation, shard_slice
from src.eval.subset import SubsetRule, select_keys
from src.eval.video_sources import ClipSpec, read_clip
from src.models.weights_io import save_net_weights
from tests.unit.evaluate_helpers import compose_eval, one_thread, write_videos

pytestmark = pytest.mark.usefixtures("one_thread")
__all__ = ["one_thread"]

UCF_CLASSES = ["ApplyEyeMakeup", "Basketball", "CliffDiving", "Drumming", "Fencing", "YoYo"]
UCF_PATTERN = r"^v_(.+)_g\d+_c\d+$"


@pytest.fixture(scope="module")
def ucf_folders(tmp_path_factory):
    """UCF-101-style names (sorted by class), 4 videos per class, generated and real of the same names."""
    root = tmp_path_factory.mktemp("ucf_like")
    names = [f"v_{c}_g{g:02d}_c01" for c in UCF_CLASSES for g in range(1, 5)]
    write_videos(root / "gen", names, seed=1, frames=4, size=16)
    write_videos(root / "real", names, seed=2, frames=4, size=16)
    return root, names


def _ucf_overrides(root, run_extra=()):
    return ["eval=dynamicrafter_ucf101", "logger=none", f"eval.generated_dir={root / 'gen'}",
            f"eval.real_dir={root / 'real'}", "eval.metrics.fvd=null", "eval.metrics.kvd=null", "eval.metrics.pic=null",
            "+eval.metrics.psnr={_target_:src.eval.pixel_metrics.VideoPSNR}", "eval.clip.num_frames=4",
            "eval.clip.stride=1", "eval.generated_clip.num_frames=4", "eval.resolution=null", "eval.num_samples=12",
            "eval.progress=false", "eval.log_videos=0", *run_extra]


def test_scored_subset_is_stratified_seeded_and_recorded(ucf_folders, tmp_path):
    root, names = ucf_folders
    results = run_evaluation(compose_eval(_ucf_overrides(root)), tmp_path / "a")
    subset = json.loads((tmp_path / "a" / "metrics.json").read_text())["subset"]
    chosen = subset["generated_keys"]
    # 12 of 24 over 6 equal classes: 2 from every class (the first 12 by name would cover 3 classes)
    assert Counter(name.split("_")[1] for name in chosen) == {c: 2 for c in UCF_CLASSES}
    assert chosen == sorted(chosen) and subset["real_keys"] == chosen and results["counts"]["generated"] == 12
    assert subset["seed"] == 0 and subset["stratify"] == UCF_PATTERN and subset["population"]["generated"] == 24

    other = run_evaluation(compose_eval(_ucf_overrides(root, ["eval.subset.seed=1"])), tmp_path / "b")
    assert other["subset"]["generated_keys"] != chosen  # the seed picks the sample
    again = run_evaluation(
        compose_eval(_ucf_overrides(root, ["eval.subset.rule=keys_file", f"eval.subset.keys_file={tmp_path / 'a' / 'metrics.json'}"])),
        tmp_path / "c",
    )
    assert again["subset"]["generated_keys"] == chosen and again["metrics"] == pytest.approx(results["metrics"])
    first = run_evaluation(compose_eval(_ucf_overrides(root, ["eval.subset.rule=first"])), tmp_path / "d")
    assert first["subset"]["generated_keys"] == names[:12]


def test_selection_ignores_listing_order_and_splits_uneven_classes_by_share():
    keys = [f"v_A_g{i:02d}_c01" for i in range(10)] + [f"v_B_g{i:02d}_c01" for i in range(5)] + ["v_C_g01_c01"]
    rule = SubsetRule(rule="random", seed=3, stratify=UCF_PATTERN)
    chosen = select_keys(keys, 8, rule)
    assert select_keys(list(reversed(keys)), 8, rule) == chosen
    by_class = Counter(k.split("_")[1] for k in chosen)
    assert len(chosen) == 8 and by_class["A"] == 5 and by_class["B"] + by_class["C"] == 3 and by_class["B"] >= 2
    with pytest.raises(ValueError, match="does not match eval.subset.stratify"):
        select_keys(keys + ["not_ucf"], 8, rule)


@pytest.fixture(scope="module")
def reference_folders(tmp_path_factory):
    """Generated clips that copy the real clip's frame 0 (the reference) and differ on the other frames."""
    root = tmp_path_factory.mktemp("reference")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        real = rng.integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
        gen = np.clip(real.astype(int) + rng.integers(-40, 40, real.shape), 0, 255).astype(np.uint8)
        gen[0] = real[0]
        for side, video in (("real", real), ("gen", gen)):
            (root / side).mkdir(exist_ok=True)
            write_mp4(root / side / f"{name}.mp4", video, fps=8, pix_fmt="yuv444p", crf=0)
    return root


def _psnr_frames(root, frames):
    values = []
    for name in ("a", "b"):
        gen = decode_mp4((root / "gen" / f"{name}.mp4").read_bytes())[frames].astype(np.float64) / 255
        real = decode_mp4((root / "real" / f"{name}.mp4").read_bytes())[frames].astype(np.float64) / 255
        mse = ((gen - real) ** 2).mean(axis=(1, 2, 3))
        values.extend(np.where(mse == 0, 100.0, 10 * np.log10(1 / np.maximum(mse, 1e-300))))
    return float(np.mean(values))


def _ubc_overrides(root, extra=()):
    return ["eval=animate_anyone_ubc", "logger=none", f"eval.generated_dir={root / 'gen'}", f"eval.real_dir={root / 'real'}",
            "eval.metrics.fvd=null", "eval.metrics.lpips=null", "eval.clip.num_frames=5", "eval.progress=false",
            "eval.log_videos=0", *extra]


def test_reference_frame_is_explicit_and_the_score_without_it_is_always_reported(reference_folders, tmp_path):
    root = reference_folders
    scored = run_evaluation(compose_eval(_ubc_overrides(root)), tmp_path / "scored")
    values = scored["metrics"]
    assert scored["reference"] == {"frame": 0, "scored": True, "position_in_clip": 0}
    assert values["psnr"] == pytest.approx(_psnr_frames(root, slice(0, 5)), rel=1e-6)
    assert values["psnr_without_reference"] == pytest.approx(_psnr_frames(root, slice(1, 5)), rel=1e-6)
    assert values["psnr"] > values["psnr_without_reference"] + 10  # the copied reference frame inflates it
    assert values["ssim"] > values["ssim_without_reference"]

    excluded = run_evaluation(compose_eval(_ubc_overrides(root, ["eval.reference.scored=false"])), tmp_path / "excluded")
    assert excluded["metrics"]["psnr"] == pytest.approx(values["psnr_without_reference"], rel=1e-9)
    assert "psnr_without_reference" not in excluded["metrics"]
    # a clip that starts after the reference has nothing to leave out
    later = run_evaluation(compose_eval(_ubc_overrides(root, ["eval.clip.start=1", "eval.clip.num_frames=4"])),
                           tmp_path / "later")
    assert later["reference"]["position_in_clip"] is None and "psnr_without_reference" not in later["metrics"]


def _pose_shards(folder, keys, broken, frames=6, size=32):
    """One sample per shard; the `broken` keys hold bytes that no decoder accepts."""
    rng = np.random.default_rng(0)
    with ShardSetWriter(folder, maxcount=1) as writer:
        for key in keys:
            video = rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8)
            pose = np.zeros_like(video)
            pose[:, 8:24, 10 + np.arange(frames) % 4] = 255
            mp4 = b"not an mp4 at all" if key in broken else encode_mp4(video, 8, pix_fmt="yuv444p", crf=0)
            writer.write({"__key__": key, "mp4": mp4, "pose.mp4": encode_mp4(pose, 8, pix_fmt="yuv444p", crf=0),
                          "json": {"fps": 8}})


def test_a_shard_job_never_decodes_another_shards_videos(tmp_path):
    keys = [f"held{i}" for i in range(6)]
    rule = SubsetRule(rule="random", seed=0)
    mine = shard_slice(select_keys(keys, 4, rule), 0, 2)
    broken = set(keys) - set(mine)  # every video shard 0 must not touch, including the unsampled ones
    _pose_shards(tmp_path / "shards", keys, broken)
    overrides = ["eval=animate_anyone_ubc", "eval.mode=model", "model=animate_anyone_tiny", "logger=none",
                 f"eval.checkpoint={tmp_path / 'net.safetensors'}", f"eval.test_set.shards={tmp_path / 'shards'}",
                 "eval.test_set.size=[32,32]", "eval.clip.num_frames=4", "eval.generator.num_steps=1",
                 "eval.metrics.fvd=null", "eval.metrics.lpips=null", "eval.num_samples=4", "eval.num_shards=2",
                 "eval.shard_index=0", "eval.progress=false", "eval.device=cpu"]
    cfg = compose_eval(overrides)
    save_net_weights(instantiate(cfg.model, stage="temporal", init_weights=None).net, tmp_path / "net.safetensors")
    out = run_evaluation(cfg, tmp_path / "run")
    assert out["counts"]["generated"] == len(mine) == 2 and out["counts"]["paired"] == 2
    assert sorted(p.stem for p in (tmp_path / "run" / "generated").glob("*.mp4")) == sorted(mine)
    # the other shard's job fails on its own (broken) videos, naming one
    shutil.rmtree(tmp_path / "run" / "generated")
    with pytest.raises(Exception, match="held"):
        run_evaluation(compose_eval([*overrides[:-2], "eval.shard_index=1", "eval.device=cpu"]), tmp_path / "run")


def test_published_rows_say_where_they_were_checked_or_why_not():
    from src.eval.published import PUBLISHED

    for protocol, rows in PUBLISHED.items():
        for row in rows:
            where = f"{protocol}/{row['method']}"
            assert "table" in row["source"].lower() or "issue" in row["source"], where
            if row["verified"]:
                assert "Section" in row["source"] or "page" in row["source"] or "issue #" in row["source"], where
                assert "unverified_because" not in row, where
            else:
                assert len(row.get("unverified_because", "")) > 40, where
    tiktok = {row["method"]: row["values"] for row in PUBLISHED["animate_anyone_tiktok"]}
    assert tiktok["Animate Anyone 2*"] == {"ssim": 0.812, "psnr": 30.82, "lpips": 0.223, "fvd": 144.65}


def test_published_rows_hold_the_cells_read_in_each_papers_table():
    """One row per table, as read on 2026-12-05; and Pix2Gif's Table 1 row order: 527.06 / 271.63 are its run of
    DynamiCrafter (they were once labelled Pix2Gif), Pix2Gif's own row is 285.02 / 168.69."""
    from src.eval.published import PUBLISHED

    rows = {(protocol, row["method"]): row["values"] for protocol, table in PUBLISHED.items() for row in table}
    assert rows["dynamicrafter_ucf101", "DynamiCrafter"] == {"fvd": 429.23, "kvd": 62.47, "pic": 0.6078}
    assert rows["dynamicrafter_msrvtt", "DynamiCrafter"] == {"fvd": 234.66, "kvd": 13.74, "pic": 0.5803}
    assert rows["dynamicrafter_ucf101", "I2VGen-XL (in DynamiCrafter)"]["kvd"] == 58.59
    assert rows["dynamicrafter_ucf101", "DynamiCrafter (in Pix2Gif)"] == {"fvd": 527.06, "pic": 0.6307}
    assert rows["dynamicrafter_msrvtt", "DynamiCrafter (in Pix2Gif)"] == {"fvd": 271.63, "pic": 0.6135}
    assert rows["dynamicrafter_ucf101", "Pix2Gif"] == {"fvd": 285.02, "pic": 0.8763}
    assert rows["dynamicrafter_msrvtt", "Pix2Gif"] == {"fvd": 168.69, "pic": 0.8521}
    assert rows["animate_anyone_ubc", "Animate Anyone"] == {"ssim": 0.931, "psnr": 38.49, "lpips": 0.044, "fvd": 81.6}
    assert rows["rerender", "Rerender-A-Video"] == {"fram_acc": 0.979, "tem_con": 0.983, "pixel_mse": 0.069}
    # every metric name is one the protocol's metrics.json can hold, so the report lines them up with ours
    names = {"fvd", "kvd", "pic", "ssim", "psnr", "lpips", "fram_acc", "tem_con", "pixel_mse"}
    assert all(set(values) <= names for values in rows.values())


def test_model_mode_scores_the_stored_clip_at_the_protocols_stride(tmp_path):
    """DynamiCrafter's clips are taken at frame stride 3 (here 2) from a random start: real/<name>.mp4 holds
    that clip already, so it is scored from its first frame, not cut at the stride a second time (which left
    nothing to score)."""
    rng = np.random.default_rng(0)
    sources = {}
    with ShardSetWriter(tmp_path / "shards", maxcount=1) as writer:
        for i in range(2):
            video = rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
            sources[f"clip{i}"] = video
            writer.write({"__key__": f"clip{i}", "mp4": encode_mp4(video, 8, pix_fmt="yuv444p", crf=0),
                          "json": {"videoid": f"clip{i}", "caption": "a shape moves", "fps": 8, "num_frames": 16,
                                   "height": 32, "width": 32, "source": "test"}})
    overrides = ["eval=dynamicrafter_ucf101", "eval.mode=model", "model=dynamicrafter_tiny", "logger=none",
                 f"eval.checkpoint={tmp_path / 'net.safetensors'}", f"eval.test_set.shards={tmp_path / 'shards'}",
                 "eval.resolution=[32,32]", "eval.clip.num_frames=8", "eval.clip.stride=2",
                 "eval.generated_clip.num_frames=8", "+eval.generator.sampling={num_steps: 1}", "eval.metrics.fvd=null",
                 "eval.metrics.kvd=null", "eval.metrics.pic=null",
                 "+eval.metrics.psnr={_target_: src.eval.pixel_metrics.VideoPSNR, protocol: standard}",
                 "eval.progress=false", "eval.device=cpu"]
    cfg = compose_eval(overrides)
    save_net_weights(instantiate(cfg.model, stage="finetune", init_weights=None).net, tmp_path / "net.safetensors")
    results = run_evaluation(cfg, tmp_path / "run")
    assert results["counts"]["paired"] == 2 and results["counts"]["skipped"]["real"] == 0
    values = []
    for key, video in sources.items():
        real = decode_mp4((tmp_path / "run" / "real" / f"{key}.mp4").read_bytes())
        start = ClipSpec(8, 2, "random", 0).first_index(16, key)  # the protocol's random start: 0 or 1 here
        assert real.shape[0] == 8 and np.abs(real.astype(int) - video[start::2][:8]).mean() < 3
        gen = decode_mp4((tmp_path / "run" / "generated" / f"{key}.mp4").read_bytes()).astype(np.float64) / 255
        mse = ((gen - real.astype(np.float64) / 255) ** 2).mean(axis=(1, 2, 3))
        values.extend(10 * np.log10(1 / mse))
    assert results["metrics"]["psnr"] == pytest.approx(float(np.mean(values)), rel=1e-6)


def test_random_clip_start_is_drawn_per_video_from_seed_and_name(tmp_path):
    """DynamiCrafter's author samples each real clip anywhere in its video (issue #6); the start depends only
    on (seed, name), so shards, resumes and model/folder mode agree."""
    clip = ClipSpec(num_frames=4, stride=3, start="random", seed=0)
    starts = {f"v{i}": clip.first_index(40, f"v{i}") for i in range(40)}
    assert all(0 <= s <= 40 - 10 for s in starts.values()) and len(set(starts.values())) > 10
    assert starts == {k: clip.first_index(40, k) for k in reversed(list(starts))}
    assert ClipSpec(4, 3, "random", 1).first_index(40, "v0") != starts["v0"] or \
        ClipSpec(4, 3, "random", 2).first_index(40, "v0") != starts["v0"]
    video = np.repeat(np.arange(40, dtype=np.uint8)[:, None, None, None] * 6, 16, 1).repeat(16, 2).repeat(3, 3)
    write_mp4(tmp_path / "v3.mp4", video, fps=8, pix_fmt="yuv444p", crf=0)
    frames = read_clip((tmp_path / "v3.mp4").read_bytes(), clip, "v3")
    expected = [starts["v3"] + 3 * i for i in range(4)]
    assert np.abs(frames[:, 0, 8, 8].numpy().astype(int) - np.array(expected) * 6).max() <= 2
