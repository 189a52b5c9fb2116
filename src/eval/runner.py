"""`python -m src.evaluate`: folder mode, model mode, partial shards and their merge, metrics.json.

- folder mode: `eval.generated_dir` (a folder of `<name>.mp4`) against `eval.real_dir` or `eval.real_shards`.
- model mode: `eval.generator` animates `eval.test_set` into `<run>/generated/<name>.mp4` (the ground truth
  clip goes to `<run>/real/<name>.mp4`), skipping names already written (resumable), then scores them.
- the scored subset (`eval.subset`, src/eval/subset.py): `num_samples` generated / `num_real` real names,
  chosen by a seeded, class-stratified random rule; the chosen names and the rule go to metrics.json.
- shards: with `eval.num_shards=N eval.shard_index=i` (times the launcher's ranks, if any) each job takes
  a contiguous slice of the chosen names, reads and decodes only those, and saves every metric's state to
  `<run>/partial/shard_<i>.pt`; `eval.merge=true` merges all of them and writes the same metrics.json a
  single run would.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src import atomic_io
from src.data.video_io import encode_mp4
from src.eval.feature_stats import merge_partial_bundles, save_partial_bundle
from src.eval.generators import TestSet, VideoGenerator, resolve_device
from src.eval.metric_setup import ConfiguredMetric, build_metrics, instantiate_unwrapped, metric_values
from src.eval.reference_frame import ReferenceFrame, apply_reference_rule
from src.eval.scoring import ScoringSettings, merge_counts, score_shard
from src.eval.subset import SubsetRule, select_keys
from src.eval.video_sources import (
    ClipSpec,
    FolderSource,
    build_source,
    encode_frames_for_storage,
    key_seed,
    read_prompts,
)

log = logging.getLogger(__name__)
PARTIAL_DIR = "partial"
# Keys of `eval` that differ between the shards of one evaluation (everything else must agree).
_PER_JOB_KEYS = ("shard_index", "merge", "progress", "device", "batch_size")


def launcher_rank_world() -> tuple[int, int]:
    """(rank, world size) from torchrun (RANK/WORLD_SIZE) or srun (SLURM_PROCID/SLURM_NTASKS); (0, 1) alone."""
    for rank_var, world_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_var in os.environ and world_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[world_var])
    return 0, 1


def shard_slice(items: Sequence[Any], index: int, count: int) -> list[Any]:
    """The `index`-th of `count` contiguous slices (so concatenating the slices in order gives `items`)."""
    if not 0 <= index < count:
        raise ValueError(f"eval.shard_index={index} must be in [0, num_shards={count})")
    n = len(items)
    return list(items[n * index // count : n * (index + 1) // count])




def _scoring_signature(e: DictConfig) -> dict:
    plain = OmegaConf.to_container(e, resolve=True)
    return {k: v for k, v in plain.items() if k not in _PER_JOB_KEYS}


def _settings(e: DictConfig) -> ScoringSettings:
    """Scoring settings from eval.*. In model mode `real/<name>.mp4` already holds the cut clip (eval.clip's
    frames, written by generate_missing), so it is scored from its first frame at stride 1."""
    resolution = tuple(int(v) for v in e.resolution) if e.resolution is not None else None
    real_clip = ClipSpec(**OmegaConf.to_container(e.clip, resolve=True))
    if e.mode == "model":
        real_clip = ClipSpec(num_frames=real_clip.num_frames, stride=1, start=0)
    return ScoringSettings(
        real_clip=real_clip,
        generated_clip=ClipSpec(**OmegaConf.to_container(e.generated_clip, resolve=True)),
        resolution=resolution,
        resize=e.resize,
        batch_size=int(e.batch_size),
        device=resolve_device(e.device),
        progress=bool(e.progress),
    )


def _subset_rule(e: DictConfig) -> SubsetRule:
    return SubsetRule(**OmegaConf.to_container(e.subset, resolve=True))


def _reference(e: DictConfig) -> ReferenceFrame:
    return ReferenceFrame(**OmegaConf.to_container(e.reference, resolve=True))


def protocol_metrics(e: DictConfig, device) -> dict[str, ConfiguredMetric]:
    """eval.metrics built on `device`, with the reference-frame rule applied (the same set for runs and merges)."""
    specs = OmegaConf.to_container(e.metrics, resolve=True)
    real_clip = ClipSpec(**OmegaConf.to_container(e.clip, resolve=True))
    return apply_reference_rule(build_metrics(e.metrics, device), specs, device, _reference(e), real_clip)


def _subset_record(e: DictConfig, gen_all: int, real_all: int, gen_keys: list[str], real_keys: list[str]) -> dict:
    """What metrics.json says about the scored set: the rule, the set sizes and every chosen name."""
    return {**_subset_rule(e).describe(), "population": {"generated": gen_all, "real": real_all},
            "generated_keys": gen_keys, "real_keys": real_keys}


def generate_missing(
    generator_cfg: Any,
    test_set: TestSet,
    positions: Sequence[int],
    run_dir: Path,
    seed: int,
    batch_size: int,
    crf: int,
    fps: float | None,
    progress: bool = True,
) -> dict[str, int]:
    """Generate the test items at `positions` whose mp4s are not written yet; the generator is built lazily."""
    from tqdm.auto import tqdm

    gen_dir, real_dir = run_dir / "generated", run_dir / "real"
    gen_dir.mkdir(parents=True, exist_ok=True)
    real_dir.mkdir(parents=True, exist_ok=True)
    keys = test_set.keys()
    todo = [p for p in positions if not (gen_dir / f"{keys[p]}.mp4").is_file()]
    log.info("model mode: %d of %d videos of this shard already generated", len(positions) - len(todo), len(positions))
    for p in positions:  # ground truth of every item this shard scores, also those generated earlier
        if not (real_dir / f"{keys[p]}.mp4").is_file() and p not in todo:
            todo.append(p)
    if not todo:
        return {"generated_now": 0, "already_done": len(positions)}
    generator: VideoGenerator | None = None
    written = 0
    bar = tqdm(total=len(todo), desc="generate", disable=not progress, unit="video")
    for start in range(0, len(todo), batch_size):
        items = [test_set[p] for p in todo[start : start + batch_size]]
        for item in items:
            item["seed"] = key_seed(seed, item["key"])
            if item.get("real") is not None and not (real_dir / f"{item['key']}.mp4").is_file():
                atomic_io.write_bytes(real_dir / f"{item['key']}.mp4", _encode(item["real"], fps or 8.0, crf))
        pending = [item for item in items if not (gen_dir / f"{item['key']}.mp4").is_file()]
        if pending:
            if generator is None:
                generator = instantiate_unwrapped(generator_cfg)
            videos = generator.generate(pending)
            if videos.ndim != 5 or videos.shape[0] != len(pending) or videos.shape[2] != 3:
                raise ValueError(
                    f"{type(generator).__name__}.generate returned shape {tuple(videos.shape)}; expected "
                    f"({len(pending)}, T, 3, H, W) uint8"
                )
            rate = fps or float(getattr(generator, "fps", 8.0))
            for item, video in zip(pending, videos):
                atomic_io.write_bytes(gen_dir / f"{item['key']}.mp4", _encode(video.cpu(), rate, crf))
                written += 1
        bar.update(len(items))
    bar.close()
    return {"generated_now": written, "already_done": len(positions) - written}


def _encode(frames, fps: float, crf: int) -> bytes:
    """Stored near-losslessly by default (yuv444p, CRF eval.video_crf) so the scores see what the model made."""
    return encode_mp4(encode_frames_for_storage(frames), fps, crf=crf, pix_fmt="yuv444p")


def _weights_used(e: DictConfig) -> dict[str, Any]:
    """eval.weights entries that a kept metric uses: path, whether it exists, size in bytes."""
    used = json.dumps({k: v for k, v in OmegaConf.to_container(e.metrics, resolve=True).items() if v})
    out = {}
    for name, path in (OmegaConf.to_container(e.weights, resolve=True) or {}).items():
        if not path or json.dumps(str(path)) not in used:
            continue
        p = Path(str(path)).expanduser()
        out[name] = {"path": str(path), "exists": p.exists(), "bytes": p.stat().st_size if p.is_file() else None}
    return out


def _config_dump(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an unresolvable optional entry must not lose the results
        return OmegaConf.to_container(cfg, resolve=False)


def _finalize(
    cfg: DictConfig, run_dir: Path, metrics: dict[str, ConfiguredMetric], counts: dict, extra: dict
) -> dict:
    """metrics.json: the values, counts, the scored subset (`extra["subset"]`) and the reference-frame rule."""
    e = cfg.eval
    values: dict[str, float] = {}
    higher: dict[str, bool | None] = {}
    for configured in metrics.values():
        computed = metric_values(configured)
        values.update(computed)
        higher[configured.name] = configured.higher_is_better
    results = {
        "protocol": e.protocol,
        "paper": e.get("paper"),
        "mode": e.mode,
        "metrics": values,
        "higher_is_better": higher,
        "counts": counts,
        "reference": _reference(e).describe(ClipSpec(**OmegaConf.to_container(e.clip, resolve=True))),
        "weights": _weights_used(e),
        # how each number was computed where the metric says (FVD/KVD: the flavour's settings)
        "metric_settings": {
            c.name: c.metric.settings_record() for c in metrics.values() if hasattr(c.metric, "settings_record")
        },
        **extra,
        "config": _config_dump(cfg),
    }
    atomic_io.write_json(run_dir / "metrics.json", results, default=str)
    log.info("metrics: %s", json.dumps(values))
    from src.eval.eval_logging import log_results

    results["wandb_mode"] = log_results(cfg, run_dir, results)
    return results


def _sources(cfg: DictConfig, run_dir: Path, rank: int, world: int) -> tuple:
    """(generated source, its names for this job, real source, its names for this job, job index, job count,
    subset record). Names are chosen by eval.subset before slicing; only this job's slice is ever read."""
    e = cfg.eval
    index, count = int(e.shard_index) * world + rank, int(e.num_shards) * world
    rule = _subset_rule(e)
    if e.mode == "model":
        if e.test_set is None or e.generator is None:
            raise ValueError(
                f"eval.mode=model but protocol {e.protocol} sets no eval.test_set / eval.generator; model mode is "
                "written for Animate Anyone and DynamiCrafter (eval=animate_anyone_ubc|dynamicrafter_ucf101|...)"
            )
        test_set = instantiate_unwrapped(e.test_set)
        keys = list(test_set.keys())
        if len(set(keys)) != len(keys):
            raise ValueError("the test set has repeated names; generated videos are stored by name")
        chosen = select_keys(keys, e.num_samples, rule, "generated")
        where = {key: p for p, key in enumerate(keys)}
        positions = [where[key] for key in shard_slice(chosen, index, count)]
        stats = generate_missing(
            e.generator, test_set, positions, run_dir, int(e.seed), int(e.batch_size), int(e.video_crf),
            e.video_fps, bool(e.progress),
        )
        log.info("generation: %s", stats)
        names = [keys[p] for p in positions]
        subset = _subset_record(e, len(keys), len(keys), chosen, chosen)
        return (FolderSource(run_dir / "generated"), names, FolderSource(run_dir / "real"), names, index, count,
                subset)
    if not e.generated_dir:
        raise ValueError("folder mode needs eval.generated_dir (a folder of <name>.mp4 generated videos)")
    generated = FolderSource(e.generated_dir)
    real = build_source(e.real_dir, e.real_shards, "real")
    if not generated.keys():
        raise ValueError(f"no .mp4 files in eval.generated_dir={e.generated_dir}")
    gen_keys = select_keys(generated.keys(), e.num_samples, rule, "generated")
    real_all = real.keys() if real is not None else []
    real_keys = select_keys(real_all, e.num_real, rule, "real") if real_all else []
    subset = _subset_record(e, len(generated.keys()), len(real_all), gen_keys, real_keys)
    return (generated, shard_slice(gen_keys, index, count), real, shard_slice(real_keys, index, count), index, count,
            subset)


