"""Where an Animate Anyone net's starting weights come from: `model.net.init` (the config's `_target_`).

- `pretrained` (default): the UNet folders of `model.net.reference_unet` / `denoising_unet` (sd-image-variations,
  as Moore's stage 1 starts) and a freshly initialised Pose Guider; stage 2 adds `model.motion_adapter.path`.
- `moore`: Moore-AnimateAnyone's released weights from `model.net.moore_dir` (strictly, `src.models.moore`);
  stage 2 takes its motion modules from the same folder's motion_module.pth.

The config node is instantiated non-recursively, so the UNet folders are read only when `init` uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffusers import MotionAdapter
from hydra.utils import instantiate

from src.config import to_plain
from src.models.animate_anyone import AnimateAnyoneNet
from src.models.moore import load_moore_motion_adapter, load_moore_net, read_unet_config
from src.models.motion import load_motion_adapter

__all__ = ["NET_INITS", "build_animate_anyone_net", "stage2_motion_adapter"]

NET_INITS = ("pretrained", "moore")


def _check_init(init: str) -> None:
    if init not in NET_INITS:
        raise ValueError(f"model.net.init={init!r} is not one of {NET_INITS}.")


def build_animate_anyone_net(
    reference_unet: Any,
    denoising_unet: Any,
    pose_guider: Any,
    init: str = "pretrained",
    moore_dir: str | Path | None = None,
    moore_unet_config: str | Path | None = None,
    moore_motion_module_kwargs: Mapping[str, Any] | None = None,
    **net_kwargs: Any,
) -> AnimateAnyoneNet:
    """The AnimateAnyoneNet of `init` (see the module docstring); `net_kwargs` go to AnimateAnyoneNet."""
    _check_init(init)
    net_kwargs = to_plain(dict(net_kwargs))
    if init == "pretrained":
        return AnimateAnyoneNet(instantiate(reference_unet), instantiate(denoising_unet), instantiate(pose_guider), **net_kwargs)
    guider = to_plain(dict(pose_guider))
    if guider.get("injection", "conv_in") != "conv_in":
        raise ValueError(
            "model.net.init=moore: Moore's Pose Guider adds its output after the UNet's conv_in; set "
            "model.net.pose_guider.injection=conv_in."
        )
    if net_kwargs.pop("reference_init", "own") != "own":
        raise ValueError("model.net.init=moore loads Moore's own reference UNet: leave model.net.reference_init=own.")
    moore_guider = {
        "conditioning_embedding_channels": guider.get("out_channels", 320),
        "conditioning_channels": guider.get("in_channels", 3),
        "block_out_channels": guider.get("block_channels", [16, 32, 96, 256]),
    }
    unet_config = read_unet_config(moore_unet_config, "model.net.moore_unet_config")
    # stage 1 fine-tuning has no motion modules; stage 2 adds them through model.motion_adapter
    return load_moore_net(
        moore_dir, unet_config, moore_guider, moore_motion_module_kwargs, with_motion_modules=False, **net_kwargs
    )


def stage2_motion_adapter(
    init: str = "pretrained",
    moore_dir: str | Path | None = None,
    moore_motion_module_kwargs: Mapping[str, Any] | None = None,
    path: str | Path | None = None,
) -> MotionAdapter:
    """The motion modules for stage 2: Moore's motion_module.pth with init=moore, else `path` (an AnimateDiff
    .ckpt or a diffusers MotionAdapter folder, `load_motion_adapter`)."""
    _check_init(init)
    if init == "moore":
        return load_moore_motion_adapter(moore_dir, moore_motion_module_kwargs)
    return load_motion_adapter(path)
