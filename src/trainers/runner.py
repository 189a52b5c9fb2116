"""Runs an experiment's stages in order, each a Lightning fit, and writes the run's summary.json.

Each stage's settings are `stages.<name>` merged over the root config, so stage 1 and stage 2 of Animate
Anyone carry their own data, resolution, frames, batch, steps and learning rate. A stage whose final
weights exist is done and is skipped on a rerun; an unfinished stage resumes from its `last.ckpt` with
its step count intact. Everything lands in the Hydra run directory.

The system-specific parts are named by config, so this file serves every system: `data.train_loader` and
`data.val_loader` build the loaders (partial functions of the data config and the shards), `data.demo`
generates the embedded demo shards (a `_target_` returning `.train`/`.heldout` shard lists), and
`evaluation._target_` is the held-out evaluation run after the last stage.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from src import atomic_io
from src.config import stage_config
from src.data import latent_cache
from src.data.shards import list_shards
from src.export import checkpoint_exists, checkpoint_step
from src.log_setup import readable_logs
from src.models.weights_io import save_net_weights
from src.pretrained_files import find_slots
from src.trainers.callbacks import SampleVideoWriter, build_callbacks, find_callback
from src.trainers.deferred_parts import deferred_model_config
from src.trainers.ema import EMACallback
from src.trainers.loggers import build_loggers, finish_wandb
from src.trainers.master_weights import master_state_dict
from src.trainers.nonfinite import NonFiniteGuard
from src.trainers.scale_callbacks import build_scale_callbacks
from src.trainers.skipped_samples import SkippedSamples

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    name: str
    steps: int
    final_loss: float | None
    weights: str
    checkpoint: str | None
    samples: list[str] = field(default_factory=list)
    resumed_from_step: int | None = None
    skipped_samples: int = 0  # bad samples skipped by the data pipelines, all ranks and workers
    skip_reasons: dict[str, int] = field(default_factory=dict)  # the same, per reason
    nonfinite_steps: int = 0  # steps whose loss/gradients were NaN/Inf (skipped: callbacks.nonfinite)
    wall_time_s: float = 0.0


@dataclass
class DataPaths:
    train: list[str] | str | None
    heldout: list[str] | str | None


def stage_names(cfg: DictConfig) -> list[str]:
    """All stages of the experiment in order, or the single one `stage` names."""
    names = list(cfg.stages.keys()) if cfg.stages else []
    if not names:
        raise ValueError("the config has no `stages`; pick an experiment, e.g. experiment=animate_anyone_demo.")
    if cfg.stage == "all":
        return names
    if cfg.stage not in names:
        raise ValueError(f"stage={cfg.stage!r} is not one of this experiment's stages {names} (or 'all').")
    return [cfg.stage]


def stage_weights_path(stage_dir: Path) -> Path:
    """Where a stage's final trained weights go (the next stage and the held-out evaluation read them)."""
    return Path(stage_dir) / "final" / "net.safetensors"


def resolve_data(cfg: DictConfig) -> DataPaths:
    """Shard lists from config, generating the embedded demo data on first use when `data.demo` is set."""
    if cfg.data.demo:
        if "_target_" not in cfg.data.demo:
            raise ValueError(
                "data.demo is set but has no _target_: name the demo generator, e.g. "
                "_target_: src.data.demo_dataset.ensure_demo_shards (see conf/data/*_demo.yaml)."
            )
        demo = instantiate(cfg.data.demo)
        return DataPaths(train=demo.train, heldout=demo.heldout)
    if not cfg.data.train_shards:
        raise ValueError("data.train_shards is not set: point it at your shards (python -m src.data.make_shards).")
    return DataPaths(train=cfg.data.train_shards, heldout=cfg.data.heldout_shards)


def build_train_loader(cfg: DictConfig, shards, rank: int, module: L.LightningModule | None = None):
    """`data.train_loader` (a partial taking the data config, the shards and the per-rank data seed). With
    `data.split_global_batch` every rank reads the one stream a single process would, and keeps its slice.
    With `data.cache` the loader reads the latent cache instead, once its key matches this run's encoders,
    preprocessing and shards (src.data.latent_cache; a mismatch is refused naming what differs), and `module`
    takes the cache's frozen constants, so its deferred codec and encoders are never built for training."""
    rank_seed = cfg.seed if cfg.data.get("split_global_batch") else cfg.seed + 1000 * rank
    if cfg.data.get("cache"):
        if module is None:
            raise ValueError("data.cache needs the built module, to give it the cache's frozen constants.")
        key = latent_cache.check_key(cfg.data.cache, latent_cache.run_cache_key(cfg, list_shards(shards)))
        module.adopt_frozen_constants(latent_cache.read_constants(cfg.data.cache))
        return latent_cache.loader_from_config(cfg.data, key, rank_seed)
    return instantiate(cfg.data.train_loader)(cfg.data, shards, rank_seed)


