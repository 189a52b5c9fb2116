"""The latent cache (`python -m src.data.cache`, `data.cache=DIR`): a cached run trains exactly like the raw run
with the same frozen augmentation draws without building its codec or encoders (validation builds them), the
writer resumes and reuses, and a cache made differently is refused naming what differs. Tiny demo configs, through the runner and the writer in-process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from src.config import register_resolvers
from src.data.cache import write_caches
from src.data.latent_cache import CacheMismatch
from src.trainers.deferred_parts import DeferredParts
from src.trainers.runner import run
from tests.conftest import ROOT
from tests.integration.test_dynamicrafter_demo import TINY as DC_TINY
from tests.integration.test_train_animate_anyone import TINY as AA_TINY

SYSTEMS = {"animate_anyone": (AA_TINY, "spatial"), "dynamicrafter": (DC_TINY, "finetune")}
STEPS = 3


def common(system: str, demo_cache: Path) -> list[str]:
    overrides, stage = SYSTEMS[system]
    return [*overrides, f"paths.cache={demo_cache}", f"stage={stage}", "data.augmentation_seed=3"]


def config(system: str, overrides: list[str], validate: bool = False):
    """`validate`: one held-out video sampled after the last step (else no validation)."""
    stage = SYSTEMS[system][1]
    validation = ["data.val.num_videos=1", f"stages.{stage}.trainer.val_check_interval={STEPS}"]
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                *overrides,
                "evaluation.heldout=false",
                *(validation if validate else ["data.val.num_videos=0"]),
                "trainer.log_every_n_steps=1",
                "trainer.enable_progress_bar=false",
                f"stages.{stage}.trainer.max_steps={STEPS}",
            ],
        )


def train(system: str, run_dir: Path, overrides: list[str], validate: bool = False) -> dict[int, float]:
    stage = SYSTEMS[system][1]
    run(config(system, overrides, validate), run_dir)
    rows = csv.DictReader((run_dir / stage / "csv" / "metrics.csv").open())
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


def record_built_parts(monkeypatch) -> list[str]:
    """The names of the deferred frozen parts built from now on (src.trainers.deferred_parts)."""
    built: list[str] = []
    original = DeferredParts.get

    def get(self, name, device, dtype):
        if name not in self.built:
            built.append(name)
        return original(self, name, device, dtype)

    monkeypatch.setattr(DeferredParts, "get", get)
    return built


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_cached_run_trains_like_the_raw_run_and_a_different_cache_is_refused(
    system, tmp_path, demo_cache, monkeypatch
):
    cache = tmp_path / "cache"
    base = common(system, demo_cache)
    # the writer in-process (test_corrupt_data_soak runs `python -m src.data.cache` itself, killed and rerun)
    written = write_caches(config(system, [*base, f"data.cache={cache}"]))
    assert written[SYSTEMS[system][1]]["samples"] > 0
    key = json.loads((cache / "cache_key.json").read_text())
    assert key["augmentation_seed"] == 3 and key["encoders"]
    written = sorted(cache.glob("*.tar"))
    assert written and all(Path(f"{p}.json").is_file() for p in written)

    assert (cache / "constants.safetensors").is_file()

    raw = train(system, tmp_path / "raw", base)
    built = record_built_parts(monkeypatch)
    cached = train(system, tmp_path / "cached", [*base, f"data.cache={cache}"])
    assert built == [], f"a run from the cache built its frozen parts {built}"
    assert sorted(raw) == sorted(cached) and len(raw) >= STEPS - 1
    for step in raw:
        assert cached[step] == pytest.approx(raw[step], rel=1e-4, abs=1e-6), (step, raw, cached)
    # validation samples need the codec and encoders: a cached run builds them then, and only then
    train(system, tmp_path / "validated", [*base, f"data.cache={cache}"], validate=True)
    assert set(built) >= {"codec", "image_encoder"}, built

    # a cache made with another augmentation seed or other encoder weights is refused, naming what differs
    with pytest.raises(CacheMismatch, match=r"augmentation_seed: cache has 3, this run has 4"):
        train(system, tmp_path / "other", [*base, f"data.cache={cache}", "data.augmentation_seed=4"])
    with pytest.raises(CacheMismatch, match=r"encoders\.image_encoder: cache has '[0-9a-f]{16}', this run has '"):
        train(system, tmp_path / "reseeded", [*base, f"data.cache={cache}", "++model.image_encoder.init_seed=1"])
    key["encoders"]["codec"] = "0123456789abcdef"  # as if written with other codec weights
    (cache / "cache_key.json").write_text(json.dumps(key))
    with pytest.raises(CacheMismatch, match=r"encoders\.codec: cache has '0123456789abcdef', this run has '"):
        train(system, tmp_path / "reweighted", [*base, f"data.cache={cache}"])
