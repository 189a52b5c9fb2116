"""Every propagation mode runs on a tiny clip, keeps the key frames exactly and beats copying the nearest key."""

import pytest
import torch

from src.rerender.baselines import nearest_key
from src.rerender.demo import demo_video, stylise
from src.rerender.flow import DisFlow, pair_flows
from src.rerender.propagation import Propagator


@pytest.fixture(scope="module")
def clip():
    frames_u8, _ = demo_video(3, 5, 24, 32)
    frames = torch.from_numpy(frames_u8).permute(0, 3, 1, 2).float() / 255
    truth = torch.from_numpy(stylise(frames_u8)).permute(0, 3, 1, 2).float() / 255
    return frames, truth, pair_flows(frames, DisFlow("fast"))


@pytest.mark.parametrize(
    "settings",
    [dict(use_warp=False, blend="official", poisson=True, temporal_smoothing=0.0), dict(blend="validity")],
    ids=["official", "validity"],
)
def test_modes_keep_keys_and_beat_the_nearest_key(clip, settings):
    frames, truth, pairs = clip
    keys = {0: truth[0], 4: truth[4]}
    out = Propagator(search_vote_iters=2, patchmatch_iters=2, **settings)(frames, keys, pairs)
    assert out.shape == frames.shape and torch.isfinite(out).all()
    assert torch.equal(out[0], truth[0]) and torch.equal(out[4], truth[4])
    error = (out[1:4] - truth[1:4]).pow(2).mean()
    assert error < (nearest_key(frames, keys)[1:4] - truth[1:4]).pow(2).mean()


def test_bad_blend_and_missing_keys_are_errors(clip):
    frames, _, pairs = clip
    with pytest.raises(ValueError, match="rerender.propagation.blend"):
        Propagator(blend="fancy")
    with pytest.raises(ValueError, match="outside the video"):
        Propagator()(frames, {9: frames[0]}, pairs)