def build_module(cfg: DictConfig, name: str, init_weights: str | None) -> L.LightningModule:
    """The stage's LightningModule. `seed` keys its per-sample training draws (src.trainers.sample_draws):
    distinct on every rank and the same per sample whatever the world size; the global seed set before this
    call only makes the initial weights agree across ranks. With `data.cache` its codec and encoders are
    deferred: built only if validation or sampling uses them (src.trainers.deferred_parts)."""
    model = deferred_model_config(cfg).model if cfg.data.get("cache") else cfg.model
    return instantiate(model, stage=name, init_weights=init_weights or cfg.model.get("init_weights"), seed=cfg.seed)


def build_val_loader(cfg: DictConfig, shards):
    """`data.val_loader` over the held-out shards, or None when there are none or `data.val.num_videos` is 0."""
    if not shards or cfg.data.val.num_videos <= 0:
        return None
    return instantiate(cfg.data.val_loader)(cfg.data, shards)


def accumulation_steps(global_batch: int | None, per_device: int, world_size: int) -> int:
    if not global_batch:
        return 1
    per_step = per_device * world_size
    if global_batch % per_step:
        raise ValueError(
            f"global_batch_size={global_batch} is not a multiple of data.batch_size ({per_device}) x world size "
            f"({world_size}) = {per_step}; change one of them (Animate Anyone's stage 2 on 8 GPUs: "
            "experiment=animate_anyone_8gpu scales its batch of 4 to 8 with the learning rate)."
        )
    return global_batch // per_step


def run_header(cfg: DictConfig, name: str, stage_dir: Path, trainer: L.Trainer, init_weights: str | None,
               resumed_from: int | None) -> str:
    """One block at the start of a stage: what runs, where, with which batch, steps, outputs and weights."""
    world, accumulate, per_device = trainer.world_size, trainer.accumulate_grad_batches, cfg.data.batch_size
    lines = [
        f"==== {cfg.run_name}: stage {name} ({cfg.model._target_.rsplit('.', 1)[-1]}) ====",
        f"  devices    {trainer.num_nodes} node(s) x {trainer.num_devices} {type(trainer.accelerator).__name__}"
        f" (world size {world}), strategy {type(trainer.strategy).__name__}, precision {trainer.precision}",
        f"  batch      global {per_device * world * accumulate} = {per_device} per device x {world} device(s)"
        f" x {accumulate} accumulation step(s)",
        f"  steps      {trainer.max_steps}" + (f", resuming at step {resumed_from}" if resumed_from else ""),
        f"  outputs    {stage_dir} (checkpoints/, final/net.safetensors)",
    ]
    slots = find_slots(cfg, ("model",))
    if init_weights:
        lines.append(f"  init from  {init_weights}")
    else:
        lines.append("  init from  " + ("the pretrained files below" if slots else "random init (no pretrained file set)"))
    lines += [f"  weights    {slot.key} = {slot.path}" for slot in slots]
    return "\n".join(lines)


def final_net_state(trainer: L.Trainer, module: L.LightningModule, init_weights: str | None) -> dict:
    """The stage's final `net` weights at full precision: the fp32 masters (not the bf16 copies DeepSpeed trains
    with, nor ZeRO-3 shards), frozen parts as loaded from `init_weights`, and the EMA when
    `callbacks.ema.final_weights=ema`."""
    use_source = trainer.is_global_zero and init_weights and Path(init_weights).is_file()  # rank 0 writes the file
    source = load_file(init_weights) if use_source else None
    state = master_state_dict(module.net, frozen_source=source)
    ema = find_callback(trainer, EMACallback)
    if ema is not None and ema.final_weights == "ema":
        state.update(ema.state_for(module.net, prefix="net."))
    return state


