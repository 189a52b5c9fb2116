"""The weights doctor: `python -m src.check experiment=NAME [eval=PROTOCOL] [overrides]`.

Lists every pretrained file the composed experiment and its evaluation protocol need: the config key that
sets it, the expected path, present or missing, whether its tensor names and shapes match what the
configured model expects (read from the safetensors header or a memory-mapped torch file, with the model
built on the meta device: no weights are loaded, no memory is allocated), and where such a file is published.
Exits 1 when anything is missing, unreadable or mismatched, 2 on a bad config; it takes seconds.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from src.config import register_resolvers, stage_config
from src.config_checks import check_config_or_exit
from src.models.weight_files import Shapes, compare_shapes, module_shapes, read_shapes

register_resolvers()
log = logging.getLogger(__name__)

TRAINED_WEIGHTS = "a weights file written by a training run (<run>/<stage>/final/net.safetensors)"


@dataclass
class Slot:
    """One pretrained file: the key that sets it, its path, where it is published, and how to find the
    tensor shapes the model expects from it (None: presence and readability only)."""

    key: str
    path: str | None
    published_at: str
    expected: Callable[[Path], tuple[Shapes, Shapes]] | None = None


@dataclass
class Finding:
    slot: Slot
    status: str  # ok | missing | unreadable | mismatch | present
    detail: str

    @property
    def problem(self) -> bool:
        return self.status in ("missing", "unreadable", "mismatch")


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


# --- where the files are named in config -------------------------------------------------------------------

def _published(module: str, name: str) -> Callable[[DictConfig], str]:
    def lookup(node: DictConfig) -> str:
        value = getattr(__import__(module, fromlist=[name]), name)
        return value[node.get("variant", "raft_large")] if isinstance(value, dict) else value

    return lookup


# _target_ -> (path parameter, published at, expected shapes given the node, or None)
TARGETS: dict[str, tuple[str, Callable[[DictConfig], str], Callable[[DictConfig], Callable | None]]] = {
    "src.models.weights.load_diffusers_model": (
        "folder", lambda n: str(n.published_at), lambda n: diffusers_folder(str(n.cls.path))),
    "src.models.codecs.VAECodec": (
        "path", _published("src.models.codecs", "VAE_PUBLISHED_AT"),
        lambda n: diffusers_folder("diffusers.AutoencoderKL")),
    "src.models.image_encoders.HFClipImageEmbedder": (
        "path", _published("src.models.image_encoders", "HF_CLIP_PUBLISHED_AT"), lambda n: hf_clip_folder),
    "src.models.image_encoders.OpenClipImageEmbedder": (
        "checkpoint", _published("src.models.image_encoders", "OPEN_CLIP_PUBLISHED_AT"), lambda n: None),
    "src.models.motion.load_motion_adapter": (
        "path", _published("src.models.motion", "MOTION_PUBLISHED_AT"), lambda n: motion_adapter),
    "src.models.dynamicrafter.encoders.OpenClipTextEncoder": (
        "checkpoint", _published("src.models.dynamicrafter.encoders", "OPEN_CLIP_H14_PUBLISHED_AT"), lambda n: None),
    "src.models.dynamicrafter.encoders.OpenClipImageTokenEncoder": (
        "checkpoint", _published("src.models.dynamicrafter.encoders", "OPEN_CLIP_H14_PUBLISHED_AT"), lambda n: None),
    "src.trainers.dynamicrafter.DynamiCrafterModule": (
        "checkpoint", _published("src.models.dynamicrafter.checkpoint", "PUBLISHED_AT"), dynamicrafter_checkpoint),
    "src.eval.fvd.FrechetVideoDistance": ("weights_path", _published("src.eval.i3d", "I3D_PUBLISHED_AT"),
                                          lambda n: i3d_file),
    "src.eval.fvd.KernelVideoDistance": ("weights_path", _published("src.eval.i3d", "I3D_PUBLISHED_AT"),
                                         lambda n: i3d_file),
    "src.eval.lpips_metric.VideoLPIPS": (
        "backbone_weights", lambda n: "torchvision: alexnet-owt-7be5be79.pth (AlexNet IMAGENET1K_V1)", lambda n: None),
    "src.eval.pic.PerceptualInputConformity": (
        "dreamsim_dir", _published("src.eval.dreamsim", "DREAMSIM_PUBLISHED_AT"), lambda n: None),
    "src.eval.clip_metrics.FrameAccuracy": (
        "checkpoint", _published("src.eval.clip_metrics", "CLIP_PUBLISHED_AT"), lambda n: None),
    "src.eval.clip_metrics.TemporalConsistency": (
        "checkpoint", _published("src.eval.clip_metrics", "CLIP_PUBLISHED_AT"), lambda n: None),
    "src.eval.flow_metrics.WarpedPixelMSE": (
        "checkpoint", _published("src.eval.flow_metrics", "RAFT_PUBLISHED_AT"), lambda n: None),
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
            target = node.get("_target_") if "_target_" in node else None
            if target not in TARGETS:
                continue
            param, published, expected = TARGETS[target]
            if param not in node:
                continue
            value = node[param]
            key = next((str(node[p]) for p in CONFIG_KEY_PARAMS if p in node and node[p]), f"{path}.{param}")
            if value is None and target.endswith(("OpenClipTextEncoder", "OpenClipImageTokenEncoder",
                                                  "OpenClipImageEmbedder")):
                continue  # optional: these towers come from model.checkpoint or a tiny config
            slots.setdefault((key, value), Slot(key, value, published(node), expected(node)))
    return list(slots.values())


def trained_weight_slots(cfg: DictConfig) -> list[Slot]:
    keys = ("model.init_weights", "sample.weights", "eval.checkpoint")
    return [Slot(k, str(v), TRAINED_WEIGHTS) for k in keys if (v := OmegaConf.select(cfg, k, default=None))]


# --- checking -------------------------------------------------------------------------------------------------

def inspect(slot: Slot) -> Finding:
    if not slot.path:
        return Finding(slot, "missing", f"no path set: set {slot.key}=/path/to/file")
    path = Path(slot.path).expanduser()
    if not path.exists():
        return Finding(slot, "missing", f"not found; set {slot.key}=/path/to/file")
    if slot.expected is None:
        if path.is_dir():
            return Finding(slot, "present", "folder present (contents not checked)")
        try:
            return Finding(slot, "present", f"{len(read_shapes(path))} tensors (names not checked)")
        except ValueError as err:
            return Finding(slot, "present", f"present, not a plain state dict ({str(err)[-80:]})")
    try:
        expected, found = slot.expected(path)
    except NotImplementedError as why:
        return Finding(slot, "present", f"present; {why}")
    except (OSError, ValueError, KeyError) as err:
        return Finding(slot, "unreadable", f"{type(err).__name__}: {err}")
    comparison = compare_shapes(expected, found)
    if comparison.ok:
        return Finding(slot, "ok", f"{len(found)} tensors match the model")
    return Finding(slot, "mismatch", comparison.summary())


def report(findings: list[Finding], seconds: float) -> str:
    lines = []
    for f in findings:
        lines += [f"[{f.status:>10}] {f.slot.key}", f"             path: {f.slot.path}",
                  f"             {f.detail}"]
        if f.status != "ok":
            lines.append(f"             published at: {f.slot.published_at}")
    problems = sum(f.problem for f in findings)
    counts = {s: sum(f.status == s for f in findings) for s in ("ok", "present", "missing", "unreadable", "mismatch")}
    lines.append(f"{len(findings)} files: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
                 + f" ({seconds:.1f} s). " + ("All good." if not problems else f"{problems} problem(s)."))
    return "\n".join(lines)


def run_check(cfg: DictConfig) -> list[Finding]:
    stages = list(cfg.stages.keys()) if cfg.get("stages") else []
    views = [stage_config(cfg, s) for s in stages] or [cfg]
    slots: dict[tuple[str, str | None], Slot] = {}
    for view in views:
        for slot in find_slots(view, ("model",)):
            slots.setdefault((slot.key, slot.path), slot)
    if cfg.get("eval"):
        for slot in find_slots(cfg, ("eval",)):
            slots.setdefault((slot.key, slot.path), slot)
    for slot in trained_weight_slots(cfg):
        slots.setdefault((slot.key, slot.path), slot)
    return [inspect(slot) for slot in slots.values()]


def _with_default_protocol(cfg: DictConfig) -> DictConfig:
    """The config again with the experiment's benchmark protocol (conf/check.yaml `protocols`) when no eval=."""
    protocol = (cfg.get("protocols") or {}).get(cfg.get("run_name"))
    if cfg.get("eval") or not protocol or not HydraConfig.initialized():
        return cfg
    from hydra import compose

    overrides = list(HydraConfig.get().overrides.task)
    return compose(config_name="check", overrides=[*overrides, f"eval={protocol}"])


@hydra.main(version_base="1.3", config_path="../conf", config_name="check")
def main(cfg: DictConfig) -> None:
    started = time.time()
    check_config_or_exit(cfg, "check")
    cfg = _with_default_protocol(cfg)
    findings = run_check(cfg)
    print(report(findings, time.time() - started))
    if any(f.problem for f in findings):
        sys.exit(1)


if __name__ == "__main__":
    main()
