"""Generate-once caching of demo shard sets: `<root>/demo-<hash of the arguments>/{train,heldout}/`.

The generator writes into a temporary folder that is renamed into place when complete, so an interrupted
or concurrent generation never leaves a half-written set that later runs would read. A `stamp.json` holds
the arguments (and whatever the generator reports, e.g. its seeds); a set is reused only if they match.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["STAMP_NAME", "DemoShards", "demo_parser", "describe_shards", "ensure_generated"]

STAMP_NAME = "stamp.json"


@dataclass(frozen=True)
class DemoShards:
    """Shard paths of a generated demo dataset."""

    train: list[str]
    heldout: list[str]
    root: Path


def _shards_of(folder: Path) -> list[str] | None:
    """Shard paths listed in a split's manifest, or None if anything is missing."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    paths = [str(folder / shard["path"]) for shard in manifest.get("shards", [])]
    return paths if all(os.path.isfile(p) for p in paths) else None


def _load(folder: Path, args: dict[str, Any]) -> DemoShards | None:
    try:
        stamp = json.loads((folder / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None
    train, heldout = _shards_of(folder / "train"), _shards_of(folder / "heldout")
    if stamp.get("args") != args or train is None or heldout is None:
        return None
    return DemoShards(train=train, heldout=heldout, root=folder)


def ensure_generated(
    root: str | Path, args: dict[str, Any], write: Callable[[Path], dict[str, Any]]
) -> DemoShards:
    """The demo set for `args` under `root`, calling `write(folder)` to create `folder/train` and
    `folder/heldout` shard sets on first use; `write` returns extra stamp entries (e.g. {"seeds": ...})."""
    digest = hashlib.sha1(json.dumps(args, sort_keys=True).encode()).hexdigest()[:10]
    root = Path(root)
    final = root / f"demo-{digest}"
    existing = _load(final, args)
    if existing is not None:
        return existing
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-demo-{digest}-", dir=root))
    try:
        extra = write(tmp)
        (tmp / STAMP_NAME).write_text(json.dumps({"args": args, **extra}, indent=1))
        if final.exists():  # stale or broken (the valid case returned above); another process may race us
            if _load(final, args) is None:
                shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if _load(final, args) is None:  # not a concurrent writer's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    loaded = _load(final, args)
    if loaded is None:
        raise RuntimeError(
            f"demo shards in {final} are incomplete after generation; delete the folder and retry"
        )
    return loaded


def describe_shards(title: str, shards: DemoShards, list_paths: bool = False) -> str:
    """What the demo CLIs print: the set's folder, then each split's video and shard counts (and paths)."""
    lines = [f"{title}: {shards.root}"]
    for split, paths in (("train", shards.train), ("heldout", shards.heldout)):
        manifest = json.loads((shards.root / split / "manifest.json").read_text())
        lines.append(f"  {split}: {manifest['total_samples']} videos in {len(paths)} shards")
        lines += [f"    {path}" for path in paths] if list_paths else []
    return "\n".join(lines)


#: the integer options both demo generators take
COMMON_INTS = ("num_train_videos", "num_heldout_videos", "num_frames", "fps", "seed", "samples_per_shard")


def demo_parser(doc: str, generate: Callable[..., DemoShards], ints: Sequence[str]) -> argparse.ArgumentParser:
    """The CLI of a demo generator: `--root` and an integer `--<name>` per keyword of `generate` in `ints`, each
    defaulting to `generate`'s own default (so the two cannot disagree); `generate(**vars(parsed))` runs it."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder that holds demo-<hash>/ datasets")
    defaults = inspect.signature(generate).parameters
    for name in ints:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=defaults[name].default)
    return parser
