"""Checks a composed config right after Hydra composes it, before anything is built.

A wrong override (`trainer.max_steps=abc`, `data.size=[500,500]` with an 8x VAE, ...) otherwise starts a run
and dies minutes later deep inside Lightning or a model. Here every problem is found at once and reported
with the full key, the value, what was expected and a good override to copy. The rules are tables of
`Rule(key, check, expected, example)` plus a few cross-field functions; extend them next to the feature
that adds a config field. Keys that are absent are not checked (each system has its own fields).

Training checks each stage's merged settings (`stages.<name>` over the root) and names the key where the
bad value was set: `stages.spatial.trainer.max_steps` when the stage sets it, `trainer.max_steps` otherwise.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from src.config import stage_config
from src.eval.fvd_flavours import FLAVOURS

_ABSENT = object()
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true",
              "bf16-mixed", "32-true", "64-true", "64", "32", "16", "bf16", 64, 32, 16)
WANDB_MODES = ("auto", "online", "offline", "disabled")
SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
DIFFUSERS_SPACINGS = ("leading", "trailing", "linspace")
DYNAMICRAFTER_SPACINGS = ("uniform", "uniform_trailing")
ENTRY_POINTS = ("train", "sample", "evaluate", "check")
RERENDER_DTYPES = ("auto", "fp32", "fp16", "bf16")
RERENDER_CONTROL_TYPES = ("canny", "hed")


class ConfigError(ValueError):
    """The composed config has bad values; the message lists each one with a fix."""


@dataclass(frozen=True)
class Problem:
    key: str
    value: Any
    expected: str
    example: str

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}: expected {self.expected}; e.g. {self.key}={self.example}"


@dataclass(frozen=True)
class Rule:
    """`key` (dotted, relative to the config checked) must satisfy `check`; `example` is a good value."""

    key: str
    check: Callable[[Any], bool]
    expected: str
    example: str


# --- value checks --------------------------------------------------------------------------------------------

def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def positive_int(v: Any) -> bool:
    return is_int(v) and v >= 1


def nonneg_int(v: Any) -> bool:
    return is_int(v) and v >= 0


def positive_number(v: Any) -> bool:
    return is_number(v) and v > 0


def nonneg_number(v: Any) -> bool:
    return is_number(v) and v >= 0


def probability(v: Any) -> bool:
    return is_number(v) and 0 <= v <= 1


def boolean(v: Any) -> bool:
    return isinstance(v, bool)


def one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda v: v in choices


def nullable(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def pair(check: Callable[[Any], bool], ordered: bool = False) -> Callable[[Any], bool]:
    """A two-element list whose items pass `check` (and are ascending when `ordered`)."""

    def ok(v: Any) -> bool:
        if not isinstance(v, (list, tuple, ListConfig)) or len(v) != 2 or not all(check(x) for x in v):
            return False
        return not ordered or v[0] <= v[1]

    return ok


def nonempty_path(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def devices(v: Any) -> bool:
    if v == "auto" or v == -1 or positive_int(v):
        return True
    if isinstance(v, str):
        return bool(re.fullmatch(r"-1|\d+|(\d+\s*,\s*)*\d+,?", v.strip()))
    return isinstance(v, (list, ListConfig)) and len(v) > 0 and all(nonneg_int(x) for x in v)


def torch_device(v: Any) -> bool:
    return isinstance(v, str) and bool(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v))


def val_check_interval(v: Any) -> bool:
    return positive_int(v) or (is_number(v) and not is_int(v) and 0 < v <= 1)


def sdpa_backend(v: Any) -> bool:
    if isinstance(v, (list, ListConfig)):
        return len(v) > 0 and all(x in SDPA_BACKENDS[1:] for x in v)
    return v in SDPA_BACKENDS


# --- rule tables ----------------------------------------------------------------------------------------------

TRAIN_ROOT_RULES = [
    Rule("seed", is_int, "an integer", "42"),
    Rule("global_batch_size", nullable(positive_int), "null or a positive integer (samples per optimizer step)", "64"),
    Rule("performance.sdpa_backend", sdpa_backend, f"one of {SDPA_BACKENDS} or a list of them", "auto"),
    Rule("performance.activation_checkpointing", nullable(boolean), "null, true or false", "true"),
    Rule("performance.channels_last", boolean, "true or false", "false"),
    Rule("performance.compile", boolean, "true or false", "false"),
    Rule("performance.compile_mode", one_of("default", "reduce-overhead", "max-autotune"),
         "one of default, reduce-overhead, max-autotune", "default"),
    Rule("logger.wandb.mode", one_of(*WANDB_MODES), f"one of {WANDB_MODES}", "offline"),
]

TRAINER_RULES = [
    Rule("trainer.max_steps", positive_int, "a positive integer (optimizer steps of the stage)", "1000"),
    Rule("trainer.val_check_interval", nullable(val_check_interval),
         "a positive integer (batches) or a fraction in (0, 1]", "500"),
    Rule("trainer.log_every_n_steps", positive_int, "a positive integer", "10"),
    Rule("trainer.gradient_clip_val", nullable(nonneg_number), "null or a number >= 0", "1.0"),
    Rule("trainer.gradient_clip_algorithm", nullable(one_of("norm", "value")), "null, norm or value", "norm"),
    Rule("trainer.precision", one_of(*PRECISIONS), "a Lightning precision such as 32-true, bf16-mixed, 16-mixed",
         "bf16-mixed"),
    Rule("trainer.devices", devices, "auto, -1, a positive integer or a list of device indices", "1"),
    Rule("trainer.num_nodes", positive_int, "a positive integer", "1"),
    Rule("trainer.accelerator", one_of("auto", "cpu", "gpu", "cuda", "mps", "tpu"),
         "one of auto, cpu, gpu, cuda, mps, tpu", "auto"),
    Rule("callbacks.checkpoint.every_n_train_steps", nullable(positive_int), "null or a positive integer", "500"),
    Rule("callbacks.ema.enabled", boolean, "true or false", "true"),
    Rule("callbacks.ema.decay", probability, "a number in [0, 1]", "0.9999"),
    Rule("callbacks.ema.final_weights", one_of("raw", "ema"), "raw or ema", "ema"),
    Rule("callbacks.nonfinite.enabled", boolean, "true or false", "true"),
    Rule("callbacks.nonfinite.action", one_of("skip", "stop"), "skip or stop", "stop"),
    Rule("callbacks.nonfinite.check_every_n_steps", positive_int, "a positive integer", "50"),
    Rule("callbacks.nonfinite.max_skipped", nullable(nonneg_int), "null (no limit) or an integer >= 0", "100"),
    Rule("callbacks.skipped_samples.every_n_steps", positive_int, "a positive integer", "50"),
    Rule("callbacks.preemption.check_every_n_steps", positive_int, "a positive integer", "10"),
]

DATA_RULES = [
    Rule("data.batch_size", positive_int, "a positive integer (samples per device)", "4"),
    Rule("data.num_workers", nonneg_int, "an integer >= 0", "4"),
    Rule("data.num_frames", positive_int, "an integer >= 1 (frames per clip; 1 = single frames)", "16"),
    Rule("data.size", pair(positive_int), "[height, width], two positive integers", "[512,512]"),
    Rule("data.stride", nullable(positive_int), "a positive integer (frames between clip frames)", "4"),
    Rule("data.stride_range", pair(positive_int, ordered=True), "[low, high] integers with 1 <= low <= high",
         "[1,6]"),
    Rule("data.margin", nonneg_int, "an integer >= 0", "30"),
    Rule("data.crop_scale", pair(probability, ordered=True), "[low, high] in [0, 1], low <= high", "[0.9,1.0]"),
    Rule("data.crop_ratio", pair(positive_number, ordered=True), "[low, high] positive, low <= high", "[0.9,1.0]"),
    Rule("data.shuffle_buffer", nonneg_int, "an integer >= 0", "64"),
    Rule("data.decoded_cache_mb", nonneg_number, "a number >= 0 (MiB)", "0"),
    Rule("data.batches_per_epoch", positive_int, "a positive integer", "1000"),
    Rule("data.split_global_batch", boolean, "true or false", "false"),
    Rule("data.resampled", boolean, "true or false", "true"),
    Rule("data.caption_key", lambda v: isinstance(v, str) and v != "", "a json field name",
         "motion_caption"),
    Rule("data.val.num_videos", nonneg_int, "an integer >= 0 (0 = no validation)", "4"),
    Rule("data.val.num_frames", positive_int, "an integer >= 1", "16"),
    Rule("data.val.stride", positive_int, "a positive integer", "3"),
]

MODEL_RULES = [
    Rule("model.optimizer.lr", positive_number, "a positive number", "1.0e-5"),
    Rule("model.warmup_steps", nonneg_int, "an integer >= 0", "0"),
    Rule("model.lr_decay", one_of("constant", "cosine", "linear"), "one of constant, cosine, linear", "cosine"),
    Rule("model.min_lr_ratio", probability, "a number in [0, 1]", "0.1"),
    Rule("model.cond_drop_prob", probability, "a probability in [0, 1]", "0.1"),
    Rule("model.uncond_prob", probability, "a probability in [0, 1]", "0.05"),
    Rule("model.pose_guider_lr_scale", positive_number, "a positive number", "1.0"),
    Rule("model.gradient_checkpointing", boolean, "true or false", "true"),
    Rule("model.freeze_temporal", boolean, "true or false", "false"),
    Rule("model.rand_cond_frame", boolean, "true or false", "true"),
    Rule("model.fs_condition", nullable(one_of("fs", "fps")), "fs, fps or null", "fs"),
    Rule("model.dropout_masks", one_of("keyed", "global"), "keyed (per-sample masks) or global (torch's RNG)", "keyed"),
    Rule("model.loss.noise_offset", nonneg_number, "a number >= 0", "0.05"),
    Rule("model.loss.snr_gamma", nullable(positive_number), "null or a positive number", "5.0"),
    Rule("model.loss.timestep_sampling", one_of("uniform", "logit_normal"), "uniform or logit_normal", "uniform"),
    Rule("model.loss.logit_std", positive_number, "a positive number", "1.0"),
    Rule("model.noise.prediction_type", one_of(*PREDICTION_TYPES), f"one of {PREDICTION_TYPES}", "v_prediction"),
    Rule("model.sampling.num_steps", positive_int, "a positive integer (denoising steps)", "30"),
    Rule("model.sampling.eta", probability, "a number in [0, 1] (0 = DDIM, 1 = DDPM-like)", "0.0"),
    Rule("model.sampling.guidance_scale", nonneg_number, "a number >= 0 (1 = no guidance)", "3.5"),
    Rule("model.sampling.image_guidance_scale", nullable(nonneg_number), "null or a number >= 0", "7.5"),
    Rule("model.sampling.guidance_rescale", probability, "a number in [0, 1]", "0.7"),
    Rule("model.net.reference_init", one_of("own", "copy_denoising"), "own or copy_denoising", "own"),
    Rule("model.net.pose_guider.injection", one_of("conv_in", "latent"), "conv_in or latent", "conv_in"),
]

SAMPLE_RULES = [
    Rule("sample.name", nullable(one_of("pose", "reference_pose")), "pose or reference_pose", "pose"),
    Rule("sample.batch_size", positive_int, "a positive integer", "1"),
    Rule("sample.num_frames", nullable(positive_int), "null or an integer >= 1", "16"),
    Rule("sample.size", nullable(pair(positive_int)), "null or [height, width]", "[256,256]"),
    Rule("sample.frame_stride", nullable(positive_int), "null or a positive integer", "3"),
    Rule("sample.fps", nullable(positive_number), "null or a positive number", "8"),
    Rule("sample.save_fps", positive_number, "a positive number", "8"),
    Rule("sample.device", torch_device, "auto, cpu or cuda[:N]", "auto"),
    Rule("sample.autocast", boolean, "true or false", "true"),
    Rule("sample.sampling.num_steps", nullable(positive_int), "null or a positive integer", "50"),
    Rule("sample.sampling.eta", nullable(probability), "null or a number in [0, 1]", "1.0"),
    Rule("sample.sampling.guidance_scale", nullable(nonneg_number), "null or a number >= 0", "7.5"),
    Rule("sample.sampling.image_guidance_scale", nullable(nonneg_number), "null or a number >= 0", "7.5"),
    Rule("sample.sampling.guidance_rescale", nullable(probability), "null or a number in [0, 1]", "0.7"),
    Rule("sample.sampling.timestep_spacing", nullable(one_of(*DYNAMICRAFTER_SPACINGS, *DIFFUSERS_SPACINGS)),
         "null or a timestep spacing", "uniform_trailing"),
    # Rerender's key-frame translation weights (src/rerender/sd_loading.py, control_maps.py)
    Rule("model.sd.checkpoint", nonempty_path, "an SD1.5 diffusers folder or .safetensors/.ckpt file",
         "/weights/sd15/v1-5-pruned-emaonly.safetensors"),
    Rule("model.sd.dtype", one_of(*RERENDER_DTYPES), "auto, fp32, fp16 or bf16", "auto"),
    Rule("model.controlnet.control_type", one_of(*RERENDER_CONTROL_TYPES), "canny or hed", "hed"),
    Rule("model.controlnet.checkpoint", nonempty_path, "a control_sd15_*.pth file or a diffusers ControlNet "
         "folder", "/weights/controlnet/control_sd15_hed.pth"),
    Rule("model.control_map.canny_low", nonneg_number, "a number >= 0 (8-bit scale)", "100"),
    Rule("model.control_map.canny_high", nonneg_number, "a number >= 0 (8-bit scale)", "200"),
    Rule("model.control_map.batch_size", positive_int, "a positive integer", "8"),
]

RERENDER_RULES = [  # Rerender's key-frame translation (conf/experiment/rerender.yaml); absent for other systems
    Rule("model.sampling.num_steps", positive_int, "a positive integer (paper: 20 DDIM steps)", "20"),
    Rule("model.sampling.guidance_scale", nonneg_number, "a number >= 0 (paper: 7.5)", "7.5"),
    Rule("model.sampling.eta", probability, "a number in [0, 1]", "0.0"),
    Rule("model.denoising_strength", nullable(lambda v: is_number(v) and 0 < v <= 1),
         "null (start from pure noise) or an SDEdit strength in (0, 1]", "0.75"),
    Rule("model.control_scale", nonneg_number, "a number >= 0 (ControlNet strength)", "1.0"),
    *(Rule(f"model.windows.{name}", pair(probability, ordered=True), "[start, end] fractions, 0 <= start <= end <= 1",
           example) for name, example in (("cross_attention", "[0.0,1.0]"), ("shape_fusion", "[0.0,0.1]"),
                                          ("pixel_fusion", "[0.5,0.8]"), ("adain", "[0.8,1.0]"))),
    Rule("model.pixel_fusion", one_of("official", "paper", "off"), "official, paper or off", "official"),
    Rule("model.mask_strength", probability, "a number in [0, 1]", "0.5"),
    Rule("model.inner_strength", probability, "a number in [0, 1]", "0.9"),
    Rule("model.style_update_freq", positive_int, "a positive integer (key frames between style updates)", "1"),
    Rule("model.store_dtype", one_of("float16", "bfloat16", "float32"), "float16, bfloat16 or float32", "float16"),
    Rule("model.loose_cfattn", boolean, "true or false", "false"),
    Rule("model.color_preserve", boolean, "true or false", "true"),
    Rule("sample.score", boolean, "true or false (score the output with eval=rerender)", "true"),
    Rule("sample.score_overrides", lambda v: OmegaConf.is_list(v) and all(isinstance(o, str) for o in v),
         "a list of eval=rerender overrides",
         '["eval.weights.clip=/w/ViT-B-32.pt"]'),
    Rule("rerender.resolution", nullable(positive_int), "null (the video's size) or a positive integer (short side)",
         "512"),
]

_CLIP = [
    (".num_frames", nullable(positive_int), "null (to the end) or an integer >= 1", "16"),
    (".stride", positive_int, "a positive integer", "1"),
    (".start", lambda v: nonneg_int(v) or v == "random", "an integer >= 0 or random", "0"),
    (".seed", is_int, "an integer", "0"),
]
EVAL_RULES = [
    Rule("eval.mode", one_of("folder", "model"), "folder or model", "folder"),
    Rule("eval.num_shards", positive_int, "a positive integer", "8"),
    Rule("eval.shard_index", nonneg_int, "an integer >= 0", "0"),
    Rule("eval.merge", boolean, "true or false", "true"),
    Rule("eval.batch_size", positive_int, "a positive integer", "8"),
    Rule("eval.device", torch_device, "auto, cpu or cuda[:N]", "auto"),
    Rule("eval.resolution", nullable(pair(positive_int)), "null or [height, width]", "[256,256]"),
    Rule("eval.resize", one_of("resize", "center_crop", "none"), "resize, center_crop or none", "center_crop"),
    Rule("eval.num_samples", nullable(positive_int), "null (all) or a positive integer", "2048"),
    Rule("eval.num_real", nullable(positive_int), "null (all) or a positive integer", "2048"),
    Rule("eval.log_videos", nonneg_int, "an integer >= 0", "4"),
    Rule("eval.video_crf", lambda v: is_int(v) and 0 <= v <= 51, "an integer in [0, 51] (0 = lossless)", "0"),
    Rule("eval.video_fps", nullable(positive_number), "null or a positive number", "8"),
    Rule("eval.progress", boolean, "true or false", "true"),
    *[Rule(f"eval.{clip}{suffix}", check, expected, example)
      for clip in ("clip", "generated_clip") for suffix, check, expected, example in _CLIP],
    Rule("eval.fvd_flavour", one_of(*FLAVOURS), f"one of {tuple(FLAVOURS)} (src/eval/fvd_flavours.py)", "tf_hub"),
    Rule("eval.subset.rule", one_of("random", "first", "keys_file"), "random, first or keys_file", "random"),
    Rule("eval.subset.seed", is_int, "an integer", "0"),
    Rule("eval.reference.frame", nullable(nonneg_int), "null or a frame index >= 0", "0"),
    Rule("eval.reference.scored", boolean, "true or false", "true"),
    Rule("logger.wandb.mode", one_of(*WANDB_MODES), f"one of {WANDB_MODES}", "offline"),
]


# --- cross-field rules ----------------------------------------------------------------------------------------

def codec_factor(codec: Any) -> int | None:
    """Pixels per latent pixel of the configured codec, or None when the config does not say."""
    if not isinstance(codec, DictConfig):
        return None
    target = str(codec.get("_target_", ""))
    if target.endswith("PixelShuffleCodec"):
        return int(codec.get("factor", 4))
    if target.endswith(".VAECodec"):
        return 8
    if target.endswith("LDMVAECodec") and "ddconfig" in codec:
        return 2 ** (len(codec.ddconfig.ch_mult) - 1)
    return None


def unet_factor(net: Any) -> int:
    """Downsampling inside the UNet (2 per level after the first), when the config lists the levels."""
    if not isinstance(net, DictConfig):
        return 1
    levels = _get(net, "reference_unet.block_out_channels") or _get(net, "unet.channel_mult")
    return 2 ** (len(levels) - 1) if isinstance(levels, (list, ListConfig)) and len(levels) > 0 else 1


def size_fits_model(cfg: DictConfig, size_key: str) -> list[Problem]:
    size = _get(cfg, size_key)
    codec = codec_factor(_get(cfg, "model.codec"))
    if codec is None or not pair(positive_int)(size):
        return []
    factor = codec * unet_factor(_get(cfg, "model.net"))
    if size[0] % factor or size[1] % factor:
        good = [max(factor, round(s / factor) * factor) for s in size]
        return [Problem(size_key, _plain(size), f"both sides divisible by {factor} (the codec's {codec}x times the "
                        f"UNet's {factor // codec}x downsampling)", f"[{good[0]},{good[1]}]")]
    return []


def frames_fit_model(cfg: DictConfig, frames_key: str, stage: str | None) -> list[Problem]:
    frames = _get(cfg, frames_key)
    if not positive_int(frames):
        return []
    video_length = _get(cfg, "model.net.image_proj.video_length")
    if positive_int(video_length) and frames != video_length:
        return [Problem(frames_key, frames, f"{video_length} frames: the query transformer has learned queries for "
                        f"exactly model.net.image_proj.video_length={video_length} frames", str(video_length))]
    max_len = _get(cfg, "model.motion_adapter.max_seq_length")
    if stage == "temporal" and _get(cfg, "model.motion_adapter") is not None:
        max_len = max_len if positive_int(max_len) else 32
        if frames > max_len:
            return [Problem(frames_key, frames, f"at most {max_len} frames (the motion modules' positional "
                            "encoding length, model.motion_adapter.max_seq_length)", "24")]
    return []


def global_batch_fits(cfg: DictConfig) -> list[Problem]:
    global_batch, per_device = _get(cfg, "global_batch_size"), _get(cfg, "data.batch_size")
    if not positive_int(global_batch) or not positive_int(per_device):
        return []
    devs, nodes = _get(cfg, "trainer.devices"), _get(cfg, "trainer.num_nodes")
    world = (devs if positive_int(devs) else 1) * (nodes if positive_int(nodes) else 1)
    per_step = per_device * world
    if global_batch % per_step:
        where = f"data.batch_size ({per_device})" + (f" x devices x nodes ({world})" if world > 1 else "")
        good = max(per_step, global_batch // per_step * per_step)
        return [Problem("global_batch_size", global_batch, f"a multiple of {where} = {per_step}", str(good))]
    return []


def spacing_fits_schedule(cfg: DictConfig) -> list[Problem]:
    spacing, target = _get(cfg, "model.noise.timestep_spacing"), str(_get(cfg, "model.noise._target_") or "")
    choices = DYNAMICRAFTER_SPACINGS if target.endswith("DynamiCrafterSchedule") else DIFFUSERS_SPACINGS
    if spacing is None or not target or spacing in choices:
        return []
    return [Problem("model.noise.timestep_spacing", spacing, f"one of {choices} for {target.rsplit('.', 1)[-1]}",
                    choices[-1])]


def stage_cross_rules(cfg: DictConfig, stage: str | None) -> list[Problem]:
    problems = global_batch_fits(cfg) + size_fits_model(cfg, "data.size") + spacing_fits_schedule(cfg)
    problems += frames_fit_model(cfg, "data.num_frames", stage)
    if _get(cfg, "data.val.num_videos") != 0:
        problems += frames_fit_model(cfg, "data.val.num_frames", stage)
    return problems


def eval_cross_rules(cfg: DictConfig) -> list[Problem]:
    problems: list[Problem] = []
    shards, index = _get(cfg, "eval.num_shards"), _get(cfg, "eval.shard_index")
    if positive_int(shards) and nonneg_int(index) and index >= shards:
        problems.append(Problem("eval.shard_index", index, f"an index below eval.num_shards={shards}", "0"))
    for clip in ("eval.clip", "eval.generated_clip"):
        if _get(cfg, f"{clip}.start") == "random" and _get(cfg, f"{clip}.num_frames") is None:
            problems.append(Problem(f"{clip}.num_frames", None, f"a clip length when {clip}.start=random", "16"))
    if _get(cfg, "eval.subset.rule") == "keys_file" and not _get(cfg, "eval.subset.keys_file"):
        problems.append(Problem("eval.subset.keys_file", None, "a JSON list or an earlier metrics.json when "
                                "eval.subset.rule=keys_file", "/runs/ev1/metrics.json"))
    mode, merge = _get(cfg, "eval.mode"), _get(cfg, "eval.merge")
    if mode == "folder" and merge is False and not _get(cfg, "eval.generated_dir"):
        problems.append(Problem("eval.generated_dir", None, "the folder of generated mp4s in folder mode",
                                "/runs/gen"))
    if mode == "model" and not isinstance(_get(cfg, "model"), DictConfig):
        problems.append(Problem("model", None, "a model config in model mode (the checkpoint's model)",
                                "animate_anyone"))
    if mode == "model" and isinstance(_get(cfg, "model"), DictConfig):
        problems += spacing_fits_schedule(cfg)
    return problems


def input_problems(cfg: DictConfig) -> list[Problem]:
    """The sampling pipeline's declared inputs (src.inference.pipelines): one that is not set, or two set where
    only one may be."""
    from src.inference.pipelines import PIPELINES

    pipeline = PIPELINES.get(_get(cfg, "model._target_"))
    problems = []
    for need in pipeline.inputs if pipeline is not None else ():
        given = [key for key in need.keys if _get(cfg, key) is not None]
        if not given:
            problems.append(Problem(need.keys[0], None, need.expected, need.example))
        elif need.exclusive and len(given) > 1:
            first, extra = given[0], given[1]
            problems.append(Problem(extra, _get(cfg, extra), f"null when {first} is set ({_get(cfg, first)!r}): "
                                    f"give one of {', '.join(need.keys)}", "null"))
    return problems


# --- running the checks ---------------------------------------------------------------------------------------

def rerender_control_rules(cfg: DictConfig) -> list[Problem]:
    """The control maps must be the kind the ControlNet was trained on; Canny's hysteresis needs low <= high."""
    problems = []
    kind, maps = _get(cfg, "model.controlnet.control_type"), _get(cfg, "model.control_map.control_type")
    if maps is not None and kind in RERENDER_CONTROL_TYPES and maps != kind:
        problems.append(Problem("model.control_map.control_type", maps,
                                f"the ControlNet's kind ({kind!r})", "${model.controlnet.control_type}"))
    low, high = _get(cfg, "model.control_map.canny_low"), _get(cfg, "model.control_map.canny_high")
    if nonneg_number(low) and nonneg_number(high) and low > high:
        problems.append(Problem("model.control_map.canny_low", low, f"<= canny_high ({high})", str(min(100, high))))
    return problems


