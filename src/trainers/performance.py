"""Speed/memory switches from the `performance:` config block, applied by a callback (no trainer edits).

- SDPA backend: every attention in src/models goes through `F.scaled_dot_product_attention` (diffusers'
  AttnProcessor2_0 and our processors); `sdpa_backend` restricts which fused kernel it may use
  (flash, efficient, cudnn, math, or a priority list) for the whole fit, validation sampling included.
  `sdpa_backend_context` does the same around sampling outside a fit.
- Activation checkpointing per transformer/res block: diffusers models' `enable_gradient_checkpointing`
  (AnimateAnyoneNet forwards it to both UNets) and our DynamiCrafter blocks' `use_checkpoint`.
- channels_last for 4-D conv weights; optional in-place `torch.compile` of the UNet(s) (`nn.Module.compile`
  keeps state_dict names, so checkpoints and exports are unaffected).
Model changes happen in `setup`, before the strategy wraps the model (DeepSpeed flattens parameters).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

log = logging.getLogger(__name__)

SDPA_BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
# Class names compiled when `compile: true` (the denoisers; encoders run once per step under no_grad).
COMPILE_CLASSES = ("UNet2DConditionModel", "UNetMotionModel", "DynamiCrafterUNet")


def sdpa_backends(spec: str | Sequence[str] | None) -> list[SDPBackend] | None:
    """`performance.sdpa_backend` -> SDPBackend list (priority order), or None for PyTorch's own choice."""
    if spec is None or spec == "auto":
        return None
    names = [spec] if isinstance(spec, str) else list(spec)
    unknown = [n for n in names if n not in SDPA_BACKENDS]
    if unknown or not names:
        raise ValueError(
            f"performance.sdpa_backend={spec!r}: unknown backend(s) {unknown}; use auto or one or a list of "
            f"{sorted(SDPA_BACKENDS)}."
        )
    return [SDPA_BACKENDS[n] for n in names]


@contextlib.contextmanager
def sdpa_backend_context(spec: str | Sequence[str] | None) -> Iterator[None]:
    """Restrict SDPA to the configured kernel(s) inside the block (no-op for auto)."""
    backends = sdpa_backends(spec)
    if backends is None:
        yield
        return
    with sdpa_kernel(backends, set_priority=len(backends) > 1):
        yield


def _has_trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def set_activation_checkpointing(module: nn.Module, enabled: bool) -> list[str]:
    """Turn per-block activation checkpointing on/off in every trainable network; returns what was changed.

    A module with `enable_gradient_checkpointing` (diffusers models, AnimateAnyoneNet) is switched as a whole;
    modules with a `use_checkpoint` flag (DynamiCrafter transformer/res blocks) are switched one by one.
    Frozen networks (VAE, CLIP) run under no_grad and are left alone.
    """
    changed: list[str] = []

    def visit(name: str, m: nn.Module) -> None:
        if not _has_trainable(m):
            return
        method = "enable_gradient_checkpointing" if enabled else "disable_gradient_checkpointing"
        if hasattr(m, method) and not isinstance(m, L.LightningModule):
            getattr(m, method)()
            changed.append(name or type(m).__name__)
            return
        if hasattr(m, "use_checkpoint") and isinstance(m.use_checkpoint, bool):
            m.use_checkpoint = enabled
            changed.append(name)
        for child_name, child in m.named_children():
            visit(f"{name}.{child_name}" if name else child_name, child)

    visit("", module)
    return changed


def compile_targets(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The UNets to compile: outermost modules of a COMPILE_CLASSES class with trainable parameters."""
    found: list[tuple[str, nn.Module]] = []

    def visit(name: str, m: nn.Module) -> None:
        if type(m).__name__ in COMPILE_CLASSES and _has_trainable(m):
            found.append((name, m))
            return
        for child_name, child in m.named_children():
            visit(f"{name}.{child_name}" if name else child_name, child)

    visit("", module)
    return found


class PerformanceSetup(Callback):
    """Applies the `performance:` block: model changes in `setup`, the SDPA restriction for the whole fit."""

    def __init__(
        self,
        sdpa_backend: str | Sequence[str] | None = "auto",
        activation_checkpointing: bool | None = None,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
    ) -> None:
        sdpa_backends(sdpa_backend)  # validate now, not mid-fit
        self.sdpa_backend = sdpa_backend
        self.activation_checkpointing = activation_checkpointing
        self.channels_last = channels_last
        self.compile = compile
        self.compile_mode = compile_mode
        self._stack: contextlib.ExitStack | None = None
        self.applied: dict[str, Any] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.activation_checkpointing is not None:
            self.applied["activation_checkpointing"] = set_activation_checkpointing(
                pl_module, bool(self.activation_checkpointing)
            )
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
            self.applied["channels_last"] = True
        if self.compile and stage == "fit":
            targets = compile_targets(pl_module)
            for _, m in targets:
                m.compile(mode=self.compile_mode)
            self.applied["compile"] = [n for n, _ in targets]
        if self.applied:
            log.info("performance: %s", self.applied)

    def _enter(self) -> None:
        if self._stack is None:
            self._stack = contextlib.ExitStack()
            self._stack.enter_context(sdpa_backend_context(self.sdpa_backend))

    def _exit(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._enter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._exit()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._exit()


def build_performance_callback(cfg: Any) -> PerformanceSetup | None:
    """`performance:` config -> the callback, or None when every switch is at its default."""
    if cfg is None:
        return None
    params = dict(cfg)
    callback = PerformanceSetup(**params)
    defaults = (
        callback.sdpa_backend in (None, "auto")
        and callback.activation_checkpointing is None
        and not callback.channels_last
        and not callback.compile
    )
    return None if defaults else callback
