"""Shard writing limits, the manifest, and shard spec resolution."""

from __future__ import annotations

import json
import tarfile

import pytest
from webdataset.tariterators import tarfile_samples

from src.data.shards import ShardSetWriter, list_shards, read_manifest, validate_key, write_shards


def make_samples(count: int, payload: int = 100) -> list[dict]:
    return [
        {"__key__": f"sample_{i:03d}", "mp4": bytes([i % 256]) * payload, "json": {"index": i}}
        for i in range(count)
    ]


def test_maxcount_splits_into_expected_shards_and_manifest_parses(tmp_path) -> None:
    manifest = write_shards(
        make_samples(10), tmp_path, prefix="train", maxcount=3, creation_args={"who": "test"}
    )
    names = [s["path"] for s in manifest["shards"]]
    assert names == [f"train-{i:06d}.tar" for i in range(4)]
    assert [s["samples"] for s in manifest["shards"]] == [3, 3, 3, 1]
    assert manifest["total_samples"] == 10
    assert all(s["bytes"] == (tmp_path / s["path"]).stat().st_size for s in manifest["shards"])
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == read_manifest(tmp_path)
    assert on_disk["args"]["maxcount"] == 3 and on_disk["args"]["who"] == "test"
    assert on_disk["skipped"] == []


def test_samples_round_trip_through_webdataset_reader(tmp_path) -> None:
    samples = make_samples(5)
    write_shards(samples, tmp_path, maxcount=2)
    read = list(tarfile_samples({"url": p} for p in list_shards(tmp_path)))
    assert [r["__key__"] for r in read] == [s["__key__"] for s in samples]
    assert [json.loads(r["json"])["index"] for r in read] == list(range(5))
    assert read[3]["mp4"] == samples[3]["mp4"]


def test_maxsize_limits_bytes_per_shard(tmp_path) -> None:
    manifest = write_shards(make_samples(9, payload=1000), tmp_path, maxsize=2500)
    # a shard closes once it holds >= maxsize bytes of payload: 3 samples of ~1 kB each
    assert [s["samples"] for s in manifest["shards"]] == [3, 3, 3]


def test_skips_are_recorded_and_empty_sets_leave_no_tar(tmp_path) -> None:
    with ShardSetWriter(tmp_path) as writer:
        writer.skip("a.mp4", "missing pose video")
    manifest = read_manifest(tmp_path)
    assert manifest["skipped"] == [{"source": "a.mp4", "reason": "missing pose video"}]
    assert manifest["shards"] == [] and list(tmp_path.glob("*.tar")) == []


def test_bad_and_duplicate_keys_are_refused(tmp_path) -> None:
    for key in ("a.b", "a/b", "", "_x"):
        with pytest.raises(ValueError, match="invalid sample key"):
            validate_key(key)
    with ShardSetWriter(tmp_path) as writer:
        writer.write({"__key__": "k", "mp4": b"x"})
        with pytest.raises(ValueError, match="duplicate"):
            writer.write({"__key__": "k", "mp4": b"y"})


def test_existing_shards_need_overwrite(tmp_path) -> None:
    write_shards(make_samples(4), tmp_path, maxcount=1)
    with pytest.raises(FileExistsError, match="overwrite"):
        ShardSetWriter(tmp_path)
    write_shards(make_samples(2), tmp_path, maxcount=1, overwrite=True)
    assert len(list_shards(tmp_path)) == 2


def test_list_shards_accepts_dir_glob_brace_and_list(tmp_path) -> None:
    write_shards(make_samples(4), tmp_path, prefix="a", maxcount=1)
    expected = [str(tmp_path / f"a-{i:06d}.tar") for i in range(4)]
    assert list_shards(tmp_path) == expected
    assert list_shards(str(tmp_path / "a-*.tar")) == expected
    assert list_shards(str(tmp_path / "a-{000000..000003}.tar")) == expected
    assert list_shards([expected[2], str(tmp_path / "a-00000[01].tar")]) == [expected[2], *expected[:2]]
    assert all(tarfile.is_tarfile(p) for p in expected)


def test_list_shards_errors_name_the_spec(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        list_shards(str(tmp_path / "nothing-here-*.tar"))
    with pytest.raises(FileNotFoundError, match="matched no files"):
        list_shards(tmp_path)  # empty folder
    write_shards(make_samples(2), tmp_path, maxcount=1)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        list_shards(str(tmp_path / "shard-{000000..000005}.tar"))
