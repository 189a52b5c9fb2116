"""`python -m src.data.cache experiment=NAME [stage=NAME] data.cache=DIR [overrides]`: write the latent cache.

Runs each selected stage's own data pipeline (the training config's shards, crops, frames, strides, with one
frozen augmentation draw per video: `data.augmentation_seed`, 0 when unset) through the frozen codec and
encoders of the stage's model, and writes cache shards beside nothing else in `data.cache` (format and key:
src.data.latent_cache). Training with the same overrides and `data.cache=DIR` then reads them instead of decoding
and encoding. Stages without a `data.cache` are left alone (Animate Anyone: `stages.spatial.data.cache=DIR`).

At scale: raw shards are dealt over tasks by index (task i of n writes shards i, i+n, ...), the task being the
SLURM array task (SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT) or the rank (RANK/WORLD_SIZE, SLURM_PROCID/
SLURM_NTASKS); each shard is written atomically with its sidecar last, so a killed task leaves no partial shard
and its rerun skips the shards already written. Bad samples are skipped and counted per reason in each shard's
sidecar. Progress is one plain log line per shard.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from webdataset.tariterators import tarfile_samples

from src.config import register_resolvers, stage_config
from src.config_checks import check_config_or_exit
from src.data.latent_cache import (
    is_written,
    run_cache_key,
    sidecar,
    write_cache_shard,
    write_constants,
    write_key,
)
from src.data.sample_stream import get_rank_and_world_size, skip_reason
from src.data.shards import list_shards

log = logging.getLogger("src.data.cache")
register_resolvers()


def task_slot(env: dict[str, str] | None = None) -> tuple[int, int]:
    """(task, tasks): the SLURM array task, else the process rank."""
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_TASK_ID") and env.get("SLURM_ARRAY_TASK_COUNT"):
        task, tasks = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
        minimum = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        return task - minimum, tasks
    return get_rank_and_world_size()


def train_shards(cfg: DictConfig) -> list[str]:
    """The stage's training shards (generating the embedded demo on first use, as training does)."""
    if cfg.data.demo:
        return list_shards(instantiate(cfg.data.demo).train)
    if not cfg.data.train_shards:
        raise ValueError("data.train_shards is not set: point it at the shards to cache.")
    return list_shards(cfg.data.train_shards)


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class StageCacheWriter:
    """Writes one stage's cache shards: process raw samples, batch them through the frozen parts, store per sample."""

    def __init__(self, cfg: DictConfig, name: str, device: torch.device) -> None:
        self.cfg, self.name, self.device = cfg, name, device
        self.out = Path(cfg.data.cache)
        self.out.mkdir(parents=True, exist_ok=True)  # its file_digests.json spares training from rehashing
        self.shards = train_shards(cfg)
        L.seed_everything(
            cfg.seed, workers=True
        )  # as the runner does before building: same random-init encoders
        self.module = instantiate(cfg.model, stage=name, seed=cfg.seed).to(device).eval()
        loader = instantiate(cfg.data.train_loader)(cfg.data, self.shards, cfg.seed)
        self.dataset, self.collate = loader.dataset, loader.collate_fn
        self.dataset.augmentation_seed = int(cfg.data.get("augmentation_seed") or 0)
        self.batch_size = int(cfg.data.get("cache_batch_size", 8))
        cfg.data.augmentation_seed = self.dataset.augmentation_seed
        self.key = run_cache_key(cfg, self.shards, sampled_latents=bool(self.module.codec.samples_posterior))

    def features(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The stored samples: the processed fields minus the frozen parts' inputs, plus the frozen features."""
        batch = _to(self.collate([{**s, "skipped": {}} for s in samples]), self.device)
        with torch.no_grad():
            features = self.module.frozen_features(batch)
        dropped = set(self.module.frozen_inputs) | {"skipped", "stream_position"}
        out = []
        for i, sample in enumerate(samples):
            kept = {k: v for k, v in sample.items() if k not in dropped}
            kept.update({k: v[i].cpu() for k, v in features.items()})
            out.append(kept)
        return out

    def write_shard(self, path: str) -> dict[str, Any]:
        skipped: Counter[str] = Counter()
        processed: list[dict[str, Any]] = []

        def tar_error(exc: Exception) -> bool:
            log.warning("cache: unreadable tar data in %s: %s", path, exc)
            skipped["bad_tar"] += 1
            return True

        for raw in tarfile_samples([{"url": path}], handler=tar_error):
            key = str(raw.get("__key__", "<no key>"))
            try:
                processed.append(self.dataset.process(raw, self.dataset.sample_rng([], 0, key)))
            except Exception as exc:  # a bad sample is skipped and counted, never a crash
                log.warning("cache: skipping sample %s (%s): %s: %s", key, path, type(exc).__name__, exc)
                skipped[skip_reason(exc)] += 1
        stored = []
        for start in range(0, len(processed), self.batch_size):
            stored += self.features(processed[start : start + self.batch_size])
        info = {"skipped": dict(sorted(skipped.items())), "source": path}
        write_cache_shard(self.out / Path(path).name, stored, info)
        return {**info, "samples": len(stored)}

    def frame_size(self) -> tuple[int, int]:
        size = self.cfg.data.size
        return (int(size), int(size)) if isinstance(size, int | float) else (int(size[0]), int(size[1]))

    def run(self, task: int, tasks: int) -> dict[str, Any]:
        write_key(self.out, self.key)
        with torch.no_grad():
            write_constants(self.out, self.module.frozen_constants(self.frame_size()))
        mine = [p for i, p in enumerate(self.shards) if i % tasks == task]
        started, written, reused, samples, skipped = time.perf_counter(), 0, 0, 0, Counter()
        for done, path in enumerate(mine, 1):
            if is_written(self.out / Path(path).name):
                reused += 1
                continue
            info = self.write_shard(path)
            written += 1
            samples += info["samples"]
            skipped.update(info["skipped"])
            rate = samples / max(time.perf_counter() - started, 1e-9)
            left = (len(mine) - done) * (time.perf_counter() - started) / max(written, 1)
            log.info(
                "cache %s: shard %d/%d (task %d of %d) %s: %d samples, %d skipped; %.1f samples/s, ETA %.0f s",
                self.name,
                done,
                len(mine),
                task,
                tasks,
                Path(path).name,
                info["samples"],
                sum(info["skipped"].values()),
                rate,
                left,
            )
        return {"written": written, "reused": reused, "samples": samples, "skipped": dict(skipped)}


def totals(cache_dir: str | Path, shards: list[str]) -> dict[str, Any]:
    """Samples and skips per reason over every written shard of the cache (all tasks)."""
    samples, skipped, written = 0, Counter(), 0
    for path in shards:
        car = sidecar(Path(cache_dir) / Path(path).name)
        if car.is_file():
            import json

            info = json.loads(car.read_text())
            samples, written = samples + info["samples"], written + 1
            skipped.update(info["skipped"])
    return {
        "shards_written": written,
        "shards": len(shards),
        "samples": samples,
        "skipped": dict(sorted(skipped.items())),
    }


def write_caches(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Write the cache of every selected stage that has a `data.cache`; returns per-stage totals."""
    names = list(cfg.stages.keys()) if cfg.stages else []
    selected = names if cfg.stage == "all" else [cfg.stage]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    task, tasks = task_slot()
    results = {}
    for name in selected:
        scfg = stage_config(cfg, name)
        if not scfg.data.get("cache"):
            continue
        writer = StageCacheWriter(scfg, name, device)
        this_task = writer.run(task, tasks)
        results[name] = {**totals(scfg.data.cache, writer.shards), "this_task": this_task}
        log.info("cache %s: %s", name, results[name])
    if not results:
        raise ValueError(
            "no selected stage has a data.cache: set data.cache=DIR (or stages.NAME.data.cache=DIR) to say where "
            "the cache goes."
        )
    return results


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    check_config_or_exit(cfg, "train")
    write_caches(cfg)


if __name__ == "__main__":
    main()
