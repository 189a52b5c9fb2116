"""Writing webdataset shard sets (tar files + manifest.json) and resolving shard specs to paths.

A sample is a dict with `__key__` (no dots or slashes: webdataset splits the key at the first dot)
and one bytes-like value per extension, e.g. `mp4`, `pose.mp4`, `json` (a dict is JSON-encoded),
`mask.npz`. Shards are `<out>/<prefix>-%06d.tar`; `manifest.json` records per-shard sample counts
and bytes, the total, the inputs that were skipped (with reasons) and the creation arguments.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import braceexpand
import numpy as np
import webdataset as wds

from src import atomic_io

__all__ = [
    "add_shard_output_arguments",
    "shard_output_settings",
    "MANIFEST_NAME",
    "ShardSetWriter",
    "encode_npz",
    "list_shards",
    "read_manifest",
    "validate_key",
    "write_shards",
]

MANIFEST_NAME = "manifest.json"
_REMOTE_PREFIXES = ("pipe:", "http://", "https://", "s3://", "gs://", "ais://", "hf://")


def validate_key(key: str) -> str:
    """Return `key` if webdataset can round-trip it as a sample key, else raise ValueError."""
    if not isinstance(key, str) or not key or "." in key or "/" in key or key.startswith("_"):
        raise ValueError(
            f"invalid sample key {key!r}: keys must be non-empty strings without '.' or '/' and must not "
            f"start with '_' (webdataset splits file names at the first dot); replace them, e.g. with '_'"
        )
    return key


def encode_npz(**arrays: np.ndarray) -> bytes:
    """Compressed .npz bytes of the given arrays (for entries such as `mask.npz`)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _encode_value(extension: str, value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if extension.endswith("json"):
        return json.dumps(value, sort_keys=True).encode("utf-8")
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(
        f"sample entry {extension!r} is a {type(value).__name__}; pass bytes (or a dict for 'json' entries)"
    )


class ShardSetWriter:
    """Write samples into size- and count-limited shards, then a manifest (use as a context manager).

    Refuses to mix with an existing shard set of the same prefix unless `overwrite=True`, because
    stale higher-numbered shards would otherwise be read as part of the new set.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        prefix: str = "shard",
        maxcount: int = 1000,
        maxsize: float = 1e9,
        creation_args: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        if maxcount < 1 or maxsize <= 0:
            raise ValueError(f"maxcount must be >= 1 and maxsize > 0, got {maxcount} and {maxsize}")
        self.out_dir = Path(out_dir)
        self.prefix = prefix
        self.maxcount = int(maxcount)
        self.maxsize = float(maxsize)
        self.creation_args = dict(creation_args or {})
        self.out_dir.mkdir(parents=True, exist_ok=True)
        existing = sorted(self.out_dir.glob(f"{prefix}-*.tar"))
        if existing:
            if not overwrite:
                raise FileExistsError(
                    f"{self.out_dir} already holds {len(existing)} '{prefix}-*.tar' shards; choose another "
                    f"output folder or prefix, or pass overwrite=True (--overwrite) to replace them"
                )
            for path in existing:
                path.unlink()
        self._counts: dict[str, int] = {}
        self._keys: set[str] = set()
        self.skipped: list[dict[str, str]] = []
        self._writer = wds.ShardWriter(
            str(self.out_dir / f"{prefix}-%06d.tar"),
            maxcount=self.maxcount,
            maxsize=self.maxsize,
            verbose=0,
            mtime=0.0,
        )
        self._closed = False

    def write(self, sample: dict[str, Any]) -> None:
        """Append one sample; keys must be unique within the set."""
        key = validate_key(sample.get("__key__", ""))
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r}; keys must be unique within a shard set")
        encoded: dict[str, Any] = {"__key__": key}
        for extension, value in sample.items():
            if extension.startswith("__"):
                continue
            encoded[extension] = _encode_value(extension, value)
        self._writer.write(encoded)
        self._keys.add(key)
        name = Path(self._writer.fname).name
        self._counts[name] = self._counts.get(name, 0) + 1

    def skip(self, source: str, reason: str) -> None:
        """Record an input that was not written, with why (goes into the manifest)."""
        self.skipped.append({"source": str(source), "reason": str(reason)})

    def close(self) -> dict[str, Any]:
        """Finish the last shard and write manifest.json; returns the manifest."""
        if self._closed:
            return read_manifest(self.out_dir)
        last = Path(self._writer.fname).name if self._writer.fname else None
        self._writer.close()
        self._closed = True
        if last is not None and last not in self._counts and (self.out_dir / last).exists():
            (self.out_dir / last).unlink()  # ShardWriter opens a first shard even when nothing is written
        shards = [
            {"path": name, "samples": count, "bytes": (self.out_dir / name).stat().st_size}
            for name, count in sorted(self._counts.items())
        ]
        manifest = {
            "prefix": self.prefix,
            "shards": shards,
            "total_samples": sum(s["samples"] for s in shards),
            "total_bytes": sum(s["bytes"] for s in shards),
            "skipped": self.skipped,
            "skip_counts": skip_reason_counts(self.skipped),
            "args": {"maxcount": self.maxcount, "maxsize": self.maxsize, **self.creation_args},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_io.write_json(self.out_dir / MANIFEST_NAME, manifest, default=str)
        return manifest

    def __enter__(self) -> ShardSetWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BadSampleJson(ValueError):
    """A sample's json entry is not valid JSON or not an object; skipped and counted as "bad_json"."""

    reason = "bad_json"


def read_meta(data: bytes) -> dict[str, Any]:
    """A sample's `json` entry as a dict; BadSampleJson for invalid JSON or another type (a list, a number)."""
    try:
        meta = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadSampleJson(f"json is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise BadSampleJson(f"json holds a {type(meta).__name__}, expected an object (fps, caption, ...)")
    return meta


def skip_reason_counts(skipped: list[dict[str, str]]) -> dict[str, int]:
    """Counts per reason kind: the text before the first ':' of each skip's reason ("too_short: 1 frame")."""
    return dict(sorted(Counter(item["reason"].split(":", 1)[0] for item in skipped).items()))


def add_shard_output_arguments(
    parser: argparse.ArgumentParser,
    *,
    prefix: str = "shard",
    prefix_help: str = "shard files are <prefix>-000000.tar",
    overwrite_help: str = "replace existing <prefix>-*.tar in --out",
) -> None:
    """--maxcount, --maxsize, --prefix and --overwrite, as every shard-writing CLI takes them; pass them on with
    `**shard_output_settings(args)`."""
    parser.add_argument("--maxcount", type=int, default=1000, help="max samples per shard")
    parser.add_argument(
        "--maxsize", type=float, default=1e9, help="max bytes per shard (may overshoot by one sample)"
    )
    parser.add_argument("--prefix", default=prefix, help=prefix_help)
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)


def shard_output_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords `add_shard_output_arguments` parsed: maxcount, maxsize, prefix, overwrite."""
    return {
        "maxcount": args.maxcount,
        "maxsize": args.maxsize,
        "prefix": args.prefix,
        "overwrite": args.overwrite,
    }


def write_shards(
    samples: Iterable[dict[str, Any]], out_dir: str | Path, **writer_kwargs: Any
) -> dict[str, Any]:
    """Write all `samples` with a ShardSetWriter and return the manifest."""
    with ShardSetWriter(out_dir, **writer_kwargs) as writer:
        for sample in samples:
            writer.write(sample)
    return read_manifest(out_dir)


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """Parse `<out_dir>/manifest.json`."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in {out_dir}; write the shards with ShardSetWriter/make_shards"
        )
    return json.loads(path.read_text())


