"""Atomic file writes: a reader (or a rerun after SIGKILL, power loss or a full disk) sees the old file or the
new one, never half of one.

Every file the framework must be able to read back after a crash goes through `atomic_path`: checkpoints,
stage weights, `stage.json`, `summary.json`, exports, evaluation partial states and generated videos. The
data is written to a hidden temporary name in the *same directory* (so the final rename never crosses file
systems, unlike a temp file under /tmp), flushed and fsynced, then renamed over the real name with
`os.replace` (atomic on POSIX), and the directory entry is fsynced. On any error the temporary file is
removed and the real name keeps its previous content; a write error (disk full, quota, file-size limit) is
re-raised as `AtomicWriteError` naming the file and saying the previous version is intact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TMP_MARK = ".tmp-"  # temporary names: `.<name>.tmp-<pid>`; a killed writer leaves one, never a half real file


class AtomicWriteError(OSError):
    """Writing a file failed; the previous content under its real name (if any) is untouched."""


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open directories; the rename itself still happened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe(err: OSError, path: Path) -> str:
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EFBIG: "the file-size limit was reached",
    }.get(err.errno or -1, f"{type(err).__name__}: {err}")
    kept = "its previous version is kept" if path.exists() else "no file was written under that name"
    return (
        f"could not write {path}: {reason}; {kept} (the partial temporary file was removed). "
        "Free space or point the output elsewhere (e.g. hydra.run.dir=...), then rerun."
    )


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete what killed writers of `path` left (`.<name>.tmp-<pid>`): one writer per file, so none is live."""
    removed = []
    for stale in path.parent.glob(f".{path.name}{TMP_MARK}*"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed.append(stale)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path` for a writer that takes a file name (safetensors, torch.save,
    PyAV); on a clean exit it is fsynced and renamed onto `path`, on an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer did not create {tmp} (the temporary file for {path}).")
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(err, OSError) and not isinstance(err, AtomicWriteError) and err.errno is not None:
            raise AtomicWriteError(err.errno, _describe(err, path)) from err
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """`with atomic_open(path, "w") as f:` like `open`, but the file appears under `path` only complete."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} must start with 'w'.")
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | Path, value: Any, **dump_kwargs: Any) -> Path:
    """json.dumps(value, indent=2 unless given) written atomically."""
    dump_kwargs.setdefault("indent", 2)
    return write_text(path, json.dumps(value, **dump_kwargs))


class _WriteErrorRecorder:
    """File wrapper keeping the OSError of a failed write: torch.save reports it as a bare RuntimeError."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.handle.flush()


def torch_save(obj: Any, path: str | Path) -> Path:
    """torch.save streamed into the temporary file (no second in-memory copy), then renamed."""
    import torch

    with atomic_open(path, "wb") as handle:
        writer = _WriteErrorRecorder(handle)
        try:
            torch.save(obj, writer)
        except RuntimeError as err:
            if writer.error is not None:
                raise writer.error from err
            raise
    return Path(path)


def save_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except Exception as err:  # safetensors reports I/O errors as SafetensorError("... (os error N)")
            code = re.search(r"os error (\d+)", str(err))
            if code is None:
                raise
            raise OSError(int(code.group(1)), str(err)) from err
        if metadata is not None and len(metadata) > 1:
            _sort_safetensors_metadata(tmp)
    return Path(path)


def _sort_safetensors_metadata(path: Path) -> None:
    """safetensors writes `__metadata__` from a Rust hash map whose order changes from call to call, so the
    same weights and metadata gave files with different bytes (and different checksums) from run to run.
    Rewrite the header in place with the keys sorted: only their order changes, so its length does not."""
    with open(path, "r+b") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        canonical = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(canonical) > length:  # escaped differently from the writer; keep its (valid) header
            return
        handle.seek(8)
        handle.write(canonical.ljust(length, b" "))  # safetensors pads its header with spaces too
