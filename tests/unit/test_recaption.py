"""recaption: shards + captions table -> new shard set with motion/scene captions; counts; byte-exact copies."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from webdataset.tariterators import tarfile_samples

from src.data.recaption import main, read_captions_table, recaption_shards
from src.data.shards import ShardSetWriter, list_shards, read_manifest
from src.data.video_io import encode_mp4

ROOT = Path(__file__).resolve().parents[2]
HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None


def quiet(_: str) -> None:
    pass


@pytest.fixture()
def shards(tmp_path):
    """5 samples (videoids 1..5) over 2 shards, each with a real mp4, a json and an extra latent entry."""
    out = tmp_path / "in"
    with ShardSetWriter(out, prefix="webvid", maxcount=3) as writer:
        for i in range(1, 6):
            frames = np.full((2, 8, 8, 3), 40 * i, np.uint8)
            meta = {"videoid": str(i), "caption": f"original {i}", "num_frames": 2, "fps": 8.0}
            meta.update({"height": 8, "width": 8, "source": f"p/{i}.mp4"})
            sample = {"__key__": str(i), "mp4": encode_mp4(frames, 8), "json": meta}
            sample["latent.npy"] = bytes([i]) * (10 + i)
            writer.write(sample)
    return out


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def samples_of(spec) -> dict[str, dict]:
    return {s["__key__"]: s for s in tarfile_samples({"url": p} for p in list_shards(spec))}


def test_cli_adds_captions_copies_bytes_and_counts(shards, tmp_path) -> None:
    table = write_csv(
        tmp_path / "captions.csv",
        ["videoid", "motion_caption", "scene_caption", "other"],
        [
            ["1", "a dog runs to the left", "a beach at noon", "x"],
            ["2", "slow zoom in", "", "x"],  # no scene caption
            ["4", "None", "NaN", "x"],  # both null: no new caption
            ["9", "not in the shards", "anywhere", "x"],
            ["1", "a later duplicate", "ignored", "x"],
        ],
    )
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "src.data.recaption", "--shards", str(shards), "--captions", str(table)]
        + ["--out", str(out), "--maxcount", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "5 samples: 2 with new captions (motion 2, scene 1), 3 kept" in run.stdout

    manifest = read_manifest(out)
    assert manifest["recaption"] == {
        "samples": 5,
        "with_new_caption": 2,
        "without_new_caption": 3,
        "with_motion_caption": 2,
        "with_scene_caption": 1,
        "uncaptioned_ids_first": ["3", "4", "5"],
        "uncaptioned_ids_file": "uncaptioned_ids.txt",
        "table_rows": 5,
        "table_ids": 4,
        "table_duplicate_ids": 1,
        "table_ids_matched": 2,
    }
    assert (out / "uncaptioned_ids.txt").read_text().split() == ["3", "4", "5"]
    assert manifest["total_samples"] == 5 and [s["samples"] for s in manifest["shards"]] == [2, 2, 1]

    before, after = samples_of(shards), samples_of(out)
    assert list(after) == ["1", "2", "3", "4", "5"]  # input order kept
    for key, sample in after.items():
        assert set(sample) - {"__url__", "__local_path__"} == {"__key__", "mp4", "json", "latent.npy"}
        assert sample["mp4"] == before[key]["mp4"] and sample["latent.npy"] == before[key]["latent.npy"]
        old, new = json.loads(before[key]["json"]), json.loads(sample["json"])
        assert {k: new[k] for k in old} == old  # original caption and metadata untouched
    assert json.loads(after["1"]["json"])["motion_caption"] == "a dog runs to the left"
    assert json.loads(after["1"]["json"])["scene_caption"] == "a beach at noon"
    assert json.loads(after["2"]["json"])["motion_caption"] == "slow zoom in"
    assert "scene_caption" not in json.loads(after["2"]["json"])
    for key in ("3", "4", "5"):
        assert json.loads(after[key]["json"]) == json.loads(before[key]["json"])


def test_named_columns_webvid_motion_style(shards, tmp_path) -> None:
    table = write_csv(
        tmp_path / "motion.tsv",
        ["videoid", "name", "dynamic_confidence", "dynamic_wording"],
        [["3", "orig", "80", "waves crash"], ["5", "orig", "10", "none"]],
    )
    table.write_text(table.read_text().replace(",", "\t"))
    out = tmp_path / "motion"
    argv = ["--shards", str(shards / "webvid-*.tar"), "--captions", str(table), "--out", str(out)]
    assert main([*argv, "--motion-column", "dynamic_wording"]) == 0
    counts = read_manifest(out)["recaption"]
    assert (counts["with_motion_caption"], counts["with_scene_caption"], counts["without_new_caption"]) == (
        1,
        0,
        4,
    )
    meta = json.loads(samples_of(out)["3"]["json"])
    assert meta["motion_caption"] == "waves crash" and meta["caption"] == "original 3"
    with pytest.raises(FileExistsError, match="--overwrite"):
        main([*argv, "--motion-column", "dynamic_wording"])
    assert main([*argv, "--motion-column", "dynamic_wording", "--null-values", "", "--overwrite"]) == 0
    assert read_manifest(out)["recaption"]["with_motion_caption"] == 2  # "none" now counts as a caption


def test_clear_errors(shards, tmp_path) -> None:
    table = write_csv(tmp_path / "t.csv", ["id", "motion_caption"], [["1", "m"]])
    with pytest.raises(ValueError, match="no id column 'videoid'.*--id-column"):
        read_captions_table(table)
    with pytest.raises(ValueError, match="no column 'motion' \\(--motion-column\\)"):
        read_captions_table(table, id_column="id", motion_column="motion")
    plain = write_csv(tmp_path / "p.csv", ["videoid", "name"], [["1", "x"]])
    with pytest.raises(ValueError, match="--motion-column / --scene-column"):
        read_captions_table(plain)
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(ValueError, match="unknown format"):
        read_captions_table(tmp_path / "t.json")
    good = read_captions_table(table, id_column="id")
    with pytest.raises(ValueError, match="holds the input shards"):
        recaption_shards(shards, good, shards, prefix="webvid", overwrite=True, log=quiet)
    assert len(list_shards(shards)) == 2  # inputs untouched


@pytest.mark.skipif(HAS_PYARROW, reason="pyarrow is installed: the missing-pyarrow message cannot show")
def test_parquet_without_pyarrow_says_so(tmp_path) -> None:
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    with pytest.raises(ImportError, match="needs pyarrow"):
        read_captions_table(tmp_path / "t.parquet")


@pytest.mark.skipif(not HAS_PYARROW, reason="pyarrow is not installed")
def test_parquet_table(shards, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = pa.array([2, 5], pa.int64())  # integer ids still match the samples' string videoids
    pq.write_table(pa.table({"videoid": ids, "scene_caption": ["a kitchen", None]}), tmp_path / "c.parquet")
    table = read_captions_table(tmp_path / "c.parquet")
    assert table.captions == {"2": {"scene_caption": "a kitchen"}, "5": {}}
    manifest = recaption_shards(shards, table, tmp_path / "out", log=quiet)
    assert manifest["recaption"]["with_scene_caption"] == 1
