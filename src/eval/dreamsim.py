"""DreamSim ensemble (Fu et al. 2023) rebuilt from local files: DINO ViT-B/16 + CLIP ViT-B/16 + OpenCLIP
ViT-B/16, LoRA-tuned on qkv, the LoRA deltas merged into the weights at load time.

Images enter `DreamSimEnsemble` as `(B, 3, H, W)` float in [0, 1]; they are resized to 224x224 with PIL
bicubic on uint8, no crop, as the package's `preprocess`, normalised per branch (ImageNet for DINO, CLIP
constants for both CLIP branches) and embedded as [DINO cls token after the last block (768), CLIP and OpenCLIP
projected cls embeddings (512 each)], then mean-centred and L2-normalised (`normalize_embeds=True`).
Distance = 1 - cosine similarity of embeddings.

The `dreamsim` PyPI package needs `peft` and fetches the DINO trunk through torch.hub (a cloned repo in its
cache folder, plus changing torch.hub's global dir), so the architecture is built here with timm instead.
Folder layout = the package's cache folder (`DREAMSIM_FILES`). Checked against the package itself on shared
random weights: embeddings within 1e-7 (tests/unit/test_eval_dreamsim_reference.py).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file as load_safetensors
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from src.eval.weights import require_weight_file

DREAMSIM_RESOLUTION = 224
DREAMSIM_PUBLISHED_AT = (
    "https://github.com/ssundaram21/dreamsim/releases/download/v0.2.0-checkpoints/"
    "dreamsim_ensemble_checkpoint.zip (unzip into the folder), plus the DINO ViT-B/16 backbone "
    "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth saved as "
    "checkpoints/dino_vitbase16_pretrain.pth in the same folder"
)
DREAMSIM_FILES = {
    "dino": "checkpoints/dino_vitbase16_pretrain.pth",
    "clip": "clip_vitb16_pretrain.pth.tar",
    "open_clip": "open_clip_vitb16_pretrain.pth.tar",
    "lora": "ensemble_lora",
}
BRANCHES = ("dino", "clip", "open_clip")  # extractor_list order in DreamSim's PerceptualModel
_MEAN_STD = {
    "dino": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "open_clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


def build_branch_vit(
    branch: str, embed_dim: int = 768, depth: int = 12, num_heads: int = 12
) -> VisionTransformer:
    """A DINO-layout ViT/16; the CLIP branches add a pre-norm (their ln_pre), LayerNorm eps 1e-5, and
    QuickGELU for OpenAI CLIP (GELU for OpenCLIP)."""
    is_clip = branch != "dino"
    vit = VisionTransformer(
        img_size=DREAMSIM_RESOLUTION,
        patch_size=16,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        qkv_bias=True,
        num_classes=0,
        global_pool="token",
        norm_layer=functools.partial(nn.LayerNorm, eps=1e-5 if is_clip else 1e-6),
        act_layer="quick_gelu" if branch == "clip" else "gelu",
    )
    if is_clip:  # pre-norm LayerNorm with a biased patch conv (timm's pre_norm=True would drop the bias)
        vit.norm_pre = nn.LayerNorm(embed_dim, eps=1e-5)
    return vit


class DreamSimBranch(nn.Module):
    """One ViT trunk and its feature: DINO's cls token before the final norm, or CLIP's projected cls."""

    def __init__(self, branch: str, vit: VisionTransformer, proj: Tensor | None) -> None:
        super().__init__()
        self.branch, self.vit = branch, vit
        mean, std = _MEAN_STD[branch]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.proj = None if proj is None else nn.Parameter(proj, requires_grad=False)

    def forward(self, images: Tensor) -> Tensor:
        vit = self.vit
        x = vit.patch_embed((images - self.mean) / self.std)
        x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + vit.pos_embed
        x = vit.blocks(vit.norm_pre(x))
        if self.proj is None:
            return x[:, 0]
        return vit.norm(x)[:, 0] @ self.proj


def dreamsim_preprocess(images: Tensor) -> Tensor:
    """`(B, 3, H, W)` in [0, 1] -> 224x224 exactly as the dreamsim package's `preprocess`: the image as uint8
    (rounded; frames decoded from video are uint8 already), PIL bicubic resize, no crop, then /255."""
    as_uint8 = (images.detach() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    size = (DREAMSIM_RESOLUTION, DREAMSIM_RESOLUTION)
    resized = [np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC)) for image in as_uint8]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).to(images.device, torch.float32) / 255.0


class DreamSimEnsemble(nn.Module):
    """Image embedder whose cosine distance is DreamSim's; `embed` is what PIC needs (embed x_in once)."""

    def __init__(self, branches: dict[str, DreamSimBranch]) -> None:
        super().__init__()
        self.branches = nn.ModuleDict({name: branches[name] for name in BRANCHES})
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> DreamSimEnsemble:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """`(B, 3, H, W)` in [0, 1] -> `(B, 1792)` mean-centred unit embeddings."""
        x = dreamsim_preprocess(images)
        emb = torch.cat([branch(x) for branch in self.branches.values()], dim=-1)
        emb = emb - emb.mean(dim=-1, keepdim=True)
        return emb / emb.norm(dim=-1, keepdim=True)

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """DreamSim distance 1 - cos(embed(a), embed(b)), per pair."""
        return 1 - F.cosine_similarity(self(a), self(b), dim=-1)