def run_stage(cfg: DictConfig, name: str, run_dir: Path, data: DataPaths, init_weights: str | None) -> StageResult:
    stage_dir = run_dir / name
    weights = stage_weights_path(stage_dir)
    done_file = stage_dir / "final" / "stage.json"
    if weights.is_file() and done_file.is_file():
        log.info("stage %s already finished (%s); skipping", name, weights)
        return StageResult(**json.loads(done_file.read_text()))

    started = time.time()
    L.seed_everything(cfg.seed, workers=True)
    init_weights = init_weights or cfg.model.get("init_weights")
    module = build_module(cfg, name, init_weights)
    loggers = build_loggers(cfg.logger, run_dir, cfg.run_name, name)
    progress_bar = bool(cfg.trainer.get("enable_progress_bar", True))
    callbacks = build_callbacks(cfg.callbacks, stage_dir, stage=name, progress_bar=progress_bar) + build_scale_callbacks(cfg)
    trainer: L.Trainer = instantiate(cfg.trainer, default_root_dir=str(stage_dir), callbacks=callbacks, logger=loggers or False)
    trainer.accumulate_grad_batches = accumulation_steps(cfg.global_batch_size, cfg.data.batch_size, trainer.world_size)
    readable_logs()  # after Lightning and the loggers are imported: their duplicate handlers go

    train_loader = build_train_loader(cfg, data.train, rank=trainer.global_rank, module=module)
    val_loader = build_val_loader(cfg, data.heldout)

    last = stage_dir / "checkpoints" / "last.ckpt"
    resumed_from = None
    resumable = checkpoint_exists(last)  # a .ckpt file, or a directory under DeepSpeed
    if resumable:
        resumed_from = checkpoint_step(last) or 0
        log.info("stage %s: resuming from %s (step %d)", name, last, resumed_from)
    if trainer.is_global_zero:
        log.info(run_header(cfg, name, stage_dir, trainer, init_weights, resumed_from))
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=str(last) if resumable else None)
    finish_wandb(loggers)
    if trainer.interrupted:
        raise RuntimeError(f"stage {name} was interrupted at step {trainer.global_step}; rerun to resume.")

    writer = find_callback(trainer, SampleVideoWriter)
    skips = find_callback(trainer, SkippedSamples)
    loss = trainer.callback_metrics.get("train/loss")
    result = StageResult(
        name=name,
        steps=int(trainer.global_step),
        final_loss=float(loss) if loss is not None else None,
        weights=str(weights),
        checkpoint=str(last) if checkpoint_exists(last) else None,
        samples=list(writer.written) if writer else [],
        resumed_from_step=resumed_from,
        skipped_samples=skips.total if skips else 0,
        skip_reasons=dict(skips.totals) if skips else {},
        nonfinite_steps=guard.bad_steps if (guard := find_callback(trainer, NonFiniteGuard)) else 0,
        wall_time_s=round(time.time() - started, 1),
    )
    final = final_net_state(trainer, module, init_weights)  # collective under DeepSpeed: every rank calls it
    if trainer.is_global_zero:
        save_net_weights(final, weights, stage=name, steps=str(result.steps))
        atomic_io.write_json(done_file, asdict(result))
    trainer.strategy.barrier()
    return result


def run_heldout_evaluation(cfg: DictConfig, last_stage: str, weights: str, data: DataPaths, run_dir: Path) -> dict:
    """Calls `evaluation._target_` with the other `evaluation` keys; it returns {"scores", "videos", ...}."""
    params = OmegaConf.to_container(cfg.evaluation, resolve=True)
    params.pop("heldout", None)
    if "_target_" not in params:
        raise ValueError(
            "evaluation.heldout is true but evaluation has no _target_: pick an evaluation config "
            "(e.g. evaluation=animate_anyone_heldout) or set evaluation.heldout=false."
        )
    if not data.heldout:
        raise ValueError("evaluation.heldout is true but there are no held-out shards: set data.heldout_shards.")
    evaluate = instantiate(params, _partial_=True)
    return evaluate(
        cfg=cfg,
        stage_cfg=stage_config(cfg, last_stage),
        stage=last_stage,
        weights=weights,
        heldout_shards=data.heldout,
        out_dir=run_dir / "heldout",
    )


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Runs the selected stages then the held-out evaluation; returns (and writes) the summary."""
    run_dir.mkdir(parents=True, exist_ok=True)
    selected = stage_names(cfg)
    all_names = list(cfg.stages.keys())
    data = resolve_data(cfg)
    results: dict[str, StageResult] = {}
    previous_weights: str | None = None
    for name in all_names:
        if name not in selected:
            finished = stage_weights_path(run_dir / name)
            if finished.is_file():
                previous_weights = str(finished)
            continue
        scfg = stage_config(cfg, name)
        init = previous_weights
        if name != all_names[0] and init is None:
            init = scfg.model.get("init_weights")
            # a net built from a released model (model.net.init=moore) already holds the earlier stage's weights
            if not init and OmegaConf.select(scfg, "model.net.init") != "moore":
                raise FileNotFoundError(
                    f"stage {name} starts from the previous stage's weights, but {stage_weights_path(run_dir / all_names[all_names.index(name) - 1])} "
                    f"does not exist; run stage={all_names[all_names.index(name) - 1]} first in the same hydra.run.dir, or set "
                    f"stages.{name}.model.init_weights to a weights file."
                )
        results[name] = run_stage(scfg, name, run_dir, data, init)
        previous_weights = results[name].weights

    summary = {
        "experiment": cfg.run_name,
        "run_dir": str(run_dir),
        "stages_run": list(results),
        "stages": {name: asdict(r) for name, r in results.items()},
        "steps": {name: r.steps for name, r in results.items()},
        "final_losses": {name: r.final_loss for name, r in results.items()},
        "checkpoints": {name: r.checkpoint for name, r in results.items()},
        "weights": {name: r.weights for name, r in results.items()},
        "skip_reasons": {name: r.skip_reasons for name, r in results.items()},
        "samples": [s for r in results.values() for s in r.samples],
        "metrics": {},
    }
    if cfg.evaluation.get("heldout") and results and L.fabric.utilities.rank_zero.rank_zero_only.rank == 0:
        last = list(results)[-1]
        heldout = run_heldout_evaluation(cfg, last, results[last].weights, data, run_dir)
        summary["metrics"]["heldout"] = heldout["scores"]
        summary["heldout"] = heldout
        summary["samples"] += heldout["videos"]
    if L.fabric.utilities.rank_zero.rank_zero_only.rank == 0:
        atomic_io.write_json(run_dir / "summary.json", summary)
    return summary
