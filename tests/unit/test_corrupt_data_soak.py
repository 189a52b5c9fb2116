"""Corrupt data soak: 5% of 160 samples broken in eight ways; every tool finishes, skips exactly the planted
samples under the planted reasons, and loses no good sample."""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from webdataset.tariterators import tarfile_samples

from src.data.caption_video_dataset import CaptionVideoDataset
from src.data.caption_video_dataset import loader_from_config as caption_loader
from src.data.pose_video_dataset import PoseVideoDataset
from src.data.pose_video_dataset import loader_from_config as pose_loader
from src.data.shards import list_shards, read_manifest
from tests.soak.corrupt_shards import (
    AA_TRAIN,
    DC_TRAIN,
    EVALUATE,
    MAKE_SHARDS,
    RECAPTION,
    WEBVID,
    expected_counts,
    write_real_folder,
    write_soak_folders,
    write_soak_shards,
)

TOTAL = 160


def good_keys(planted: dict[str, str], table: dict[str, str]) -> set[str]:
    return {f"clip_{i:04d}" for i in range(TOTAL)} - {k for k, kind in planted.items() if kind in table}


@pytest.fixture(scope="module")
def soak(tmp_path_factory):
    root = tmp_path_factory.mktemp("soak")
    planted = write_soak_shards(root / "shards", TOTAL)
    assert write_soak_folders(root / "videos", TOTAL) == planted and len(planted) == TOTAL * 5 // 100
    return root, planted


@pytest.fixture(autouse=True)
def quiet_skips(caplog):
    caplog.set_level(logging.ERROR)  # each skip logs a warning; 40 of them would drown the test output


@pytest.mark.parametrize(("dataset", "table"), [
    (lambda shards: PoseVideoDataset(shards, num_frames=1, margin=2, size=(16, 16), resampled=False,
                                     shuffle_buffer=0), AA_TRAIN),
    (lambda shards: PoseVideoDataset(shards, num_frames=4, stride=1, size=(16, 16), resampled=False,
                                     shuffle_buffer=0), AA_TRAIN),
    (lambda shards: CaptionVideoDataset(shards, num_frames=4, stride_range=(1, 2), size=(16, 16), resampled=False,
                                        shuffle_buffer=0), DC_TRAIN),
], ids=["animate_anyone_spatial", "animate_anyone_temporal", "dynamicrafter"])
def test_training_pipelines_skip_exactly_the_planted_samples(soak, dataset, table) -> None:
    root, planted = soak
    data = dataset(list_shards(str(root / "shards")))
    keys = [sample["key"] for sample in data]
    assert sorted(keys) == sorted(good_keys(planted, table))  # every good sample once, no broken one
    assert dict(data.skip_counts) == expected_counts(planted, table)


@pytest.mark.parametrize("system", ["animate_anyone", "dynamicrafter"])
def test_training_loaders_from_config_run_through_the_broken_shards(soak, system) -> None:
    """The loaders training builds (resampled streams, batches): 12 batches of 4 cross every broken sample."""
    root, _ = soak
    common = {"batch_size": 4, "num_workers": 0, "shuffle_buffer": 0, "batches_per_epoch": 12, "size": [16, 16]}
    if system == "animate_anyone":
        cfg = {**common, "num_frames": 1, "stride": 1, "margin": 2, "crop_scale": [1, 1], "crop_ratio": [1, 1]}
        loader = pose_loader(OmegaConf.create(cfg), str(root / "shards"), 0)
    else:
        cfg = {**common, "num_frames": 4, "stride": None, "stride_range": [1, 2], "caption_key": "caption"}
        loader = caption_loader(OmegaConf.create(cfg), str(root / "shards"), 0)
    batches = list(loader)
    assert len(batches) == 12 and all(len(b["key"]) == 4 for b in batches)
    # the skips reach the batches, per reason (src.trainers.skipped_samples logs them)
    assert sum(n for b in batches for counts in b["skipped"] for n in counts.values()) > 0


def test_make_shards_skips_the_planted_pairs_and_writes_the_rest(soak, tmp_path) -> None:
    from src.data.make_shards import main

    root, planted = soak
    assert main(["--videos", str(root / "videos"), "--out", str(tmp_path / "out"), "--min-frames", "2",
                 "--workers", "2"]) == 0
    manifest = read_manifest(tmp_path / "out")
    assert manifest["skip_counts"] == dict(sorted(expected_counts(planted, MAKE_SHARDS).items()))
    assert manifest["total_samples"] == len(good_keys(planted, MAKE_SHARDS))


def test_webvid_skips_the_planted_videos_and_converts_the_rest(soak, tmp_path) -> None:
    from src.data.webvid import main

    root, planted = soak
    table = tmp_path / "webvid.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["videoid", "name"])
        writer.writerows([[f"clip_{i:04d}", f"a moving square {i}"] for i in range(TOTAL)])
    assert main(["--csv", str(table), "--videos", str(root / "videos"), "--out", str(tmp_path / "out"),
                 "--height", "16", "--width", "16", "--min-frames", "4", "--workers", "1",
                 "--preset", "ultrafast"]) == 0
    manifest = read_manifest(tmp_path / "out")
    assert manifest["skip_counts"] == dict(sorted(expected_counts(planted, WEBVID).items()))
    assert manifest["total_samples"] == len(good_keys(planted, WEBVID))


