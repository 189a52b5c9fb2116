"""Reading the sections of an official DynamiCrafter YAML (plain dicts or OmegaConf containers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from src.config import to_plain


def official_params(cfg: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Return the ``params`` mapping of an official YAML section (accepts ``{target, params}`` or params)."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"{what}: expected a mapping (the YAML's params), got {type(cfg).__name__}.")
    plain = to_plain(cfg)
    if "params" in plain and isinstance(plain["params"], dict) and set(plain) <= {"target", "params"}:
        plain = plain["params"]
    return plain
