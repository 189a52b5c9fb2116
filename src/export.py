"""`python -m src.export CKPT OUT [--dtype fp32|bf16] [--ema] [--base NET.safetensors]`: checkpoint -> weight files.

CKPT is a Lightning `.ckpt` file (single device, DDP, FSDP full state) or a DeepSpeed checkpoint directory
(Lightning's `last.ckpt/` under strategy=deepspeed_stage_*, or any `engine.save_checkpoint` directory),
consolidated to fp32 with DeepSpeed's `zero_to_fp32` functions. OUT receives:
- `net.safetensors`: the trainable container `module.net`, as `src.trainers.weights_io` writes it (what the
  next stage and sampling load strictly). Frozen parameters are not in checkpoints; when some of `net`'s
  were excluded (e.g. stage 2 trains only the motion modules), pass `--base` (the weights the stage started
  from, e.g. the previous stage's `final/net.safetensors`) to fill them, or only the per-module files are written.
- one file per submodule of `net` found in the checkpoint (`reference_unet`, `denoising_unet`, `pose_guider`,
  `motion_modules` when only those were trained, `unet`, `image_proj`, ...), keys relative to that submodule.
- `index.json`: source, format, step, dtype, EMA or not, files with their key prefix and tensor count, and the
  excluded frozen keys.
`--ema` exports the EMA weights the EMA callback saved in the checkpoint instead of the raw ones.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from src import atomic_io

log = logging.getLogger(__name__)

NET_PREFIX = "net."
WRAPPER_PREFIX = "_forward_module."  # Lightning's wrapper around the LightningModule inside DeepSpeed/DDP
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MOTION = "motion_modules"


@dataclass
class CheckpointContents:
    """Parameters of the LightningModule (names as in `module.state_dict()`) plus what the checkpoint says."""

    params: dict[str, torch.Tensor]
    format: str
    global_step: int | None = None
    frozen_excluded: list[str] = field(default_factory=list)
    ema: dict[str, torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _strip_wrapper(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(WRAPPER_PREFIX): v for k, v in state.items()}


def _ema_from_callbacks(callbacks: dict | None) -> dict[str, torch.Tensor] | None:
    for key, value in (callbacks or {}).items():
        if "EMACallback" in str(key) and isinstance(value, dict) and "shadow" in value:
            return value["shadow"]
    return None


def is_deepspeed_checkpoint(path: Path) -> bool:
    return path.is_dir() and ((path / "latest").is_file() or any(path.glob("*/mp_rank_00_model_states.pt")))


def _deepspeed_tag(path: Path) -> str:
    if (path / "latest").is_file():
        return (path / "latest").read_text().strip()
    tags = sorted(p.parent.name for p in path.glob("*/mp_rank_00_model_states.pt"))
    if len(tags) != 1:
        raise ValueError(
            f"{path} holds DeepSpeed checkpoints {tags} and no `latest` file; pass the tag's parent directory with one tag."
        )
    return tags[0]


def checkpoint_exists(path: str | Path) -> bool:
    """A resumable checkpoint: a Lightning .ckpt file or a DeepSpeed checkpoint directory (strategy=deepspeed_*)."""
    path = Path(path)
    return path.is_file() or is_deepspeed_checkpoint(path)


def checkpoint_step(path: str | Path) -> int | None:
    """The global step a checkpoint was written at, read without loading its weights (mmap / client state only)."""
    path = Path(path)
    if is_deepspeed_checkpoint(path):
        tag = _deepspeed_tag(path)
        state = torch.load(
            path / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False, mmap=True
        )
    else:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    step = state.get("global_step")
    return int(step) if step is not None else None


def read_checkpoint(path: str | Path) -> CheckpointContents:
    """Load a Lightning `.ckpt` file or a DeepSpeed checkpoint directory (consolidated to fp32) on the CPU."""
    path = Path(path)
    if is_deepspeed_checkpoint(path):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        tag = _deepspeed_tag(path)
        params = get_fp32_state_dict_from_zero_checkpoint(str(path), tag=tag)
        client = torch.load(path / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        step = client.get("global_step", client.get("global_steps"))
        ema = _ema_from_callbacks(client.get("callbacks"))
        return CheckpointContents(
            params=_strip_wrapper(params),
            format="deepspeed",
            global_step=int(step) if step is not None else None,
            frozen_excluded=list(client.get("frozen_keys_excluded", [])),
            ema=_strip_wrapper(ema) if ema else None,
            extra={"tag": tag, "stage": client.get("stage")},
        )
    if path.is_file():
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if "state_dict" not in ckpt:
            raise ValueError(
                f"{path} is not a Lightning checkpoint (no 'state_dict'); pass a .ckpt file or a DeepSpeed checkpoint directory."
            )
        return CheckpointContents(
            params=_strip_wrapper(ckpt["state_dict"]),
            format="lightning",
            global_step=ckpt.get("global_step"),
            frozen_excluded=list(ckpt.get("frozen_keys_excluded", [])),
            ema=_ema_from_callbacks(ckpt.get("callbacks")),
            extra={"stage": ckpt.get("stage")},
        )
    raise FileNotFoundError(
        f"{path} is neither a Lightning .ckpt file nor a DeepSpeed checkpoint directory (with a `latest` file); "
        "point at <stage>/checkpoints/last.ckpt."
    )


def net_state(
    contents: CheckpointContents, use_ema: bool = False
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`net.*` parameters (prefix stripped; all parameters when there is no `net`) and `net`'s excluded frozen keys."""
    params = dict(contents.params)
    if use_ema:
        if contents.ema is None:
            raise ValueError("--ema: the checkpoint has no EMA state; train with callbacks.ema.enabled=true.")
        unknown = sorted(set(contents.ema) - set(params))
        if unknown:
            raise ValueError(f"--ema: EMA keys {unknown[:5]} are not parameters in the checkpoint.")
        params.update({k: v.float() for k, v in contents.ema.items()})
    has_net = any(k.startswith(NET_PREFIX) for k in params)
    prefix = NET_PREFIX if has_net else ""
    net = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
    excluded = [k[len(prefix) :] for k in contents.frozen_excluded if k.startswith(prefix)]
    return net, excluded


