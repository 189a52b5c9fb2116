"""Reading the sections of an official DynamiCrafter YAML (plain dicts or OmegaConf containers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _plain(value: Any) -> Any:
    """Convert OmegaConf containers (or any mapping/sequence) into plain dicts/lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def official_params(cfg: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Return the ``params`` mapping of an official YAML section (accepts ``{target, params}`` or params)."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"{what}: expected a mapping (the YAML's params), got {type(cfg).__name__}.")
    plain = _plain(cfg)
    if "params" in plain and isinstance(plain["params"], dict) and set(plain) <= {"target", "params"}:
        plain = plain["params"]
    return plain
