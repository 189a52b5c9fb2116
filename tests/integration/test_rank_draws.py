"""Training draws over 2 gloo ranks, built by the runner's own functions (config, demo shards, loader, module), for
both LightningModules: ranks draw different noise, timesteps and dropout streams (the runner seeds every rank's
global RNG alike), and with `data.split_global_batch` 2 ranks x batch 1 draw exactly what 1 process x batch 2 draws.

The first training batch of each rank is enough: this checks the draws themselves in about half a minute; the
losses and weights of whole runs are compared in test_ddp_equivalence.py (slow)."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir

from src.config import register_resolvers
from src.trainers.runner import build_module, build_train_loader, resolve_data, stage_config
from tests.conftest import ROOT
from tests.integration.test_dynamicrafter_demo import TINY as DC_TINY
from tests.integration.test_train_animate_anyone import TINY as AA_TINY

# system -> (overrides, stage, data batch-size key)
SYSTEMS = {
    "animate_anyone": (AA_TINY, "spatial", "stages.spatial.data.batch_size"),
    "dynamicrafter": (DC_TINY, "finetune", "data.batch_size"),
}


def stage_cfg(system: str, cache: Path, batch_size: int, split: bool):
    overrides, stage, batch_key = SYSTEMS[system]
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*overrides, f"paths.cache={cache}", f"{batch_key}={batch_size}", f"data.split_global_batch={split}"],
        )
    return stage_config(cfg, stage), stage


def first_batch_draws(system: str, cache: Path, batch_size: int, split: bool) -> dict[str, torch.Tensor]:
    """What the module draws for this rank's first training batch, with the runner's seeding and builders."""
    cfg, stage = stage_cfg(system, cache, batch_size, split)
    data = resolve_data(cfg)
    L.seed_everything(cfg.seed)
    module = build_module(cfg, stage, None)
    rank = dist.get_rank() if dist.is_initialized() else 0
    batch = next(iter(build_train_loader(cfg, data.train, rank)))
    if system == "animate_anyone":
        latents = module.encode_video(batch["pixel_values"])
        drop, noise, timesteps = module.draw_randomness(latents, batch)
        drawn = {"drop": drop, "noise": noise, "timesteps": timesteps}
    else:
        drawn = asdict(module.draw_randomness(batch, module.encode_video(batch["video"])))
    # the global RNG, reseeded per rank step by draw_randomness, is what nn.Dropout layers draw from
    return {**drawn, "sample_index": batch["sample_index"], "global_rng": torch.rand(4)}


def _rank_worker(rank: int, world: int, port: int, cache: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for system in SYSTEMS:
            for split in (False, True):
                drawn = first_batch_draws(system, Path(cache), 1, split)
                torch.save(drawn, Path(out_dir) / f"{system}_{split}_{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_draw_their_own_samples_and_split_equals_one_process(tmp_path, demo_cache):
    single = {system: first_batch_draws(system, demo_cache, 2, True) for system in SYSTEMS}  # also makes the shards
    mp.start_processes(
        _rank_worker, args=(2, free_port(), str(demo_cache), str(tmp_path)), nprocs=2, start_method="spawn"
    )
    for system in SYSTEMS:
        own = [torch.load(tmp_path / f"{system}_False_{r}.pt") for r in range(2)]
        assert own[0]["sample_index"].tolist() != own[1]["sample_index"].tolist()
        assert not torch.allclose(own[0]["noise"], own[1]["noise"]), system
        assert not torch.equal(own[0]["timesteps"], own[1]["timesteps"]), system
        assert not torch.equal(own[0]["global_rng"], own[1]["global_rng"]), system

        split = [torch.load(tmp_path / f"{system}_True_{r}.pt") for r in range(2)]
        for key, whole in single[system].items():
            if key == "global_rng":  # one stream per rank step: depends on how samples are batched
                continue
            torch.testing.assert_close(torch.cat([split[0][key], split[1][key]]), whole, msg=f"{system} {key}")
