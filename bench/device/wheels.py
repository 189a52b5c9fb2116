"""The wheels a lent GPU machine lacks, gathered here so that `bench/device/run.sh` installs the project there in one
call (that machine has its own torch and reaches no package registry).

The set is the project's dependency closure as installed in this environment (the versions the test suite ran
with), less every distribution the machine's image already has (`image_packages.txt`). Each is fetched as a
CPython 3.12 manylinux x86-64 wheel, or built here when the registry has only a source archive (only pure-Python
builds are accepted: a compiled one would be for this machine, not that one). The total must leave room in the
64 MiB the device tool carries.

    python bench/device/wheels.py [--out .whl] [--extra dev] [--dry-run]

Then, with a GPU lent: `run` with `carry=[".whl"]` and command `bash bench/device/run.sh` (see the README).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PROJECT = "i2v-framework"
# Left behind by default (with whatever only they need): the suite and the GPU tests log to CSV, and W&B's wheels
# and dependencies would take about a third of what the device tool carries.
SKIP = ("wandb",)
CARRY_LIMIT_MIB = 64
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]
# The machine's interpreter, for evaluating dependency markers.
TARGET_ENV = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
              "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
              "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def image_packages(path: Path = HERE / "image_packages.txt") -> set[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return {canonicalize_name(line) for line in lines if line and not line.startswith("#")}


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**TARGET_ENV, "extra": extra}) for extra in (extras or {""}))


def closure(
    root: str = PROJECT, extras: tuple[str, ...] = (), skip: tuple[str, ...] = (), present: frozenset[str] = frozenset()
) -> dict[str, str]:
    """canonical name -> installed version of `root` and everything it needs on the target interpreter (with the
    requested extras of each), not descending into `skip` nor into what is `present` there (those bring their own
    dependencies). Raises if a needed distribution is not installed here: its version is unknown."""
    skipped = {canonicalize_name(name) for name in skip}
    found: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [(root, set(extras))]
    missing: list[str] = []
    while todo:
        name, wanted = todo.pop()
        key = canonicalize_name(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        first_visit = key not in found
        found[key] = dist.version
        if key in present:
            continue
        for line in dist.requires or []:
            req = Requirement(line)
            if canonicalize_name(req.name) in skipped:
                continue
            if _applies(req, wanted) and (first_visit or req.marker is not None):
                if canonicalize_name(req.name) not in found or req.extras:
                    todo.append((req.name, set(req.extras)))
    if missing:
        raise SystemExit(f"needed on the GPU machine but not installed here (so no version to pin): "
                         f"{', '.join(sorted(set(missing)))}. Install the project here first: pip install -e '.[dev]'")
    return found


def wanted(extras: tuple[str, ...] = (), skip: tuple[str, ...] = SKIP) -> dict[str, str]:
    """The distributions to carry: the closure less the image's and less the project itself (it travels as
    source; run.sh puts the checkout on PYTHONPATH)."""
    have = image_packages()
    return {k: v for k, v in sorted(closure(PROJECT, extras, skip, frozenset(have)).items()) if k not in have and k != PROJECT}


def fetch(name: str, version: str, out: Path) -> None:
    spec = f"{name}=={version}"
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", "-d", str(out), spec]
    for platform in PLATFORMS:
        cmd[-1:-1] = ["--platform", platform]
    if subprocess.run(cmd, capture_output=True, text=True).returncode == 0:
        return
    # no wheel on the registry: build one here; only pure-Python builds can serve another machine
    before = set(out.glob("*.whl"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), spec],
                           capture_output=True, text=True)
    built = set(out.glob("*.whl")) - before
    if build.returncode != 0 or not built:
        raise SystemExit(f"{spec}: no CPython 3.12 manylinux wheel and no buildable source:\n{build.stderr[-2000:]}")
    for wheel in built:
        if not wheel.name.endswith("-none-any.whl"):
            wheel.unlink()
            raise SystemExit(f"{spec}: only a source archive exists and it builds a compiled wheel ({wheel.name}) "
                             "for this machine; build it on one like the GPU machine instead.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".whl")
    parser.add_argument("--extra", action="append", default=[], help="the project's extras to include (dev, ...)")
    parser.add_argument("--skip", nargs="*", default=list(SKIP), help="distributions to leave behind (default: wandb)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be carried, fetch nothing")
    args = parser.parse_args(argv)
    carry = wanted(tuple(args.extra), tuple(args.skip))
    print(f"{len(carry)} distributions the GPU image lacks: " + ", ".join(f"{k}=={v}" for k, v in carry.items()))
    if args.dry_run:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.whl"):  # one version of each: two stop the whole install there
        old.unlink()
    for name, version in carry.items():
        fetch(name, version, args.out)
    wheels = sorted(args.out.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels) / 2**20
    for wheel in wheels:
        print(f"  {wheel.stat().st_size / 2**20:6.1f} MiB  {wheel.name}")
    print(f"{len(wheels)} wheels, {total:.1f} MiB in {args.out} (the device tool carries {CARRY_LIMIT_MIB} MiB with "
          "the checkout)")
    if total > CARRY_LIMIT_MIB - 8:
        print("too large to travel with the checkout: drop an extra or carry fewer", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