def run_evaluation(cfg: DictConfig, run_dir: Path) -> dict:
    """Score (or generate then score) this job's share; write metrics.json, or a partial file when sharded."""
    run_dir.mkdir(parents=True, exist_ok=True)
    e = cfg.eval
    if e.mode not in ("folder", "model"):
        raise ValueError(f"eval.mode must be 'folder' or 'model', got {e.mode!r}")
    if e.merge:
        return merge_run(cfg, run_dir)
    started = time.time()
    rank, world = launcher_rank_world()
    generated, gen_keys, real, real_keys, index, count, subset = _sources(cfg, run_dir, rank, world)
    settings = _settings(e)
    metrics = protocol_metrics(e, settings.device)
    counts = score_shard(metrics, generated, gen_keys, real, real_keys, settings, read_prompts(e.prompts_file))
    sources = {"generated": generated.describe(), "real": real.describe() if real is not None else None}
    if count > 1:
        path = run_dir / PARTIAL_DIR / f"shard_{index}.pt"
        save_partial_bundle(
            {name: m.metric for name, m in metrics.items()},
            path,
            extra={"counts": counts, "shard_index": index, "num_shards": count, "sources": sources,
                   "subset": subset, "signature": json.dumps(_scoring_signature(e), sort_keys=True, default=str)},
        )
        log.info("shard %d/%d: partial states saved to %s; run eval.merge=true when all shards are done", index, count, path)
        return {"partial": str(path), "counts": counts, "shard_index": index, "num_shards": count}
    extra = {"sources": sources, "shards": {"num_shards": 1, "merged_from": []}, "subset": subset,
             "samples": _sample_paths(generated, gen_keys, counts, int(e.log_videos)),
             "wall_time_s": round(time.time() - started, 1)}
    return _finalize(cfg, run_dir, metrics, counts, extra)


