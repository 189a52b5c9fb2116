"""Overrides files for `slurm/array.sbatch`: a Hydra multirun spec -> one line of overrides per array task.

    python -m src.slurm_overrides sweep.txt 'model.lr=1e-5,3e-5' 'seed=1,2' --parallel 2
writes the cartesian product (4 lines, shell-quoted: `model.lr=1e-5 seed=1`, ...) and prints
    sbatch --array=0-3%2 slurm/array.sbatch sweep.txt
The sweep syntax is Hydra's (`a=1,2`, `range(0,4)`, `choice(x,y)`, quoted values); `array.sbatch` reads
its line back with `python -m src.slurm_overrides --task FILE I` (one override per output line, no eval).
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from src import atomic_io


def expand_sweep(spec: Sequence[str]) -> list[list[str]]:
    """The cartesian product of a multirun spec, in Hydra's order (the last key varies fastest)."""
    overrides = OverridesParser.create().parse_overrides(list(spec))
    axes: list[list[str]] = []
    for override in overrides:
        if override.is_sweep_override():
            if override.is_hydra_override():
                raise ValueError(f"{override.input_line!r}: hydra.* settings cannot be swept here.")
            key = override.get_key_element()
            try:
                values = list(override.sweep_string_iterator())
            except Exception as exc:  # e.g. glob() needs the config tree, which this tool does not load
                raise ValueError(
                    f"cannot expand {override.input_line!r} ({exc}); list the values instead, e.g. key=a,b,c"
                ) from exc
            axes.append([f"{key}={value}" for value in values])
        else:
            axes.append([override.input_line])
    return [list(combo) for combo in itertools.product(*axes)]


def format_task_line(overrides: Sequence[str]) -> str:
    """One task's overrides as a shell-quoted line (so values with spaces or quotes survive)."""
    for item in overrides:
        if "\n" in item or "\r" in item:
            raise ValueError(
                f"override {item!r} contains a line break; one task is one line of the overrides file."
            )
    return shlex.join(overrides)


def write_overrides_file(path: Path, tasks: Sequence[Sequence[str]]) -> Path:
    """Writes one line per task; line i (from 0) is array task i."""
    if not tasks:
        raise ValueError("the sweep is empty: give at least one override (e.g. seed=1,2).")
    return atomic_io.write_text(Path(path), "".join(format_task_line(t) + "\n" for t in tasks))


def read_task(path: Path, index: int) -> list[str]:
    """The overrides of array task `index` (line `index` from 0; blank lines and `#` comments count as lines)."""
    lines = Path(path).read_text().splitlines()
    if not 0 <= index < len(lines):
        raise IndexError(
            f"array task {index} has no line in {path} ({len(lines)} lines); submit with --array=0-{len(lines) - 1}."
        )
    line = lines[index].strip()
    return [] if line.startswith("#") else shlex.split(line)


def sbatch_command(
    path: Path, num_tasks: int, parallel: int | None, script: str = "slurm/array.sbatch"
) -> str:
    """`sbatch --array=0-(n-1)[%K] slurm/array.sbatch FILE` for a file of `num_tasks` lines."""
    if num_tasks < 1:
        raise ValueError("need at least one task")
    throttle = f"%{parallel}" if parallel else ""
    return f"sbatch --array=0-{num_tasks - 1}{throttle} {script} {shlex.quote(str(path))}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.slurm_overrides", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--task", nargs=2, metavar=("FILE", "INDEX"), help="print the overrides of one task, one per line"
    )
    parser.add_argument(
        "--parallel", type=int, default=None, help="at most K tasks at once (sbatch --array=...%%K)"
    )
    parser.add_argument("file", nargs="?", type=Path, help="the overrides file to write")
    parser.add_argument(
        "spec", nargs="*", help="Hydra multirun overrides, e.g. 'model.lr=1e-5,3e-5' 'seed=1,2'"
    )
    args = parser.parse_args(argv)
    if args.task:
        for item in read_task(Path(args.task[0]), int(args.task[1])):
            print(item)
        return 0
    if args.file is None or not args.spec:
        parser.error("give the overrides file to write and a sweep spec, e.g. sweep.txt 'seed=1,2'")
    if args.parallel is not None and args.parallel < 1:
        parser.error("--parallel must be >= 1")
    tasks = expand_sweep(args.spec)
    write_overrides_file(args.file, tasks)
    print(f"# {len(tasks)} tasks written to {args.file}", file=sys.stderr)
    print(sbatch_command(args.file, len(tasks), args.parallel))
    return 0


if __name__ == "__main__":
    sys.exit(main())