def _get(cfg: Any, key: str) -> Any:
    """The value at `key` (None when absent); an unresolvable interpolation raises a ConfigError naming it."""
    try:
        return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=True)
    except Exception as err:
        raise ConfigError(f"{key}: cannot be resolved ({type(err).__name__}: {err})") from err


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def apply_rules(cfg: DictConfig, rules: Sequence[Rule]) -> list[Problem]:
    problems = []
    for rule in rules:
        value = OmegaConf.select(cfg, rule.key, default=_ABSENT, throw_on_resolution_failure=False)
        if value is _ABSENT:
            continue
        value = _get(cfg, rule.key)
        if not rule.check(value):
            problems.append(Problem(rule.key, _plain(value), rule.expected, rule.example))
    return problems


def _stage_key(cfg: DictConfig, stage: str, key: str) -> str:
    """`stages.<stage>.<key>` when the stage sets that key, else `key` (where the value came from)."""
    set_in_stage = OmegaConf.select(cfg.stages[stage], key, default=_ABSENT, throw_on_resolution_failure=False)
    return key if set_in_stage is _ABSENT else f"stages.{stage}.{key}"


def _stage_problems(cfg: DictConfig, stage: str) -> list[Problem]:
    merged = stage_config(cfg, stage)
    found = apply_rules(merged, TRAINER_RULES + DATA_RULES + MODEL_RULES) + stage_cross_rules(merged, stage)
    return [Problem(_stage_key(cfg, stage, p.key), p.value, p.expected, p.example) for p in found]


