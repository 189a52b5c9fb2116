"""Lightning strategies built from `conf/strategy/*.yaml`: DDP, DeepSpeed ZeRO-2/3 (editable JSON), FSDP.

The DeepSpeed factory validates what Lightning would only find out at `fit` time or not at all: that a CUDA
accelerator is used (Lightning's DeepSpeed strategy refuses CPUs), that the JSON exists, parses, and asks for
the stage the config group names, and that it leaves accumulation to Lightning. `FrozenAwareDeepSpeedStrategy`
saves checkpoints without frozen parameters and, on resume, loads them back with a check that the only
missing keys are those frozen parameters (which the module already loaded from their own weight files).
Its saves never overwrite a checkpoint in place (`save_engine_checkpoint`).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy
from torch import nn

from src import atomic_io

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Keys Lightning writes into the DeepSpeed config itself; setting them in the JSON is an error or is ignored.
LIGHTNING_OWNED_KEYS = ("gradient_accumulation_steps", "train_batch_size")


def accelerator_is_cuda(accelerator: str | None) -> bool:
    """True when the trainer's `accelerator` setting resolves to CUDA GPUs on this machine."""
    name = (accelerator or "auto").lower()
    if name in ("gpu", "cuda"):
        return True
    return name == "auto" and torch.cuda.is_available()


def require_cuda(accelerator: str | None, strategy: str) -> None:
    """Lightning runs DeepSpeed and FSDP only on CUDA GPUs: say so before the trainer is built."""
    if not accelerator_is_cuda(accelerator):
        raise RuntimeError(
            f"strategy={strategy} needs CUDA GPUs, but trainer.accelerator={accelerator!r} resolves to the CPU on this "
            f"machine (Lightning's {strategy} strategy is only supported on CUDA GPUs). Use strategy=ddp (or "
            "strategy=auto) on CPU, or run on a GPU node with trainer=gpu."
        )


def resolve_config_path(path: str | Path) -> Path:
    """An absolute path as is; a relative one against conf/ (e.g. `deepspeed/zero2.json`)."""
    p = Path(path)
    return p if p.is_absolute() else CONF_DIR / p


def load_deepspeed_config(path: str | Path, stage: int) -> dict[str, Any]:
    """Read and check a DeepSpeed JSON: parses, `zero_optimization.stage == stage`, no Lightning-owned keys."""
    file = resolve_config_path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"DeepSpeed config {file} does not exist (trainer.strategy.config={str(path)!r}); point it at a JSON "
            "file, relative to conf/ or absolute, e.g. deepspeed/zero2.json."
        )
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"DeepSpeed config {file} is not valid JSON: {err}; fix the file.") from err
    zero = config.get("zero_optimization")
    if not isinstance(zero, dict) or zero.get("stage") != stage:
        found = zero.get("stage") if isinstance(zero, dict) else None
        raise ValueError(
            f"DeepSpeed config {file} has zero_optimization.stage={found!r}, but strategy=deepspeed_stage_{stage} "
            f'expects {stage}; set "zero_optimization": {{"stage": {stage}, ...}} or pick the matching strategy.'
        )
    owned = [k for k in LIGHTNING_OWNED_KEYS if k in config]
    if owned:
        raise ValueError(
            f"DeepSpeed config {file} sets {owned}: Lightning derives accumulation from global_batch_size and the "
            "batch from data.batch_size; remove these keys from the JSON."
        )
    return config


def frozen_parameter_names(module: nn.Module) -> set[str]:
    """Names of parameters with requires_grad False (what `exclude_frozen_parameters` leaves out)."""
    return {name for name, p in module.named_parameters() if not p.requires_grad}


def load_with_frozen_excluded(src: dict[str, torch.Tensor], dst: nn.Module) -> None:
    """Load a module state saved with frozen parameters excluded: every other key must match exactly.

    The frozen parameters keep the values the module was built with (their own weight files).
    """
    current = dst.state_dict()
    frozen = frozen_parameter_names(dst)
    not_frozen = sorted(k for k in set(current) - set(src) if k not in frozen)
    unexpected = sorted(set(src) - set(current))
    if not_frozen or unexpected:
        raise RuntimeError(
            f"checkpoint does not match the model: missing trainable keys {not_frozen[:10]} "
            f"({len(not_frozen)} in total), unexpected keys {unexpected[:10]} ({len(unexpected)} in total). "
            "The run's model config must equal the one the checkpoint was written with."
        )
    dst.load_state_dict({**{k: current[k] for k in set(current) - set(src)}, **src}, strict=True)


def save_engine_checkpoint(
    engine: Any, folder: str | Path, client_state: dict[str, Any], exclude_frozen_parameters: bool
) -> str:
    """Save a DeepSpeed checkpoint directory so that a kill or a write error mid-save leaves the previous one loadable.

    Lightning saves every checkpoint of a directory under the one tag "checkpoint", overwriting the files a
    resume needs while it writes. Here each save gets its own tag (`step<global_step>`); the `latest` file,
    which loaders follow, is switched to it atomically only after every rank finished writing; then the older
    tags are removed. Call on every rank (the engine's save is collective). Returns the tag.
    """
    import torch.distributed as dist

    folder = Path(folder)
    tag = f"step{int(client_state.get('global_step', engine.global_steps)):09d}"
    engine.save_checkpoint(
        str(folder), tag=tag, client_state=client_state, save_latest=False,
        exclude_frozen_parameters=exclude_frozen_parameters,
    )
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # every rank's shard of this tag is on disk
    if not dist.is_initialized() or dist.get_rank() == 0:
        atomic_io.write_text(folder / "latest", tag)
        for old in folder.iterdir():
            if old.is_dir() and old.name != tag and (old / "mp_rank_00_model_states.pt").is_file():
                shutil.rmtree(old, ignore_errors=True)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return tag


