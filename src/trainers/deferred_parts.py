"""Frozen parts that are built on first use, so a run from a latent cache never loads its encoders.

A run with `data.cache` reads the codec's and encoders' outputs from the cache, so its training steps never
call those parts. The runner then gives the module factories instead of modules (`deferred_model_config`).
The module keeps the factories outside its module tree. DDP, DeepSpeed and FSDP therefore see the same
parameters on every rank, and checkpoints never hold these parts. Validation, sampling or an export that
reads such a part builds it then, on the module's device and in its dtype. After each validation it goes back
to the host, so training steps keep the accelerator memory for the trainable parts.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, open_dict
from torch import nn

log = logging.getLogger(__name__)


class DeferredParts:
    """Factories for frozen parts; `get` builds a part the first time, then places it where the caller runs."""

    def __init__(self) -> None:
        self.factories: dict[str, Callable[[], nn.Module]] = {}
        self.built: dict[str, nn.Module] = {}
        self.placement: dict[str, tuple[torch.device, torch.dtype]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.factories

    def add(self, name: str, factory: Callable[[], nn.Module]) -> None:
        self.factories[name] = factory

    def wrap(self, name: str, after_build: Callable[[nn.Module], None]) -> None:
        """Run `after_build` on the part right after its factory (e.g. loading its share of a checkpoint)."""
        factory = self.factories[name]

        def build() -> nn.Module:
            part = factory()
            after_build(part)
            return part

        self.factories[name] = build

    def get(self, name: str, device: torch.device, dtype: torch.dtype) -> nn.Module:
        part = self.built.get(name)
        if part is None:
            log.info("building the frozen %s now: the latent cache spared training from loading it", name)
            part = self.factories[name]().requires_grad_(False).eval()
            self.built[name] = part
        if self.placement.get(name) != (device, dtype):
            part.to(device=device, dtype=dtype)
            self.placement[name] = (device, dtype)
        return part

    def offload(self) -> None:
        """Move every built part to the host (a later `get` brings it back)."""
        for name, part in self.built.items():
            if self.placement.get(name, (torch.device("cpu"),))[0].type != "cpu":
                part.to("cpu")
                self.placement.pop(name)


def deferred_model_config(cfg: DictConfig) -> DictConfig:
    """A copy of the run config whose `model.<part>` nodes, for each of the model class's `frozen_part_names`,
    instantiate to factories (`_partial_: true`) instead of modules."""
    names = getattr(get_class(cfg.model._target_), "frozen_part_names", ())
    out = copy.deepcopy(cfg)
    with open_dict(out):
        for name in names:
            if out.model.get(name) is not None:
                out.model[name]["_partial_"] = True
    return out


def set_frozen_part(module: nn.Module, name: str, part: nn.Module | Callable[[], nn.Module]) -> None:
    """Attach a frozen part: a module is registered (frozen, eval); a factory is deferred (`DeferredParts`)."""
    if isinstance(part, nn.Module):
        setattr(module, name, part.requires_grad_(False).eval())
    elif callable(part):
        deferred = module.__dict__.setdefault("_deferred_parts", DeferredParts())
        deferred.add(name, part)
    else:
        raise TypeError(f"model.{name} must build an nn.Module (or a factory of one), got {type(part).__name__}.")
