"""WarpedPixelMSE: warping and occlusion arithmetic with a stand-in flow, RAFT loading from a local file."""

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.optical_flow import raft_small

from src.eval.flow_metrics import RaftFlow, WarpedPixelMSE, consistency_mask, load_raft, warped_pair_mse
from src.eval.weights import MissingWeightFileError


class ShiftSearchFlow(nn.Module):
    """Stand-in flow: the integer horizontal shift (|s| <= 3) that best maps a onto b, as a constant field."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        flows = []
        for a_i, b_i in zip(a, b):
            errors = {
                s: (a_i[..., 3:-3] - b_i[..., 3 + s : b_i.shape[-1] - 3 + s]).pow(2).mean()
                for s in range(-3, 4)
            }
            best = min(errors, key=errors.get)
            flow = torch.zeros(2, *a_i.shape[-2:])
            flow[0] = best
            flows.append(flow)
        return torch.stack(flows)


class ZeroFlow(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.zeros(a.shape[0], 2, *a.shape[-2:])


def _moving_video(shift: int = 2, frames: int = 3, h: int = 12, w: int = 20) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    wide = torch.rand(3, h, w + shift * frames, generator=gen)
    # content moves right by `shift` pixels per frame
    return torch.stack([wide[:, :, shift * (frames - t) : shift * (frames - t) + w] for t in range(frames)])


def test_perfectly_aligned_motion_gives_zero():
    video = _moving_video()
    metric = WarpedPixelMSE(flow_model=ShiftSearchFlow())
    metric.update(video[None])
    assert float(metric.compute()) == pytest.approx(0.0, abs=1e-12)
    # without alignment the same video has a clearly positive error
    plain = WarpedPixelMSE(flow_model=ZeroFlow())
    plain.update(video[None])
    assert float(plain.compute()) > 0.05


def test_zero_flow_equals_plain_consecutive_mse_averaged_per_video():
    gen = torch.Generator().manual_seed(1)
    videos = torch.rand(2, 4, 3, 8, 10, generator=gen)
    metric = WarpedPixelMSE(flow_model=ZeroFlow())
    metric.update(videos)
    v = videos.double().numpy()
    per_video = [np.mean([np.mean((vid[t] - vid[t + 1]) ** 2) for t in range(3)]) for vid in v]
    assert float(metric.compute()) == pytest.approx(float(np.mean(per_video)), rel=1e-10)


def test_consistency_mask_marks_inconsistent_and_out_of_frame_pixels():
    fw = torch.zeros(1, 2, 6, 8)
    fw[:, 0] = 2.0
    consistent = consistency_mask(fw, -fw)
    assert consistent[0, 0, :, :6].all() and not consistent[0, 0, :, 6:].any()  # x + 2 leaves the frame
    assert not consistency_mask(fw, torch.zeros_like(fw)).any()  # backward flow disagrees everywhere
    pair = warped_pair_mse(torch.rand(1, 3, 6, 8), torch.rand(1, 3, 6, 8), lambda a, b: fw)
    assert pair.shape == (1,) and pair.isnan().all()  # no consistent pixel: undefined, not 0


def test_fully_occluded_video_is_skipped_and_reported():
    class Inconsistent(nn.Module):
        def forward(self, a, b):
            flow = torch.zeros(a.shape[0], 2, *a.shape[-2:])
            flow[:, 0] = 3.0  # same direction both ways: never consistent
            return flow

    metric = WarpedPixelMSE(flow_model=Inconsistent())
    metric.update(torch.rand(1, 3, 3, 8, 8))
    with pytest.raises(RuntimeError, match="1 skipped"):
        metric.compute()
    metric.flow = ZeroFlow()
    metric.update(_moving_video()[None])
    assert int(metric.skipped_videos) == 1
    with pytest.warns(UserWarning, match="skipped 1 video"):
        metric.compute()


def test_raft_loading_from_local_checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    flow = RaftFlow(load_raft(path, "raft_small"), num_flow_updates=2)
    out = flow(torch.rand(1, 3, 36, 44), torch.rand(1, 3, 36, 44))  # padded to 40x48 inside, cropped back
    assert out.shape == (1, 2, 36, 44) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="not a torchvision raft_large"):
        load_raft(path, "raft_large")
    with pytest.raises(MissingWeightFileError, match=r"eval\.raft_checkpoint.*raft_large_C_T_SKHT_V2"):
        WarpedPixelMSE(checkpoint=tmp_path / "missing.pth")
