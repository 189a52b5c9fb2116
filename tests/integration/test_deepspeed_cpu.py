"""A raw DeepSpeed ZeRO-2 + bf16 engine on 2 gloo CPU ranks: save without frozen weights (twice into one
directory, as `last.ckpt` is), resume with the frozen-aware loader, consolidate to fp32 with zero_to_fp32, then
src.export the directory. The final weights, the EMA and the export all hold the fp32 masters, not the bf16
copies the module trains with.

Lightning's DeepSpeed strategy refuses CPUs, so the engine is driven directly (DS_ACCELERATOR=cpu); the
Lightning path is covered by tests/gpu. Most of the ~30 s is DeepSpeed's first `initialize` (it imports
torch inductor while checking the optimizer).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

deepspeed = pytest.importorskip("deepspeed")


class Model(nn.Module):
    """A frozen encoder outside `net` and a two-part trainable `net`, like the LightningModules."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(4, 4).requires_grad_(False)
        torch.manual_seed(seed)
        self.net = nn.ModuleDict(
            {"unet": nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 4)), "proj": nn.Linear(4, 1)}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net["proj"](self.net["unet"](self.encoder(x)))


CONFIG = {
    "train_micro_batch_size_per_gpu": 2,
    "gradient_accumulation_steps": 1,
    "zero_optimization": {"stage": 2},
    "bf16": {"enabled": True},
    "zero_allow_untested_optimizer": True,
}


def _worker(rank: int, world: int, out: str, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        DS_ACCELERATOR="cpu",
    )
    import deepspeed

    from src.trainers.ema import EMACallback
    from src.trainers.master_weights import master_state_dict
    from src.trainers.strategies import load_with_frozen_excluded, save_engine_checkpoint

    deepspeed.init_distributed(dist_backend="gloo")
    model = Model(seed=1)
    params = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=torch.optim.AdamW(params, lr=1e-2), config=CONFIG
    )
    ema = EMACallback(decay=0.0, warmup_power=None)  # decay 0: the average is the last update's weights
    ema.start(model, step=0)
    for step in _train(engine, rank):
        ema.update(model)
        if step >= 2:  # the second save into the directory replaces the first only once it is complete
            save_engine_checkpoint(engine, out, {"global_step": step}, exclude_frozen_parameters=True)
    masters = master_state_dict(model.net)  # collective: every rank

    fresh = Model(seed=2)  # different trainable init, same frozen encoder
    fresh_params = [p for p in fresh.parameters() if p.requires_grad]
    engine2, *_ = deepspeed.initialize(
        model=fresh, optimizer=torch.optim.AdamW(fresh_params, lr=1e-2), config=CONFIG
    )
    engine2.load_checkpoint(out, custom_load_fn=load_with_frozen_excluded)
    resumed_masters = master_state_dict(fresh.net)

    zero3 = Model(seed=1)  # the same training under ZeRO-3: every parameter partitioned across the ranks
    engine3, *_ = deepspeed.initialize(
        model=zero3,
        optimizer=torch.optim.AdamW([p for p in zero3.parameters() if p.requires_grad], lr=1e-2),
        config=dict(CONFIG, zero_optimization={"stage": 3, "stage3_param_persistence_threshold": 0}),
    )
    for _ in _train(engine3, rank):
        pass
    zero3_live = {k: p.numel() for k, p in zero3.net.named_parameters()}
    zero3_masters = master_state_dict(zero3.net)
    if rank == 0:
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, Path(out) / "trained.pt")
        torch.save(masters, Path(out) / "masters.pt")
        torch.save(ema.state_for(model.net, prefix="net."), Path(out) / "ema.pt")
        torch.save({k: v.clone() for k, v in fresh.state_dict().items()}, Path(out) / "resumed.pt")
        torch.save(resumed_masters, Path(out) / "resumed_masters.pt")
        torch.save({"live_numel": zero3_live, "masters": zero3_masters}, Path(out) / "zero3.pt")
    # DeepSpeed 0.19.8's CPU comm threads abort the interpreter's normal exit ("terminate called without an
    # active exception", SIGABRT) after all work is done: leave the group, then exit without the C++ teardown.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _train(engine, rank: int, steps: int = 3):
    """bf16 steps on this rank's own data; yields the step number after each optimizer step."""
    g = torch.Generator().manual_seed(rank)
    for step in range(1, steps + 1):
        x = torch.randn(2, 4, generator=g).bfloat16()
        loss = (engine(x).float() - x.float().sum(1, keepdim=True)).pow(2).mean()
        engine.backward(loss)
        engine.step()
        yield step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ds_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "last.ckpt"
    mp.spawn(_worker, args=(2, str(out), _free_port()), nprocs=2, join=True)
    return out