def group_by_submodule(state: dict[str, torch.Tensor]) -> dict[str, tuple[str, dict[str, torch.Tensor]]]:
    """{file name: (key prefix, keys relative to it)}; a group holding only motion modules is named motion_modules."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        head = key.split(".", 1)[0] if "." in key else ""
        groups.setdefault(head, {})[key] = value
    out: dict[str, tuple[str, dict[str, torch.Tensor]]] = {}
    for head, tensors in groups.items():
        if not head:
            continue
        name = MOTION if all(f".{MOTION}." in k for k in tensors) else head
        out[name] = (f"{head}.", {k[len(head) + 1 :]: v for k, v in tensors.items()})
    return out


def _save(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype, metadata: dict[str, str]) -> None:
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    atomic_io.save_safetensors(tensors, path, metadata=metadata)


def export_checkpoint(
    ckpt: str | Path, out: str | Path, dtype: str = "fp32", ema: bool = False, base: str | Path | None = None
) -> dict:
    """Write net.safetensors (when complete), per-submodule files and index.json; returns the index."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}; expected one of {sorted(DTYPES)}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    contents = read_checkpoint(ckpt)
    net, excluded = net_state(contents, use_ema=ema)
    if base is not None:
        base_state = load_file(str(base))
        extra = sorted(set(net) - set(base_state))
        if extra:
            raise ValueError(
                f"--base {base}: lacks checkpoint keys {extra[:5]} ({len(extra)}); it is not this model's weights."
            )
        net = {**base_state, **net}
        excluded = []
    meta = {
        "source": str(ckpt),
        "format": contents.format,
        "ema": str(ema),
        "step": str(contents.global_step),
    }
    files: dict[str, dict] = {}
    if not excluded:
        _save(net, out / "net.safetensors", DTYPES[dtype], meta)
        files["net"] = {"file": "net.safetensors", "prefix": "", "tensors": len(net)}
    for name, (prefix, tensors) in group_by_submodule(net).items():
        _save(tensors, out / f"{name}.safetensors", DTYPES[dtype], {**meta, "prefix": prefix})
        files[name] = {"file": f"{name}.safetensors", "prefix": prefix, "tensors": len(tensors)}
    index = {
        "source": str(ckpt),
        "format": contents.format,
        "global_step": contents.global_step,
        "stage": contents.extra.get("stage"),
        "dtype": dtype,
        "ema": ema,
        "base": str(base) if base else None,
        "net_complete": not excluded,
        "frozen_keys_excluded": excluded,
        "files": files,
    }
    atomic_io.write_json(out / "index.json", index)
    if excluded:
        log.warning(
            "%d frozen keys of net are not in the checkpoint: wrote per-module files only; pass --base to write net.safetensors",
            len(excluded),
        )
    return index


def load_exported(net: nn.Module, out: str | Path) -> None:
    """Load an export into `net`: net.safetensors strictly; otherwise every per-module file, where the only keys
    allowed to be missing are the frozen ones the index lists as excluded from the checkpoint."""
    from src.models.weights import load_strict

    out = Path(out)
    index = json.loads((out / "index.json").read_text())
    if index["net_complete"]:
        load_strict(net, load_file(str(out / "net.safetensors")), source=str(out / "net.safetensors"))
        return
    state: dict[str, torch.Tensor] = {}
    for entry in index["files"].values():
        state.update({entry["prefix"] + k: v for k, v in load_file(str(out / entry["file"])).items()})
    current = net.state_dict()
    absent = sorted(set(current) - set(state) - set(index["frozen_keys_excluded"]))
    if absent:
        raise RuntimeError(
            f"export {out} lacks {len(absent)} trainable keys of the model (e.g. {absent[:5]}); it was written from "
            "a different model or stage."
        )
    # Frozen keys keep the values the model was built with; everything else must match exactly.
    full = {k: current[k] for k in set(current) - set(state)} | state
    load_strict(net, full, source=str(out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m src.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", help="Lightning .ckpt file or DeepSpeed checkpoint directory")
    parser.add_argument("out", help="output directory")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--ema", action="store_true", help="export the EMA weights saved by callbacks.ema")
    parser.add_argument(
        "--base", default=None, help="net.safetensors supplying frozen weights left out of the checkpoint"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    index = export_checkpoint(args.ckpt, args.out, dtype=args.dtype, ema=args.ema, base=args.base)
    print(
        json.dumps(
            {k: index[k] for k in ("format", "global_step", "dtype", "ema", "net_complete")}
            | {"files": sorted(index["files"])}
        )
    )


if __name__ == "__main__":
    main()
