"""FVD/KVD metric classes with a fixed custom extractor against a plain float64 computation; merging of
partial states; input validation; identical results over 2 gloo processes and in one."""

import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from src.eval.feature_stats import merge_partial_states, save_partial_state
from src.eval.fvd import FrechetVideoDistance, KernelVideoDistance


class TinyVideoEmbedder(nn.Module):
    """Fixed random projection of 2x2-pooled clips: deterministic features for the arithmetic tests."""

    num_features = 6

    def __init__(self, frames: int = 4) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(123)
        self.proj = nn.Parameter(
            torch.randn(frames * 3 * 4, self.num_features, generator=gen), requires_grad=False
        )

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(videos.flatten(0, 1), 2)
        return pooled.reshape(videos.shape[0], -1) @ self.proj


def _videos(seed: int, n: int, frames: int = 4, offset: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, frames, 3, 8, 8, generator=gen) * 0.7 + offset
    return x.clamp(0, 1)


def _reference_fvd(real: np.ndarray, fake: np.ndarray, ddof: int = 1) -> float:
    mu_r, mu_f = real.mean(0), fake.mean(0)
    s_r, s_f = np.cov(real, rowvar=False, ddof=ddof), np.cov(fake, rowvar=False, ddof=ddof)
    covmean = scipy.linalg.sqrtm(s_r @ s_f).real
    return float(((mu_r - mu_f) ** 2).sum() + np.trace(s_r + s_f - 2 * covmean))


def _reference_kvd(real: np.ndarray, fake: np.ndarray) -> float:
    d = real.shape[1]
    m, n = len(real), len(fake)
    kxx = (real @ real.T / d + 1) ** 3
    kyy = (fake @ fake.T / d + 1) ** 3
    kxy = (real @ fake.T / d + 1) ** 3
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * kxy.mean()
    )


def _features(videos: torch.Tensor) -> np.ndarray:
    return TinyVideoEmbedder()(videos).double().numpy()


REAL, FAKE = _videos(0, 20), _videos(1, 16, offset=0.2)


def _quantised(videos: torch.Tensor, quantise: str) -> torch.Tensor:
    """The flavours' uint8 rounding of float frames, written out independently: none, floor or round."""
    offset = {"none": None, "floor": 0.0, "round": 0.5}[quantise]
    return videos if offset is None else torch.floor(videos.double() * 255 + offset).float() / 255


@pytest.mark.parametrize(
    "flavour,ddof,quantise", [("tf_hub", 1, "none"), ("stylegan_v", 0, "round"), ("videogpt", 1, "floor")]
)
def test_fvd_matches_float64_reference(flavour, ddof, quantise):
    metric = FrechetVideoDistance(TinyVideoEmbedder(), num_frames=4, flavour=flavour)
    for chunk in REAL.split(7):
        metric.update(chunk, real=True)
    for chunk in FAKE.split(5):
        metric.update(chunk, real=False)
    expected = _reference_fvd(_features(_quantised(REAL, quantise)), _features(_quantised(FAKE, quantise)), ddof)
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-6)  # float32 features, other batching


def test_fvd_uint8_equals_float_input_and_same_sets_give_zero():
    as_uint8 = (REAL * 255).round().to(torch.uint8)
    a = FrechetVideoDistance(TinyVideoEmbedder(), num_frames=4)
    b = FrechetVideoDistance(TinyVideoEmbedder(), num_frames=4)
    a.update(as_uint8, real=True)
    a.update(as_uint8, real=False)
    b.update(as_uint8.float() / 255, real=True)
    b.update(FAKE, real=False)
    assert float(a.compute()) == pytest.approx(0.0, abs=1e-6)
    expected = _reference_fvd(_features(as_uint8.float() / 255), _features(FAKE))
    assert float(b.compute()) == pytest.approx(expected, rel=1e-8)


def test_fvd_uses_first_num_frames():
    long_real = torch.cat([REAL, torch.rand(20, 3, 3, 8, 8)], dim=1)  # 7 frames, only the first 4 count
    metric = FrechetVideoDistance(TinyVideoEmbedder(), num_frames=4)
    metric.update(long_real, real=True)
    metric.update(FAKE, real=False)
    assert float(metric.compute()) == pytest.approx(
        _reference_fvd(_features(REAL), _features(FAKE)), rel=1e-8
    )


