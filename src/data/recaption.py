"""Add motion and scene captions from a captions table to caption-video shards (the paper's re-captioning).

The table (CSV / TSV, optionally .gz, or parquet when pyarrow is installed) is keyed by video id, such as a
motion-annotation release (WebVid-10M-motion: `--motion-column dynamic_wording`) or a captioner's output.
Each sample of the input shards is copied into a new shard set: every field byte for byte except `json`,
which keeps `caption` (the original) and gains `motion_caption` / `scene_caption` where the table has a
non-empty value for the sample's `videoid` (values in --null-values, e.g. "none", count as absent).
Samples without a new caption are kept unchanged and counted; the manifest's `recaption` entry has the
counts and the first uncaptioned ids, and `uncaptioned_ids.txt` lists them all. Format: notes in dc_format.

    python -m src.data.recaption --shards shards/webvid_train --captions webvid10m_motion.csv \\
        --motion-column dynamic_wording --out shards/webvid_train_motion
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webdataset.tariterators import tarfile_samples

from src import atomic_io
from src.data.shards import (
    MANIFEST_NAME,
    BadSampleJson,
    ShardSetWriter,
    add_shard_output_arguments,
    list_shards,
    read_meta,
    shard_output_settings,
)

__all__ = [
    "CAPTION_FIELDS",
    "DEFAULT_NULL_VALUES",
    "CaptionTable",
    "main",
    "read_captions_table",
    "recaption_shards",
]

CAPTION_FIELDS = ("motion_caption", "scene_caption")
DEFAULT_NULL_VALUES = ("", "nan", "none", "null", "n/a")
UNCAPTIONED_FILE = "uncaptioned_ids.txt"
_SHOWN_IDS = 20


@dataclass
class CaptionTable:
    """New captions per video id (only non-null values), plus what reading the table found."""

    captions: dict[str, dict[str, str]]
    columns: dict[str, str]  # json field -> table column
    rows: int = 0
    duplicate_ids: int = 0
    source: str = ""
    used_ids: set[str] = field(default_factory=set)


def _open_csv(path: Path) -> tuple[io.TextIOBase, csv.DictReader]:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    delimiter = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    handle = opener(path, "rt", newline="", encoding="utf-8-sig")
    reader = csv.DictReader(handle, delimiter=delimiter)
    reader.fieldnames = [c.strip() for c in (reader.fieldnames or [])]
    return handle, reader


def _parquet_columns(
    path: Path, wanted: Callable[[list[str]], list[str]]
) -> tuple[list[str], Iterator[dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(
            f"reading the parquet table {path} needs pyarrow, which is not installed in this environment; "
            f"`pip install pyarrow`, or convert the table to CSV (e.g. with any parquet tool) and pass that"
        ) from exc
    columns = list(pq.read_schema(path).names)
    table = pq.read_table(path, columns=wanted(columns)).to_pydict()
    names = list(table)
    return columns, (dict(zip(names, values)) for values in zip(*(table[n] for n in names)))


def _choose_columns(
    columns: list[str], path: Path, id_column: str, motion_column: str | None, scene_column: str | None
) -> dict[str, str]:
    if id_column not in columns:
        raise ValueError(
            f"captions table {path} has no id column {id_column!r} (it has {columns}); name it with --id-column"
        )
    chosen: dict[str, str] = {}
    for name, given, flag in (
        ("motion_caption", motion_column, "--motion-column"),
        ("scene_caption", scene_column, "--scene-column"),
    ):
        if given is not None and given not in columns:
            raise ValueError(f"captions table {path} has no column {given!r} ({flag}); it has {columns}")
        column = given if given is not None else (name if name in columns else None)
        if column is not None:
            chosen[name] = column
    if not chosen:
        raise ValueError(
            f"captions table {path} has neither a 'motion_caption' nor a 'scene_caption' column (it has "
            f"{columns}); name the caption columns with --motion-column / --scene-column (WebVid-10M-motion: "
            f"--motion-column dynamic_wording)"
        )
    return chosen


def read_captions_table(
    path: str | Path,
    *,
    id_column: str = "videoid",
    motion_column: str | None = None,
    scene_column: str | None = None,
    null_values: Sequence[str] = DEFAULT_NULL_VALUES,
) -> CaptionTable:
    """Read the id and caption columns (default: `motion_caption` / `scene_caption` where present).

    The first row of a repeated id wins; values that are missing or whose stripped, lower-cased text is
    in `null_values` are treated as absent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"captions table {path} does not exist; pass --captions with a CSV or parquet file"
        )
    nulls = {value.strip().lower() for value in null_values}
    suffixes = [s.lower() for s in path.suffixes]
    holder: dict[str, dict[str, str]] = {}

    def wanted(columns: list[str]) -> list[str]:
        holder["chosen"] = _choose_columns(columns, path, id_column, motion_column, scene_column)
        return list(dict.fromkeys([id_column, *holder["chosen"].values()]))

    handle = None
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        _, records = _parquet_columns(path, wanted)
    elif any(s in (".csv", ".tsv") for s in suffixes[-2:]):
        handle, reader = _open_csv(path)
        try:
            wanted(list(reader.fieldnames or []))
        except ValueError:
            handle.close()
            raise
        records = iter(reader)
    else:
        raise ValueError(
            f"captions table {path}: unknown format; use .csv, .tsv (optionally .gz) or .parquet/.pq"
        )
    try:
        return _collect(records, path, id_column, holder["chosen"], nulls)
    finally:
        if handle is not None:
            handle.close()


