"""The Animate Anyone pipeline: skipping and counting bad samples, one shared crop, exact batch counts."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from src.data.pose_video_dataset import (
    TooManySkips,
    build_loader,
    build_pose_video_dataset,
    collate_pose_video,
    load_heldout_videos,
)
from src.data.shards import ShardSetWriter, encode_npz
from src.data.video_io import encode_mp4

SIZE = 48
COORD_STEP = 5  # R = 5 * x, G = 5 * y, B = 10 * t: every pixel tells where and when it came from


def coordinate_video(num_frames: int, size: int = SIZE) -> np.ndarray:
    t, y, x = np.meshgrid(np.arange(num_frames), np.arange(size), np.arange(size), indexing="ij")
    return np.stack([x * COORD_STEP, y * COORD_STEP, t * 10], axis=-1).astype(np.uint8)


def encoded(num_frames: int) -> bytes:
    return encode_mp4(coordinate_video(num_frames), fps=8, pix_fmt="yuv444p", crf=2)


def good_sample(key: str, num_frames: int = 24) -> dict:
    data = encoded(num_frames)
    return {"__key__": key, "mp4": data, "pose.mp4": data, "json": {"num_frames": num_frames}}


@pytest.fixture(scope="module")
def mixed_shard(tmp_path_factory) -> str:
    """One shard: good samples with a corrupt, a too-short and a pose-mismatched one in between."""
    out = tmp_path_factory.mktemp("mixed")
    with ShardSetWriter(out, maxcount=100) as writer:
        writer.write(good_sample("good0"))
        writer.write({"__key__": "corrupt", "mp4": b"\x00garbage" * 64, "pose.mp4": encoded(24)})
        writer.write(good_sample("good1"))
        writer.write(good_sample("short", num_frames=8))
        writer.write({"__key__": "mismatch", "mp4": encoded(24), "pose.mp4": encoded(20)})
        writer.write(good_sample("good2"))
        writer.write(good_sample("good3"))
    return str(out)


@pytest.fixture(scope="module")
def uneven_shards(tmp_path_factory) -> str:
    """Three shards holding 2, 2 and 1 good samples."""
    out = tmp_path_factory.mktemp("uneven")
    with ShardSetWriter(out, maxcount=2) as writer:
        for i in range(5):
            writer.write(good_sample(f"v{i}", num_frames=12))
    return str(out)


@pytest.mark.parametrize("cache_mb", [0, 64])
@pytest.mark.parametrize("num_frames, stride", [(1, 1), (4, 3)])
def test_bad_samples_are_skipped_counted_and_logged(mixed_shard, caplog, num_frames, stride, cache_mb) -> None:
    dataset = build_pose_video_dataset(
        mixed_shard,
        num_frames=num_frames,
        stride=stride,
        margin=10,
        size=(32, 32),
        resampled=False,
        shuffle_buffer=0,
        decoded_cache_mb=cache_mb,
    )
    with caplog.at_level(logging.WARNING, logger="src.data.pose_video_dataset"):
        samples = list(dataset)
    assert [s["key"] for s in samples] == ["good0", "good1", "good2", "good3"]
    assert [sum(s["skipped"].values()) for s in samples] == [0, 1, 2, 0]
    assert samples[1]["skipped"] == {"undecodable": 1} and samples[2]["skipped"] == {"too_short": 1, "pose_length": 1}
    logged = caplog.text
    assert "corrupt" in logged and "short" in logged and "mismatch" in logged
    assert "pose video has 20 frames but the video has 24" in logged
    sample = samples[0]
    assert sample["pixel_values"].shape == (3, num_frames, 32, 32)
    assert sample["pose"].shape == (3, num_frames, 32, 32)
    assert sample["reference"].shape == (3, 32, 32)
    assert sample["pixel_values"].dtype == torch.float32
    assert -1.0 <= sample["pixel_values"].min() and sample["pixel_values"].max() <= 1.0
    assert 0.0 <= sample["pose"].min() and sample["pose"].max() <= 1.0


def test_one_crop_shared_by_reference_targets_and_pose(mixed_shard) -> None:
    dataset = build_pose_video_dataset(
        mixed_shard,
        num_frames=3,
        stride=2,
        size=(32, 32),
        crop_scale=(0.45, 0.55),
        crop_ratio=(0.8, 1.25),
        seed=3,
        shuffle_buffer=0,
    )
    lefts = set()
    for sample, _ in zip(dataset, range(8)):
        pixels = (sample["pixel_values"] + 1) / 2  # (3, T, H, W) in [0, 1]
        reference = (sample["reference"] + 1) / 2
        pose = sample["pose"]
        coords = pixels[:2]  # R, G = x, y coordinates: identical in every frame of one crop
        # a one-source-pixel shift of the crop moves a coordinate channel by ~0.018; noise is < 0.007
        for t in range(3):
            assert (coords[:, t] - reference[:2]).abs().mean(dim=(1, 2)).max() < 0.01
            assert (pose[:2, t] - coords[:, t]).abs().mean(dim=(1, 2)).max() < 0.01
        # B = time: the targets really are `stride` frames apart
        step = (pixels[2, 1:] - pixels[2, :-1]).mean(dim=(1, 2)) * 255
        assert torch.allclose(step, torch.full_like(step, 20.0), atol=2.0)
        # a 0.5-area crop: the output spans about 0.7 of the frame, not the whole of it
        span_x = (coords[0, 0, :, -1] - coords[0, 0, :, 0]).mean() * 255 / COORD_STEP
        assert 25 < span_x < 40
        lefts.add(round(float(coords[0, 0, :, 0].mean() * 255 / COORD_STEP)))
    assert len(lefts) > 2  # the crop is random across samples


def test_all_bad_shards_raise_instead_of_looping(tmp_path) -> None:
    with ShardSetWriter(tmp_path) as writer:
        writer.write({"__key__": "bad", "mp4": b"junk" * 10, "pose.mp4": b"junk" * 10})
    dataset = build_pose_video_dataset(
        str(tmp_path), num_frames=1, margin=1, size=(16, 16), max_consecutive_skips=25, shuffle_buffer=4
    )
    with pytest.raises(TooManySkips, match="25 consecutive samples failed"):
        next(iter(dataset))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_yields_exactly_batches_per_epoch(uneven_shards, num_workers) -> None:
    dataset = build_pose_video_dataset(uneven_shards, num_frames=2, stride=2, margin=2, size=(16, 16))
    loader = build_loader(dataset, batch_size=2, num_workers=num_workers, batches_per_epoch=5, seed=0)
    assert len(loader) == 5
    for _ in range(2):  # two epochs
        batches = list(loader)
        assert len(batches) == 5
    batch = batches[0]
    assert batch["pixel_values"].shape == (2, 3, 2, 16, 16)
    assert batch["pose"].shape == (2, 3, 2, 16, 16)
    assert batch["reference"].shape == (2, 3, 16, 16)
    assert isinstance(batch["key"], list) and len(batch["key"]) == 2
    assert isinstance(batch["skipped"], list) and len(batch["skipped"]) == 2  # {reason: count} per sample


def test_loader_is_deterministic_given_seed_and_epoch(uneven_shards) -> None:
    def keys(epoch: int) -> list[str]:
        dataset = build_pose_video_dataset(uneven_shards, num_frames=1, margin=3, size=(16, 16), seed=5)
        loader = build_loader(dataset, batch_size=1, num_workers=0, batches_per_epoch=6, seed=5)
        loader.set_epoch(epoch)
        return [b["key"][0] + str(b["pixel_values"].sum().item()) for b in loader]

    assert keys(0) == keys(0)
    assert keys(0) != keys(1)


@pytest.mark.parametrize("resampled", [True, False])
def test_simulated_ranks_get_equal_batch_counts(uneven_shards, monkeypatch, resampled) -> None:
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        dataset = build_pose_video_dataset(
            uneven_shards, num_frames=1, margin=3, size=(16, 16), resampled=resampled, shuffle_buffer=0
        )
        loader = build_loader(dataset, batch_size=1, num_workers=0, batches_per_epoch=7, seed=0)
        # not resampled: the 3 shards split 2 + 1 between ranks, yet both ranks get exactly 7 batches
        assert len(list(loader)) == 7


@pytest.mark.parametrize("which", ["uneven_shards", "mixed_shard"])
def test_one_pass_splits_data_disjointly_between_ranks(request, which) -> None:
    """3 shards: split by shard; 1 shard (fewer than ranks): split by sample. Together: every sample once."""
    dataset = build_pose_video_dataset(
        request.getfixturevalue(which),
        num_frames=1,
        margin=3,
        size=(16, 16),
        resampled=False,
        shuffle_buffer=0,
    )
    keys = []
    for rank in range(2):
        dataset.set_state(epoch=0, rank=rank, world_size=2)
        keys.append([s["key"] for s in dataset])
    assert keys[0] and keys[1] and set(keys[0]).isdisjoint(keys[1])
    expected = (
        [f"v{i}" for i in range(5)]
        if which == "uneven_shards"
        else ["good0", "good1", "good2", "good3", "short"]
    )
    assert sorted(keys[0] + keys[1]) == expected


def test_collate_matches_the_batch_format() -> None:
    sample = {
        "pixel_values": torch.zeros(3, 2, 4, 4),
        "pose": torch.zeros(3, 2, 4, 4),
        "reference": torch.zeros(3, 4, 4),
        "key": "a",
        "skipped": {"undecodable": 2, "too_short": 1},
    }
    batch = collate_pose_video([sample, {**sample, "key": "b", "skipped": {}}])
    assert batch["key"] == ["a", "b"]
    assert batch["skipped"] == [{"undecodable": 2, "too_short": 1}, {}]
    assert batch["pixel_values"].shape == (2, 3, 2, 4, 4)


def test_load_heldout_videos_decodes_everything(tmp_path) -> None:
    silhouette = np.zeros((12, SIZE, SIZE), bool)
    silhouette[:, 10:20, 5:9] = True
    background = np.full((SIZE, SIZE, 3), 7, np.uint8)
    with ShardSetWriter(tmp_path) as writer:
        for i in range(3):
            sample = good_sample(f"h{i}", num_frames=12)
            sample["json"] = {"character_seed": i}
            sample["mask.npz"] = encode_npz(silhouette=silhouette, background=background)
            writer.write(sample)
    videos = load_heldout_videos(str(tmp_path))
    assert [v["key"] for v in videos] == ["h0", "h1", "h2"]
    video = videos[1]
    assert video["frames"].shape == (12, SIZE, SIZE, 3) and video["frames"].dtype == np.uint8
    assert video["pose"].shape == (12, SIZE, SIZE, 3)
    assert np.abs(video["frames"].astype(int) - coordinate_video(12)).mean() < 2
    assert video["meta"] == {"character_seed": 1}
    np.testing.assert_array_equal(video["silhouette"], silhouette)
    np.testing.assert_array_equal(video["background"], background)
    assert len(load_heldout_videos(str(tmp_path), max_videos=2)) == 2


def test_load_heldout_videos_strict_about_corrupt_samples(tmp_path) -> None:
    with ShardSetWriter(tmp_path) as writer:
        writer.write(good_sample("fine", num_frames=6))
        writer.write({"__key__": "broken", "mp4": b"junk" * 20})
    with pytest.raises(ValueError, match="broken"):
        load_heldout_videos(str(tmp_path))
    assert [v["key"] for v in load_heldout_videos(str(tmp_path), strict=False)] == ["fine"]


def test_demo_shards_are_reused_disjoint_and_feed_the_pipeline(tmp_path) -> None:
    from src.data.demo_characters import render_demo_video
    from src.data.demo_dataset import ensure_demo_shards

    kwargs = dict(num_train_videos=3, num_heldout_videos=2, num_frames=6, size=32, fps=8, samples_per_shard=2)
    demo = ensure_demo_shards(tmp_path, **kwargs)
    assert len(demo.train) == 2 and len(demo.heldout) == 1
    stamp = demo.root / "stamp.json"
    mtime = stamp.stat().st_mtime_ns
    again = ensure_demo_shards(tmp_path, **kwargs)
    assert again == demo and stamp.stat().st_mtime_ns == mtime  # reused, not regenerated
    other = ensure_demo_shards(tmp_path, **{**kwargs, "seed": 1})
    assert other.root != demo.root
    assert not list(tmp_path.glob(".tmp-*"))  # temp folders are renamed or removed

    train = load_heldout_videos(demo.train)
    heldout = load_heldout_videos(demo.heldout)
    assert len(train) == 3 and len(heldout) == 2
    assert all("silhouette" in v and "background" in v for v in heldout)
    assert not any("silhouette" in v for v in train)
    train_characters = {v["meta"]["character_seed"] for v in train}
    train_motions = {v["meta"]["motion_seed"] for v in train}
    assert all(v["meta"]["character_seed"] not in train_characters for v in heldout)
    assert all(v["meta"]["motion_seed"] not in train_motions for v in heldout)

    video = heldout[0]
    rendered = render_demo_video(
        video["meta"]["character_seed"], video["meta"]["motion_seed"], 6, size=32, fps=8
    )
    assert np.abs(video["pose"].astype(int) - rendered.pose).mean() < 1.0  # skeleton colours survive
    np.testing.assert_array_equal(video["silhouette"], rendered.silhouette)

    dataset = build_pose_video_dataset(demo.train, num_frames=2, stride=2, size=(32, 32))
    batch = next(iter(build_loader(dataset, batch_size=2, num_workers=0, batches_per_epoch=1, seed=0)))
    assert batch["pixel_values"].shape == (2, 3, 2, 32, 32)


@pytest.mark.parametrize("num_frames, stride", [(1, 1), (4, 3)])
def test_decoded_cache_gives_the_same_samples_and_serves_repeats_from_memory(uneven_shards, num_frames, stride) -> None:
    def build(cache_mb):
        return build_pose_video_dataset(
            uneven_shards, num_frames=num_frames, stride=stride, margin=4, size=(32, 32), seed=3,
            resampled=True, shuffle_buffer=4, decoded_cache_mb=cache_mb,
        )

    plain, cached = build(0), build(64)
    for a, b in zip(_take(plain, 12), _take(cached, 12)):
        assert a["key"] == b["key"]
        for name in ("pixel_values", "pose", "reference"):
            assert torch.equal(a[name], b[name]), name
    assert len(cached.cache) == 5 and cached.cache.hits == 12 - 5


def _take(dataset, n):
    out = []
    for sample in dataset:
        out.append(sample)
        if len(out) == n:
            return out
    return out


def test_decoded_cache_evicts_least_recently_used_within_its_budget() -> None:
    from src.data.decoded_cache import DecodedVideoCache

    cache = DecodedVideoCache(max_bytes=3000)
    arrays = {k: (np.zeros(1000, np.uint8),) for k in "abcd"}
    for k in "abc":
        cache.put(k, arrays[k])
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", arrays["d"])
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 3 and cache.bytes == 3000
    cache.put("huge", (np.zeros(5000, np.uint8),))
    assert cache.get("huge") is None


def test_split_global_batch_gives_each_rank_its_slice_of_the_one_process_batches(uneven_shards, monkeypatch) -> None:
    """data.split_global_batch: 2 ranks x batch 2 see exactly a 1-process batch of 4, split in order, with
    the same global sample indices (so the model's per-sample draws agree too); without it the ranks' streams
    differ, and their indices still never collide."""

    def batches(rank: int, world: int, batch_size: int, split: bool) -> list[dict]:
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        dataset = build_pose_video_dataset(uneven_shards, num_frames=1, margin=3, size=(16, 16), seed=3)
        loader = build_loader(
            dataset, batch_size=batch_size, num_workers=0, batches_per_epoch=3, seed=3, split_global_batch=split
        )
        return list(loader)

    single = batches(0, 1, 4, True)
    ranks = [batches(r, 2, 2, True) for r in range(2)]
    for index, whole in enumerate(single):
        parts = [ranks[r][index] for r in range(2)]
        assert parts[0]["key"] + parts[1]["key"] == whole["key"]
        assert torch.equal(torch.cat([p["pixel_values"] for p in parts]), whole["pixel_values"])
        assert torch.equal(torch.cat([p["sample_index"] for p in parts]), whole["sample_index"])
    assert torch.equal(torch.cat([b["sample_index"] for b in single]), torch.arange(12))
    own = [batches(r, 2, 2, False) for r in range(2)]
    own_indices = torch.cat([b["sample_index"] for rank in own for b in rank])
    assert sorted(own_indices.tolist()) == list(range(12))  # one numbering over both ranks' own streams
    assert own[0][0]["key"] + own[1][0]["key"] != single[0]["key"]


def test_sample_indices_continue_across_epochs_and_after_a_resume(uneven_shards) -> None:
    """The numbering the training draws are keyed on: epoch 1 continues after epoch 0, and a loader restored
    from a mid-epoch state yields the indices (and samples) the uninterrupted loader yields from there."""

    def loader():
        dataset = build_pose_video_dataset(uneven_shards, num_frames=1, margin=3, size=(16, 16), seed=5)
        return build_loader(dataset, batch_size=2, num_workers=0, batches_per_epoch=3, seed=5)

    straight = loader()
    epochs = [list(straight), list(straight)]
    flat = [b for epoch in epochs for b in epoch]
    assert torch.equal(torch.cat([b["sample_index"] for b in flat]), torch.arange(12))

    first = loader()
    seen = iter(first)
    next(seen), next(seen)
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    rest = list(resumed) + list(resumed)
    assert [b["key"] for b in rest] == [b["key"] for b in flat[2:]]
    assert torch.equal(torch.cat([b["sample_index"] for b in rest]), torch.arange(4, 12))

    # saved on an epoch's last batch: that epoch's iteration yields nothing, the next one is epoch 1 whole (a
    # resumed Lightning fit first asks for the saved epoch's remainder; it used to get epoch 1's first batch)
    at_end = loader()
    at_end.load_state_dict({"epoch": 0, "batches": 3})
    assert list(at_end) == []
    rest = list(at_end)
    assert [b["key"] for b in rest] == [b["key"] for b in epochs[1]]
    assert torch.equal(torch.cat([b["sample_index"] for b in rest]), torch.arange(6, 12))