def _stages(cfg: DictConfig) -> list[str]:
    stages = _get(cfg, "stages")
    return list(stages.keys()) if isinstance(stages, DictConfig) else []


def _stage_choice(cfg: DictConfig, key: str, value: Any, allow: tuple[str, ...]) -> list[Problem]:
    names = _stages(cfg)
    if value is None and "null" in allow or value in names or value in allow:
        return []
    example = names[-1] if names else "all"
    return [Problem(key, value, f"one of this experiment's stages {names}" + (f" or {allow}" if allow else ""),
                    example)]


def find_problems(cfg: DictConfig, entry: str) -> list[Problem]:
    """Every rule violation of `cfg` as composed for `entry` (train, sample, evaluate or check)."""
    if entry not in ENTRY_POINTS:
        raise ValueError(f"entry={entry!r}: expected one of {ENTRY_POINTS}")
    problems: list[Problem] = []
    if entry == "evaluate":
        problems += apply_rules(cfg, EVAL_RULES) + eval_cross_rules(cfg)
        if isinstance(_get(cfg, "model"), DictConfig):
            problems += apply_rules(cfg, MODEL_RULES)
        return _unique(problems)
    problems += apply_rules(cfg, TRAIN_ROOT_RULES)
    stages = _stages(cfg)
    if entry in ("train", "check"):
        problems += _stage_choice(cfg, "stage", _get(cfg, "stage"), ("all",))
        if not stages and not (entry == "check" and _get(cfg, "rerender") is not None):  # Rerender: no training
            problems.append(Problem("experiment", None, "an experiment with stages", "animate_anyone_demo"))
        for stage in stages:
            problems += _stage_problems(cfg, stage)
    if entry == "sample":
        problems += apply_rules(cfg, SAMPLE_RULES + RERENDER_RULES) + rerender_control_rules(cfg)
        stage = _get(cfg, "sample.stage")
        problems += _stage_choice(cfg, "sample.stage", stage, ("null",))
        problems += input_problems(cfg)
        stage = stage if stage in stages else (stages[-1] if stages else None)
        if stage is not None:
            problems += _stage_problems(cfg, stage)
            merged = stage_config(cfg, stage)
            if _get(cfg, "sample.size") is not None:
                problems += size_fits_model(merged, "sample.size")
            if _get(cfg, "sample.num_frames") is not None:
                problems += frames_fit_model(merged, "sample.num_frames", stage)
    return _unique(problems)


def _unique(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    return out


def check_config(cfg: DictConfig, entry: str) -> None:
    """Raise ConfigError listing every problem of `cfg` for `entry`; return quietly when it is sound."""
    problems = find_problems(cfg, entry)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{len(problems)} bad config value(s); nothing was built:\n{lines}")


def check_config_or_exit(cfg: DictConfig, entry: str) -> None:
    """check_config for entry points: print the problems to stderr and exit with status 2 (usage error)."""
    try:
        check_config(cfg, entry)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