def _sample_paths(generated: FolderSource, keys: Sequence[str], counts: dict, n: int) -> list[str]:
    """The first `n` generated videos that were scored (skipped ones are not shown as samples)."""
    bad = {s["key"] for s in counts["skipped_videos"] if s["side"] == "generated"}
    return [str(generated.folder / f"{k}.mp4") for k in keys if k not in bad][:n]


def merge_run(cfg: DictConfig, run_dir: Path) -> dict:
    """Merge `<run>/partial/shard_*.pt` (all of 0..N-1 must exist) into metrics.json."""
    started = time.time()
    e = cfg.eval
    files = sorted((run_dir / PARTIAL_DIR).glob("shard_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        raise FileNotFoundError(
            f"no partial states in {run_dir / PARTIAL_DIR}; run the shards (eval.num_shards=N eval.shard_index=i) "
            f"with the same hydra.run.dir first"
        )
    device = resolve_device(e.device)
    metrics = protocol_metrics(e, device)
    extras = merge_partial_bundles({name: m.metric for name, m in metrics.items()}, files)
    totals = {int(x["num_shards"]) for x in extras}
    expected = totals.pop() if len(totals) == 1 else None
    found = [int(x["shard_index"]) for x in extras]
    if expected is None or sorted(found) != list(range(expected)):
        missing = sorted(set(range(expected or max(found) + 1)) - set(found))
        raise FileNotFoundError(
            f"cannot merge {run_dir / PARTIAL_DIR}: shards {missing} are missing (found {found} of "
            f"{expected if expected else 'inconsistent totals'}); rerun those shards first"
        )
    signature = json.dumps(_scoring_signature(e), sort_keys=True, default=str)
    if {x["signature"] for x in extras} != {signature}:
        raise ValueError(
            "the partial states were computed with another eval config than this merge's; merge with the same "
            "eval=... and overrides as the shards (only shard_index, merge, device, batch_size and progress may differ)"
        )
    if any(x.get("subset") != extras[0].get("subset") for x in extras):
        raise ValueError(
            f"the shards in {run_dir / PARTIAL_DIR} chose different subsets (the videos changed between shard jobs, "
            "or eval.subset differed); rerun all shards on the same inputs"
        )
    counts = merge_counts([x["counts"] for x in extras])
    generated_dir = Path(extras[0]["sources"]["generated"])
    chosen = (extras[0].get("subset") or {}).get("generated_keys") or []
    samples = (_sample_paths(FolderSource(generated_dir), chosen, counts, int(e.log_videos))
               if generated_dir.is_dir() else [])
    extra = {"sources": extras[0]["sources"],
             "shards": {"num_shards": expected, "merged_from": [str(f) for f in files]}, "subset": extras[0].get("subset"),
             "samples": samples, "wall_time_s": round(time.time() - started, 1)}
    return _finalize(cfg, run_dir, metrics, counts, extra)
