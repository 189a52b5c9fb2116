"""Every pretrained file a composed config names: the key that sets it, its path, where it is published, and how
to get the tensor shapes the configured model expects from it (built on the meta device: nothing allocated).

The table `TARGETS` maps each `_target_` that reads a pretrained file to a `Target` row (its path parameter, where
it is published, how to check its shapes); the weights doctor (src/check.py) checks these files and the training
run header lists them. Add a row with each new loader, e.g.
    "src.models.controlnet.load_controlnet": Target("folder", "src.models.controlnet:PUBLISHED_AT",
                                                    diffusers_folder("diffusers.ControlNetModel")),
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from src.models.weight_files import Shapes, module_shapes, read_shapes

TRAINED_WEIGHTS = "a weights file written by a training run (<run>/<stage>/final/net.safetensors)"


@dataclass
class Slot:
    """One pretrained file: the key that sets it, its path, where it is published, and how to find the
    tensor shapes the model expects from it (None: presence and readability only)."""

    key: str
    path: str | None
    published_at: str
    expected: Callable[[Path], tuple[Shapes, Shapes]] | None = None


# --- expected shapes, each built on the meta device --------------------------------------------------------

def _weights_in(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no weights file in {folder}: expected one of {', '.join(names)}")


def diffusers_folder(cls_path: str) -> Callable[[Path], tuple[Shapes, Shapes]]:
    """A diffusers model folder: the class built from its config.json vs its weights file's tensors."""

    def expected(folder: Path) -> tuple[Shapes, Shapes]:
        cls = get_class(cls_path)
        config = json.loads((folder / "config.json").read_text())
        with torch.device("meta"):
            model = cls.from_config(config)
        found = read_shapes(_weights_in(folder, ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")))
        rename = getattr(model, "_fix_state_dict_keys_on_load", None)
        if rename is not None:  # the loader's own legacy-name fix (old VAE folders)
            found = {k: tuple(v.shape) for k, v in rename({k: torch.empty(s, device="meta")
                                                           for k, s in found.items()}).items()}
        return module_shapes(model), found

    return expected


def hf_clip_folder(folder: Path) -> tuple[Shapes, Shapes]:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(CLIPVisionConfig.from_json_file(str(folder / "config.json")))
    found = read_shapes(_weights_in(folder, ("model.safetensors", "pytorch_model.bin")))
    found.pop("vision_model.embeddings.position_ids", None)  # a buffer older files store; the loader drops it
    return module_shapes(model), found


def motion_adapter(path: Path) -> tuple[Shapes, Shapes]:
    """An AnimateDiff file: its converted names vs a MotionAdapter of the layout its shapes imply."""
    from diffusers import MotionAdapter

    from src.models.motion import convert_original_motion_state_dict, infer_motion_adapter_config

    if path.is_dir():
        return diffusers_folder("diffusers.MotionAdapter")(path)
    fake = {k: torch.empty(s, device="meta") for k, s in read_shapes(path).items()}
    converted = convert_original_motion_state_dict(fake)
    with torch.device("meta"):
        model = MotionAdapter(**infer_motion_adapter_config(converted, 8, 32, 32))
    expected = {k: s for k, s in module_shapes(model).items() if not k.endswith("pos_embed.pe")}  # constants
    return expected, {k: tuple(v.shape) for k, v in converted.items() if not k.endswith("pos_embed.pe")}


def dynamicrafter_checkpoint(model_cfg: DictConfig) -> Callable[[Path], tuple[Shapes, Shapes]]:
    """A released model.ckpt vs the configured DynamiCrafter in the release's flat key layout."""

    def expected(path: Path) -> tuple[Shapes, Shapes]:
        from src.models.dynamicrafter.checkpoint import rename_legacy_keys

        with torch.device("meta"):
            module = instantiate(model_cfg, checkpoint=None, init_weights=None, stage="finetune")
        fake = rename_legacy_keys({k: torch.empty(s, device="meta") for k, s in read_shapes(path).items()})
        return {k: tuple(v.shape) for k, v in module.official_state_dict().items()}, {
            k: tuple(v.shape) for k, v in fake.items()}

    return expected


def i3d_file(path: Path) -> tuple[Shapes, Shapes] | None:
    from src.eval.i3d import I3D_NUM_FEATURES, InceptionI3d, _is_torchscript_archive

    if _is_torchscript_archive(path):
        raise NotImplementedError("a TorchScript archive (StyleGAN-V's i3d_torchscript.pt): loaded as a whole")
    with torch.device("meta"):
        model = InceptionI3d(I3D_NUM_FEATURES)
    return module_shapes(model), read_shapes(path)


def hed_file(path: Path) -> tuple[Shapes, Shapes]:
    from src.rerender.hed import HEDNet

    with torch.device("meta"):
        return module_shapes(HEDNet()), read_shapes(path)


# --- where the files are named in config -------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """How one `_target_` names a pretrained file (a row of `TARGETS`).

    param: the node's path parameter. published: where such a file is published, "module:CONSTANT" (a dict
    constant is indexed by the node's `variant`, default raft_large) or a function of the node. shapes: how to
    check the file's tensor shapes, a function of its path (see the builders above), or None for presence and
    readability only; shapes_for instead when the check depends on the node. only_when: read only when this
    holds for the node. optional: a null path is allowed (the part comes from elsewhere, e.g. model.checkpoint).
    """

    param: str
    published: str | Callable[[DictConfig], str]
    shapes: Callable[[Path], tuple[Shapes, Shapes] | None] | None = None
    shapes_for: Callable[[DictConfig], Callable | None] | None = None
    only_when: Callable[[DictConfig], bool] | None = None
    optional: bool = False

    def published_at(self, node: DictConfig) -> str:
        if callable(self.published):
            return self.published(node)
        module, name = self.published.split(":")
        value = getattr(__import__(module, fromlist=[name]), name)
        return value[node.get("variant", "raft_large")] if isinstance(value, dict) else value

    def expected(self, node: DictConfig) -> Callable | None:
        return self.shapes_for(node) if self.shapes_for is not None else self.shapes


OPEN_CLIP_H14 = "src.models.dynamicrafter.encoders:OPEN_CLIP_H14_PUBLISHED_AT"
I3D = "src.eval.i3d:I3D_PUBLISHED_AT"
MOTION = "src.models.motion:MOTION_PUBLISHED_AT"
CLIP = "src.eval.clip_metrics:CLIP_PUBLISHED_AT"

#: every `_target_` that reads a pretrained file; add a row with each new loader
TARGETS: dict[str, Target] = {
    "src.models.weights.load_diffusers_model": Target(
        "folder", lambda n: str(n.published_at), shapes_for=lambda n: diffusers_folder(str(n.cls.path))),
    "src.models.codecs.VAECodec": Target(
        "path", "src.models.codecs:VAE_PUBLISHED_AT", diffusers_folder("diffusers.AutoencoderKL")),
    "src.models.image_encoders.HFClipImageEmbedder": Target(
        "path", "src.models.image_encoders:HF_CLIP_PUBLISHED_AT", hf_clip_folder),
    "src.models.image_encoders.OpenClipImageEmbedder": Target(
        "checkpoint", "src.models.image_encoders:OPEN_CLIP_PUBLISHED_AT", optional=True),
    "src.models.motion.load_motion_adapter": Target("path", MOTION, motion_adapter),
    "src.models.dynamicrafter.encoders.OpenClipTextEncoder": Target("checkpoint", OPEN_CLIP_H14, optional=True),
    "src.models.dynamicrafter.encoders.OpenClipImageTokenEncoder": Target("checkpoint", OPEN_CLIP_H14, optional=True),
    "src.trainers.dynamicrafter.DynamiCrafterModule": Target(
        "checkpoint", "src.models.dynamicrafter.checkpoint:PUBLISHED_AT", shapes_for=dynamicrafter_checkpoint),
    "src.eval.fvd.FrechetVideoDistance": Target("weights_path", I3D, i3d_file),
    "src.eval.fvd.KernelVideoDistance": Target("weights_path", I3D, i3d_file),
    "src.eval.lpips_metric.VideoLPIPS": Target(
        "backbone_weights", lambda n: "torchvision: alexnet-owt-7be5be79.pth (AlexNet IMAGENET1K_V1)"),
    "src.eval.pic.PerceptualInputConformity": Target("dreamsim_dir", "src.eval.dreamsim:DREAMSIM_PUBLISHED_AT"),
    "src.eval.clip_metrics.FrameAccuracy": Target("checkpoint", CLIP),
    "src.eval.clip_metrics.TemporalConsistency": Target("checkpoint", CLIP),
    "src.eval.flow_metrics.WarpedPixelMSE": Target("checkpoint", "src.eval.flow_metrics:RAFT_PUBLISHED_AT"),
    "src.models.animate_anyone_init.build_animate_anyone_net": Target(
        "moore_dir", "src.models.moore:MOORE_PUBLISHED_AT", only_when=lambda n: n.get("init") == "moore"),
    "src.models.animate_anyone_init.stage2_motion_adapter": Target(
        "path", MOTION, motion_adapter, only_when=lambda n: n.get("init") != "moore"),  # else Moore's own
    "src.rerender.sd_loading.load_stable_diffusion": Target("checkpoint", "src.rerender.sd_loading:SD_PUBLISHED_AT"),
    "src.rerender.sd_loading.load_controlnet": Target(
        "checkpoint", lambda n: __import__("src.rerender.sd_loading", fromlist=["x"]).CONTROLNET_PUBLISHED_AT.get(
            n.get("control_type"), "lllyasviel/ControlNet")),
    "src.rerender.control_maps.ControlMapper": Target(
        "hed_checkpoint", "src.rerender.hed:HED_PUBLISHED_AT", hed_file, only_when=lambda n: n.get("control_type") == "hed"),
}
CONFIG_KEY_PARAMS = ("config_key", "weights_config_key")


def _nodes(node: object, prefix: str) -> Iterator[tuple[str, DictConfig]]:
    if isinstance(node, DictConfig):
        yield prefix, node
        for key in node.keys():
            yield from _nodes(node._get_node(key), f"{prefix}.{key}" if prefix else str(key))


def find_slots(cfg: DictConfig, roots: tuple[str, ...]) -> list[Slot]:
    """Every pretrained file named under `roots` of `cfg` (one slot per config key and path)."""
    slots: dict[tuple[str, str | None], Slot] = {}
    for root in roots:
        sub = OmegaConf.select(cfg, root)
        for path, node in _nodes(sub, root):
            target = TARGETS.get(node.get("_target_")) if "_target_" in node else None
            if target is None or target.param not in node or (target.only_when and not target.only_when(node)):
                continue
            value = node[target.param]
            if value is None and target.optional:
                continue
            key = next((str(node[p]) for p in CONFIG_KEY_PARAMS if p in node and node[p]), f"{path}.{target.param}")
            slots.setdefault((key, value), Slot(key, value, target.published_at(node), target.expected(node)))
    return list(slots.values())


def trained_weight_slots(cfg: DictConfig) -> list[Slot]:
    keys = ("model.init_weights", "sample.weights", "eval.checkpoint")
    return [Slot(k, str(v), TRAINED_WEIGHTS) for k in keys if (v := OmegaConf.select(cfg, k, default=None))]
