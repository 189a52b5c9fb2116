"""Tiny random SD1.5-shaped models and their state dicts written back in the original LDM / ControlNet-1.0 key
layout, so the single-file loaders can be tested without any real checkpoint.

How the original-layout files are made: each function below inverts, by hand, the renaming that diffusers'
single-file conversion applies (block index arithmetic `input_blocks.{1 + i*(L+1) + j}`, resnet names
`in_layers.0`/`emb_layers.1`/..., VAE `down.i.block.j` and reversed `up` order, 1x1-conv VAE attention,
ControlNet `zero_convs`/`input_hint_block`). The tests then load these files through diffusers' forward
conversion and require every tensor back bit-exactly, so a wrong inverse here fails a test rather than
passing silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
)
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def tiny_configs() -> dict[str, dict]:
    """Configs of tiny SD1.5-layout models (2 resolution levels, 1 layer per block)."""
    down = ["CrossAttnDownBlock2D", "DownBlock2D"]
    unet = dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=[32, 64],
        down_block_types=down,
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    controlnet = {k: v for k, v in unet.items() if k not in ("sample_size", "out_channels", "up_block_types")}
    controlnet["conditioning_embedding_out_channels"] = [16, 32, 96, 256]  # ControlNet-1.0's hint encoder
    vae = dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        block_out_channels=[16, 32],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=8,
        sample_size=32,
    )
    text = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    return {"unet": unet, "controlnet": controlnet, "vae": vae, "text_encoder": text}


def tiny_models(seed: int = 0) -> dict[str, torch.nn.Module]:
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = tiny_configs()
    models = {
        "unet": UNet2DConditionModel(**cfg["unet"]),
        "vae": AutoencoderKL(**cfg["vae"]),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])),
        "controlnet": ControlNetModel(**cfg["controlnet"]),
    }
    with torch.no_grad():  # ControlNet's zero convolutions start at zero: make every tensor distinct
        for model in models.values():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
    return {k: m.eval() for k, m in models.items()}


def save_tokenizer(folder: Path) -> None:
    """A tiny CLIP BPE tokenizer (vocab.json + merges.txt) in `folder`."""
    from transformers import CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {
        t: i
        for i, t in enumerate(letters + [c + "</w>" for c in letters] + ["<|startoftext|>", "<|endoftext|>"])
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt")).save_pretrained(
        str(folder)
    )


def save_diffusers_folder(models: dict[str, torch.nn.Module], folder: Path) -> Path:
    """An SD1.5-layout diffusers folder (unet/ vae/ text_encoder/ tokenizer/) plus a ControlNet folder."""
    for name in ("unet", "vae", "text_encoder"):
        models[name].save_pretrained(str(folder / "sd" / name))
    save_tokenizer(folder / "sd" / "tokenizer")
    models["controlnet"].save_pretrained(str(folder / "controlnet"))
    return folder


def _blocks_unet(
    state: dict[str, torch.Tensor],
    layers: int,
    out: dict[str, torch.Tensor],
    prefix: str,
    up_has_attn: list[bool] | None,
) -> None:
    per = layers + 1
    for key, value in state.items():
        new = None
        for d, ldm in _UNET_FIXED.items():
            if key.startswith(d + "."):
                new = ldm + key[len(d) :]
        parts = key.split(".")
        if parts[0] == "down_blocks":
            i, kind = int(parts[1]), parts[2]
            if kind == "downsamplers":
                new = f"input_blocks.{(i + 1) * per}.0.op." + ".".join(parts[5:])
            else:
                j = int(parts[3])
                new = f"input_blocks.{1 + i * per + j}.{0 if kind == 'resnets' else 1}." + ".".join(parts[4:])
        elif parts[0] == "mid_block":
            idx = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[".".join(parts[1:3])]
            new = f"middle_block.{idx}." + ".".join(parts[3:])
        elif parts[0] == "up_blocks" and up_has_attn is not None:
            i, kind = int(parts[1]), parts[2]
            if kind == "upsamplers":
                new = f"output_blocks.{i * per + layers}.{2 if up_has_attn[i] else 1}.conv." + ".".join(
                    parts[5:]
                )
            else:
                j = int(parts[3])
                new = f"output_blocks.{i * per + j}.{0 if kind == 'resnets' else 1}." + ".".join(parts[4:])
        elif parts[0] == "controlnet_down_blocks":
            new = f"zero_convs.{parts[1]}.0.{parts[2]}"
        elif parts[0] == "controlnet_mid_block":
            new = f"middle_block_out.0.{parts[1]}"
        elif parts[0] == "controlnet_cond_embedding":
            if parts[1] == "conv_in":
                new = f"input_hint_block.0.{parts[2]}"
            elif parts[1] == "conv_out":
                new = f"input_hint_block.14.{parts[2]}"
            else:
                new = f"input_hint_block.{2 * (int(parts[2]) + 1)}.{parts[3]}"
        if new is None:
            raise KeyError(f"no LDM name for {key}")
        if ".resnets." in key:
            for d, ldm in _RESNET:
                new = new.replace(f".{d}.", f".{ldm}.")
        out[prefix + new] = value


def unet_to_ldm(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    cfg = model.config
    out: dict[str, torch.Tensor] = {}
    up_has_attn = ["CrossAttn" in t for t in cfg.up_block_types]
    _blocks_unet(model.state_dict(), cfg.layers_per_block, out, "model.diffusion_model.", up_has_attn)
    return out


def controlnet_to_ldm(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    _blocks_unet(model.state_dict(), model.config.layers_per_block, out, "control_model.", None)
    return out


def vae_to_ldm(model: torch.nn.Module, prefix: str = "first_stage_model.") -> dict[str, torch.Tensor]:
    n = len(model.config.down_block_types)
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in model.state_dict().items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        parts = new.split(".")
        if parts[1] == "down_blocks":
            i = parts[2]
            new = (
                f"{parts[0]}.down.{i}.downsample.conv.{parts[-1]}"
                if parts[3] == "downsamplers"
                else f"{parts[0]}.down.{i}.block.{parts[4]}." + ".".join(parts[5:])
            )
        elif parts[1] == "up_blocks":
            i = n - 1 - int(parts[2])
            new = (
                f"{parts[0]}.up.{i}.upsample.conv.{parts[-1]}"
                if parts[3] == "upsamplers"
                else f"{parts[0]}.up.{i}.block.{parts[4]}." + ".".join(parts[5:])
            )
        elif parts[1] == "mid_block" and parts[2] == "resnets":
            new = f"{parts[0]}.mid.block_{int(parts[3]) + 1}." + ".".join(parts[4:])
        elif parts[1] == "mid_block" and parts[2] == "attentions":
            name = ".".join(parts[4:-1])
            new = f"{parts[0]}.mid.attn_1.{attn[name]}.{parts[-1]}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        out[prefix + new] = value
    return out


def text_to_ldm(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = {
        ("" if k.startswith("text_model.") else "text_model.") + k: v for k, v in model.state_dict().items()
    }
    out = {"cond_stage_model.transformer." + k: v for k, v in state.items()}
    # real SD1.5 files store CLIP's constant position ids (the loader ignores them)
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    return out


def sd_to_ldm(models: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """A whole original-layout SD1.5 checkpoint, with the LDM schedule buffers real files carry."""
    state = {
        **unet_to_ldm(models["unet"]),
        **vae_to_ldm(models["vae"]),
        **text_to_ldm(models["text_encoder"]),
    }
    state["alphas_cumprod"] = torch.linspace(0.99, 0.01, 1000)
    return {k: v.contiguous().clone() for k, v in state.items()}


def control_sd15_file(models: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """A ControlNet-1.0 `control_sd15_*.pth`: the control branch plus the whole SD1.5 base it was trained on."""
    return {**sd_to_ldm(models), **{k: v.clone() for k, v in controlnet_to_ldm(models["controlnet"]).items()}}
