"""The DynamiCrafter caption-video pipeline: clip/stride sampling, captions, crop, skips, batches, held-out, demo."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from src.data.caption_heldout import load_caption_heldout
from src.data.caption_video_dataset import CaptionVideoDataset, collate_caption_video, fitting_stride
from src.data.clip_sampling import ClipTooShort
from src.data.sample_stream import ExactBatchLoader
from src.data.shards import ShardSetWriter
from src.data.video_io import encode_mp4

FPS = 24.0


def time_video(num_frames: int, height: int = 16, width: int = 16) -> np.ndarray:
    """Every pixel holds 8 * t in all channels, so a decoded frame tells its index."""
    t = np.arange(num_frames, dtype=np.uint8)[:, None, None, None] * 8
    return np.broadcast_to(t, (num_frames, height, width, 3)).copy()


def frame_index(video: torch.Tensor) -> list[int]:
    """Frame indices of a `c t h w` [-1, 1] clip made from `time_video`."""
    values = ((video.mean(dim=(0, 2, 3)) + 1) / 2 * 255).numpy()
    return [int(round(v / 8)) for v in values]


def sample(key: str, num_frames: int = 30, **meta) -> dict:
    data = encode_mp4(time_video(num_frames), fps=FPS, pix_fmt="yuv444p", crf=0)
    return {"__key__": key, "mp4": data, "json": {"videoid": key, "fps": FPS, "num_frames": num_frames, **meta}}


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> str:
    """Good samples with a corrupt one, a too-short one and one without any caption in between."""
    out = tmp_path_factory.mktemp("captions")
    with ShardSetWriter(out, maxcount=100) as writer:
        writer.write(sample("good0", caption="a dog", motion_caption="runs left"))
        writer.write({"__key__": "corrupt", "mp4": b"\x00garbage" * 64, "json": {"caption": "x", "fps": FPS}})
        writer.write(sample("good1", caption="a cat"))
        writer.write(sample("short", num_frames=3, caption="too short"))
        writer.write(sample("nocaption", motion_caption=""))
        writer.write(sample("good2", caption="a bird", motion_caption="flies up", scene_caption="a bird in a sky"))
    return str(out)


def dataset(shard: str, **kwargs) -> CaptionVideoDataset:
    args = {"num_frames": 4, "size": (8, 8), "resampled": False, "shuffle_buffer": 0, "seed": 3} | kwargs
    return CaptionVideoDataset([shard], **args)


@pytest.mark.parametrize("cache_mb", [0, 16])
def test_bad_samples_are_skipped_counted_and_logged(shard, caplog, cache_mb) -> None:
    with caplog.at_level(logging.WARNING, logger="src.data.caption_video_dataset"):
        samples = list(dataset(shard, decoded_cache_mb=cache_mb))
    assert [s["key"] for s in samples] == ["good0", "good1", "good2"]
    # per reason, on the sample after them: corrupt; then short + nocaption
    assert [s["skipped"] for s in samples] == [{}, {"undecodable": 1}, {"too_short": 1, "no_caption": 1}]
    for key in ("corrupt", "short", "nocaption"):
        assert f"skipping sample {key}" in caplog.text


def test_clips_are_strided_runs_of_frames_with_effective_fps(shard) -> None:
    strides = []
    for epoch in range(20):
        ds = dataset(shard, stride_range=(1, 6))
        ds.set_epoch(epoch)
        for s in ds:
            index = frame_index(s["video"])
            stride = s["frame_stride"]
            assert index == [index[0] + i * stride for i in range(4)] and index[-1] < 30
            assert s["fps"] == pytest.approx(FPS / stride)
            assert s["video"].shape == (3, 4, 8, 8) and s["video"].dtype == torch.float32
            strides.append(stride)
    assert set(strides) == {1, 2, 3, 4, 5, 6}  # drawn over the whole range (30 frames fit stride 6 at 4 frames)


def test_fixed_stride_and_short_video_fallback() -> None:
    assert {s["frame_stride"] for s in dataset_of_length(30, stride_range=3)} == {3}
    # 10 frames hold 4 frames at stride <= 3: a draw of 4..6 falls back to 3 (the release's fallback)
    assert fitting_stride(10, 4, 6, 1) == 3 and fitting_stride(10, 4, 2, 1) == 2
    with pytest.raises(ClipTooShort, match="lower data.num_frames"):
        fitting_stride(10, 4, 6, 4)


def dataset_of_length(num_frames: int, **kwargs) -> list[dict]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        with ShardSetWriter(tmp, maxcount=10) as writer:
            writer.write(sample("v", num_frames=num_frames, caption="c"))
        return [s for epoch in range(5) for s in _epoch(dataset(f"{tmp}/shard-000000.tar", **kwargs), epoch)]


def _epoch(ds: CaptionVideoDataset, epoch: int) -> list[dict]:
    ds.set_epoch(epoch)
    return list(ds)


def test_caption_key_with_fallback_to_the_original_caption(shard) -> None:
    by_key = {s["key"]: s for s in dataset(shard, caption_key="motion_caption")}
    assert by_key["good0"]["caption"] == "runs left" and not by_key["good0"]["caption_fallback"]
    assert by_key["good1"]["caption"] == "a cat" and by_key["good1"]["caption_fallback"]
    scene = {s["key"]: s["caption"] for s in dataset(shard, caption_key="scene_caption")}
    assert scene == {"good0": "a dog", "good1": "a cat", "good2": "a bird in a sky"}


def test_resize_and_center_crop_keep_the_middle_of_wide_videos(tmp_path) -> None:
    x = np.broadcast_to(np.arange(64, dtype=np.uint8)[None, None, :, None] * 4, (8, 32, 64, 3)).copy()
    with ShardSetWriter(tmp_path, maxcount=10) as writer:
        writer.write({"__key__": "wide", "mp4": encode_mp4(x, fps=8, pix_fmt="yuv444p", crf=0),
                      "json": {"caption": "c", "fps": 8}})  # fmt: skip
    (s,) = list(dataset(str(tmp_path / "shard-000000.tar"), num_frames=2, size=(16, 16)))
    columns = ((s["video"][0, 0, 8] + 1) / 2 * 255 / 4).numpy()
    # the centred 32x32 window holds source columns 16..47; each output column averages two of them
    assert np.allclose(columns, np.arange(16, 48, 2) + 0.5, atol=1.0)


def test_loader_gives_exact_batch_counts_and_collated_types(shard) -> None:
    loader = ExactBatchLoader(
        dataset(shard), collate_fn=collate_caption_video, batch_size=2, num_workers=0, batches_per_epoch=4, seed=0
    )
    batches = list(loader)
    assert len(batches) == 4  # three good samples per pass: passes restart until 4 batches came
    b = batches[0]
    assert b["video"].shape == (2, 3, 4, 8, 8) and isinstance(b["caption"], list) and len(b["key"]) == 2
    assert b["frame_stride"].dtype == torch.int64 and b["fps"].dtype == torch.float32
    assert isinstance(b["skipped"], list) and len(b["skipped"]) == 2  # {reason: count} per sample
    assert sum(n for x in batches for counts in x["skipped"] for n in counts.values()) > 0


def test_heldout_clips_start_at_frame_zero_with_a_fixed_stride(shard) -> None:
    clips = load_caption_heldout(shard, num_videos=1, num_frames=4, stride=3, size=(8, 8), caption_key="motion_caption")
    (item,) = clips
    assert frame_index(item["video"]) == [0, 3, 6, 9]
    assert item["caption"] == "runs left" and item["frame_stride"] == 3 and item["fps"] == pytest.approx(FPS / 3)
    with pytest.raises(ValueError, match="corrupt"):  # the second sample is broken: evaluation refuses it
        load_caption_heldout(shard, num_videos=2, num_frames=4, stride=3, size=(8, 8))


def test_demo_generator_writes_caption_shards_once_with_disjoint_heldout(tmp_path) -> None:
    from src.data.caption_demo import caption_demo_seeds, ensure_caption_demo_shards

    kw = {"num_train_videos": 4, "num_heldout_videos": 2, "num_frames": 6, "height": 16, "width": 24}
    demo = ensure_caption_demo_shards(tmp_path, **kw)
    again = ensure_caption_demo_shards(tmp_path, **kw)
    assert again.root == demo.root and len(list(tmp_path.iterdir())) == 1
    seeds = caption_demo_seeds(0, 4, 2)
    assert not set(seeds["train"]) & set(seeds["heldout"])
    items = load_caption_heldout(demo.heldout, num_videos=2, num_frames=6, stride=1, size=(16, 24),
                                 caption_key="motion_caption")  # fmt: skip
    assert len(items) == 2 and items[0]["video"].shape == (3, 6, 16, 24)
    assert items[0]["caption"].split()[0] in {"moves", "grows", "shrinks", "rotates", "bounces", "camera"}
    train = list(CaptionVideoDataset(demo.train, num_frames=3, stride_range=(1, 2), size=(16, 16), resampled=False))
    assert len(train) == 4 and all(s["fps"] in (8.0, 4.0) for s in train)
