"""The scale-out callbacks a run adds from config: `performance:` (SDPA, checkpointing, channels_last,
compile) and `callbacks.ema`. The runner appends `build_scale_callbacks(cfg)` to its callback list."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from src.trainers.ema import build_ema_callback
from src.trainers.performance import build_performance_callback


def build_scale_callbacks(cfg: DictConfig) -> list[Callback]:
    """Callbacks for the root (stage-merged) config; empty when every switch is at its default."""
    callbacks: list[Callback] = []
    performance = build_performance_callback(cfg.get("performance"))
    if performance is not None:
        callbacks.append(performance)
    ema = build_ema_callback(cfg.get("callbacks", {}).get("ema"))
    if ema is not None:
        callbacks.append(ema)
    return callbacks