def _expand_one(spec: str) -> list[str]:
    if spec.startswith(_REMOTE_PREFIXES):
        return list(braceexpand.braceexpand(spec))
    if os.path.isdir(spec):
        return sorted(glob.glob(os.path.join(glob.escape(spec), "*.tar")))
    paths: list[str] = []
    missing: list[str] = []
    for pattern in braceexpand.braceexpand(os.path.expanduser(spec)):
        if glob.has_magic(pattern):
            paths.extend(sorted(glob.glob(pattern)))
        elif os.path.isfile(pattern):
            paths.append(pattern)
        else:
            missing.append(pattern)
    if paths and missing:
        raise FileNotFoundError(
            f"shard spec {spec!r}: {len(missing)} of its files do not exist (first: {missing[:3]}); "
            f"fix the brace range or the paths"
        )
    return paths


def list_shards(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Resolve a directory (its *.tar, sorted), a glob, a brace pattern ("a-{000000..000009}.tar"),
    a remote url (pipe:, s3://, ...) or a list of those to shard paths; raise if nothing matches."""
    specs = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    paths: list[str] = []
    for item in specs:
        found = _expand_one(os.fspath(item))
        if not found:
            raise FileNotFoundError(
                f"shard spec {os.fspath(item)!r} matched no files; pass a folder of .tar shards, a glob such "
                f"as 'dir/*.tar', a brace pattern such as 'dir/train-{{000000..000009}}.tar', or a list"
            )
        paths.extend(found)
    if not paths:
        raise FileNotFoundError(f"shard spec {spec!r} is an empty list; pass at least one shard")
    return paths