def _load_lora(folder: Path) -> tuple[dict[str, Tensor], float]:
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    if config.get("use_rslora") or config.get("use_dora"):
        raise ValueError(f"{config_file}: rsLoRA/DoRA adapters are not DreamSim's; expected plain LoRA")
    scaling = float(config["lora_alpha"]) / float(config["r"])
    if (folder / "adapter_model.safetensors").is_file():
        state = load_safetensors(str(folder / "adapter_model.safetensors"))
    elif (folder / "adapter_model.bin").is_file():
        state = torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{folder} holds no adapter_model.safetensors or adapter_model.bin")
    return state, scaling


def _merge_lora(
    vits: dict[str, VisionTransformer], lora: dict[str, Tensor], scaling: float, source: Path
) -> None:
    """W_qkv += scaling * B @ A for every LoRA pair; every adapter key must be used, every qkv covered."""
    used: set[str] = set()
    for index, branch in enumerate(BRANCHES):
        for block_index, block in enumerate(vits[branch].blocks):
            stem = f"base_model.model.extractor_list.{index}.model.blocks.{block_index}.attn.qkv"
            key_a, key_b = f"{stem}.lora_A.weight", f"{stem}.lora_B.weight"
            if key_a not in lora or key_b not in lora:
                raise ValueError(
                    f"LoRA adapter in {source} lacks {key_a} / {key_b}; is it DreamSim's ensemble_lora?"
                )
            delta = lora[key_b].float() @ lora[key_a].float()
            block.attn.qkv.weight.data += scaling * delta
            used.update((key_a, key_b))
    unused = sorted(set(lora) - used)
    if unused:
        raise ValueError(f"LoRA adapter in {source} has keys this ensemble does not use: {unused[:5]}...")


def _load_branch_state(branch: str, file: Path) -> tuple[dict[str, Tensor], Tensor | None]:
    state = torch.load(file, map_location="cpu", weights_only=True)
    if branch == "dino":
        return dict(state), None
    state = dict(state["state_dict"])
    proj = state.pop("proj")
    renamed = {
        ("norm_pre." + k[len("pos_drop.") :] if k.startswith("pos_drop.") else k): v for k, v in state.items()
    }
    return renamed, proj


def load_dreamsim_ensemble(
    folder: str | Path | None,
    config_key: str = "eval.dreamsim_dir",
    embed_dim: int = 768,
    depth: int = 12,
    num_heads: int = 12,
) -> DreamSimEnsemble:
    """Build the DreamSim ensemble from a local folder laid out as DreamSim's cache (DREAMSIM_FILES).

    The size arguments exist for tests with tiny random checkpoints; DreamSim itself is ViT-B/16.
    """
    root = require_weight_file(folder, config_key, DREAMSIM_PUBLISHED_AT)
    files = {
        name: require_weight_file(root / rel, f"{config_key} (file {rel})", DREAMSIM_PUBLISHED_AT)
        for name, rel in DREAMSIM_FILES.items()
    }
    vits, projs = {}, {}
    for branch in BRANCHES:
        state, projs[branch] = _load_branch_state(branch, files[branch])
        vits[branch] = build_branch_vit(branch, embed_dim, depth, num_heads)
        try:  # DINO's hub model has no classifier head; timm's head is Identity with num_classes=0 too
            vits[branch].load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(f"{files[branch]} does not match DreamSim's {branch} ViT: {error}") from error
    lora, scaling = _load_lora(files["lora"])
    _merge_lora(vits, lora, scaling, files["lora"])
    return DreamSimEnsemble({b: DreamSimBranch(b, vits[b], projs[b]) for b in BRANCHES})
