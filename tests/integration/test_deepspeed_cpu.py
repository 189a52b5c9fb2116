"""A raw DeepSpeed ZeRO-2 engine on 2 gloo CPU ranks: save without frozen weights, resume with the frozen-aware
loader, consolidate to fp32 with zero_to_fp32 (= the trained weights), then src.export the directory.

Lightning's DeepSpeed strategy refuses CPUs, so the engine is driven directly (DS_ACCELERATOR=cpu); the
Lightning path is covered by tests/gpu. Most of the ~30 s is DeepSpeed's first `initialize` (it imports
torch inductor while checking the optimizer).
"""

from __future__ import annotations

import os
import socket
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

    from src.trainers.strategies import load_with_frozen_excluded

    deepspeed.init_distributed(dist_backend="gloo")
    model = Model(seed=1)
    params = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=torch.optim.AdamW(params, lr=1e-2), config=CONFIG
    )
    g = torch.Generator().manual_seed(rank)
    for _ in range(3):
        x = torch.randn(2, 4, generator=g)
        loss = (engine(x) - x.sum(1, keepdim=True)).pow(2).mean()
        engine.backward(loss)
        engine.step()
    engine.save_checkpoint(out, tag="step3", client_state={"global_step": 3}, exclude_frozen_parameters=True)

    fresh = Model(seed=2)  # different trainable init, same frozen encoder
    fresh_params = [p for p in fresh.parameters() if p.requires_grad]
    engine2, *_ = deepspeed.initialize(
        model=fresh, optimizer=torch.optim.AdamW(fresh_params, lr=1e-2), config=CONFIG
    )
    engine2.load_checkpoint(out, custom_load_fn=load_with_frozen_excluded)
    if rank == 0:
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, Path(out) / "trained.pt")
        torch.save({k: v.clone() for k, v in fresh.state_dict().items()}, Path(out) / "resumed.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ds_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "last.ckpt"
    mp.spawn(_worker, args=(2, str(out), _free_port()), nprocs=2, join=True)
    return out


def test_layout_and_frozen_weights_left_out(ds_checkpoint):
    assert (ds_checkpoint / "latest").read_text().strip() == "step3"
    assert (ds_checkpoint / "step3" / "mp_rank_00_model_states.pt").is_file()
    assert len(list((ds_checkpoint / "step3").glob("*zero_pp_rank_*_optim_states.pt"))) == 2
    module = torch.load(ds_checkpoint / "step3" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    assert not any(k.startswith("encoder.") for k in module)
    from src.export import checkpoint_exists, checkpoint_step

    assert checkpoint_exists(ds_checkpoint) and checkpoint_step(ds_checkpoint) == 3


def test_zero_to_fp32_equals_trained_and_resume_restores_it(ds_checkpoint):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    trained = torch.load(ds_checkpoint / "trained.pt")
    consolidated = get_fp32_state_dict_from_zero_checkpoint(str(ds_checkpoint))
    assert set(consolidated) == {k for k in trained if k.startswith("net.")}
    for k, v in consolidated.items():
        assert v.dtype == torch.float32
        torch.testing.assert_close(v, trained[k], rtol=0, atol=0)
    assert not torch.equal(
        trained["net.proj.weight"], Model(seed=1).state_dict()["net.proj.weight"]
    )  # it trained
    resumed = torch.load(ds_checkpoint / "resumed.pt")
    for k, v in trained.items():  # trainable from the checkpoint, frozen encoder kept from construction
        torch.testing.assert_close(resumed[k], v, rtol=0, atol=0)


def test_src_export_writes_per_module_files_that_load_back_strictly(ds_checkpoint, tmp_path):
    import json

    from safetensors.torch import load_file

    from src.export import load_exported, main

    main([str(ds_checkpoint), str(tmp_path / "fp32")])
    index = json.loads((tmp_path / "fp32" / "index.json").read_text())
    assert index["format"] == "deepspeed" and index["global_step"] == 3 and index["net_complete"]
    assert set(index["files"]) == {"net", "unet", "proj"}
    trained = torch.load(ds_checkpoint / "trained.pt")
    net = Model(seed=3).net
    load_exported(net, tmp_path / "fp32")
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, trained[f"net.{k}"], rtol=0, atol=0)
    proj = load_file(str(tmp_path / "fp32" / "proj.safetensors"))
    assert set(proj) == {"weight", "bias"}

    main([str(ds_checkpoint), str(tmp_path / "bf16"), "--dtype", "bf16"])
    bf16 = load_file(str(tmp_path / "bf16" / "net.safetensors"))
    assert all(v.dtype == torch.bfloat16 for v in bf16.values())
    torch.testing.assert_close(
        bf16["unet.0.weight"].float(), trained["net.unet.0.weight"], rtol=1e-2, atol=1e-2
    )
