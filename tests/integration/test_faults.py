"""Faults survived by a real training process (tests/integration/fault_run.py): SIGKILL in the middle of a
checkpoint write, a write error while saving, and SIGTERM taking the save-and-requeue path.

The killed-while-saving test points the process's TMPDIR at another file system when one exists (/dev/shm), as
on clusters where /tmp is node-local and outputs are on a shared file system: Lightning's stock writer stages
the file there and then copies it onto `last.ckpt`, which a kill truncates.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from src.trainers.preemption import PREEMPTED_EXIT_CODE

SCRIPT = Path(__file__).with_name("fault_run.py")


def _start(out: Path, *args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _wait_for_step(proc: subprocess.Popen, out: Path, step: int, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        progress = out / "progress"
        if progress.is_file() and progress.read_text() and int(progress.read_text()) >= step:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early ({proc.returncode}):\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the run did not reach step {step} in {timeout} s")


def _step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def _other_file_system_tmp(tmp_path: Path) -> dict:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        return {"TMPDIR": tempfile.mkdtemp(dir=shm)}
    return {}


@pytest.mark.slow  # three training processes (run, kill, rerun) writing 96 MB checkpoints
def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one_and_the_rerun_resumes_from_it(tmp_path):
    out = tmp_path / "run"
    proc = _start(out, "--max-steps", "400", "--every-n", "2", "--blob-mb", "96", env=_other_file_system_tmp(tmp_path))
    _wait_for_step(proc, out, 3)  # the save at step 2 is complete
    folder, last = out / "checkpoints", out / "checkpoints" / "last.ckpt"
    before = last.stat()
    deadline = time.time() + 120
    while time.time() < deadline:  # kill the moment the next save starts writing anything in the folder
        names = {p.name for p in folder.iterdir()}
        now = last.stat() if last.exists() else None
        if names - {"last.ckpt"} or now is None or (now.st_ino, now.st_size, now.st_mtime_ns) != (
            before.st_ino, before.st_size, before.st_mtime_ns
        ):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert _step(last) == 2  # the previous checkpoint, whole and loadable

    rerun = _start(out, "--max-steps", "6", "--every-n", "2", "--blob-mb", "96")
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr[-3000:]
    assert json.loads(stdout.strip().splitlines()[-1]) == {"resumed_from": 2, "final_step": 6}
    assert _step(last) == 6
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]  # the killed writer's temp file is gone


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_write_error_while_saving_is_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path):
    out = tmp_path / "run"
    # step-2 checkpoint ~1 MB, the step-4 one ~24 MB: past a 16 MB file-size limit, a real write error (EFBIG)
    proc = _start(
        out, "--max-steps", "6", "--every-n", "2", "--blob-mb", "1", "--grow-at", "3", "--grow-mb", "24",
        preexec_fn=_limit_file_size(16 * 2**20),
    )
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode not in (0, PREEMPTED_EXIT_CODE)
    last = out / "checkpoints" / "last.ckpt"
    assert f"could not write {last}: the file-size limit was reached; its previous version is kept" in stderr
    assert _step(last) == 2
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # no half file under any name


def test_sigterm_saves_requeues_and_exits_75_like_sigusr1(tmp_path):
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol_calls"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"  # stands in for SLURM's: records what the run asked of it
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    out = tmp_path / "run"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    proc = _start(out, "--max-steps", "100000", "--every-n", "100000", "--sleep", "0.02", env=env)
    _wait_for_step(proc, out, 2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT_CODE, stderr[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"]
    assert "preemption: saving" in stderr
    assert _step(out / "checkpoints" / "last.ckpt") >= 2