class FrozenAwareDeepSpeedStrategy(DeepSpeedStrategy):
    """DeepSpeedStrategy whose resume accepts checkpoints saved with `exclude_frozen_parameters=True`.

    Lightning asks DeepSpeed for a strict module load, which fails on the excluded frozen keys; this loads
    non-strictly and then requires that exactly the frozen parameters were missing.
    """

    def save_checkpoint(self, checkpoint: dict, filepath, storage_options: Any | None = None) -> None:
        """Lightning's save (client state without weights/optimizer, which the engine writes) through
        `save_engine_checkpoint`, so a failed save never damages the previous checkpoint in the directory."""
        if storage_options is not None:
            raise TypeError("DeepSpeed checkpoints take no storage_options; leave them unset.")
        filepath = self.broadcast(filepath)
        client_state = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}
        save_engine_checkpoint(self.deepspeed_engine, filepath, client_state, self.exclude_frozen_parameters)

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        client_state = self._load_engine_checkpoint(checkpoint_path, weights_only)
        # DeepSpeed already loaded the weights; modules' on_load_checkpoint hooks still read/patch "state_dict"
        # (AnimateAnyoneModule puts its frozen weights back there), so give them an empty one.
        client_state.setdefault("state_dict", {})
        return client_state

    def _load_engine_checkpoint(self, checkpoint_path, weights_only: bool | None) -> dict[str, Any]:
        if not self.exclude_frozen_parameters or self.zero_stage_3:
            # ZeRO-3 restores partitioned weights through its own path (conf/strategy/deepspeed_stage_3.yaml keeps
            # frozen weights in its checkpoints, so Lightning's strict load holds).
            return super().load_checkpoint(checkpoint_path, weights_only)
        from lightning.pytorch.strategies.deepspeed import _validate_checkpoint_directory
        from lightning.pytorch.trainer.states import TrainerFn

        _validate_checkpoint_directory(checkpoint_path)
        assert self.lightning_module is not None
        fitting = self.lightning_module.trainer.state.fn == TrainerFn.FITTING
        _, client_state = self.deepspeed_engine.load_checkpoint(
            checkpoint_path,
            load_optimizer_states=fitting,
            load_lr_scheduler_states=False,
            custom_load_fn=load_with_frozen_excluded,
        )
        if client_state is None:
            raise RuntimeError(f"DeepSpeed could not load the checkpoint directory {checkpoint_path}.")
        return client_state


def deepspeed_strategy(
    config: str | Path,
    stage: int,
    accelerator: str | None = "auto",
    logging_batch_size_per_gpu: int | str = "auto",
    exclude_frozen_parameters: bool = True,
    **kwargs: Any,
) -> FrozenAwareDeepSpeedStrategy:
    """DeepSpeed ZeRO-`stage` from an editable JSON (see conf/deepspeed/); refuses non-CUDA accelerators."""
    require_cuda(accelerator, f"deepspeed_stage_{stage}")
    ds_config = copy.deepcopy(load_deepspeed_config(config, stage))
    if logging_batch_size_per_gpu != "auto":
        # Lightning cannot infer it from our loaders (IterableDataset / batch_size=None WebLoader).
        ds_config.setdefault("train_micro_batch_size_per_gpu", int(logging_batch_size_per_gpu))
    return FrozenAwareDeepSpeedStrategy(
        config=ds_config,
        logging_batch_size_per_gpu=logging_batch_size_per_gpu,
        exclude_frozen_parameters=exclude_frozen_parameters,
        **kwargs,
    )


def ddp_strategy(
    find_unused_parameters: bool = False,
    static_graph: bool = False,
    gradient_as_bucket_view: bool = True,
    **kwargs: Any,
) -> DDPStrategy:
    """Lightning DDP (gloo on CPU, NCCL on CUDA)."""
    return DDPStrategy(
        find_unused_parameters=find_unused_parameters,
        static_graph=static_graph,
        gradient_as_bucket_view=gradient_as_bucket_view,
        **kwargs,
    )


def fsdp_strategy(
    accelerator: str | None = "auto",
    sharding_strategy: str = "FULL_SHARD",
    auto_wrap_min_params: int = 20_000_000,
    state_dict_type: str = "full",
    **kwargs: Any,
) -> FSDPStrategy:
    """Lightning FSDP; submodules of >= `auto_wrap_min_params` parameters are their own units.

    `use_orig_params=True` lets one unit hold frozen and trainable parameters (encoders stay frozen).
    """
    import functools

    from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy

    require_cuda(accelerator, "fsdp")
    policy = functools.partial(size_based_auto_wrap_policy, min_num_params=int(auto_wrap_min_params))
    return FSDPStrategy(
        sharding_strategy=sharding_strategy,
        auto_wrap_policy=policy,
        state_dict_type=state_dict_type,
        use_orig_params=True,
        **kwargs,
    )
