"""Exponential moving average of the trainable weights, kept in fp32 outside the module (callback state).

The shadow is a plain dict {parameter name: fp32 tensor} held by the callback, not module buffers, so
strategies never cast it to bf16 (a 0.9999 EMA stalls in bf16) and it never enters the module's
`state_dict`. It is saved in the Lightning checkpoint through the callback's `state_dict` and restored on
resume. Only parameters with requires_grad True at the start of training are averaged (frozen encoders are
not copied). Decay warms up as `1 - (1 + n / inv_gamma) ** -power` (capped at `decay`), n = updates so far.

Strategies: single device, DDP and DeepSpeed ZeRO-1/2 hold full parameters on every rank, so every rank
keeps the same shadow. Under DeepSpeed ZeRO-3 and FSDP parameters are partitioned across ranks; the
callback refuses to start there (gathering every step would cost a full all-gather of the model).
Under bf16-mixed DeepSpeed the module's weights are bf16 copies; the average is taken of the fp32 masters
(`src.trainers.master_weights`), assembled from the ZeRO partitions at each update (an all-reduce of the
trainable weights: raise `update_every_n_steps` where that costs too much).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

from src.trainers.master_weights import master_value

log = logging.getLogger(__name__)
FINAL_WEIGHTS = ("raw", "ema")


def ema_decay(num_updates: int, decay: float, warmup_power: float | None, inv_gamma: float = 1.0) -> float:
    """Decay used for update number `num_updates` (0-based): warmed up, never above `decay`."""
    if warmup_power is None:
        return decay
    return min(decay, max(0.0, 1.0 - (1.0 + num_updates / inv_gamma) ** -warmup_power))


class EMACallback(Callback):
    """fp32 EMA of the trainable parameters; optionally evaluates with it and leaves it in the model at the end.

    `validate_with_ema`: validation runs with the EMA weights swapped in (raw weights restored after).
    `final_weights`: "ema" copies the EMA into the model when training ends, so the stage's final weights
    file (written by the runner) holds the EMA; "raw" keeps the trained weights there.
    """

    def __init__(
        self,
        decay: float = 0.9999,
        warmup_power: float | None = 2 / 3,
        inv_gamma: float = 1.0,
        update_every_n_steps: int = 1,
        start_step: int = 0,
        validate_with_ema: bool = False,
        final_weights: str = "raw",
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"callbacks.ema.decay must be in [0, 1), got {decay}.")
        if update_every_n_steps < 1:
            raise ValueError(f"callbacks.ema.update_every_n_steps must be >= 1, got {update_every_n_steps}.")
        if final_weights not in FINAL_WEIGHTS:
            raise ValueError(
                f"callbacks.ema.final_weights={final_weights!r}; expected one of {FINAL_WEIGHTS}."
            )
        self.decay = decay
        self.warmup_power = warmup_power
        self.inv_gamma = inv_gamma
        self.update_every_n_steps = update_every_n_steps
        self.start_step = start_step
        self.validate_with_ema = validate_with_ema
        self.final_weights = final_weights
        self.shadow: dict[str, torch.Tensor] = {}
        self.num_updates = 0
        self.last_step = -1
        self._loaded: dict[str, Any] | None = None
        self._backup: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def check_strategy(trainer: L.Trainer) -> None:
        strategy = trainer.strategy
        if isinstance(strategy, DeepSpeedStrategy) and strategy.zero_stage_3:
            raise RuntimeError(
                "callbacks.ema is not supported with DeepSpeed ZeRO-3: parameters are partitioned across ranks, so "
                "no rank holds the weights to average. Use strategy=deepspeed_stage_2 (or ddp), or disable "
                "callbacks.ema.enabled."
            )
        if isinstance(strategy, FSDPStrategy):
            raise RuntimeError(
                "callbacks.ema is not supported with strategy=fsdp (sharded parameters); use strategy=ddp or "
                "deepspeed_stage_2, or disable callbacks.ema.enabled."
            )

    @staticmethod
    def trainable(pl_module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
        return {name: p for name, p in pl_module.named_parameters() if p.requires_grad}

    def decay_now(self) -> float:
        return ema_decay(self.num_updates, self.decay, self.warmup_power, self.inv_gamma)

    @torch.no_grad()
    def update(self, pl_module: torch.nn.Module) -> None:
        """shadow <- d * shadow + (1 - d) * param, in fp32, for every trainable parameter."""
        d = self.decay_now()
        params = self.trainable(pl_module)
        for name, shadow in self.shadow.items():  # same order on every rank: master_value is collective
            shadow.lerp_(master_value(params[name]).to(shadow.device, torch.float32), 1.0 - d)
        self.num_updates += 1

    # ---------------------------------------------------------------------------------- lightning hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.check_strategy(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Install the restored shadow (resume) or start from the current weights."""
        params = self.trainable(pl_module)
        if not params:
            raise RuntimeError("callbacks.ema: the model has no trainable parameters to average.")
        if self._loaded is not None:
            self._install(self._loaded, params)
            self._loaded = None
        elif not self.shadow:
            self.start(pl_module, trainer.global_step)

    def start(self, pl_module: torch.nn.Module, step: int) -> None:
        """Start the average from the current weights' fp32 masters."""
        params = self.trainable(pl_module)
        self.shadow = {n: master_value(p).to(p.device, torch.float32).clone() for n, p in params.items()}
        self.last_step = step

    def _install(self, state: dict[str, Any], params: dict[str, torch.nn.Parameter]) -> None:
        shadow = state["shadow"]
        missing, extra = sorted(set(params) - set(shadow)), sorted(set(shadow) - set(params))
        if missing or extra:
            raise RuntimeError(
                f"callbacks.ema: the checkpoint's EMA does not match the trainable parameters (missing {missing[:5]}, "
                f"unexpected {extra[:5]}); resume with the same model and stage config."
            )
        for name, p in params.items():
            if tuple(shadow[name].shape) != tuple(p.shape):
                raise RuntimeError(
                    f"callbacks.ema: {name} has shape {tuple(p.shape)}, the EMA {tuple(shadow[name].shape)}."
                )
        self.shadow = {n: shadow[n].to(device=params[n].device, dtype=torch.float32).clone() for n in params}
        self.num_updates = int(state["num_updates"])
        self.last_step = int(state["last_step"])

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        step = trainer.global_step  # counts optimizer steps: no update on accumulation-only batches
        if step == self.last_step or not self.shadow:
            return
        self.last_step = step
        if step > self.start_step and step % self.update_every_n_steps == 0:
            self.update(pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.validate_with_ema and self.shadow:
            self._backup = self.swap_in(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._backup is not None:
            self.restore(pl_module, self._backup)
            self._backup = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.final_weights == "ema" and self.shadow:
            self.swap_in(pl_module)
            log.info("callbacks.ema: the model now holds the EMA weights (final_weights=ema)")

    # ------------------------------------------------------------------------------------------- swap
    @torch.no_grad()
    def swap_in(self, pl_module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Copy the EMA into the trainable parameters; returns the raw weights for `restore`."""
        params = self.trainable(pl_module)
        backup = {n: params[n].detach().clone() for n in self.shadow}
        for name, shadow in self.shadow.items():
            params[name].copy_(shadow.to(params[name].device, params[name].dtype))
        return backup

    @torch.no_grad()
    def restore(self, pl_module: torch.nn.Module, backup: dict[str, torch.Tensor]) -> None:
        params = dict(pl_module.named_parameters())
        for name, value in backup.items():
            params[name].copy_(value)

    @contextlib.contextmanager
    def averaged(self, pl_module: torch.nn.Module) -> Iterator[None]:
        """`with ema.averaged(module):` runs the body (sampling, export) with the EMA weights swapped in."""
        backup = self.swap_in(pl_module)
        try:
            yield
        finally:
            self.restore(pl_module, backup)

    def state_for(self, module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
        """The EMA of `module`'s parameters (named `prefix` + name in the LightningModule), on the CPU."""
        return {n[len(prefix) :]: t.detach().cpu() for n, t in self.shadow.items() if n.startswith(prefix)}

    # ------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "shadow": {n: t.detach().cpu() for n, t in self.shadow.items()},
            "num_updates": self.num_updates,
            "last_step": self.last_step,
            "decay": self.decay,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Kept until training starts, when the parameters (and their devices) are known."""
        self._loaded = state_dict


def build_ema_callback(cfg: Any) -> EMACallback | None:
    """`callbacks.ema` config -> the callback, or None when `enabled` is false."""
    if cfg is None or not cfg.get("enabled", False):
        return None
    params = {k: v for k, v in dict(cfg).items() if k != "enabled"}
    return EMACallback(**params)
