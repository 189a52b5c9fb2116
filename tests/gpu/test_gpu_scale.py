"""GPU (skipped without CUDA): DeepSpeed ZeRO-2 + bf16 fits of both Animate Anyone stages and DynamiCrafter at tiny
size through `python -m src.train ... trainer=gpu`; DeepSpeed checkpoint directories without frozen weights;
resume; src.export of the checkpoint; and the SDPA kernel actually used when performance.sdpa_backend picks one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_entry
from tests.integration.test_train_animate_anyone import TINY

pytestmark = pytest.mark.gpu
GPU = ["trainer=gpu", "trainer.devices=1"]


def aa_run(run_dir: Path, cache: Path, *extra: str):
    return run_entry("src.train", *TINY, *GPU, f"paths.cache={cache}", f"hydra.run.dir={run_dir}", *extra)


def model_states(ckpt: Path) -> dict:
    tag = (ckpt / "latest").read_text().strip() if (ckpt / "latest").is_file() else "checkpoint"
    return torch.load(ckpt / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)


def test_animate_anyone_both_stages_zero2_bf16_checkpoints_and_export(tmp_path, demo_cache):
    run_dir = tmp_path / "run"
    aa_run(
        run_dir,
        demo_cache,
        "stages.spatial.trainer.max_steps=3",
        "stages.temporal.trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "callbacks.checkpoint.every_n_train_steps=1",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == {"spatial": 3, "temporal": 2}
    for stage in ("spatial", "temporal"):
        ckpt = run_dir / stage / "checkpoints" / "last.ckpt"
        assert ckpt.is_dir(), "deepspeed_stage_2 writes checkpoint directories"
        states = model_states(ckpt)
        module = states["module"]
        assert not any(".codec." in k or ".image_encoder." in k for k in module), "frozen encoders were saved"
        assert states["frozen_keys_excluded"]
        out = tmp_path / f"export_{stage}"
        run_entry("src.export", str(ckpt), str(out), "--dtype", "bf16")
        index = json.loads((out / "index.json").read_text())
        assert index["format"] == "deepspeed" and index["dtype"] == "bf16" and index["files"]
    # the temporal stage trains only motion modules: that is what its export holds
    assert set(json.loads((tmp_path / "export_temporal" / "index.json").read_text())["files"]) == {
        "motion_modules"
    }
    assert_final_weights_are_the_fp32_masters(run_dir / "spatial")


def assert_final_weights_are_the_fp32_masters(stage_dir: Path) -> None:
    """Under Lightning's DeepSpeed strategy with bf16, final/net.safetensors holds the optimizer's fp32 masters
    (what zero_to_fp32 consolidates from the last checkpoint, written at the last step), not the bf16 module."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file

    final = load_file(str(stage_dir / "final" / "net.safetensors"))
    masters = {k.removeprefix("net."): v for k, v in
               get_fp32_state_dict_from_zero_checkpoint(str(stage_dir / "checkpoints" / "last.ckpt")).items()
               if k.startswith("net.")}
    trained = [k for k in masters if k in final]
    assert trained and len(trained) == len(masters), sorted(set(masters) - set(final))[:5]
    for k in trained:
        assert final[k].dtype == torch.float32, k
        torch.testing.assert_close(final[k], masters[k].float(), rtol=0, atol=0)
    rounded = sum(int((masters[k] != masters[k].bfloat16().float()).sum()) for k in trained)
    assert rounded > 0.5 * sum(masters[k].numel() for k in trained)  # so the equality above is not bf16's


def test_animate_anyone_zero2_resume_continues_at_its_step(tmp_path, demo_cache):
    run_dir = tmp_path / "run"
    common = [
        "stage=spatial",
        "evaluation.heldout=false",
        "data.val.num_videos=0",
        "callbacks.checkpoint.every_n_train_steps=2",
    ]
    aa_run(run_dir, demo_cache, *common, "stages.spatial.trainer.max_steps=2")
    (run_dir / "spatial" / "final" / "stage.json").unlink()  # pretend the stage did not finish
    aa_run(run_dir, demo_cache, *common, "stages.spatial.trainer.max_steps=4")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stages"]["spatial"]["resumed_from_step"] == 2 and summary["steps"]["spatial"] == 4


def test_ema_under_zero2_is_saved_and_exported(tmp_path, demo_cache):
    run_dir = tmp_path / "run"
    aa_run(
        run_dir,
        demo_cache,
        "stage=spatial",
        "evaluation.heldout=false",
        "data.val.num_videos=0",
        "stages.spatial.trainer.max_steps=3",
        "callbacks.ema.enabled=true",
        "callbacks.ema.decay=0.5",
    )
    ckpt = run_dir / "spatial" / "checkpoints" / "last.ckpt"
    callbacks = model_states(ckpt)["callbacks"]
    (ema,) = [v for k, v in callbacks.items() if "EMACallback" in k]
    assert ema["num_updates"] == 3 and all(t.dtype == torch.float32 for t in ema["shadow"].values())
    run_entry("src.export", str(ckpt), str(tmp_path / "ema"), "--ema")


def test_dynamicrafter_zero2_bf16_fit(tmp_path, demo_cache):
    if not (ROOT / "conf" / "experiment" / "dynamicrafter_demo.yaml").is_file():
        pytest.skip("no dynamicrafter_demo experiment yet")
    run_dir = tmp_path / "dc"
    run_entry(
        "src.train",
        "experiment=dynamicrafter_demo",
        "logger=csv",
        *GPU,
        f"paths.cache={demo_cache}",
        f"hydra.run.dir={run_dir}",
        "stages.finetune.trainer.max_steps=2",
        "evaluation.heldout=false",
        "data.val.num_videos=0",
        "data.num_workers=0",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == {"finetune": 2}
    assert (run_dir / "finetune" / "checkpoints" / "last.ckpt").is_dir()


@pytest.mark.parametrize("backend,op", [("flash", "flash"), ("efficient", "efficient"), ("math", "math")])
def test_chosen_sdpa_kernel_runs_in_the_animate_anyone_step(backend, op):
    from torch.profiler import ProfilerActivity, profile

    from src.trainers.performance import sdpa_backend_context
    from tests.unit.test_sdpa_audit import aa_batch, build

    module, _ = build("animate_anyone_demo", "spatial")
    module = module.cuda()
    batch = {k: v.cuda() for k, v in aa_batch(1).items()}
    with sdpa_backend_context(backend), torch.autocast("cuda", dtype=torch.bfloat16):
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            module.training_step(batch, 0).backward()
    names = {e.key for e in prof.key_averages()}
    sdpa_ops = {n for n in names if "scaled_dot_product" in n}
    assert sdpa_ops, f"no SDPA op ran: {sorted(names)[:20]}"
    if op == "math":
        assert "aten::_scaled_dot_product_flash_attention" not in sdpa_ops
        assert not any("efficient" in n for n in sdpa_ops)
    else:
        assert any(op in n for n in sdpa_ops), sdpa_ops
        other = {"flash": "efficient", "efficient": "flash"}[op]
        assert not any(other in n for n in sdpa_ops), sdpa_ops
