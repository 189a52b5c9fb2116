"""Which videos a protocol scores when it scores fewer than the set holds (`eval.subset`).

UCF-101 names sort by class (`v_<Class>_gNN_cNN`), so "the first 2048 by name" covers about 15 of 101
classes. The default is a seeded random sample, stratified by class when `stratify` is a regex whose
first group is a key's class: each class gets its share of the sample (largest remainders), drawn at
random within the class. The selection depends only on the set of keys, the size and the seed, never on
listing order, shard or world size; it is returned sorted, and recorded in metrics.json.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RULES = ("random", "first", "keys_file")


@dataclass(frozen=True)
class SubsetRule:
    """How `num_samples` of a set are chosen: `random` (seeded, optionally stratified), `first` (sorted by
    name, the rule before this existed) or `keys_file` (the keys listed in a file, e.g. an earlier
    metrics.json, so another run or group scores exactly the same set)."""

    rule: str = "random"
    seed: int = 0
    stratify: str | None = None
    keys_file: str | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"eval.subset.rule={self.rule!r}; expected one of {RULES}")
        if self.rule == "keys_file" and not self.keys_file:
            raise ValueError("eval.subset.rule=keys_file needs eval.subset.keys_file (a JSON list or a metrics.json)")
        if self.stratify is not None and re.compile(self.stratify).groups < 1:
            raise ValueError(
                f"eval.subset.stratify={self.stratify!r} has no group; write the class as the first group, "
                r"e.g. '^v_(.+)_g\d+_c\d+$' for UCF-101"
            )

    def describe(self) -> dict[str, Any]:
        return {"rule": self.rule, "seed": self.seed, "stratify": self.stratify, "keys_file": self.keys_file}


def class_of(key: str, pattern: str) -> str:
    """The class of `key` (the first group of `pattern`); an error naming the key when it does not match."""
    match = re.search(pattern, key)
    if match is None:
        raise ValueError(
            f"video name {key!r} does not match eval.subset.stratify={pattern!r}, so its class is unknown; "
            "fix the pattern or set eval.subset.stratify=null"
        )
    return match.group(1)


def _quotas(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Per-class sample sizes summing to `n`, proportional to class sizes (largest remainders, ties by name)."""
    total = sum(sizes.values())
    exact = {c: n * s / total for c, s in sizes.items()}
    quotas = {c: int(v) for c, v in exact.items()}
    order = sorted(sizes, key=lambda c: (-(exact[c] - quotas[c]), c))
    for c in order[: n - sum(quotas.values())]:
        quotas[c] += 1
    return quotas


def _keys_from_file(path: str, side: str) -> list[str]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"eval.subset.keys_file {file} does not exist")
    data = json.loads(file.read_text())
    if isinstance(data, dict):  # a metrics.json written by an earlier run
        data = (data.get("subset") or {}).get(f"{side}_keys")
    if not isinstance(data, list) or not all(isinstance(k, str) for k in data):
        raise ValueError(
            f"eval.subset.keys_file {file} must hold a JSON list of names or a metrics.json with subset.{side}_keys"
        )
    return data


def select_keys(keys: Sequence[str], n: int | None, rule: SubsetRule, side: str = "generated") -> list[str]:
    """`n` of `keys` (all for None or n >= len) by `rule`, sorted by name."""
    population = sorted(set(keys))
    if rule.rule == "keys_file":
        wanted = _keys_from_file(str(rule.keys_file), side)
        missing = sorted(set(wanted) - set(population))
        if missing:
            raise ValueError(
                f"{len(missing)} names of eval.subset.keys_file are not among the {side} videos, e.g. {missing[:3]}"
            )
        return sorted(wanted)
    if n is None or n >= len(population):
        return population
    if n < 1:
        raise ValueError(f"eval.num_samples / eval.num_real must be >= 1 or null, got {n}")
    if rule.rule == "first":
        return population[:n]
    rng = np.random.default_rng(int(rule.seed))
    if rule.stratify is None:
        return sorted(population[i] for i in rng.choice(len(population), size=n, replace=False))
    by_class: dict[str, list[str]] = defaultdict(list)
    for key in population:
        by_class[class_of(key, rule.stratify)].append(key)
    quotas = _quotas({c: len(v) for c, v in by_class.items()}, n)
    chosen: list[str] = []
    for cls in sorted(by_class):
        members = by_class[cls]
        chosen.extend(members[i] for i in rng.choice(len(members), size=quotas[cls], replace=False))
    return sorted(chosen)
