"""Build the protocol's metrics from config and say what each one's `update()` needs.

`eval.metrics` maps a name to a `_target_` spec of a MergeableMetric (src/eval/*); a null entry drops
that metric (`eval.metrics.lpips=null`). What a metric consumes is its input kind, known for the
project's metrics and settable with an `inputs:` key for others:

- "unpaired": real and generated videos as two sets (FVD, KVD): `update(videos, real=bool)`
- "paired": a generated video and the real clip of the same name (SSIM, PSNR, LPIPS): `update(gen, real)`
- "conditioned": a generated video and its conditioning image, the real clip's first frame (PIC)
- "generated": generated videos alone (Tem-Con, Pixel-MSE): `update(videos)`
- "prompted": generated videos with source and target prompts (Fram-Acc)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.eval.feature_stats import MergeableMetric

InputKind = Literal["unpaired", "paired", "conditioned", "generated", "prompted"]
INPUT_KINDS: tuple[str, ...] = ("unpaired", "paired", "conditioned", "generated", "prompted")
_KNOWN_KINDS: dict[str, InputKind] = {
    "FrechetVideoDistance": "unpaired",
    "KernelVideoDistance": "unpaired",
    "VideoSSIM": "paired",
    "VideoPSNR": "paired",
    "VideoLPIPS": "paired",
    "PerceptualInputConformity": "conditioned",
    "TemporalConsistency": "generated",
    "WarpedPixelMSE": "generated",
    "FrameAccuracy": "prompted",
}


@dataclass
class ConfiguredMetric:
    """A metric instance with its config name and input kind; paired metrics skip clip frame `drop_frame`
    when it is set (the reference frame, src/eval/reference_frame.py)."""

    name: str
    metric: MergeableMetric
    inputs: InputKind
    drop_frame: int | None = None

    @property
    def higher_is_better(self) -> bool | None:
        return getattr(self.metric, "higher_is_better", None)


def _kind_of(metric: MergeableMetric, name: str) -> InputKind:
    for cls in type(metric).__mro__:
        if cls.__name__ in _KNOWN_KINDS:
            return _KNOWN_KINDS[cls.__name__]
    raise ValueError(
        f"eval.metrics.{name} ({type(metric).__name__}) has no known input kind; add `inputs:` with one of "
        f"{INPUT_KINDS} to its config"
    )


def instantiate_unwrapped(spec: Any) -> Any:
    """hydra's instantiate, re-raising the target's own error (e.g. a missing weights file naming its config
    key) instead of Hydra's InstantiationException wrapper, so the message a user sees is the useful one."""
    try:
        return instantiate(spec)
    except InstantiationException as error:
        if error.__cause__ is not None:
            raise error.__cause__ from None
        raise


def build_metrics(specs: DictConfig | Mapping[str, Any], device: torch.device) -> dict[str, ConfiguredMetric]:
    """Instantiate every non-null entry of `eval.metrics`, in config order, on `device`."""
    plain = OmegaConf.to_container(specs, resolve=True) if isinstance(specs, DictConfig) else dict(specs)
    metrics: dict[str, ConfiguredMetric] = {}
    for name, spec in plain.items():
        if spec is None:
            continue
        if not isinstance(spec, dict) or "_target_" not in spec:
            raise ValueError(f"eval.metrics.{name} must be a mapping with a _target_ (a metric class), got {spec!r}")
        spec = dict(spec)
        inputs = spec.pop("inputs", None)
        metric = instantiate_unwrapped(spec)
        if not isinstance(metric, MergeableMetric):
            raise TypeError(
                f"eval.metrics.{name} built a {type(metric).__name__}; evaluation metrics must be "
                f"src.eval.feature_stats.MergeableMetric subclasses so shards can be merged"
            )
        kind = inputs or _kind_of(metric, name)
        if kind not in INPUT_KINDS:
            raise ValueError(f"eval.metrics.{name}.inputs={kind!r}; expected one of {INPUT_KINDS}")
        metrics[name] = ConfiguredMetric(name, metric.to(device), kind)
    if not metrics:
        raise ValueError("eval.metrics is empty: the protocol must name at least one metric")
    return metrics


def metric_values(configured: ConfiguredMetric) -> dict[str, float]:
    """compute() as floats: a scalar under the metric's name; (mean, std) as name and name_std (KVD)."""
    value = configured.metric.compute()
    name = configured.name
    if isinstance(value, tuple):
        out = {name: float(value[0])}
        if len(value) > 1:
            out[f"{name}_std"] = float(value[1])
    else:
        out = {name: float(value)}
    skipped = getattr(configured.metric, "skipped_videos", None)
    if isinstance(skipped, torch.Tensor):
        out[f"{name}_skipped_videos"] = float(skipped)
    return out
