"""The training loader at scale: a resumed loader passes over used samples without decoding them, and with
`split_global_batch` each rank decodes only its own slice of the global batch (bad samples included)."""

from __future__ import annotations

import hashlib

import pytest
import torch

import src.data.pose_video_dataset as pose_module
from src.data.pose_video_dataset import build_loader, build_pose_video_dataset
from src.data.shards import ShardSetWriter
from tests.unit.test_pose_video_dataset import encoded, good_sample


@pytest.fixture(scope="module")
def shards_with_bad_samples(tmp_path_factory) -> str:
    """Four shards of 3: ten good samples and two bad ones (corrupt mp4, pose shorter than the video)."""
    out = tmp_path_factory.mktemp("resume_split")
    with ShardSetWriter(out, maxcount=3) as writer:
        for i in range(12):
            if i == 4:
                writer.write({"__key__": "corrupt", "mp4": b"\x00garbage" * 64, "pose.mp4": encoded(12)})
            elif i == 9:
                writer.write({"__key__": "mismatch", "mp4": encoded(12), "pose.mp4": encoded(10)})
            else:
                writer.write(good_sample(f"v{i}", num_frames=12 + i))  # distinct bytes per sample
    return str(out)


@pytest.fixture()
def decode_log(monkeypatch) -> list[str]:
    """Every probe and decode of the pipeline, as (function, digest of the bytes): what was opened, in order."""
    calls: list[str] = []
    for name in ("decode_mp4", "probe_mp4"):
        original = getattr(pose_module, name)

        def counting(data, *args, _original=original, _name=name, **kwargs):
            calls.append(f"{_name}:{hashlib.sha1(bytes(data)).hexdigest()[:12]}")
            return _original(data, *args, **kwargs)

        monkeypatch.setattr(pose_module, name, counting)
    return calls


def make_loader(shards: str, batch_size: int = 2, split: bool = False, num_workers: int = 0):
    dataset = build_pose_video_dataset(
        shards, num_frames=1, margin=3, size=(16, 16), seed=7, shuffle_buffer=4
    )
    return build_loader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        batches_per_epoch=5,
        seed=7,
        split_global_batch=split,
    )


def assert_same_batches(got: list[dict], want: list[dict]) -> None:
    assert [b["key"] for b in got] == [b["key"] for b in want]
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(
            a["sample_index"], b["sample_index"]
        )
        assert a["skipped"] == b["skipped"]  # {reason: count} per sample


@pytest.mark.parametrize("split", [False, True], ids=["own_stream", "lanes"])
def test_a_resumed_loader_decodes_nothing_it_skips_and_yields_the_uninterrupted_batches(
    shards_with_bad_samples, decode_log, split
) -> None:
    """Also with lanes (split_global_batch: a batch is 2 lanes here): each skip rides on the next sample
    of its own lane, so the resumed batches carry the uninterrupted batches' skips (none counted twice)."""
    straight = make_loader(shards_with_bad_samples, split=split)
    epoch0 = list(straight)
    straight_calls = list(decode_log)
    epoch1 = list(straight)
    # the bad samples were met and counted
    assert sum(n for b in epoch0 + epoch1 for c in b["skipped"] for n in c.values()) > 0

    decode_log.clear()
    interrupted = make_loader(shards_with_bad_samples, split=split)
    stream = iter(interrupted)
    used = [next(stream) for _ in range(3)]
    calls_before = len(decode_log)
    state = interrupted.state_dict()
    assert_same_batches(used, epoch0[:3])

    decode_log.clear()
    resumed = make_loader(shards_with_bad_samples, split=split)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert_same_batches(rest, epoch0[3:])
    assert decode_log == straight_calls[calls_before:]  # nothing decoded (or probed) twice, nothing extra
    at_end = resumed.state_dict()  # saved on epoch 0's last batch, with per-rank positions
    assert_same_batches(list(resumed), epoch1)

    # a position at an epoch's end stays in that epoch: its iteration yields nothing; the next is epoch 1
    resumed_at_end = make_loader(shards_with_bad_samples, split=split)
    resumed_at_end.load_state_dict(at_end)
    assert list(resumed_at_end) == []
    assert_same_batches(list(resumed_at_end), epoch1)


def test_resume_with_loader_workers_continues_each_workers_stream(shards_with_bad_samples) -> None:
    straight = list(make_loader(shards_with_bad_samples, num_workers=2))
    interrupted = make_loader(shards_with_bad_samples, num_workers=2)
    stream = iter(interrupted)
    for _ in range(3):
        next(stream)
    state = interrupted.state_dict()
    del stream
    resumed = make_loader(shards_with_bad_samples, num_workers=2)
    resumed.load_state_dict(state)
    assert_same_batches(list(resumed), straight[3:])


def test_split_global_batch_ranks_decode_only_their_slice(
    shards_with_bad_samples, decode_log, monkeypatch
) -> None:
    def run(rank: int, world: int, batch_size: int) -> tuple[list[dict], list[str]]:
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        decode_log.clear()
        batches = list(make_loader(shards_with_bad_samples, batch_size=batch_size, split=True))
        return batches, list(decode_log)

    single, single_calls = run(0, 1, 4)
    ranks = [run(r, 2, 2) for r in range(2)]
    for index, whole in enumerate(single):
        parts = [ranks[r][0][index] for r in range(2)]
        assert parts[0]["key"] + parts[1]["key"] == whole["key"]
        assert torch.equal(torch.cat([p["pixel_values"] for p in parts]), whole["pixel_values"])
        assert torch.equal(torch.cat([p["sample_index"] for p in parts]), whole["sample_index"])
        assert parts[0]["skipped"] + parts[1]["skipped"] == whole["skipped"]  # a skip rides in its own lane
    # bad samples were replaced within their lanes
    assert sum(n for b in single for c in b["skipped"] for n in c.values()) > 0
    # each rank decoded only its own lanes' samples: about half of the one process's decodes each, together no
    # more (the one process also reads a little ahead in lanes not held up by a bad sample); before, each rank
    # decoded the whole global batch
    decodes = [sum(c.startswith("decode") for c in calls) for _, calls in ranks]
    single_decodes = sum(c.startswith("decode") for c in single_calls)
    assert sum(decodes) <= single_decodes and all(0 < d <= 0.6 * single_decodes for d in decodes)
