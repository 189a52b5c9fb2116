"""The full-precision values of the weights, wherever the strategy keeps them.

Under DeepSpeed with bf16 the module's parameters are bf16 copies; the fp32 masters live in the ZeRO
optimizer's partitions (ZeRO-1/2: each rank holds a slice; ZeRO-3: the parameters themselves are
partitioned too). Saving or averaging the live parameters would store their bf16 rounding (ZeRO-2) or empty
shards (ZeRO-3). These helpers return the fp32 masters, assembled across ranks with DeepSpeed's own
`safe_get_full_fp32_param`; without DeepSpeed they return the live parameters, which are the masters there.
Under DeepSpeed the calls are collective: every rank must make them, in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def has_deepspeed_master(param: torch.Tensor) -> bool:
    """True when DeepSpeed's ZeRO optimizer keeps an fp32 master of `param` (a trainable, wrapped parameter)."""
    return hasattr(param, "_hp_mapping") or hasattr(param, "_z3_optimizer")


def master_value(param: torch.Tensor) -> torch.Tensor:
    """fp32 master of a trainable parameter (collective under DeepSpeed), else the parameter itself (detached)."""
    if has_deepspeed_master(param):
        from deepspeed.utils import safe_get_full_fp32_param

        full = safe_get_full_fp32_param(param)
        if full is not None:
            return full
    return param.detach()


def _gathered(param: torch.Tensor) -> torch.Tensor:
    """A ZeRO-3 partitioned parameter without a master (frozen): its full value, gathered on every rank."""
    if not hasattr(param, "ds_id"):
        return param.detach()
    from deepspeed.zero import GatheredParameters

    with GatheredParameters([param], modifier_rank=None):
        return param.detach().clone()


def master_state_dict(
    module: nn.Module, frozen_source: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """`module.state_dict()` on the CPU with every parameter at full precision.

    Trainable parameters: their fp32 masters. Frozen ones have no master; under bf16 DeepSpeed their live values
    are bf16 roundings of what was loaded, so a key found in `frozen_source` (the weights the stage started from,
    e.g. the previous stage's file) is taken from there, exactly as loaded; the others keep their live value.
    """
    state = {k: v.detach() for k, v in module.state_dict().items()}
    for name, param in module.named_parameters(remove_duplicate=False):
        if has_deepspeed_master(param):
            state[name] = master_value(param)
            continue
        state[name] = _gathered(param)  # on every rank, even where the source is used: a ZeRO-3 gather is collective
        if frozen_source is not None and name in frozen_source:
            state[name] = frozen_source[name]
    return {k: v.cpu().contiguous() for k, v in state.items()}