def test_kvd_full_sets_and_subsets():
    full = KernelVideoDistance(TinyVideoEmbedder(), num_frames=4, subsets=None)
    sub = KernelVideoDistance(TinyVideoEmbedder(), num_frames=4, subsets=10, subset_size=8, seed=3)
    for metric in (full, sub):
        metric.update(REAL, real=True)
        metric.update(FAKE, real=False)
    mean, std = full.compute()
    assert float(mean) == pytest.approx(_reference_kvd(_features(REAL), _features(FAKE)), rel=1e-8)
    assert float(std) == 0.0
    sub_mean, sub_std = sub.compute()
    assert np.isfinite(float(sub_mean)) and float(sub_std) > 0
    assert float(sub_mean) != pytest.approx(float(mean), rel=1e-12)


@pytest.mark.parametrize(
    "bad,error,match",
    [
        (torch.rand(2, 4, 3, 8), ValueError, "5 dims"),
        (torch.rand(2, 4, 3, 8, 8) * 2, ValueError, r"\[0, 1\]"),
        (torch.randint(0, 255, (2, 4, 3, 8, 8), dtype=torch.int32), TypeError, "uint8"),
        (torch.rand(2, 4, 8, 8, 3), ValueError, "3 channels"),
        (torch.rand(2, 3, 3, 8, 8), ValueError, "num_frames=4"),
    ],
)
def test_bad_video_input_is_a_clear_error(bad, error, match):
    metric = FrechetVideoDistance(TinyVideoEmbedder(), num_frames=4)
    with pytest.raises(error, match=match):
        metric.update(bad, real=True)


def test_custom_extractor_without_feature_size_needs_feature_dim():
    with pytest.raises(ValueError, match="feature_dim"):
        FrechetVideoDistance(nn.Flatten(), num_frames=4)


def test_missing_i3d_file_names_key_and_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"eval\.fvd\.i3d.*TATS"):
        FrechetVideoDistance("i3d", weights_path=tmp_path / "nope.pt", weights_config_key="eval.fvd.i3d")


@pytest.mark.parametrize("metric_cls", [FrechetVideoDistance, KernelVideoDistance])
def test_merge_of_partial_states_equals_one_run(tmp_path, metric_cls):
    kwargs = {"num_frames": 4} | (
        {"subsets": 5, "subset_size": 10} if metric_cls is KernelVideoDistance else {}
    )
    single = metric_cls(TinyVideoEmbedder(), **kwargs)
    single.update(REAL, real=True)
    single.update(FAKE, real=False)
    paths = []
    for shard, (real, fake) in enumerate(zip(REAL.split(10), FAKE.split(8))):
        part = metric_cls(TinyVideoEmbedder(), **kwargs)
        part.update(real, real=True)
        part.update(fake, real=False)
        paths.append(save_partial_state(part, tmp_path / f"shard{shard}.pt"))
    merged = merge_partial_states(metric_cls(TinyVideoEmbedder(), **kwargs), paths)
    expected, got = single.compute(), merged.compute()
    for e, g in zip(
        expected if isinstance(expected, tuple) else [expected], got if isinstance(got, tuple) else [got]
    ):
        assert float(g) == pytest.approx(float(e), rel=1e-10, abs=1e-12)


def test_merge_refuses_other_settings(tmp_path):
    part = FrechetVideoDistance(TinyVideoEmbedder(), num_frames=4)
    part.update(REAL, real=True)
    path = save_partial_state(part, tmp_path / "a.pt")
    other = FrechetVideoDistance(TinyVideoEmbedder(), num_frames=3)
    with pytest.raises(ValueError, match="same evaluation config"):
        merge_partial_states(other, [path])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _distributed_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fvd = FrechetVideoDistance(TinyVideoEmbedder(), num_frames=4)
        kvd = KernelVideoDistance(TinyVideoEmbedder(), num_frames=4, subsets=5, subset_size=10)
        for metric in (fvd, kvd):
            metric.update(REAL.split(10)[rank], real=True)
            metric.update(FAKE.split(8)[rank], real=False)
        result = [float(fvd.compute()), *[float(v) for v in kvd.compute()]]
        if rank == 0:
            torch.save(result, Path(out_dir) / "result.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one_process():
    single_fvd = FrechetVideoDistance(TinyVideoEmbedder(), num_frames=4)
    single_kvd = KernelVideoDistance(TinyVideoEmbedder(), num_frames=4, subsets=5, subset_size=10)
    for metric in (single_fvd, single_kvd):
        metric.update(REAL, real=True)
        metric.update(FAKE, real=False)
    expected = [float(single_fvd.compute()), *[float(v) for v in single_kvd.compute()]]
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_distributed_worker, args=(2, _free_port(), out_dir), nprocs=2, join=True)
        got = torch.load(Path(out_dir) / "result.pt")
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)
