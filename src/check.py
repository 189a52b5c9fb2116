"""The weights doctor: `python -m src.check experiment=NAME [eval=PROTOCOL] [overrides]`.

Lists every pretrained file the composed experiment and its evaluation protocol need: the config key that
sets it, the expected path, present or missing, whether its tensor names and shapes match what the
configured model expects (read from the safetensors header or a memory-mapped torch file, with the model
built on the meta device: no weights are loaded, no memory is allocated), and where such a file is published.
Exits 1 when anything is missing, unreadable or mismatched, 2 on a bad config; it takes seconds.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.config import register_resolvers, stage_config
from src.config_checks import check_config_or_exit
from src.models.weight_files import compare_shapes, read_shapes
from src.pretrained_files import Slot, find_slots, trained_weight_slots

register_resolvers()
log = logging.getLogger(__name__)

@dataclass
class Finding:
    slot: Slot
    status: str  # ok | missing | unreadable | mismatch | present
    detail: str

    @property
    def problem(self) -> bool:
        return self.status in ("missing", "unreadable", "mismatch")


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