def test_recaption_skips_the_planted_json_and_copies_the_rest(soak, tmp_path) -> None:
    from src.data.recaption import main

    root, planted = soak
    table = tmp_path / "captions.csv"
    table.write_text("videoid,motion\n" + "".join(f"clip_{i:04d},moves right\n" for i in range(TOTAL)))
    assert main(["--shards", str(root / "shards"), "--captions", str(table), "--motion-column", "motion",
                 "--out", str(tmp_path / "out")]) == 0
    manifest = read_manifest(tmp_path / "out")
    assert manifest["skip_counts"] == dict(sorted(expected_counts(planted, RECAPTION).items()))
    assert manifest["total_samples"] == len(good_keys(planted, RECAPTION))


def test_evaluate_folder_mode_scores_every_good_video(soak, tmp_path) -> None:
    from src.eval.runner import run_evaluation
    from tests.unit.evaluate_helpers import compose_eval

    root, planted = soak
    write_real_folder(tmp_path / "real", TOTAL)
    cfg = compose_eval([
        "eval=animate_anyone_ubc", "logger=none", f"eval.generated_dir={root / 'videos'}",
        f"eval.real_dir={tmp_path / 'real'}", "eval.metrics.lpips=null", "eval.metrics.fvd=null",
        "eval.clip.num_frames=4", "eval.progress=false", "eval.log_videos=0", "eval.batch_size=16",
    ])
    results = run_evaluation(cfg, tmp_path / "run")
    counts = json.loads((tmp_path / "run" / "metrics.json").read_text())["counts"]
    assert counts["skip_reasons"] == {"generated": expected_counts(planted, EVALUATE), "real": {}}
    assert counts["paired"] == len(good_keys(planted, EVALUATE)) == results["counts"]["paired"]


def test_cache_writer_killed_midway_leaves_no_partial_shard_and_its_rerun_completes(soak, tmp_path) -> None:
    """`python -m src.data.cache` over the broken shards, SIGKILLed once its first shard is written: no partial
    cache shard is ever listed (a shard exists only with its sidecar, written after the tar), training refuses
    the incomplete cache, and the rerun reuses what was written, completes, and counts exactly the planted skips."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from src.data.latent_cache import CacheMismatch, cache_shards, sidecar
    from tests.conftest import ROOT, run_entry

    root, planted = soak
    cache = tmp_path / "cache"
    overrides = ["experiment=dynamicrafter_demo", "data.demo=null", f"data.train_shards={root / 'shards'}",
                 f"data.cache={cache}", "data.cache_batch_size=1", "logger=csv"]
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
    writer = subprocess.Popen([sys.executable, "-m", "src.data.cache", *overrides, f"hydra.run.dir={tmp_path / 'a'}"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(cache.glob("*.tar.json")) and writer.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    done = sorted(cache.glob("*.tar.json"))
    key = json.loads((cache / "cache_key.json").read_text())
    assert 1 <= len(done) < len(key["raw_shards"])  # killed midway
    for car in done:  # every listed shard is complete: all its samples read back
        tar = car.with_name(car.name[: -len(".json")])
        assert len(list(tarfile_samples([{"url": str(tar)}]))) == json.loads(car.read_text())["samples"]
    with pytest.raises(CacheMismatch, match="incomplete"):
        cache_shards(cache, key)

    rerun = run_entry("src.data.cache", *overrides, f"hydra.run.dir={tmp_path / 'b'}")
    assert f"'reused': {len(done)}" in rerun.stdout + rerun.stderr
    assert not list(cache.glob(".*tmp*"))  # the killed writer's temporary file was cleared
    shards = cache_shards(cache, key)
    infos = [json.loads(sidecar(Path(p)).read_text()) for p in shards]
    assert sum(i["samples"] for i in infos) == len(good_keys(planted, DC_TRAIN))  # no good sample lost
    counted = Counter()
    for info in infos:
        counted.update(info["skipped"])
    assert dict(counted) == expected_counts(planted, DC_TRAIN)
    keys = [s["__key__"] for p in shards for s in tarfile_samples([{"url": p}])]
    assert sorted(keys) == sorted(good_keys(planted, DC_TRAIN))


def test_cache_writer_tasks_split_the_shards_between_them(soak, tmp_path, monkeypatch) -> None:
    """Array task i of n writes raw shards i, i+n, ... (SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT, else the
    rank); together the tasks write every shard once, and the cache is complete only then."""
    from hydra import compose, initialize_config_dir

    from src.config import register_resolvers, stage_config
    from src.data.cache import StageCacheWriter, task_slot, totals
    from src.data.latent_cache import CacheMismatch, cache_shards
    from tests.conftest import ROOT

    assert task_slot({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (3, 4)
    assert task_slot({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "2"}) == (3, 4)
    root, planted = soak
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=dynamicrafter_demo", "data.demo=null",
                                          f"data.train_shards={root / 'shards'}", f"data.cache={tmp_path / 'c'}"])
    writer = StageCacheWriter(stage_config(cfg, "finetune"), "finetune", torch.device("cpu"))
    assert writer.run(1, 2)["written"] == 2
    assert sorted(p.name for p in (tmp_path / "c").glob("*.tar")) == ["soak-000001.tar", "soak-000003.tar"]
    with pytest.raises(CacheMismatch, match="2 of 4 shards are not written"):
        cache_shards(tmp_path / "c", writer.key)
    assert writer.run(0, 2)["written"] == 2
    assert totals(tmp_path / "c", writer.shards)["samples"] == len(good_keys(planted, DC_TRAIN))
    assert len(cache_shards(tmp_path / "c", writer.key)) == 4