def test_layout_frozen_weights_left_out_and_one_complete_tag(ds_checkpoint):
    # saved at steps 2 and 3 into one directory: `latest` names the newer tag, the older one is gone
    assert (ds_checkpoint / "latest").read_text().strip() == "step000000003"
    assert sorted(p.name for p in ds_checkpoint.iterdir() if p.is_dir()) == ["step000000003"]
    tag = ds_checkpoint / "step000000003"
    assert (tag / "mp_rank_00_model_states.pt").is_file()
    assert len(list(tag.glob("*zero_pp_rank_*_optim_states.pt"))) == 2
    module = torch.load(tag / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    assert not any(k.startswith("encoder.") for k in module)
    from src.export import checkpoint_exists, checkpoint_step

    assert checkpoint_exists(ds_checkpoint) and checkpoint_step(ds_checkpoint) == 3


def _net_keys(state: dict) -> dict:
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}


def test_final_weights_and_ema_are_the_fp32_masters_not_their_bf16_rounding(ds_checkpoint):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    live = _net_keys(torch.load(ds_checkpoint / "trained.pt"))
    consolidated = _net_keys(get_fp32_state_dict_from_zero_checkpoint(str(ds_checkpoint)))
    masters = torch.load(ds_checkpoint / "masters.pt")
    ema = torch.load(ds_checkpoint / "ema.pt")
    assert set(masters) == set(consolidated) == set(ema) == set(live)
    for k, v in consolidated.items():
        assert live[k].dtype == torch.bfloat16 and masters[k].dtype == torch.float32
        torch.testing.assert_close(masters[k], v, rtol=0, atol=0)  # the optimizer's masters, as saved
        torch.testing.assert_close(ema[k], v, rtol=0, atol=0)  # decay 0: the EMA is the last masters
        torch.testing.assert_close(live[k], v.bfloat16(), rtol=0, atol=0)  # the module holds their rounding
    rounded = sum(int((v != v.bfloat16().float()).sum()) for v in consolidated.values())
    assert rounded > 0.5 * sum(v.numel() for v in consolidated.values())  # so equal-to-masters is not bf16
    assert not torch.equal(masters["proj.weight"], Model(seed=1).net.state_dict()["proj.weight"])  # it trained


def test_resume_restores_the_module_and_its_fp32_masters(ds_checkpoint):
    trained = torch.load(ds_checkpoint / "trained.pt")
    resumed = torch.load(ds_checkpoint / "resumed.pt")
    for k, v in trained.items():  # trainable from the checkpoint, frozen encoder kept from construction
        torch.testing.assert_close(resumed[k], v, rtol=0, atol=0)
    masters, resumed_masters = torch.load(ds_checkpoint / "masters.pt"), torch.load(ds_checkpoint / "resumed_masters.pt")
    for k, v in masters.items():
        torch.testing.assert_close(resumed_masters[k], v, rtol=0, atol=0)


def test_zero3_final_weights_are_the_consolidated_fp32_masters(ds_checkpoint):
    zero3 = torch.load(ds_checkpoint / "zero3.pt")
    assert set(zero3["live_numel"].values()) == {0}  # the live parameters are empty shards on every rank
    masters = torch.load(ds_checkpoint / "masters.pt")  # the same training under ZeRO-2
    assert set(zero3["masters"]) == set(masters)
    for k, v in masters.items():
        assert zero3["masters"][k].dtype == torch.float32
        torch.testing.assert_close(zero3["masters"][k], v, rtol=0, atol=1e-6)


def test_src_export_writes_per_module_files_that_load_back_strictly(ds_checkpoint, tmp_path):
    import json

    from safetensors.torch import load_file

    from src.export import load_exported, main

    main([str(ds_checkpoint), str(tmp_path / "fp32")])
    index = json.loads((tmp_path / "fp32" / "index.json").read_text())
    assert index["format"] == "deepspeed" and index["global_step"] == 3 and index["net_complete"]
    assert set(index["files"]) == {"net", "unet", "proj"}
    masters = torch.load(ds_checkpoint / "masters.pt")
    net = Model(seed=3).net
    load_exported(net, tmp_path / "fp32")
    for k, v in net.state_dict().items():  # the fp32 masters, not the module's bf16 copies
        torch.testing.assert_close(v, masters[k], rtol=0, atol=0)
    proj = load_file(str(tmp_path / "fp32" / "proj.safetensors"))
    assert set(proj) == {"weight", "bias"}

    main([str(ds_checkpoint), str(tmp_path / "bf16"), "--dtype", "bf16"])
    bf16 = load_file(str(tmp_path / "bf16" / "net.safetensors"))
    assert all(v.dtype == torch.bfloat16 for v in bf16.values())
    torch.testing.assert_close(bf16["unet.0.weight"], masters["unet.0.weight"].bfloat16(), rtol=0, atol=0)
