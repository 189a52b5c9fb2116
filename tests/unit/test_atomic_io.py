"""src.atomic_io: a failed or interrupted write never replaces or half-writes the file under its real name."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from src import atomic_io


def test_a_failing_writer_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "summary.json"
    atomic_io.write_json(path, {"step": 1})
    with pytest.raises(KeyError), atomic_io.atomic_open(path, "w") as handle:
        handle.write('{"step": 2, ')
        handle.flush()
        raise KeyError("the writer failed half-way")
    assert json.loads(path.read_text()) == {"step": 1}
    assert os.listdir(tmp_path) == ["summary.json"]


def test_a_disk_error_is_named_with_the_file_and_what_was_kept(tmp_path):
    path = tmp_path / "net.safetensors"
    with pytest.raises(atomic_io.AtomicWriteError, match="no file was written under that name") as info:
        with atomic_io.atomic_path(path) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert f"could not write {path}: the disk is full" in str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []


def test_what_a_killed_writer_left_is_removed_by_the_next_write(tmp_path):
    path = tmp_path / "last.ckpt"
    stale = tmp_path / f".last.ckpt{atomic_io.TMP_MARK}12345"
    stale.write_bytes(b"half a checkpoint")
    atomic_io.torch_save({"global_step": 3}, path)
    assert torch.load(path, weights_only=True) == {"global_step": 3}
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_atomic_open_refuses_append_modes(tmp_path):
    with pytest.raises(ValueError, match="must start with 'w'"), atomic_io.atomic_open(tmp_path / "x", "a"):
        pass


def test_a_real_write_error_in_a_weights_file_keeps_the_previous_one(tmp_path):
    """safetensors reports I/O errors as its own exception type; they still become a named AtomicWriteError."""
    import resource
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    path = tmp_path / "net.safetensors"
    atomic_io.save_safetensors({"w": torch.ones(4)}, path)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))

    code = (
        "import torch; from src import atomic_io\n"
        f"atomic_io.save_safetensors({{'w': torch.zeros(2**20)}}, {str(path)!r})"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, preexec_fn=limit, timeout=120
    )
    assert proc.returncode != 0
    assert f"AtomicWriteError: [Errno 27] could not write {path}: the file-size limit was reached" in proc.stderr
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(path))["w"], torch.ones(4))  # the previous file, untouched
    assert os.listdir(tmp_path) == ["net.safetensors"]


def test_the_same_weights_and_metadata_always_give_the_same_bytes(tmp_path):
    """safetensors writes its metadata from a hash map whose order changes between calls; two runs of the demo
    gave equal tensors in files with different bytes."""
    from safetensors import safe_open

    tensors = {"b.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(3)}
    metadata = {f"key{i}": f"value {i} é" for i in range(8)}
    contents = set()
    for i in range(12):
        path = atomic_io.save_safetensors(tensors, tmp_path / f"w{i}.safetensors", metadata=metadata)
        contents.add(path.read_bytes())
    assert len(contents) == 1
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata() == metadata
        assert torch.equal(handle.get_tensor("b.weight"), tensors["b.weight"])
