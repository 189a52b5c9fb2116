"""Local pretrained-file lookup for the evaluation metrics.

Nothing is downloaded at run time: every metric takes the path of its pretrained file from config and
calls `require_weight_file` first, so a missing file fails early with the file, the config key that sets
it and where such a file is published.
"""

from __future__ import annotations

from pathlib import Path


class MissingWeightFileError(FileNotFoundError):
    """A pretrained file named in config is absent; the message says which key to set and where to get it."""


def require_weight_file(path: str | Path | None, config_key: str, published_at: str) -> Path:
    """Return `path` as a Path if it exists, else raise MissingWeightFileError naming key and source.

    Works for files and folders (DreamSim's checkpoint folder is a directory).
    """
    if path is None or str(path) == "":
        raise MissingWeightFileError(
            f"No path is set for the pretrained file of `{config_key}`. Set `{config_key}` to a local copy; "
            f"it is published at {published_at}."
        )
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise MissingWeightFileError(
            f"Pretrained file '{resolved}' (config key `{config_key}`) does not exist. Download it from "
            f"{published_at}, place it there (or point `{config_key}` at your copy); nothing is downloaded "
            f"at run time."
        )
    return resolved