def _collect(
    records: Iterator[dict[str, Any]], path: Path, id_column: str, chosen: dict[str, str], nulls: set[str]
) -> CaptionTable:
    table = CaptionTable(captions={}, columns=chosen, source=str(path))
    for record in records:
        table.rows += 1
        raw_id = record.get(id_column)
        videoid = "" if raw_id is None else str(raw_id).strip()
        if not videoid:
            continue
        if videoid in table.captions:
            table.duplicate_ids += 1
            continue
        values = {}
        for name, column in chosen.items():
            value = record.get(column)
            text = "" if value is None else str(value).strip()
            if text.lower() not in nulls:
                values[name] = text
        table.captions[videoid] = values
    return table


def _samples(path: str) -> Iterator[dict[str, Any]]:
    yield from tarfile_samples([{"url": path}])


def _guard_output(paths: Sequence[str], out: Path) -> None:
    out_resolved = out.resolve()
    inside = [p for p in paths if Path(p).resolve().parent == out_resolved]
    if inside:
        raise ValueError(
            f"--out {out} holds the input shards ({Path(inside[0]).name}, ...); writing there would delete "
            f"them; choose a new folder for the re-captioned shard set"
        )


def recaption_shards(
    shards: str | os.PathLike | Sequence[str | os.PathLike],
    table: CaptionTable,
    out: str | Path,
    *,
    prefix: str = "shard",
    maxcount: int = 1000,
    maxsize: float = 1e9,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write the re-captioned copy of `shards` into `out`; returns the manifest (with a `recaption` entry)."""
    paths = list_shards(shards)
    out = Path(out)
    _guard_output(paths, out)
    counts = {"samples": 0, "with_new_caption": 0, "without_new_caption": 0}
    counts.update({f"with_{name}": 0 for name in CAPTION_FIELDS})
    uncaptioned: list[str] = []
    creation_args = {
        "shards": [str(p) for p in paths],
        "captions": table.source,
        "columns": table.columns,
    }
    log(f"[recaption] {len(paths)} shards, {len(table.captions)} captioned ids in {table.source} -> {out}")
    with ShardSetWriter(
        out,
        prefix=prefix,
        maxcount=maxcount,
        maxsize=maxsize,
        creation_args=creation_args,
        overwrite=overwrite,
    ) as writer:
        for number, path in enumerate(paths, start=1):
            for sample in _samples(path):
                key = sample["__key__"]
                if "json" not in sample:
                    writer.skip(
                        f"{Path(path).name}:{key}", "missing_json: no json entry; write shards with src.data.webvid"
                    )
                    continue
                try:
                    meta = read_meta(sample["json"])
                except BadSampleJson as exc:
                    writer.skip(f"{Path(path).name}:{key}", f"bad_json: {exc}")
                    continue
                videoid = str(meta.get("videoid") or key)
                new = table.captions.get(videoid, {})
                if new:
                    table.used_ids.add(videoid)
                    meta.update(new)
                    counts["with_new_caption"] += 1
                else:
                    counts["without_new_caption"] += 1
                    uncaptioned.append(videoid)
                for name in CAPTION_FIELDS:
                    counts[f"with_{name}"] += name in new
                counts["samples"] += 1
                copied = {ext: value for ext, value in sample.items() if not ext.startswith("__")}
                writer.write({**copied, "__key__": key, "json": meta})
            log(
                f"[recaption] shard {number}/{len(paths)} {Path(path).name}: {counts['samples']} samples so far, "
                f"{counts['with_new_caption']} with new captions"
            )
    manifest = writer.close()
    atomic_io.write_text(out / UNCAPTIONED_FILE, "".join(f"{videoid}\n" for videoid in uncaptioned))
    manifest["recaption"] = {
        **counts,
        "uncaptioned_ids_first": uncaptioned[:_SHOWN_IDS],
        "uncaptioned_ids_file": UNCAPTIONED_FILE,
        "table_rows": table.rows,
        "table_ids": len(table.captions),
        "table_duplicate_ids": table.duplicate_ids,
        "table_ids_matched": len(table.used_ids),
    }
    atomic_io.write_json(out / MANIFEST_NAME, manifest, default=str)
    log(
        f"[recaption] {counts['samples']} samples: {counts['with_new_caption']} with new captions "
        f"(motion {counts['with_motion_caption']}, scene {counts['with_scene_caption']}), "
        f"{counts['without_new_caption']} kept with only the original caption (ids in {out / UNCAPTIONED_FILE})"
    )
    return manifest


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the docstring's layout and show each option's default."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument(
        "--shards", required=True, nargs="+", help="input shards: folder, glob or brace pattern"
    )
    parser.add_argument("--captions", required=True, help="captions table: .csv/.tsv[.gz] or .parquet")
    parser.add_argument("--out", required=True, help="output folder for the re-captioned shards")
    parser.add_argument("--id-column", default="videoid", help="table column matching the samples' videoid")
    parser.add_argument(
        "--motion-column", default=None, help="column with motion captions (default: motion_caption)"
    )
    parser.add_argument(
        "--scene-column", default=None, help="column with scene captions (default: scene_caption)"
    )
    parser.add_argument(
        "--null-values",
        default=",".join(DEFAULT_NULL_VALUES),
        help="comma-separated values that mean 'no caption' (case-insensitive)",
    )
    add_shard_output_arguments(parser)
    args = parser.parse_args(argv)
    table = read_captions_table(
        args.captions,
        id_column=args.id_column,
        motion_column=args.motion_column,
        scene_column=args.scene_column,
        null_values=args.null_values.split(","),
    )
    shards = args.shards[0] if len(args.shards) == 1 else args.shards
    recaption_shards(shards, table, args.out, **shard_output_settings(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
