"""Partial shards + merge give the single run's metrics.json; sharding helpers; incomplete merges refused."""

from __future__ import annotations

import json

import pytest

from src.eval.runner import run_evaluation, shard_slice
from tests.unit.evaluate_helpers import compose_eval, one_thread, write_tiny_i3d, write_videos

pytestmark = pytest.mark.usefixtures("one_thread")
__all__ = ["one_thread"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_shards")
    names = [f"clip{i:02d}" for i in range(7)]
    write_videos(root / "gen", names, seed=1)
    write_videos(root / "real", names + ["extra"], seed=2)
    return root, write_tiny_i3d(root / "i3d.pt")


def _overrides(root, i3d, run_dir):
    return [
        "eval=dynamicrafter_ucf101", "logger=none", f"eval.generated_dir={root / 'gen'}",
        f"eval.real_dir={root / 'real'}", f"eval.weights.i3d={i3d}", "eval.metrics.pic=null",
        "eval.clip.num_frames=9", "eval.clip.stride=2", "eval.generated_clip.num_frames=9",
        "eval.resolution=[24,24]", "eval.metrics.kvd.subsets=4", "eval.metrics.kvd.subset_size=5",
        "eval.batch_size=2", "eval.progress=false", "eval.log_videos=0",
        "+eval.metrics.psnr={_target_:src.eval.pixel_metrics.VideoPSNR}",
    ]


def test_shard_slices_are_contiguous_and_cover_everything():
    items = list(range(10))
    slices = [shard_slice(items, i, 3) for i in range(3)]
    assert sum(slices, []) == items and [len(s) for s in slices] == [3, 3, 4]
    with pytest.raises(ValueError, match="shard_index"):
        shard_slice(items, 3, 3)


def test_partial_shards_merge_to_the_single_run(folders, tmp_path):
    root, i3d = folders
    single = run_evaluation(compose_eval(_overrides(root, i3d, None)), tmp_path / "single")
    sharded = tmp_path / "sharded"
    for index in range(3):
        out = run_evaluation(
            compose_eval(_overrides(root, i3d, None) + ["eval.num_shards=3", f"eval.shard_index={index}"]), sharded
        )
        assert (sharded / "partial" / f"shard_{index}.pt").is_file() and out["num_shards"] == 3
        assert not (sharded / "metrics.json").exists()
    merge_overrides = _overrides(root, i3d, None) + ["eval.num_shards=3", "eval.merge=true"]
    merged = run_evaluation(compose_eval(merge_overrides), sharded)
    written = json.loads((sharded / "metrics.json").read_text())
    assert set(single["metrics"]) == {"fvd", "kvd", "kvd_std", "psnr"}
    for name, value in single["metrics"].items():
        assert merged["metrics"][name] == pytest.approx(value, rel=1e-7, abs=1e-9), name
        assert written["metrics"][name] == pytest.approx(value, rel=1e-7, abs=1e-9), name
    assert single["metrics"]["fvd"] > 0 and single["metrics"]["psnr"] < 100
    for key in ("generated", "real", "paired"):
        assert merged["counts"][key] == single["counts"][key]
    assert single["counts"]["generated"] == 7 and single["counts"]["real"] == 8
    assert written["shards"]["num_shards"] == 3 and len(written["shards"]["merged_from"]) == 3
    # how FVD/KVD were computed: the protocol's flavour and the KVD estimator actually used
    assert written["metric_settings"]["fvd"]["flavour"]["name"] == "tf_hub"
    assert written["metric_settings"]["kvd"]["subsets"] == 4 and written["metric_settings"]["kvd"]["scale"] == 1.0

    # a missing shard is named; a merge with other settings is refused
    (sharded / "partial" / "shard_1.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"shards \[1\] are missing"):
        run_evaluation(compose_eval(merge_overrides), sharded)
    other = tmp_path / "other"
    run_evaluation(compose_eval(_overrides(root, i3d, None) + ["eval.num_shards=1"]), other)
    (other / "partial").mkdir()
    for index in range(2):
        run_evaluation(
            compose_eval(_overrides(root, i3d, None) + ["eval.num_shards=2", f"eval.shard_index={index}"]), other
        )
    with pytest.raises(ValueError, match="another eval config"):
        run_evaluation(compose_eval(_overrides(root, i3d, None) + ["eval.num_shards=2", "eval.merge=true",
                                                                     "eval.clip.stride=1"]), other)


def test_protocol_flavour_bound_to_the_other_i3d_file_is_refused_early(folders, tmp_path):
    root, i3d = folders  # a TorchScript file; videogpt runs the i3d_pretrained_400.pt state dict
    with pytest.raises(ValueError, match=r"flavour 'videogpt' runs i3d_pretrained_400\.pt.*eval\.weights\.i3d"):
        run_evaluation(compose_eval(_overrides(root, i3d, None) + ["eval.fvd_flavour=videogpt"]), tmp_path / "run")
