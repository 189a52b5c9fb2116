"""Latent/embedding cache shards: the format, the key that says what produced them, and the training reader.

A cache mirrors a shard set: cache shard `<name>.tar` holds, for every usable sample of raw shard `<name>.tar`
in the same order, `features.safetensors` (the frozen codec's latent posterior moments and the frozen encoders'
embeddings, plus the processed tensors the trainable parts still need, e.g. Animate Anyone's pose frames) and
`json` (key, caption, frame stride, fps, ...). `<name>.tar.json` beside it is written after the tar is complete
(both atomically), so a reader never sees a partial shard: a shard without its sidecar does not exist.

`cache_key.json` records what produced the cache: the system, a hash of every frozen part's recipe (its config
with each weight file's content hash: src.data.part_recipes, so a run checks the key without building the
parts), the preprocessing (size, frames, stride, crop, ...), the augmentation seed, whether latents are sampled
(mean + std stored, the training step draws the latent per sample through src.trainers.sample_draws) and the
raw shards. A run whose key differs is refused with the differing fields named; a matching cache is reused by
any run. `constants.safetensors` holds the frozen parts' sample-independent outputs that training reads (the
empty caption's embedding, ...), so a run from the cache never builds its codec or encoders.

Augmentation: a cache freezes it to one draw per video, keyed on (`data.augmentation_seed`, the sample's key);
a raw run with the same `data.augmentation_seed` draws the same crops, clips and strides, so it trains exactly
like the cached run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from src import atomic_io
from src.data.part_recipes import DigestMemo, part_fingerprints
from src.data.sample_stream import ExactBatchLoader, SampleError, ShardSampleDataset, stream_settings

__all__ = [
    "CACHE_VERSION",
    "KEY_FILE",
    "CacheMismatch",
    "CachedSampleDataset",
    "cache_key",
    "cache_shards",
    "check_key",
    "collate_cached",
    "loader_from_config",
    "is_written",
    "read_constants",
    "write_cache_shard",
    "write_constants",
    "write_key",
]

CACHE_VERSION = 2  # 2: encoders keyed by their recipes (1: by the built weights), constants stored
KEY_FILE = "cache_key.json"
CONSTANTS_FILE = "constants.safetensors"
FEATURES_ENTRY = "features.safetensors"
# the data settings a cached sample depends on (absent ones are recorded as None)
PREPROCESSING = (
    "size",
    "num_frames",
    "stride",
    "margin",
    "crop_scale",
    "crop_ratio",
    "stride_range",
    "caption_key",
)


class CacheMismatch(ValueError):
    """The cache was made by other weights, preprocessing or shards than this run uses, or is incomplete."""


def cache_key(
    *,
    system: str,
    fingerprint: dict[str, str],
    data: DictConfig,
    augmentation_seed: int,
    sampled_latents: bool | None,
    raw_shards: Sequence[str],
) -> dict[str, Any]:
    """Everything a cached sample depends on (see the module docstring). `sampled_latents` None: not known
    without building the codec, and implied by the codec's recipe, so any value in the cache is accepted."""
    plain = OmegaConf.to_container(data, resolve=True) if isinstance(data, DictConfig) else dict(data)
    return {
        "version": CACHE_VERSION,
        "system": system,
        "encoders": dict(fingerprint),
        "preprocessing": {name: plain.get(name) for name in PREPROCESSING},
        "augmentation_seed": None if augmentation_seed is None else int(augmentation_seed),
        "latents": None if sampled_latents is None else ("mean_std" if sampled_latents else "mean"),
        "raw_shards": [os.path.basename(s) for s in raw_shards],
    }


