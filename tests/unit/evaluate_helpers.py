"""Test inputs for the evaluation entry point: small mp4 folders, a scripted I3D stand-in, composed configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from src.data.video_io import write_mp4

CONF = Path(__file__).resolve().parents[2] / "conf"


class TinyI3D(nn.Module):
    """Same call signature as StyleGAN-V's i3d_torchscript.pt: pooled colour statistics -> 400 features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(3 * 8, 400)

    def forward(
        self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = False
    ) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool3d(x, (2, 2, 2)).flatten(1)
        return self.proj(pooled)


def write_tiny_i3d(path: Path) -> Path:
    torch.jit.save(torch.jit.script(TinyI3D()), str(path))
    return path


def write_videos(folder: Path, names: list[str], seed: int, frames: int = 18, size: int = 32) -> dict[str, np.ndarray]:
    """Smooth random videos (blocky colour fields drifting in brightness) as `<name>.mp4`; returns the frames."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        base = rng.integers(20, 235, (1, size // 4, size // 4, 3)).astype(np.float32)
        video = np.repeat(np.repeat(base, 4, 1), 4, 2) + np.arange(frames)[:, None, None, None] * rng.uniform(-2, 2)
        video = np.clip(video + rng.normal(0, 4, (frames, size, size, 3)), 0, 255).astype(np.uint8)
        write_mp4(folder / f"{name}.mp4", video, fps=8, pix_fmt="yuv444p", crf=0)
        out[name] = video
    return out


def compose_eval(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("evaluate", overrides=overrides)


@pytest.fixture(autouse=False)
def one_thread():
    """One intra-op thread: on a loaded 2-core box MKL's threaded eigh (FVD) spins for seconds, not ms."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
