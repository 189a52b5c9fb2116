"""Partial-run statistics: save a metric's state to a file and merge several files into one result.

A SLURM array splits an evaluation into shards; each shard calls `save_partial_state(metric, path)` after
its updates, and a merge step calls `merge_partial_states(fresh_metric, paths)` then `compute()`. Merging
adds "sum" states (float64 sums for FVD, counts, metric sums) and concatenates "cat" states (features for
KVD) in the order of `paths`, so the result equals one run over the shards' data in that order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from src import atomic_io

MergeKind = Literal["sum", "cat"]
_FORMAT_VERSION = 1


class MergeableMetric(Metric):
    """A torchmetrics Metric whose states are declared as "sum" or "cat", so partial runs can be merged.

    Subclasses register states with `add_mergeable_state` and describe, in `partial_signature()`, every
    setting that must agree between shards (extractor, frame count, data range...).
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._merge_kinds: dict[str, MergeKind] = {}

    def add_mergeable_state(self, name: str, default: Tensor | list, kind: MergeKind) -> None:
        """Register a state synced across ranks by sum (tensors) or concatenation (lists of tensors)."""
        if kind == "sum":
            if not isinstance(default, Tensor):
                raise TypeError(f"sum state {name} needs a tensor default")
            self.add_state(name, default=default, dist_reduce_fx="sum")
        elif kind == "cat":
            if not isinstance(default, list) or default:
                raise TypeError(f"cat state {name} needs an empty list default")
            self.add_state(name, default=[], dist_reduce_fx="cat")
        else:
            raise ValueError(f"unknown merge kind {kind!r}; expected 'sum' or 'cat'")
        self._merge_kinds[name] = kind

    def partial_signature(self) -> dict[str, Any]:
        """Settings that must be equal for partial states to be mergeable; subclasses extend it."""
        return {"metric": type(self).__name__}

    def local_state(self) -> dict[str, Tensor]:
        """This process's state on CPU, "cat" lists concatenated along dim 0 (None when empty)."""
        out: dict[str, Tensor] = {}
        for name, kind in self._merge_kinds.items():
            value = getattr(self, name)
            if kind == "cat":
                if isinstance(value, Tensor):
                    value = [value]
                out[name] = torch.cat(value, dim=0).cpu() if len(value) else None
            else:
                out[name] = value.detach().cpu()
        return out

    def add_partial(self, state: dict[str, Tensor]) -> None:
        """Add one saved state to this metric's state: sums are added, features appended."""
        for name, kind in self._merge_kinds.items():
            if name not in state:
                raise KeyError(f"partial state lacks '{name}'; it was saved by a different metric version")
            value = state[name]
            current = getattr(self, name)
            if kind == "sum":
                setattr(self, name, current + value.to(device=current.device, dtype=current.dtype))
            elif value is not None:
                if isinstance(current, Tensor):
                    current = [current]
                current.append(value.to(self.device))
                setattr(self, name, current)
        self._update_count += 1
        self._computed = None


def save_partial_state(metric: MergeableMetric, path: str | Path) -> Path:
    """Write the metric's local (unsynced) state and signature to `path` (torch.save format)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": _FORMAT_VERSION,
        "signature": metric.partial_signature(),
        "state": metric.local_state(),
    }
    return atomic_io.torch_save(payload, path)


def load_partial_state(path: str | Path) -> dict[str, Any]:
    """Read one partial-state file written by save_partial_state."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"partial metric state '{path}' does not exist; did that shard finish?")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format_version") != _FORMAT_VERSION:
        raise ValueError(
            f"'{path}' has format version {payload.get('format_version')}, expected {_FORMAT_VERSION}"
        )
    return payload


def merge_partial_states(metric: MergeableMetric, paths: Sequence[str | Path]) -> MergeableMetric:
    """Reset `metric` and fill it with the states in `paths` (in that order); returns the metric.

    Every file's signature must equal the metric's, so shards computed with another extractor, frame
    count or data range are refused instead of silently mixed.
    """
    if not paths:
        raise ValueError("merge_partial_states needs at least one partial-state file")
    metric.reset()
    expected = metric.partial_signature()
    for path in paths:
        payload = load_partial_state(path)
        if payload["signature"] != expected:
            raise ValueError(
                f"partial state '{path}' was computed with settings {payload['signature']}, but the merging "
                f"metric has {expected}; merge only shards of the same evaluation config."
            )
        metric.add_partial(payload["state"])
    return metric


def save_partial_bundle(
    metrics: Mapping[str, MergeableMetric], path: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write several metrics' local states (by name) and a plain `extra` dict (counts) to one file.

    One file per shard of an evaluation (`<run>/partial/shard_<i>.pt`), merged by `merge_partial_bundles`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": _FORMAT_VERSION,
        "metrics": {
            name: {"signature": metric.partial_signature(), "state": metric.local_state()}
            for name, metric in metrics.items()
        },
        "extra": extra or {},
    }
    return atomic_io.torch_save(payload, path)  # a crashed shard never leaves a half-written file that merges


def merge_partial_bundles(metrics: Mapping[str, MergeableMetric], paths: Sequence[str | Path]) -> list[dict]:
    """Reset `metrics` and add every bundle's states in the order of `paths`; returns the bundles' extras.

    Each metric's saved signature must equal the merging metric's, and every bundle must hold exactly the
    merging set of metric names.
    """
    if not paths:
        raise ValueError("merge_partial_bundles needs at least one partial-state file")
    for metric in metrics.values():
        metric.reset()
    extras = []
    for path in paths:
        payload = load_partial_state(path)
        saved = payload.get("metrics", {})
        if set(saved) != set(metrics):
            raise ValueError(
                f"partial state '{path}' holds metrics {sorted(saved)}, but the merge expects {sorted(metrics)}; "
                f"merge only shards of the same evaluation config."
            )
        for name, metric in metrics.items():
            expected = metric.partial_signature()
            if saved[name]["signature"] != expected:
                raise ValueError(
                    f"partial state '{path}' computed {name} with settings {saved[name]['signature']}, but the "
                    f"merging metric has {expected}; merge only shards of the same evaluation config."
                )
            metric.add_partial(saved[name]["state"])
        extras.append(payload.get("extra", {}))
    return extras