def _differences(found: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for name in sorted(set(found) | set(wanted)):
        a, b = found.get(name), wanted.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{name}.")
        elif a != b:
            out.append(f"{prefix}{name}: cache has {a!r}, this run has {b!r}")
    return out


def check_key(cache_dir: str | Path, wanted: dict[str, Any]) -> dict[str, Any]:
    """The cache's key if it matches `wanted` (an `augmentation_seed` or `latents` of None in `wanted` accepts
    any), else CacheMismatch naming every field that differs."""
    path = Path(cache_dir) / KEY_FILE
    if not path.is_file():
        raise CacheMismatch(
            f"data.cache={cache_dir} holds no {KEY_FILE}: it is not a latent cache (or was never written). Write it "
            "with `python -m src.data.cache <the same overrides>`, or set data.cache=null to train from the videos."
        )
    found = json.loads(path.read_text())
    compared = dict(wanted)
    for field in ("augmentation_seed", "latents"):
        if compared.get(field) is None:
            compared[field] = found.get(field)
    diffs = _differences(found, compared)
    if diffs:
        raise CacheMismatch(
            f"the latent cache {cache_dir} was made differently from this run: "
            + "; ".join(diffs)
            + ". Write a "
            "new cache for this config (python -m src.data.cache ... data.cache=NEW_DIR) or match the config to it."
        )
    return found


def write_key(cache_dir: str | Path, key: dict[str, Any]) -> None:
    """Record the key of a new cache, or check that an existing cache (a resumed or parallel writer) matches."""
    path = Path(cache_dir) / KEY_FILE
    if path.is_file():
        check_key(cache_dir, key)
        return
    atomic_io.write_json(path, key, indent=1)


def write_constants(cache_dir: str | Path, constants: dict[str, torch.Tensor]) -> None:
    """Store the frozen parts' sample-independent outputs (module.frozen_constants) beside the key."""
    atomic_io.write_bytes(Path(cache_dir) / CONSTANTS_FILE, save_safetensors(constants))


def read_constants(cache_dir: str | Path) -> dict[str, torch.Tensor]:
    path = Path(cache_dir) / CONSTANTS_FILE
    if not path.is_file():
        raise CacheMismatch(
            f"the latent cache {cache_dir} has no {CONSTANTS_FILE} (the frozen encoders' outputs for dropped "
            "conditions): rerun `python -m src.data.cache` with the same overrides (it resumes)."
        )
    return load_file(str(path))


def sidecar(shard: Path) -> Path:
    return shard.with_name(shard.name + ".json")


def cache_shards(cache_dir: str | Path, key: dict[str, Any]) -> list[str]:
    """The complete cache shards, one per raw shard of the key; CacheMismatch when some are not written yet."""
    folder = Path(cache_dir)
    paths = [folder / name for name in key["raw_shards"]]
    missing = [p.name for p in paths if not sidecar(p).is_file()]
    if missing:
        raise CacheMismatch(
            f"the latent cache {cache_dir} is incomplete: {len(missing)} of {len(paths)} shards are not written "
            f"(first: {missing[:3]}); rerun `python -m src.data.cache` with the same overrides (it resumes)."
        )
    empty = [p.name for p in paths if json.loads(sidecar(p).read_text())["samples"] == 0]
    return [str(p) for p in paths if p.name not in empty]


def encode_sample(key: str, sample: dict[str, Any]) -> dict[str, bytes | str]:
    """One cache sample: its tensors in safetensors bytes, everything else (strings, numbers) in json."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in sample.items() if isinstance(v, torch.Tensor)}
    meta = {k: v for k, v in sample.items() if not isinstance(v, torch.Tensor)}
    return {
        "__key__": key,
        FEATURES_ENTRY: save_safetensors(tensors),
        "json": json.dumps(meta, sort_keys=True).encode("utf-8"),
    }


def write_cache_shard(path: str | Path, samples: Sequence[dict[str, Any]], info: dict[str, Any]) -> None:
    """Write a complete cache shard, then its sidecar (`info` + the sample count), each atomically."""
    import webdataset as wds

    path = Path(path)
    with atomic_io.atomic_path(path) as tmp:
        with open(tmp, "wb") as handle, wds.TarWriter(handle, mtime=0.0) as writer:
            for sample in samples:
                writer.write(encode_sample(sample["key"], sample))
    atomic_io.write_json(sidecar(path), {**info, "samples": len(samples)}, indent=1)


def is_written(path: str | Path) -> bool:
    return sidecar(Path(path)).is_file()


class CachedSampleDataset(ShardSampleDataset):
    """Training samples read back from cache shards: the stored tensors and fields, no decoding or encoding."""

    skip_hint = "Check the cache (rewrite it with python -m src.data.cache) or set data.cache=null"
    required_entries = f"'{FEATURES_ENTRY}'"

    def process(self, raw: dict[str, Any], rng: Any) -> dict[str, Any]:
        if FEATURES_ENTRY not in raw or "json" not in raw:
            raise SampleError(f"cache sample without '{FEATURES_ENTRY}'/'json'", reason="bad_cache_sample")
        sample = dict(json.loads(raw["json"]))
        sample.update(load_safetensors(bytes(raw[FEATURES_ENTRY])))
        return sample


def collate_cached(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Tensors stacked; bools, ints and floats as bool/int64/float32 tensors (as the raw collates make them);
    strings as lists."""
    batch: dict[str, Any] = {}
    for name in samples[0]:
        values = [s[name] for s in samples]
        first = values[0]
        if isinstance(first, torch.Tensor):
            batch[name] = torch.stack(values)
        elif isinstance(first, bool):
            batch[name] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(first, int):
            batch[name] = torch.tensor(values, dtype=torch.int64)
        elif isinstance(first, float):
            batch[name] = torch.tensor(values, dtype=torch.float32)
        else:
            batch[name] = list(values)
    return batch


def loader_from_config(data: DictConfig, key: dict[str, Any], seed: int) -> ExactBatchLoader:
    """The training loader over a checked cache (`key` from check_key): the raw loader's stream machinery (shard
    order, shuffle, lanes, resume) over the cache shards."""
    dataset = CachedSampleDataset(cache_shards(data.cache, key), **stream_settings(data, seed))
    return ExactBatchLoader.from_config(dataset, data, seed, collate_cached)


def run_cache_key(
    cfg: DictConfig, raw_shards: Sequence[str], sampled_latents: bool | None = None, memo: DigestMemo | None = None
) -> dict[str, Any]:
    """The key a cache for this (stage) config must have, from config alone: the model class names its frozen
    parts (`frozen_part_names`) and the model-level files that fill them (`frozen_part_sources`). The writer,
    which has the codec built, says whether latents are sampled; a training run leaves it to the cache."""
    from hydra.utils import get_class

    model_class = get_class(cfg.model._target_)
    fingerprint = part_fingerprints(
        cfg.model,
        getattr(model_class, "frozen_part_names", ()),
        getattr(model_class, "frozen_part_sources", ()),
        memo if memo is not None else DigestMemo(cfg.data.get("cache")),
    )
    return cache_key(
        system=str(cfg.model._target_),
        fingerprint=fingerprint,
        data=cfg.data,
        augmentation_seed=cfg.data.get("augmentation_seed"),
        sampled_latents=sampled_latents,
        raw_shards=raw_shards,
    )
