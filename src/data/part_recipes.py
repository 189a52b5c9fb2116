"""What a frozen part is made of, known without building it: the key a latent cache records for its encoders.

A part's recipe is its model config node (resolved), with every weight file or folder it names replaced by a
content hash (sha256 of the weight and config files). The recipe also holds the model-level sources that
overwrite the part's weights, such as DynamiCrafter's `model.checkpoint`. Two runs whose recipes are the same
build the same frozen weights: a random-init part is built from its `init_seed`, and a loaded part from the
same bytes. So a run from a cache can check the cache without loading its encoders.

Hashing reads every weight file once. The digests are remembered in `file_digests.json` in the cache folder,
keyed on the file's path, size and modification time. The writer fills it, so the training ranks that start
later read the digests instead of reading the files again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src import atomic_io

#: config keys that say where a file came from or how to report it, not what the part computes
META_KEYS = frozenset({"config_key", "published_at", "_partial_"})
#: the files of a weights folder that make the part (a README or a lock file in it changes nothing)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".json", ".txt", ".model")
DIGESTS_FILE = "file_digests.json"
CHUNK = 16 << 20


class DigestMemo:
    """sha256 of files, remembered per (path, size, mtime) in memory and, when given a folder, in its
    `file_digests.json` (ignored when the folder is read-only)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.path = None if folder is None else Path(folder) / DIGESTS_FILE
        self.known: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.is_file():
            try:
                self.known = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.known = {}
        self.changed = False

    def file(self, path: Path) -> str:
        real = os.path.realpath(path)
        stat = os.stat(real)
        entry = self.known.get(real)
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            return entry["sha256"]
        digest = hashlib.sha256()
        with open(real, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        self.known[real] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
        self.changed = True
        return digest.hexdigest()

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        try:
            atomic_io.write_json(self.path, self.known, indent=1)
        except OSError:
            pass  # a read-only cache folder: the digests are recomputed next time
        self.changed = False


def path_digest(path: Path, memo: DigestMemo) -> str:
    """A file's sha256, or a folder's: the names and digests of its weight and config files."""
    if path.is_file():
        return memo.file(path)
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise FileNotFoundError(f"{path} holds no weight or config files ({', '.join(WEIGHT_SUFFIXES)}).")
    listing = [(str(p.relative_to(path)), memo.file(p)) for p in files]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def _recipe(value: Any, where: str, memo: DigestMemo) -> Any:
    """`value` with meta keys dropped and every path replaced by its content digest."""
    if isinstance(value, dict):
        return {k: _recipe(v, f"{where}.{k}", memo) for k, v in sorted(value.items()) if k not in META_KEYS}
    if isinstance(value, list):
        return [_recipe(v, f"{where}[{i}]", memo) for i, v in enumerate(value)]
    if isinstance(value, str) and os.sep in value:
        path = Path(value).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"{where}={value} does not exist: a latent cache is checked against the weights it was made with. "
                f"Put the file there or set {where} to where it is."
            )
        return {"sha256": path_digest(path, memo)}
    return value


def part_fingerprints(
    model: DictConfig, parts: Sequence[str], sources: Sequence[str] = (), memo: DigestMemo | None = None
) -> dict[str, str]:
    """sha256 (16 hex digits) of each frozen part's recipe: `model.<part>`, plus the model-level `sources`."""
    memo = memo or DigestMemo()
    plain = OmegaConf.to_container(model, resolve=True) if isinstance(model, DictConfig) else dict(model)
    shared = {name: _recipe(plain.get(name), f"model.{name}", memo) for name in sources}
    out = {}
    for name in parts:
        recipe = {"part": _recipe(plain.get(name), f"model.{name}", memo), "sources": shared}
        out[name] = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]
    memo.save()
    return out
